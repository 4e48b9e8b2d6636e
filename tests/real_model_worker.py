"""Runs the real default model on one backend and writes what the tests compare.

Usage: python tests/real_model_worker.py OUT.npz   (backend from GEMMA_LAB_BACKEND)
Keras fixes its backend per process, so each backend gets its own process.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

PROMPTS = ["The capital of France is", "def fibonacci(n):\n    ", "Photosynthesis is the"]
GREEDY_PROMPT = "The capital of France is"
GREEDY_TOKENS = 32


def main(out_path: str) -> None:
    import gemma_lab
    from gemma_lab.backend import to_numpy
    from gemma_lab.reference import keras_hub_greedy_ids

    started = time.perf_counter()
    lab = gemma_lab.load(progress=False)
    load_s = time.perf_counter() - started
    arrays = {}
    for i, prompt in enumerate(PROMPTS):
        ids = np.asarray([lab.tokenizer.encode(prompt, add_bos=True)], dtype="int32")
        hidden = lab.backbone({"token_ids": ids, "padding_mask": np.ones_like(ids)})
        arrays[f"logits_{i}"] = to_numpy(lab.backbone.token_embedding(hidden, reverse=True))[0]
        arrays[f"ids_{i}"] = ids[0]
    g = lab.generate(GREEDY_PROMPT, max_new_tokens=GREEDY_TOKENS)
    reference = keras_hub_greedy_ids(lab.causal_lm, list(g.prompt_token_ids), GREEDY_TOKENS)
    arrays["greedy_ids"] = np.asarray(g.token_ids)
    arrays["keras_hub_ids"] = np.asarray(reference)
    s = lab.score(GREEDY_PROMPT + g.text)
    arrays["score_logprobs"] = np.asarray(s.logprobs)
    np.savez(out_path, **arrays)
    print(json.dumps({"backend": lab.backend, "load_s": load_s, "text": g.text,
                      "finish": g.finish_reason, "tokens_per_s": g.timing["tokens_per_s"]}))


if __name__ == "__main__":
    main(sys.argv[1])
