"""Trace overhead on the default model: time of `lab.trace()` on a 128-token text divided by
the time of a plain compiled forward pass (backbone + logits) over the same tokens.

    python benchmarks/trace_overhead.py [--repeats 5] [--tokens 128]

Prints a small table: first call (includes compilation) and median of the warm calls.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

SENTENCES = (
    "The Eiffel Tower was completed in 1889 and stands on the Champ de Mars in Paris. "
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen. "
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n"
    "Rivers carry sediment from mountains to the sea, building deltas over millennia. "
)


def _timed(fn, repeats: int) -> tuple[float, float]:
    started = time.perf_counter()
    fn()
    first = time.perf_counter() - started
    warm = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - started)
    return first, statistics.median(warm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()

    import gemma_lab
    from gemma_lab.backend import compile_function, to_numpy
    from gemma_lab.inspect.trace import tracer_for

    lab = gemma_lab.load(progress=False)
    ids = lab.tokenizer.encode(SENTENCES * 8)[: args.tokens - 1]
    text = lab.tokenizer.decode(ids)
    token_ids = np.asarray([lab.tokenizer.encode(text, add_bos=True)], dtype="int32")
    n = token_ids.shape[1]
    mask = np.ones_like(token_ids)
    backbone = lab.backbone

    def logits_fn(token_ids, padding_mask):
        hidden = backbone({"token_ids": token_ids, "padding_mask": padding_mask})
        return backbone.token_embedding(hidden, reverse=True)

    forward = compile_function(logits_fn, lab.causal_lm)
    tracer = tracer_for(lab.runtime)
    all_layers = tuple(range(backbone.num_layers))
    all_heads = tuple(range(backbone.num_query_heads))
    rows = {
        "forward (backbone + logits)": lambda: to_numpy(forward(token_ids, mask)),
        "score()": lambda: lab.score(text),
        "trace forward only (attention + residual)":
            lambda: to_numpy(tracer.forward(all_layers, all_heads, lab.runtime.active_hooks)(
                token_ids, mask)),
        "trace() all layers and heads": lambda: lab.trace(text),
        "trace(layers=[0], heads=[0])": lambda: lab.trace(text, layers=[0], heads=[0]),
    }
    results = {name: _timed(fn, args.repeats) for name, fn in rows.items()}
    base = results["forward (backbone + logits)"][1]
    print(f"{lab.model_id} on {lab.backend}, {lab.dtype}, {n} tokens, "
          f"median of {args.repeats} warm calls")
    print(f"{'':44} {'first s':>8} {'warm s':>8} {'× forward':>10}")
    for name, (first, warm) in results.items():
        print(f"{name:44} {first:8.3f} {warm:8.3f} {warm / base:10.2f}")


if __name__ == "__main__":
    main()
