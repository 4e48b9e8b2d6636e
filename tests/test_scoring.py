import numpy as np

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
