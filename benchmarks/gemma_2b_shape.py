"""Does a Gemma 2B-shaped model run on a laptop? Peak memory and decode speed of keras-hub's
GemmaBackbone with gemma_2b_en's hyper-parameters and random weights (built locally, nothing
downloaded), decoded with gemma_lab's compiled prefill / step, plus an estimate for 7B.

    python benchmarks/gemma_2b_shape.py [--dtype bfloat16] [--tokens 16] [--out FILE.json]

The estimate for gemma_7b_en scales the measurement: weights by parameter count (the formula
is checked against the built 2B model), decode speed by weight bytes (single-stream decoding
reads every weight once per token, so it is memory-bandwidth bound).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

# keras-hub presets gemma_2b_en / gemma_7b_en (GemmaBackbone config; intermediate_dim is
# keras-hub's, twice the width of each gate).
GEMMA_2B = dict(vocabulary_size=256000, num_layers=18, num_query_heads=8, num_key_value_heads=1,
                hidden_dim=2048, intermediate_dim=32768, head_dim=256)
GEMMA_7B = dict(vocabulary_size=256000, num_layers=28, num_query_heads=16,
                num_key_value_heads=16, hidden_dim=3072, intermediate_dim=49152, head_dim=256)
BYTES = {"float32": 4, "bfloat16": 2, "int8": 1}
GIB = 2**30


def parameter_count(hp: dict) -> int:
    """Parameters of a (Gemma 1) GemmaBackbone with these hyper-parameters."""
    hidden, head_dim, ffw = hp["hidden_dim"], hp["head_dim"], hp["intermediate_dim"] // 2
    attention = hidden * head_dim * (2 * hp["num_query_heads"] + 2 * hp["num_key_value_heads"])
    block = attention + 3 * hidden * ffw + 2 * hidden  # q, k, v, out; gate, up, down; 2 norms
    return hp["vocabulary_size"] * hidden + hp["num_layers"] * block + hidden


def kv_cache_bytes(hp: dict, tokens: int, dtype: str) -> int:
    return 2 * hp["num_layers"] * hp["num_key_value_heads"] * hp["head_dim"] * tokens * BYTES[dtype]


def current_rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--tokens", type=int, default=16, help="tokens to decode")
    parser.add_argument("--prompt-tokens", type=int, default=8)
    parser.add_argument("--out", help="also write the numbers as JSON here")
    args = parser.parse_args()

    from gemma_lab.backend import import_keras
    from gemma_lab.decoding import CompiledModel, bucket_length

    keras = import_keras()
    import keras_hub

    started = time.perf_counter()
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GemmaBackbone(**GEMMA_2B, dtype=args.dtype)
    causal_lm = keras_hub.models.GemmaCausalLM(backbone=backbone)
    build_s = time.perf_counter() - started
    params = int(backbone.count_params())
    assert params == parameter_count(GEMMA_2B), (params, parameter_count(GEMMA_2B))
    rss_after_build = current_rss()

    model = CompiledModel(causal_lm, top_k=5)
    prompt = np.random.default_rng(0).integers(3, 1000, size=args.prompt_tokens).tolist()
    total = bucket_length(args.prompt_tokens + args.tokens)
    started = time.perf_counter()
    cache = model.prefill([2, *prompt], total, 0)
    token, index = prompt[-1], len(prompt)
    step_s = []
    for _ in range(args.tokens):
        step_started = time.perf_counter()
        stats, cache = model.step(token, cache, index)
        step_s.append(time.perf_counter() - step_started)
        token, index = int(stats["top_ids"][0]), index + 1
    first_token_s = time.perf_counter() - started - sum(step_s[1:])
    warm = step_s[1:] or step_s
    tokens_per_s = len(warm) / sum(warm)

    weights = params * BYTES[args.dtype]
    params_7b = parameter_count(GEMMA_7B)
    overhead = peak_rss() - weights  # runtime, compiled code, cache, temporaries
    report = {
        "model": "gemma_2b_en shape (random weights)",
        "backend": keras.config.backend(),
        "dtype": args.dtype,
        "parameters": params,
        "weights_gib": round(weights / GIB, 2),
        "build_s": round(build_s, 1),
        "rss_after_build_gib": round(rss_after_build / GIB, 2),
        "peak_rss_gib": round(peak_rss() / GIB, 2),
        "prefill_and_first_step_s": round(first_token_s, 1),
        "decode_tokens_per_s": round(tokens_per_s, 2),
        "decoded_tokens": args.tokens,
        "estimate_7b": {
            "parameters": params_7b,
            "weights_gib": {d: round(params_7b * b / GIB, 1) for d, b in BYTES.items()},
            "kv_cache_gib_per_8k_tokens": round(
                kv_cache_bytes(GEMMA_7B, 8192, args.dtype) / GIB, 2),
            f"peak_rss_gib_{args.dtype}": round(
                (params_7b * BYTES[args.dtype] + overhead) / GIB, 1),
            "decode_tokens_per_s": round(tokens_per_s * params / params_7b, 2),
        },
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
