"""Runs a tiny Gemma on one device and sharded over a simulated 8-device CPU mesh, and writes
what tests/test_distribution.py compares.

Usage: python tests/distribution_worker.py OUT.json
The parent sets XLA_FLAGS=--xla_force_host_platform_device_count=8 before JAX starts, which
is why this runs in its own process.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time

from gemma_lab.decoding import bucket_length

PROMPT = "the quick brown fox"
SCORED = "hello world, this is a tiny corpus for a tiny gemma."
GREEDY_TOKENS = 8
# On the (2, 4) mesh the 8 query heads shard over the model axis; the 2 key/value heads do
# not divide it and stay replicated on that axis (as Gemma's single key/value head must).
MESH = (2, 4)
HPARAMS = dict(num_query_heads=8, num_key_value_heads=2, hidden_dim=32, head_dim=8)
TRAIN = [{"prompt": f"q{i}: numbers {i} ", "response": "the lazy dog."} for i in range(16)]
FINETUNE = dict(rank=2, epochs=1, batch_size=8, learning_rate=1e-2, seed=0, progress=False)


def observe(lab, generate: bool = True) -> dict:
    """Next-token logits and greedy decoding (the session's compiled prefill / step) and
    teacher-forced scoring (its compiled forward) of one session."""
    s = lab.score(SCORED)
    seen = {"score_logprobs": list(map(float, s.logprobs)),
            "score_ranks": list(map(int, s.ranks))}
    if generate:
        ids = lab.tokenizer.encode(PROMPT, add_bos=True)
        # The bucket generate() uses too, so both share one compiled prefill and step.
        total = bucket_length(len(ids) + GREEDY_TOKENS, lab.context_length)
        cache = lab.compiled.prefill(ids, total, lab.tokenizer.pad_id)
        stats, _ = lab.compiled.step(ids[-1], cache, len(ids) - 1)
        g = lab.generate(PROMPT, max_new_tokens=GREEDY_TOKENS)
        seen.update(logits=stats["logits"].tolist(), greedy_ids=list(map(int, g.token_ids)),
                    greedy_logprobs=list(map(float, g.logprobs)))
    return seen


def shardings(lab) -> dict:
    return {v.path: str(v.value.sharding.spec) for v in lab.backbone.weights
            if hasattr(v.value.sharding, "spec")}


def main(out_path: str) -> None:
    import jax

    import gemma_lab
    from gemma_lab.errors import GemmaLabError
    from gemma_lab.testing import tiny_causal_lm

    timings = {}

    def lap(name: str) -> None:
        timings[name] = round(time.perf_counter() - started - sum(timings.values()), 2)

    started = time.perf_counter()
    out: dict = {"devices": len(jax.devices())}
    preset = tempfile.mkdtemp(prefix="gemma_lab_dist_")
    tiny_causal_lm("gemma3", **HPARAMS).save_to_preset(preset)
    lap("start")

    single = gemma_lab.load(preset, progress=False)
    out["single"] = observe(single)
    lap("single")
    model_parallel = gemma_lab.load(preset, progress=False, distribution="model_parallel",
                                    mesh=MESH)
    out["model_parallel"] = observe(model_parallel)
    out["model_parallel_sharding"] = shardings(model_parallel)
    out["model_parallel_info"] = model_parallel.info().to_dict()
    out["model_parallel_info_text"] = str(model_parallel.info())
    lap("model_parallel")
    data_parallel = gemma_lab.load(preset, progress=False, distribution="data_parallel")
    out["data_parallel_info"] = data_parallel.info().to_dict()
    try:
        data_parallel.finetune(TRAIN, **{**FINETUNE, "batch_size": 3})
    except GemmaLabError as err:
        out["batch_size_error"] = f"{type(err).__name__}: {err}"

    for name, lab in (("single", single), ("data_parallel", data_parallel),
                      ("model_parallel", model_parallel)):
        result = lab.finetune(TRAIN, **FINETUNE)
        out[f"{name}_loss"] = list(map(float, result.train_loss))
        out[f"{name}_after"] = observe(lab, generate=False)
        lora = next(v for v in lab.backbone.weights if "lora_kernel_a" in v.path)
        out[f"{name}_lora_sharding"] = str(lora.value.sharding)
        lap(f"{name}_finetune")
    out["timings"] = timings
    with open(out_path, "w") as handle:
        json.dump(out, handle)


if __name__ == "__main__":
    main(sys.argv[1])
