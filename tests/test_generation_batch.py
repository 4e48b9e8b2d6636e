"""Batched generation: `lab.generate([...])` and `n=` samples per prompt decode in one padded
batch (a shared position, shorter prompts fed their own tokens until they end), and every row
must be what that prompt gives alone: keras-hub's own greedy `generate`, NumPy's softmax of
keras-hub's logits for the statistics, and a single-prompt run with the row's seed."""

from __future__ import annotations

import numpy as np
import pytest

from gemma_lab.backend import to_numpy
from gemma_lab.errors import InputError
from gemma_lab.reference import keras_hub_greedy_ids
from gemma_lab.testing import keras_hub_inputs, numpy_log_softmax

# Prompts of different lengths, so rows start generating at different positions.
PROMPTS = ["the quick brown fox jumps over", "hello", "a b c d"]


def _numpy_statistics(lab, prompt_ids, ids):
    """log p, rank, entropy and top-k ids of `ids` after `prompt_ids`, from NumPy's softmax
    of keras-hub's own CausalLM logits."""
    full = list(prompt_ids) + list(ids)
    logits = to_numpy(lab.causal_lm(keras_hub_inputs(lab.causal_lm.backbone, [full])))[0]
    logp = numpy_log_softmax(logits)[len(prompt_ids) - 1:len(full) - 1]
    rows = np.arange(len(ids))
    return {"logprobs": logp[rows, ids],
            "ranks": [int((logp[i] > logp[i, ids[i]]).sum()) + 1 for i in rows],
            "entropy": -(np.exp(logp) * logp).sum(-1),
            "top_ids": np.argsort(-logp, axis=-1, kind="stable")[:, :lab.top_k].tolist()}


def test_a_greedy_batch_equals_keras_hub_generate_per_prompt(tiny_lab_any):
    lab = tiny_lab_any
    batch = lab.generate(PROMPTS, max_new_tokens=8, progress=False)
    assert isinstance(batch, list) and [g.prompt for g in batch] == PROMPTS
    for prompt, g in zip(PROMPTS, batch, strict=True):
        assert list(g.prompt_token_ids) == lab.tokenizer.encode(prompt, add_bos=True)
        reference = keras_hub_greedy_ids(lab.causal_lm, list(g.prompt_token_ids), 8)
        assert g.token_ids == reference[:len(g.token_ids)], prompt
        assert len(g.token_ids) == 8 or g.finish_reason == "eos"
        want = _numpy_statistics(lab, g.prompt_token_ids, g.token_ids)
        np.testing.assert_allclose(g.logprobs, want["logprobs"], atol=1e-4)
        np.testing.assert_allclose(g.entropy, want["entropy"], atol=1e-4)
        assert g.ranks == want["ranks"] == [1] * len(g.token_ids)
        assert [list(s.top_k_ids) for s in g.steps] == want["top_ids"]


def test_sampled_rows_equal_single_prompt_runs_with_their_seed(tiny_lab):
    lab = tiny_lab
    batch = lab.generate(PROMPTS, max_new_tokens=10, temperature=1.5, top_p=0.9, seed=21,
                         n=3, progress=False)
    assert len(batch) == len(PROMPTS) * 3
    assert [g.prompt for g in batch] == [p for p in PROMPTS for _ in range(3)]
    assert [g.metadata["seed"] for g in batch] == [21, 22, 23] * len(PROMPTS)
    assert len({tuple(g.token_ids) for g in batch[:3]}) > 1  # the samples differ
    for g in batch:
        alone = lab.generate(g.prompt, max_new_tokens=10, temperature=1.5, top_p=0.9,
                             seed=g.metadata["seed"])
        assert g.token_ids == alone.token_ids
        np.testing.assert_allclose(g.logprobs, alone.logprobs, atol=1e-5)
        want = _numpy_statistics(lab, g.prompt_token_ids, g.token_ids)
        np.testing.assert_allclose(g.logprobs, want["logprobs"], atol=1e-4)
        assert g.ranks == want["ranks"]


