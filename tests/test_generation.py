import pytest

from gemma_lab.errors import GemmaLabError, InputError
from gemma_lab.reference import keras_hub_greedy_ids
from gemma_lab.testing import tiny_causal_lm


@pytest.mark.parametrize("architecture", ["gemma", "gemma2", "gemma3", "gemma4"])
def test_greedy_equals_keras_hub_generate(architecture):
    from gemma_lab.testing import tiny_session

    lab = tiny_session(architecture)
    g = lab.generate("the quick brown fox", max_new_tokens=12)
    reference = keras_hub_greedy_ids(tiny_causal_lm(architecture), list(g.prompt_token_ids), 12)
    assert g.token_ids == reference[: len(g.token_ids)]
    assert len(g.token_ids) == 12 or g.finish_reason == "eos"


def test_records_statistics_per_token(tiny_lab):
    g = tiny_lab.generate("hello world", max_new_tokens=6)
    assert len(g.token_ids) == len(g.logprobs) == len(g.top_k) == len(g.entropy) == len(g.ranks)
    for step in g.steps:
        assert len(step.top_k) == tiny_lab.top_k
        probs = [p for _, p in step.top_k]
        assert probs == sorted(probs, reverse=True)
        assert step.rank == 1  # greedy picks the top token
        assert step.top_k_ids[0] == step.token_id
        assert abs(step.prob - probs[0]) < 1e-5
        assert 0 < step.entropy <= __import__("math").log(tiny_lab.tokenizer.vocabulary_size) + 1e-4


def test_statistics_of_a_sampled_generation_equal_numpy_on_keras_hub_logits(tiny_lab_any):
    """log p, rank, entropy, top-k ids and probabilities of every sampled token equal NumPy's
    softmax of keras-hub's own CausalLM logits of prompt + generated ids (temperature 1)."""
    import numpy as np

    from gemma_lab.backend import to_numpy
    from gemma_lab.testing import keras_hub_inputs, numpy_log_softmax

    lab = tiny_lab_any
    g = lab.generate("the quick brown", max_new_tokens=8, temperature=4.0, seed=11)
    prompt, ids = list(g.prompt_token_ids), list(g.token_ids)
    full = prompt + ids
    logits = to_numpy(lab.causal_lm(keras_hub_inputs(lab.causal_lm.backbone, [full])))[0]
    logp = numpy_log_softmax(logits)[len(prompt) - 1:len(full) - 1]
    rows = np.arange(len(ids))
    assert max(g.ranks) > 1  # the sample left the greedy path: ranks are not all 1
    np.testing.assert_allclose(g.logprobs, logp[rows, ids], atol=1e-4)
    assert g.ranks == [int((logp[i] > logp[i, ids[i]]).sum()) + 1 for i in rows]
    np.testing.assert_allclose(g.entropy, -(np.exp(logp) * logp).sum(-1), atol=1e-4)
    top = np.argsort(-logp, axis=-1, kind="stable")[:, :lab.top_k]
    assert [list(s.top_k_ids) for s in g.steps] == top.tolist()
    np.testing.assert_allclose([[p for _, p in s.top_k] for s in g.steps],
                               np.exp(np.take_along_axis(logp, top, -1)), atol=1e-5)
    assert [[piece for piece, _ in s.top_k] for s in g.steps] == [
        [lab.tokenizer.piece(int(i)) for i in row] for row in top]


def test_sampling_with_a_seed_is_reproducible_and_seeds_differ(tiny_lab):
    runs = [tiny_lab.generate("hello", max_new_tokens=10, temperature=1.5, seed=s).token_ids
            for s in (7, 7, 8)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    ranks = tiny_lab.generate("hello", max_new_tokens=10, temperature=1.5, seed=7).ranks
    assert max(ranks) > 1  # sampling really left the greedy path


def test_top_k_one_sampling_is_greedy(tiny_lab):
    greedy = tiny_lab.generate("hello", max_new_tokens=8).token_ids
    sampled = tiny_lab.generate("hello", max_new_tokens=8, temperature=2.0, top_k=1, seed=3)
    assert sampled.token_ids == greedy


def test_stop_string_ends_generation(tiny_lab):
    full = tiny_lab.generate("hello", max_new_tokens=16)
    assert len(full.text) > 2
    stop = full.text[1:3]
    g = tiny_lab.generate("hello", max_new_tokens=16, stop=stop)
    assert g.finish_reason == "stop_string"
    assert stop not in g.text and full.text.startswith(g.text)


def test_stream_yields_the_same_tokens_as_generate(tiny_lab):
    stream = tiny_lab.stream("hello world", max_new_tokens=8)
    ids = [step.token_id for step in stream]
    assert ids == tiny_lab.generate("hello world", max_new_tokens=8).token_ids
    assert stream.result.token_ids == ids


def test_stream_stop_takes_effect_at_the_next_step(tiny_lab):
    stream = tiny_lab.stream("hello", max_new_tokens=50)
    seen = []
    for step in stream:
        seen.append(step)
        if len(seen) == 3:
            stream.stop()
    assert len(seen) == 3 and stream.result.finish_reason == "stopped"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": -1}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": 0}, "top_k"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 10**9}, "max_new_tokens"),
    ],
)
def test_bad_arguments_raise_input_errors(tiny_lab, kwargs, message):
    with pytest.raises(InputError, match=message):
        tiny_lab.generate("hello", **kwargs)


def test_prompt_longer_than_context_is_refused(tiny_lab):
    with pytest.raises(GemmaLabError, match="context"):
        tiny_lab.generate("hello " * 40000, max_new_tokens=4)


def test_generation_metadata_names_model_and_sampler(tiny_lab):
    g = tiny_lab.generate("hello", max_new_tokens=2, temperature=0.7, top_p=0.9, seed=5)
    assert g.metadata["model"] == "tiny-gemma3"
    assert g.metadata["sampler"]["top_p"] == 0.9 and g.metadata["seed"] == 5
    assert g.metadata["backend"] in ("jax", "tensorflow", "torch")
    assert g.timing["tokens_per_s"] > 0
