"""Greedy decoding runs several compiled steps per call (`CompiledModel.step(..., ahead=n)`):
its tokens and statistics equal one-step-per-call decoding, and streams that share a model
never read each other's steps."""

from __future__ import annotations

import numpy as np


def _one_step_per_call(lab, prompt: str, n: int) -> tuple[list[int], list[float]]:
    model, ids = lab.compiled, lab.tokenizer.encode(prompt, add_bos=True)
    cache = model.prefill(ids, 64, lab.tokenizer.pad_id)
    token, tokens, logprobs = ids[-1], [], []
    for i in range(n):
        stats, cache = model.step(token, cache, len(ids) - 1 + i)
        token = int(np.argmax(stats["logits"]))
        tokens.append(token)
        logprobs.append(float(stats["logits"][token] - stats["log_norm"]))
    return tokens, logprobs


def test_chunked_greedy_equals_one_step_per_call(tiny_lab):
    g = tiny_lab.generate("hello world", max_new_tokens=24)
    tokens, logprobs = _one_step_per_call(tiny_lab, "hello world", len(g.steps))
    assert g.token_ids == tokens
    np.testing.assert_allclose(g.logprobs, logprobs, atol=1e-4)
    assert set(g.ranks) == {1}


def test_interleaved_streams_do_not_share_steps(tiny_lab):
    alone_a = tiny_lab.generate("hello world", max_new_tokens=12)
    alone_b = tiny_lab.generate("the quick", max_new_tokens=12)
    a = iter(tiny_lab.stream("hello world", max_new_tokens=12))
    b = iter(tiny_lab.stream("the quick", max_new_tokens=12))
    seen_a, seen_b = [], []
    for step_a, step_b in zip(a, b, strict=False):
        seen_a.append(step_a.token_id)
        seen_b.append(step_b.token_id)
    seen_a += [s.token_id for s in a]
    seen_b += [s.token_id for s in b]
    assert seen_a == alone_a.token_ids and seen_b == alone_b.token_ids