def test_more_prompts_than_one_batch_holds_and_mixed_finishes(tiny_lab):
    from gemma_lab.generation import MAX_BATCH_ROWS

    lab = tiny_lab
    prompts = [f"number {i} is" + " and" * (i % 4) for i in range(MAX_BATCH_ROWS + 3)]
    stop = lab.generate(prompts[1], max_new_tokens=6).text[1:3]  # ends prompt 1 early
    batch = lab.generate(prompts, max_new_tokens=6, stop=stop, progress=False)
    for g in batch:
        expected = lab.generate(g.prompt, max_new_tokens=6, stop=stop)
        assert (g.token_ids, g.text, g.finish_reason) == (
            expected.token_ids, expected.text, expected.finish_reason)
    assert batch[1].finish_reason == "stop_string" and stop not in batch[1].text


def test_hooks_in_force_hold_for_every_row(tiny_lab):
    from gemma_lab import interventions as iv

    lab = tiny_lab
    vector = np.random.default_rng(0).normal(size=lab.backbone.hidden_dim).astype("float32")
    with lab.hooks(iv.add(vector, layer=1, scale=3.0)):
        batch = lab.generate(PROMPTS, max_new_tokens=6, progress=False)
        alone = [lab.generate(p, max_new_tokens=6) for p in PROMPTS]
    plain = lab.generate(PROMPTS, max_new_tokens=6, progress=False)
    assert [g.token_ids for g in batch] == [g.token_ids for g in alone]
    for g, single in zip(batch, alone, strict=True):
        np.testing.assert_allclose(g.logprobs, single.logprobs, atol=1e-5)
    assert [g.logprobs for g in batch] != [g.logprobs for g in plain]


@pytest.mark.parametrize("kwargs,message", [
    (dict(prompt=[]), "empty list"),
    (dict(prompt=["fine", 3]), "Prompt 1 must be a string"),
    (dict(prompt="hi", n=0), "n .samples per prompt."),
    (dict(prompt="hi", n=True), "n .samples per prompt."),
    (dict(prompt="hi", n=3), "would all be the same"),
    (dict(prompt=["hi"], stream=True), "stream=True"),
    (dict(prompt=["hi", "hello " * 32768]), "Prompt 1 has"),
    (dict(prompt=["hi"], max_new_tokens=0), "max_new_tokens"),
])
def test_bad_batch_arguments_are_input_errors(tiny_lab, kwargs, message):
    with pytest.raises(InputError, match=message):
        tiny_lab.generate(**{"max_new_tokens": 4, "progress": False, **kwargs})
    assert tiny_lab.generate("hello", max_new_tokens=2).finish_reason in ("length", "eos")


BACKEND_WORKER = """
import json
from gemma_lab.reference import keras_hub_greedy_ids
from gemma_lab.testing import tiny_session
lab = tiny_session("gemma3")
prompts = ["the quick brown fox jumps over", "hello", "a b c d"]
out = {"greedy": [], "sampled": []}
for g in lab.generate(prompts, max_new_tokens=6, progress=False):
    reference = keras_hub_greedy_ids(lab.causal_lm, list(g.prompt_token_ids), 6)
    out["greedy"].append(g.token_ids == reference[:len(g.token_ids)] and len(g.token_ids) > 0)
for g in lab.generate(prompts[:2], max_new_tokens=6, temperature=1.2, seed=5, n=2,
                      progress=False):
    alone = lab.generate(g.prompt, max_new_tokens=6, temperature=1.2, seed=g.metadata["seed"])
    out["sampled"].append(g.token_ids == alone.token_ids)
print(json.dumps(out))
"""


@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_batches_on_other_backends(backend):
    """A greedy batch equals keras-hub's generate per prompt, and sampled rows equal
    single-prompt runs with their seed, on eager torch and TensorFlow (a worker per
    backend): the batched loop once compared a torch position with a NumPy array."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["GEMMA_LAB_BACKEND"] = backend
    done = subprocess.run([sys.executable, "-c", BACKEND_WORKER], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"greedy": [True] * 3, "sampled": [True] * 4}, out
