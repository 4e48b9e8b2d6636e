"""One process of tests/test_multiprocess.py: a tiny Gemma on one device (the reference), or
one of two JAX processes (2 simulated CPU devices each) joined by
`gemma_lab.distributed.initialize` into one 4-device mesh.

Usage:
    python tests/multiprocess_worker.py reference WORK_DIR
    python tests/multiprocess_worker.py process ID WORK_DIR COORDINATOR

The reference builds the preset (WORK_DIR/preset, then WORK_DIR/preset.ready), runs it on
one device, and, once process 0 saved the adapter it trained across processes, loads that
adapter on its one device. Each process waits for the preset, then runs the model sharded
over both processes. Each writes WORK_DIR/<role>.json. Every wait has a deadline; the parent
kills every worker as soon as one fails.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

# The single-process distribution test's prompt, texts, tiny model and observations
# (this script's folder is on sys.path when it runs).
from distribution_worker import GREEDY_TOKENS, HPARAMS, PROMPT, SCORED, observe

# (1, 4): the model axis spans both processes (2 devices each), so every sharded matmul
# exchanges data between them; (4, 1): data parallel over both.
MODEL_MESH = (1, 4)
DATA_MESH = (4, 1)
TRAIN = [{"prompt": f"q{i}: numbers {i} ", "response": "the lazy dog."} for i in range(8)]
FINETUNE = dict(rank=2, epochs=1, batch_size=4, learning_rate=1e-2, seed=0, progress=False)
ABLATED = [(0, 1), (1, 5)]
STEER_LAYER, STEER_SCALE = 0, 3.0
ADAPTER = "across-processes"
WAIT_S = 240.0


def steering_vector() -> np.ndarray:
    return np.linspace(-1.0, 1.0, HPARAMS["hidden_dim"]).astype("float32")


def intervened(lab) -> dict:
    """Scores and greedy tokens with heads ablated, and with a steering vector added."""
    from gemma_lab import interventions as iv

    out = {}
    for name, hooks in (("ablate", iv.ablate_heads(ABLATED)),
                        ("steer", iv.add(steering_vector(), STEER_LAYER, STEER_SCALE))):
        with lab.hooks(hooks):
            s = lab.score(SCORED)
            g = lab.generate(PROMPT, max_new_tokens=GREEDY_TOKENS)
        out[name] = {"score_logprobs": list(map(float, s.logprobs)),
                     "greedy_ids": list(map(int, g.token_ids))}
    sae = random_sae()
    features = lab.features(SCORED, sae)
    with lab.hooks(iv.sae_splice(sae)):
        spliced = lab.score(SCORED)
    out["sae"] = {"acts": features.acts.tolist(),
                  "spliced_logprobs": list(map(float, spliced.logprobs))}
    return out


def random_sae():
    """A fixed random JumpReLU SAE on blocks.0.resid_post (64 features)."""
    from gemma_lab.sae import SAE

    rng = np.random.default_rng(0)
    d, width = HPARAMS["hidden_dim"], 64
    return SAE(W_enc=(rng.normal(size=(d, width)) * 0.3).astype("float32"),
               W_dec=(rng.normal(size=(width, d)) * 0.1).astype("float32"),
               b_enc=np.zeros(width, "float32"), b_dec=np.zeros(d, "float32"),
               threshold=np.full(width, 0.05, "float32"), hook="blocks.0.resid_post")


def finetuned(lab) -> dict:
    result = lab.finetune(TRAIN, **FINETUNE)
    return {"loss": list(map(float, result.train_loss)),
            "after": observe(lab, generate=False)}


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} did not appear within {WAIT_S:.0f} s")
        time.sleep(0.2)


def write(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.rename(path)


def reference(work: Path) -> None:
    import jax

    import gemma_lab
    from gemma_lab.testing import tiny_causal_lm

    started = time.perf_counter()
    preset = work / "preset"
    tiny_causal_lm("gemma3", **HPARAMS).save_to_preset(str(preset))
    (work / "preset.ready").touch()
    out: dict = {"devices": jax.device_count(), "processes": jax.process_count()}
    lab = gemma_lab.load(str(preset), progress=False)
    out["info"] = lab.info().to_dict()
    out["base"] = observe(lab)
    out["interventions"] = intervened(lab)
    out["finetune"] = finetuned(lab)
    # The adapter process 0 trained data-parallel across both processes, on this one device.
    wait_for(work / "adapter.ready")
    lab.adapters.load(ADAPTER)
    out["loaded_adapter"] = observe(lab)
    out["seconds"] = round(time.perf_counter() - started, 1)
    write(work / "reference.json", out)


def process(process_id: int, work: Path, coordinator: str) -> None:
    started = time.perf_counter()
    from gemma_lab import distributed

    joined = distributed.initialize(coordinator, 2, process_id, timeout_s=120,
                                    heartbeat_timeout_s=60)
    import gemma_lab
    from gemma_lab.errors import GemmaLabError

    out: dict = {"joined": joined.to_dict(), "join_seconds": round(time.perf_counter()
                                                                   - started, 1)}
    wait_for(work / "preset.ready")
    preset = str(work / "preset")

    try:  # a mesh these 4 devices cannot form
        gemma_lab.load(preset, progress=False, distribution="model_parallel", mesh=(2, 4))
    except GemmaLabError as err:
        out["mesh_error"] = f"{type(err).__name__}: {err}"

    lab = gemma_lab.load(preset, progress=False, distribution="model_parallel",
                         mesh=MODEL_MESH)
    out["model_parallel_info"] = lab.info().to_dict()
    out["model_parallel_info_text"] = str(lab.info())
    out["model_parallel_sharding"] = {
        v.path: str(v.value.sharding.spec) for v in lab.backbone.weights
        if hasattr(v.value.sharding, "spec")}
    out["model_parallel"] = observe(lab)
    out["model_parallel_result_mesh"] = lab.score(SCORED).metadata.get("mesh")
    out["model_parallel_interventions"] = intervened(lab)
    del lab

    lab = gemma_lab.load(preset, progress=False, distribution="data_parallel", mesh=DATA_MESH)
    try:  # a batch the 4-device data axis cannot split
        lab.finetune(TRAIN, **{**FINETUNE, "batch_size": 6})
    except GemmaLabError as err:
        out["batch_size_error"] = f"{type(err).__name__}: {err}"
    out["data_parallel_info"] = lab.info().to_dict()
    out["data_parallel_finetune"] = finetuned(lab)
    lora = next(v for v in lab.backbone.weights if "lora_kernel_a" in v.path)
    out["data_parallel_lora_sharding"] = str(lora.value.sharding)
    if process_id == 0:
        lab.adapters.save(ADAPTER)
        (work / "adapter.ready").touch()
    out["seconds"] = round(time.perf_counter() - started, 1)
    write(work / f"process{process_id}.json", out)


if __name__ == "__main__":
    if sys.argv[1] == "reference":
        reference(Path(sys.argv[2]))
    else:
        process(int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4])
