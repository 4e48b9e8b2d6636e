"""Runs the intervention layer on the real default model on one backend and writes every
output tests/test_interventions_real.py compares across backends (and against transformers).

Usage: python tests/interventions_worker.py IN.npz OUT.npz   (backend from GEMMA_LAB_BACKEND)
IN.npz holds `vector`: the steering vector every backend adds (the same one, so the steered
runs are comparable). Keras fixes its backend per process, so each backend gets its own process.
The constants below are shared with the test module, which imports them.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

SCORE_TEXT = "The quick brown fox jumps over the lazy dog. Then it ran into the forest"
ABLATED_HEADS = [(0, 0), (3, 2), (9, 1), (14, 3)]
ABLATION_PROMPT = "The capital of France is"
STEER_LAYER = 6
STEER_SCALE = 4.0
STEER_POSITIVE = ["I love this, it is wonderful and great.", "What a joyful, happy day!"]
STEER_NEGATIVE = ["I hate this, it is terrible and awful.", "What a miserable, sad day!"]
STEER_PROMPT = "I think the movie was"
GREEDY_TOKENS = 16
CLEAN = "The Eiffel Tower is in the city of"
CORRUPTED = "The Colosseum is in the city of"
TARGET = " Paris"


def run_all(lab, vector: np.ndarray) -> dict[str, np.ndarray]:
    """Every intervention output, as NumPy arrays (the names the test compares)."""
    from gemma_lab import interventions as iv

    out: dict[str, np.ndarray] = {}
    out["base_logprobs"] = np.asarray(lab.score(SCORE_TEXT).logprobs)
    ablation = iv.ablate_heads(ABLATED_HEADS)  # one set: one compiled program for both calls
    with lab.hooks(ablation):
        out["ablate_logprobs"] = np.asarray(lab.score(SCORE_TEXT).logprobs)
        g = lab.generate(ABLATION_PROMPT, max_new_tokens=GREEDY_TOKENS)
    out["ablate_prompt_ids"] = np.asarray(g.prompt_token_ids)
    out["ablate_greedy"] = np.asarray(g.token_ids)
    out["own_vector"] = np.asarray(
        lab.steering_vector(STEER_POSITIVE, STEER_NEGATIVE, layer=STEER_LAYER))
    steering = iv.add(vector, layer=STEER_LAYER, scale=STEER_SCALE)
    with lab.hooks(steering):
        out["steer_logprobs"] = np.asarray(lab.score(SCORE_TEXT).logprobs)
        g = lab.generate(STEER_PROMPT, max_new_tokens=GREEDY_TOKENS)
    out["steer_prompt_ids"] = np.asarray(g.prompt_token_ids)
    out["steer_greedy"] = np.asarray(g.token_ids)
    for over in ("resid_pre", "heads"):
        r = lab.patch(CLEAN, CORRUPTED, target=TARGET, over=over, progress=False)
        out[f"patch_{over}"] = r.scores
        out[f"patch_{over}_clean"] = np.asarray(r.clean)
        out[f"patch_{over}_corrupted"] = np.asarray(r.corrupted)
    la = lab.logit_attribution(CLEAN, target=TARGET)
    for name in ("embed", "attn", "mlp", "heads", "logit", "direct_sum"):
        out[f"dla_{name}"] = np.asarray(getattr(la, name))
    return out


def main(in_path: str, out_path: str) -> None:
    import gemma_lab

    if os.environ.get("GEMMA_LAB_BACKEND") == "torch":
        import torch

        # One intra-op thread: on a small shared CPU torch's multi-threaded elementwise
        # kernels run ~100x slower (runtime only; the tolerances are the same).
        torch.set_num_threads(1)
    started = time.perf_counter()
    lab = gemma_lab.load(progress=False)
    load_s = time.perf_counter() - started
    vector = np.load(in_path)["vector"]
    started = time.perf_counter()
    arrays = run_all(lab, vector)
    np.savez(out_path, **arrays)
    print(json.dumps({"backend": lab.backend, "load_s": load_s,
                      "run_s": time.perf_counter() - started}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
