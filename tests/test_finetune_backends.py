"""LoRA fine-tuning on the TensorFlow and torch backends (JAX is covered by test_finetune.py).

Each backend runs in its own process (Keras fixes the backend per process). Run as a script,
this file is that worker:
    GEMMA_LAB_BACKEND=torch GEMMA_LAB_CACHE=DIR python tests/test_finetune_backends.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

DATA = [{"prompt": "the quick brown", "response": " fox jumps"},
        {"prompt": "hello", "response": " world, this is a tiny corpus."}] * 4
TEXT = "the quick brown fox jumps"


def _logits(lab) -> np.ndarray:
    ids = np.asarray([lab.tokenizer.encode(TEXT, add_bos=True)], dtype="int32")
    from gemma_lab.backend import to_numpy

    out = lab.causal_lm({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    return to_numpy(out).astype("float64")


def _worker() -> None:
    """Fine-tune a tiny Gemma 3 here, save the adapter, reload it, and report."""
    from gemma_lab.testing import tiny_session

    lab = tiny_session("gemma3")
    base = _logits(lab)
    result = lab.finetune(DATA, rank=2, epochs=3, learning_rate=1e-2, batch_size=4,
                          progress=False, seed=0)
    tuned = _logits(lab)
    lab.adapters.save("backend-check")
    lab.adapters.unload()
    unloaded = _logits(lab)
    lab.adapters.load("backend-check")
    reloaded = _logits(lab)
    print(json.dumps({
        "backend": lab.backend,
        "train_loss": list(result.train_loss),
        "stop_reason": result.stop_reason,
        "tuned_moved": float(np.abs(tuned - base).max()),
        "unload_restores": float(np.abs(unloaded - base).max()),
        "reload_reproduces": float(np.abs(reloaded - tuned).max()),
        "generates": len(lab.generate("hello", max_new_tokens=3).token_ids),
    }))


@pytest.mark.slow
def test_lora_trains_saves_and_reloads_on_tensorflow_and_torch(tmp_path):
    runs = {}
    for backend in ("tensorflow", "torch"):
        env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
        env.update(GEMMA_LAB_BACKEND=backend, GEMMA_LAB_CACHE=str(tmp_path / backend))
        runs[backend] = subprocess.Popen([sys.executable, __file__], env=env, text=True,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for backend, process in runs.items():
        stdout, stderr = process.communicate(timeout=900)
        assert process.returncode == 0, f"{backend}:\n{stderr[-4000:]}"
        report = json.loads(stdout.strip().splitlines()[-1])
        print(backend, report)
        assert report["backend"] == backend and report["stop_reason"] == "completed"
        losses = report["train_loss"]
        assert len(losses) == 6 and losses[-1] < losses[0]
        assert report["tuned_moved"] > 1e-4  # the adapter changed the model
        assert report["unload_restores"] <= 1e-5 and report["reload_reproduces"] <= 1e-5
        assert report["generates"] >= 1


if __name__ == "__main__":
    _worker()
