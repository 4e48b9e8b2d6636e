"""Accuracy of the reduced-precision weights (`load(dtype=...)`) on the real default model:
teacher-forced log-probabilities on fixed texts against float32.

The bounds are the measured numbers (README "Performance") with a stated margin: 1.5x the
measured max and mean |Δ logprob|, and at most two more top-1 disagreements than measured
(a broken cast or quantizer moves log-probabilities by whole nats and flips most argmaxes).
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

import gemma_lab

TEXTS = (
    "The Eiffel Tower was completed in 1889 and stands on the Champ de Mars in Paris.",
    "def add(a, b):\n    return a + b\n",
)
# dtype: (max |Δ logprob| nats, mean |Δ logprob| nats, equal top-1 predictions of 35).
# Measured on JAX: bfloat16 0.084, 0.020, 34/35; int8 1.011, 0.167, 31/35.
BOUNDS = {"bfloat16": (0.13, 0.03, 32), "int8": (1.5, 0.25, 29)}


def _logprobs_and_top1(lab) -> tuple[np.ndarray, np.ndarray]:
    scores = [lab.score(text) for text in TEXTS]
    logprobs = np.concatenate([np.asarray(s.logprobs) for s in scores])
    top1 = np.concatenate([[step.top_k_ids[0] for step in s.steps] for s in scores])
    return logprobs, top1


@pytest.mark.real_model
@pytest.mark.parametrize("dtype", sorted(BOUNDS))
def test_reduced_precision_scores_stay_close_to_float32(default_lab, dtype):
    reference, reference_top1 = _logprobs_and_top1(default_lab)
    lab = gemma_lab.load(dtype=dtype, progress=False)
    try:
        assert lab.info().dtype == dtype
        logprobs, top1 = _logprobs_and_top1(lab)
    finally:
        del lab
        gc.collect()
    difference = np.abs(logprobs - reference)
    max_bound, mean_bound, agree_bound = BOUNDS[dtype]
    agree = int(np.sum(top1 == reference_top1))
    print(f"\n{dtype} vs float32: max |Δ logprob| {difference.max():.3f}, mean "
          f"{difference.mean():.4f}, top-1 equal {agree}/{len(top1)}")
    assert np.all(np.isfinite(logprobs))
    assert difference.max() <= max_bound, difference.max()
    assert difference.mean() <= mean_bound, difference.mean()
    assert agree >= agree_bound, (agree, len(top1))
