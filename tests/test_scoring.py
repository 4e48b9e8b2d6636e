import numpy as np
import pytest

from gemma_lab.backend import to_numpy
from gemma_lab.testing import keras_hub_inputs, numpy_log_softmax


def _reference_logprobs(causal_lm, ids):
    """Log-probabilities from keras-hub's own CausalLM call (final soft cap included)."""
    return numpy_log_softmax(to_numpy(causal_lm(keras_hub_inputs(causal_lm.backbone, [ids])))[0])


def test_score_matches_a_plain_forward_pass(tiny_lab_any):
    lab = tiny_lab_any
    text = "the quick brown fox jumps"
    s = lab.score(text)
    ids = lab.tokenizer.encode(text, add_bos=True)
    assert s.token_ids == ids[1:]
    logp = _reference_logprobs(lab.causal_lm, ids)
    want = [logp[i, ids[i + 1]] for i in range(len(ids) - 1)]
    np.testing.assert_allclose(s.logprobs, want, atol=1e-4)
    want_ranks = [int((logp[i] > logp[i, ids[i + 1]]).sum()) + 1 for i in range(len(ids) - 1)]
    assert s.ranks == want_ranks
    assert "".join(s.tokens) == text
    assert s.perplexity > 1


def test_score_top_k_is_the_best_alternatives(tiny_lab):
    s = tiny_lab.score("hello world")
    ids = tiny_lab.tokenizer.encode("hello world", add_bos=True)
    logp = _reference_logprobs(tiny_lab.causal_lm, ids)
    for position, step in enumerate(s.steps):
        assert list(step.top_k_ids) == list(np.argsort(-logp[position])[: tiny_lab.top_k])


def test_a_batch_of_texts_scores_each_like_keras_hub(tiny_lab_any):
    """Texts of different lengths (one padded batch), a transcript among them: every row's
    log-probabilities, ranks, top-k and entropy equal NumPy on keras-hub's own logits of
    that text alone, and the order is the caller's."""
    lab = tiny_lab_any
    texts = ["the quick brown fox jumps over the lazy dog " * 2, "hi",
             [{"role": "user", "content": "hello"}, {"role": "model", "content": "hi there"}]]
    scores = lab.score(texts)
    assert isinstance(scores, list) and len(scores) == len(texts)
    for text, s in zip(texts, scores, strict=True):
        ids = (list(lab.transcript(text).token_ids) if isinstance(text, list)
               else lab.tokenizer.encode(text, add_bos=True))
        assert s.token_ids == ids[1:]
        logp = _reference_logprobs(lab.causal_lm, ids)
        rows = np.arange(len(ids) - 1)
        np.testing.assert_allclose(s.logprobs, logp[rows, ids[1:]], atol=1e-4)
        assert s.ranks == [int((logp[i] > logp[i, ids[i + 1]]).sum()) + 1 for i in rows]
        entropy = -(np.exp(logp) * logp).sum(-1)[rows]
        np.testing.assert_allclose([step.entropy for step in s.steps], entropy, atol=1e-4)
        assert [list(step.top_k_ids) for step in s.steps] == [
            list(np.argsort(-logp[i])[:lab.top_k]) for i in rows]
    assert scores[2].speakers == lab.score(texts[2]).speakers


def test_a_long_batch_is_split_and_bad_items_are_named(tiny_lab):
    from gemma_lab.decoding import BATCH_TOKENS
    from gemma_lab.errors import InputError

    many = [f"text number {i} " * (i % 5 + 1) for i in range(3 * BATCH_TOKENS // 32)]
    batched = tiny_lab.score(many)  # more padded tokens than one call holds
    for i in (0, len(many) // 2, len(many) - 1):
        np.testing.assert_allclose(batched[i].logprobs, tiny_lab.score(many[i]).logprobs,
                                   atol=1e-5)
    with pytest.raises(InputError, match="text 1"):
        tiny_lab.score(["fine", ""])
    with pytest.raises(InputError, match="empty list"):
        tiny_lab.score([])
