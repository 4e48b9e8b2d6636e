"""Everything the real-model tests compare across Keras backends, run on one backend.

Usage: python tests/real_model_worker.py OUT.npz   (backend from GEMMA_LAB_BACKEND)

Keras fixes its backend per process, so tensorflow and torch each get one worker process
(started in the background when the test session begins, see conftest.py `backend_runs`),
which loads the default model once and runs both halves:
- `run_model`: keras-hub's own logits for a few prompts, a greedy generation with its
  per-token statistics and keras-hub's `generate` of the same prompt, the teacher-forced
  score of the generated ids, and keras-hub's logits of those ids (the NumPy reference the
  tests compute softmax, ranks, entropy and top-k from);
- `run_interventions`: head ablation, steering (with this backend's own steering vector),
  activation patching and direct logit attribution.
JAX runs the same two functions in the test process on the shared `default_lab`.
The constants below are the ones the references (transformers, NumPy) use.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

# --- run_model ---------------------------------------------------------------------------------
PROMPTS = ["The capital of France is", "def fibonacci(n):\n    ", "Photosynthesis is the"]
GREEDY_PROMPT = "The capital of France is"
GREEDY_TOKENS = 32

# --- run_interventions -------------------------------------------------------------------------
SCORE_TEXT = "The quick brown fox jumps over the lazy dog. Then it ran into the forest"
ABLATED_HEADS = [(0, 0), (3, 2), (9, 1), (14, 3)]
ABLATION_PROMPT = "The capital of France is"
STEER_LAYER = 6
STEER_SCALE = 4.0
STEER_POSITIVE = ["I love this, it is wonderful and great.", "What a joyful, happy day!"]
STEER_NEGATIVE = ["I hate this, it is terrible and awful.", "What a miserable, sad day!"]
STEER_PROMPT = "I think the movie was"
INTERVENTION_TOKENS = 16
CLEAN = "The Eiffel Tower is in the city of"
CORRUPTED = "The Colosseum is in the city of"
TARGET = " Paris"


def _stats(prefix: str, record) -> dict[str, np.ndarray]:
    """A generation's or score's per-token statistics as arrays."""
    return {
        f"{prefix}_ids": np.asarray(record.token_ids),
        f"{prefix}_logprobs": np.asarray(record.logprobs),
        f"{prefix}_ranks": np.asarray(record.ranks),
        f"{prefix}_entropy": np.asarray(record.entropy),
        f"{prefix}_top_ids": np.asarray([s.top_k_ids for s in record.steps]),
        f"{prefix}_top_probs": np.asarray([[p for _, p in s.top_k] for s in record.steps]),
    }


def run_model(lab) -> dict[str, np.ndarray]:
    """keras-hub's logits and greedy ids next to gemma_lab's generation and score."""
    from gemma_lab.backend import to_numpy
    from gemma_lab.reference import keras_hub_greedy_ids
    from gemma_lab.scoring import score_text

    def keras_hub_logits(ids):
        ids = np.asarray([ids], dtype="int32")
        hidden = lab.backbone({"token_ids": ids, "padding_mask": np.ones_like(ids)})
        return to_numpy(lab.backbone.token_embedding(hidden, reverse=True))[0]

    out: dict[str, np.ndarray] = {}
    for i, prompt in enumerate(PROMPTS):
        ids = lab.tokenizer.encode(prompt, add_bos=True)
        out[f"logits_{i}"] = keras_hub_logits(ids)
        out[f"ids_{i}"] = np.asarray(ids)
    g = lab.generate(GREEDY_PROMPT, max_new_tokens=GREEDY_TOKENS)
    prompt_ids = list(g.prompt_token_ids)
    out["prompt_ids"] = np.asarray(prompt_ids)
    out["keras_hub_ids"] = np.asarray(
        keras_hub_greedy_ids(lab.causal_lm, prompt_ids, GREEDY_TOKENS))
    out.update(_stats("gen", g))
    full = prompt_ids + list(g.token_ids)
    out.update(_stats("score", score_text(lab.runtime, GREEDY_PROMPT + g.text, full)))
    # The rows that predict each generated token (the Gemma 3 270M GGUF has no final
    # soft cap, so these are the logits the model samples from).
    out["greedy_logits"] = keras_hub_logits(full)[len(prompt_ids) - 1:len(full) - 1]
    return out


def run_interventions(lab) -> dict[str, np.ndarray]:
    """Every intervention output, as NumPy arrays (the names the test compares)."""
    from gemma_lab import interventions as iv

    out: dict[str, np.ndarray] = {}
    out["base_logprobs"] = np.asarray(lab.score(SCORE_TEXT).logprobs)
    # one hook set per intervention: one compiled program for its score and its generate
    out.update(_under(lab, "ablate", iv.ablate_heads(ABLATED_HEADS), ABLATION_PROMPT))
    vector = np.asarray(lab.steering_vector(STEER_POSITIVE, STEER_NEGATIVE, layer=STEER_LAYER))
    out["own_vector"] = vector
    out.update(_under(lab, "steer", iv.add(vector, layer=STEER_LAYER, scale=STEER_SCALE),
                      STEER_PROMPT))
    for over in ("resid_pre", "heads"):
        r = lab.patch(CLEAN, CORRUPTED, target=TARGET, over=over, progress=False)
        out[f"patch_{over}"] = r.scores
        out[f"patch_{over}_ids"] = np.asarray(r.token_ids)
        out[f"patch_{over}_clean"] = np.asarray(r.clean)
        out[f"patch_{over}_corrupted"] = np.asarray(r.corrupted)
    la = lab.logit_attribution(CLEAN, target=TARGET)
    for name in ("embed", "attn", "mlp", "heads", "logit", "direct_sum"):
        out[f"dla_{name}"] = np.asarray(getattr(la, name))
    return out


def _under(lab, name: str, hooks, prompt: str) -> dict[str, np.ndarray]:
    """SCORE_TEXT's log-probabilities and `prompt`'s greedy ids under `hooks`, and the greedy
    ids without them (`{name}_logprobs`, `{name}_prompt_ids`, `{name}_greedy`,
    `base_{name}_greedy`)."""
    with lab.hooks(hooks):
        logprobs = np.asarray(lab.score(SCORE_TEXT).logprobs)
        g = lab.generate(prompt, max_new_tokens=INTERVENTION_TOKENS)
    base = lab.generate(prompt, max_new_tokens=INTERVENTION_TOKENS)
    return {f"{name}_logprobs": logprobs, f"{name}_prompt_ids": np.asarray(g.prompt_token_ids),
            f"{name}_greedy": np.asarray(g.token_ids),
            f"base_{name}_greedy": np.asarray(base.token_ids)}


def main(out_path: str) -> None:
    import gemma_lab

    if os.environ.get("GEMMA_LAB_BACKEND") == "torch":
        import torch

        # One intra-op thread: on a small shared CPU torch's multi-threaded elementwise
        # kernels run ~100x slower (runtime only; the tolerances are the same).
        torch.set_num_threads(1)
    started = time.perf_counter()
    lab = gemma_lab.load(progress=False)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    arrays = run_model(lab)
    model_s = time.perf_counter() - started
    started = time.perf_counter()
    arrays.update(run_interventions(lab))
    np.savez(out_path, **arrays)
    print(json.dumps({"backend": lab.backend, "load_s": load_s, "model_s": model_s,
                      "interventions_s": time.perf_counter() - started}))


if __name__ == "__main__":
    main(sys.argv[1])
