"""One stream of an int8 model decodes as two identical rows on XLA:CPU
(`decoding.pairs_single_stream`): its tokens and every per-token statistic equal the plain
one-row decode, greedy and sampled, for each family's KV-cache layout."""

from __future__ import annotations

import numpy as np
import pytest

from gemma_lab.backend import import_keras
from gemma_lab.decoding import CompiledModel, pairs_single_stream
from gemma_lab.sampling import SamplerConfig
from gemma_lab.testing import tiny_causal_lm

STATS = ("top_ids", "top_logprobs", "entropy", "logprob", "rank")


def _session(architecture: str, dtype: str):
    from gemma_lab.models.loading import LoadedModel
    from gemma_lab.session import GemmaLab

    if dtype == "int8":
        causal_lm = tiny_causal_lm(architecture, seed=3)
        causal_lm.backbone.quantize("int8")
    else:
        causal_lm = tiny_causal_lm(architecture, seed=3, dtype=dtype)
    return GemmaLab(LoadedModel(causal_lm, f"tiny-{architecture}-{dtype}", "gemma_lab.testing",
                                None, dtype))


def _decode(model: CompiledModel, ids: list[int], n: int, sampler=None) -> list[dict]:
    """n tokens through the compiled loop (`step(ahead=...)`), as the stream calls it."""
    cache = model.prefill(ids, 64, 0)
    token, index, steps = ids[-1], len(ids) - 1, []
    while len(steps) < n:
        stats, cache = model.step(token, cache, index, n - len(steps), sampler=sampler)
        steps.append(stats)
        token, index = stats["token"], index + 1
    return steps


def _assert_same(paired: list[dict], plain: list[dict], atol: float) -> None:
    """Same tokens; statistics within `atol` (int8 x int8 -> int32 dots are exact, the
    float32 sums around them may be reordered by the kernel)."""
    assert [s["token"] for s in paired] == [s["token"] for s in plain]
    for name in STATS:
        # A sampled token's rank counts logits above it; the tiny model's near-ties within
        # float rounding may move it by one.
        np.testing.assert_allclose(np.array([s[name] for s in paired], dtype="float64"),
                                   np.array([s[name] for s in plain], dtype="float64"),
                                   atol=1 if name == "rank" else atol, err_msg=name)


@pytest.fixture(scope="module", params=[("gemma3", "int8"), ("gemma", "int8"),
                                        ("gemma3n", "int8"), ("gemma4", "int8")],
                ids=lambda p: "-".join(p))
def narrow_lab(request):
    return request.param[1], _session(*request.param)


@pytest.mark.parametrize("sampler", [None, SamplerConfig(temperature=0.9, seed=7),
                                     SamplerConfig(temperature=0.8, top_k=5, seed=11)],
                         ids=["greedy", "sampled", "top-k"])
def test_two_rows_equal_one_row(narrow_lab, sampler):
    _, lab = narrow_lab
    run = lab.runtime.forward_pass()
    ids = lab.tokenizer.encode("hello world the quick", add_bos=True)
    plain = _decode(CompiledModel(run, top_k=4, paired=False), ids, 24, sampler)
    paired = _decode(CompiledModel(run, top_k=4, paired=True), ids, 24, sampler)
    _assert_same(paired, plain, atol=1e-4)


def test_session_stream_takes_the_paired_path_on_jax_cpu(narrow_lab):
    _, lab = narrow_lab
    on_jax = import_keras().config.backend() == "jax"
    assert lab.compiled.paired is on_jax
    assert pairs_single_stream(lab.runtime.forward_pass()) is on_jax
    ids = lab.tokenizer.encode("the quick brown", add_bos=True)
    plain = _decode(CompiledModel(lab.runtime.forward_pass(), lab.runtime.top_k,
                                  paired=False), ids, 16)
    g = lab.generate("the quick brown", max_new_tokens=16)
    assert g.token_ids == [s["token"] for s in plain][:len(g.token_ids)]
    np.testing.assert_allclose(g.logprobs, [s["logprob"] for s in plain][:len(g.token_ids)],
                               atol=1e-4)
    batch = lab.generate(["the quick brown"], max_new_tokens=16)  # a batch of one: 2 rows too
    assert batch[0].token_ids == g.token_ids


def test_hooks_and_float32_keep_one_row(tiny_lab):
    from gemma_lab.forward import HookSet

    assert not pairs_single_stream(tiny_lab.runtime.forward_pass())  # float32 weights
    assert not pairs_single_stream(_session("gemma3", "bfloat16").runtime.forward_pass())
    int8 = _session("gemma3", "int8")
    hooks = HookSet.of({"blocks.1.resid_post": lambda value, ctx: value * 2.0})
    assert not pairs_single_stream(int8.runtime.forward_pass(hooks))
    assert not int8.runtime.compiled("decoding", lambda run: CompiledModel(run), hooks).paired
