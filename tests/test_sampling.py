"""Sampling inside the compiled decode loop: the draws follow NumPy's reference distribution
(temperature, top-k, top-p, top-k then top-p, a top-p set past the candidate list), never
leave the allowed set, and do not depend on how the steps are split into compiled calls; a
sampled generation's statistics equal teacher-forced scoring of its own tokens."""

from __future__ import annotations

import numpy as np
import pytest

from gemma_lab import sampling_ops
from gemma_lab.backend import import_keras, to_numpy
from gemma_lab.decoding import decoder

VOCABULARY = 2000  # > sampling_ops.CANDIDATES and several blocks of the two-stage draw
DRAWS = 40_000


def reference(row, temperature, top_k=None, top_p=None):
    """The distribution the host sampler drew from: softmax(row / T) over the top-k, then
    the smallest most-likely set reaching top_p, renormalised (NumPy, float64)."""
    scaled = row.astype(np.float64) / temperature
    order = np.argsort(-scaled, kind="stable")
    keep = np.zeros(len(row), bool)
    keep[order[:top_k or len(row)]] = True
    probs = np.where(keep, np.exp(scaled - scaled.max()), 0.0)
    probs /= probs.sum()
    if top_p is not None:
        sorted_probs = probs[order]
        last = int(np.searchsorted(np.cumsum(sorted_probs), top_p))
        nucleus = np.zeros(len(row), bool)
        nucleus[order[:last + 1]] = True
        probs = np.where(nucleus, probs, 0.0)
        probs /= probs.sum()
    return probs


def draws(row, temperature, top_k=None, top_p=None, seed=0, count=DRAWS):
    """`count` draws of `sampling_ops.choose` at positions 0..count-1, vectorised with
    jax.vmap (the suite's backend is JAX)."""
    import jax

    ops = import_keras().ops
    floats, ints = sampling_ops.params(temperature, top_k, top_p, seed)
    filtered = top_k is not None or top_p is not None
    row = ops.convert_to_tensor(row.astype("float32"))
    pick = jax.jit(jax.vmap(lambda position: sampling_ops.choose(
        ops, row, ops.convert_to_tensor(floats), ops.convert_to_tensor(ints), position,
        filtered)))
    return to_numpy(pick(np.arange(count, dtype="int32")))


def total_variation(samples, probs):
    empirical = np.bincount(samples, minlength=len(probs)) / len(samples)
    return 0.5 * np.abs(empirical - probs).sum()


def sampling_noise(probs, count=DRAWS):
    """The total variation NumPy's own exact sampler shows at this many draws (its mean over
    three runs): what a correct sampler cannot beat, the yardstick for ours."""
    rng = np.random.default_rng(5)
    return np.mean([total_variation(rng.choice(len(probs), size=count, p=probs), probs)
                    for _ in range(3)])


@pytest.fixture(scope="module")
def peaked_row():
    # a few dozen likely tokens (effective support ~35), the rest far below
    return np.random.default_rng(0).normal(size=VOCABULARY) * 3.0


@pytest.mark.parametrize("config", [
    dict(temperature=1.0), dict(temperature=0.7), dict(temperature=1.0, top_k=10),
    dict(temperature=1.3, top_p=0.8), dict(temperature=1.0, top_k=40, top_p=0.6),
    dict(temperature=1.0, top_k=600)])  # a top-k past the candidate list: the whole-row path
def test_draws_follow_the_reference_distribution(peaked_row, config):
    probs = reference(peaked_row, **config)
    samples = draws(peaked_row, **config)
    assert set(np.unique(samples)) <= set(np.flatnonzero(probs))  # never outside the set
    assert total_variation(samples, probs) < 1.3 * sampling_noise(probs) + 0.003


def test_a_top_p_set_past_the_candidates_is_still_exact():
    flat = np.random.default_rng(1).normal(size=VOCABULARY) * 0.05  # nucleus ~1,800 tokens
    probs = reference(flat, 1.0, top_p=0.9)
    assert np.count_nonzero(probs) > 4 * sampling_ops.CANDIDATES
    samples = draws(flat, 1.0, top_p=0.9)
    assert set(np.unique(samples)) <= set(np.flatnonzero(probs))
    assert len(np.unique(samples)) > 4 * sampling_ops.CANDIDATES
    # coarse over this flat a distribution: the mass on the likeliest half of the nucleus
    order = np.argsort(-probs)[:np.count_nonzero(probs) // 2]
    assert abs(np.isin(samples, order).mean() - probs[order].sum()) < 0.02


def test_the_uniforms_are_uniform_and_seeded():
    ops = import_keras().ops
    import jax

    def u(seed):
        return to_numpy(jax.vmap(lambda p: sampling_ops.uniform(
            ops, ops.convert_to_tensor(seed, "int32"), p, 0))(np.arange(100_000, dtype="int32")))

    first, again, other = u(3), u(3), u(4)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert first.min() > 0 and first.max() < 1
    counts = np.histogram(first, bins=20, range=(0, 1))[0]
    assert np.abs(counts / 5000 - 1).max() < 0.06  # ±6% per bin, ~4 standard deviations
    assert abs(np.corrcoef(first[:-1], first[1:])[0, 1]) < 0.02  # neighbours independent


@pytest.mark.parametrize("config", [dict(temperature=1.0), dict(temperature=0.8, top_k=20),
                                    dict(temperature=1.2, top_p=0.9)])
def test_a_sampled_generation_is_scored_exactly_and_split_freely(tiny_lab, config):
    """Same seed, same tokens whatever the compiled calls' sizes (10 steps run as 1+4+5, 30 as
    1+4+16+9); each token's log-probability and rank equal teacher-forced scoring."""
    short = tiny_lab.generate("hello world", max_new_tokens=10, seed=11, **config)
    long = tiny_lab.generate("hello world", max_new_tokens=30, seed=11, **config)
    assert long.token_ids[:len(short.token_ids)] == short.token_ids
    ids = [*long.prompt_token_ids, *long.token_ids]
    scored = decoder(tiny_lab.runtime).score(np.array(ids))
    start = len(long.prompt_token_ids) - 1
    np.testing.assert_allclose(long.logprobs, scored["logprob"][start:], atol=1e-4)
    assert list(long.ranks) == scored["rank"][start:].tolist()
    assert max(long.ranks) > 1  # it sampled
    if "top_k" in config:
        assert max(long.ranks) <= config["top_k"]


def test_a_sampled_run_without_a_seed_records_the_one_it_drew(tiny_lab):
    g = tiny_lab.generate("hello", max_new_tokens=6, temperature=1.0)
    seed = g.metadata["seed"]
    assert isinstance(seed, int)
    again = tiny_lab.generate("hello", max_new_tokens=6, temperature=1.0, seed=seed)
    assert again.token_ids == g.token_ids
