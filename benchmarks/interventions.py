"""Speed of greedy streaming with interventions in force, as ratios to plain streaming in the
same process.

    python benchmarks/interventions.py [--rounds 3] [--tokens 128] [--backend jax]

Loads the default model once, builds a contrastive steering vector (layer 6), warms each
variant's compiled decode loop up with one stream, then times plain, steered (iv.add at
resid_post of layer 6), head-ablated (iv.ablate_heads on 4 heads) and both, alternating the
order every round so drift on a shared machine hits each variant alike. Prints the median
tok/s of each and its ratio to plain (the issue's bar: steered ≥ 0.8× plain).

A second, steadier measurement times the compiled greedy loop alone: one call of 64 decode
steps per variant, alternating variants call by call (`--chunk-rounds`), so a burst of other
load on the box lands on every variant within seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

PROMPT = "The history of the printing press begins"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--chunk-rounds", type=int, default=8)
    parser.add_argument("--backend", default=os.environ.get("GEMMA_LAB_BACKEND", "jax"))
    args = parser.parse_args()
    os.environ["GEMMA_LAB_BACKEND"] = args.backend

    import gemma_lab
    from gemma_lab import interventions as iv

    lab = gemma_lab.load(progress=False)
    vector = lab.steering_vector(["I am calm, peaceful and happy."],
                                 ["I am angry, furious and upset."], layer=6)
    steer = iv.add(vector, layer=6, scale=4.0)
    ablate = iv.ablate_heads([(3, 0), (5, 1), (9, 2), (12, 3)])
    variants = {"plain": None, "steered": steer, "ablated": ablate, "both": steer | ablate}

    def stream(hooks):
        if hooks is None:
            return sum(1 for _ in lab.stream(PROMPT, max_new_tokens=args.tokens))
        with lab.hooks(hooks):
            return sum(1 for _ in lab.stream(PROMPT, max_new_tokens=args.tokens))

    for hooks in variants.values():  # compile each variant's loop once, untimed
        stream(hooks)
    speeds: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    for round_ in range(args.rounds):
        for name in order if round_ % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            n = stream(variants[name])
            speeds[name].append(n / (time.perf_counter() - started))
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in speeds.items()),
              flush=True)
    medians = {name: statistics.median(values) for name, values in speeds.items()}
    chunks = _chunk_speeds(lab, variants, args.chunk_rounds)
    result = {"backend": lab.backend, "tokens": args.tokens, "rounds": args.rounds,
              "tok_per_s": medians,
              "ratio_to_plain": {k: v / medians["plain"] for k, v in medians.items()},
              "loop_steps_per_s": chunks,
              "loop_ratio_to_plain": {k: v / chunks["plain"] for k, v in chunks.items()}}
    for name, value in medians.items():
        print(f"{name:>8}: {value:6.2f} tok/s  ({value / medians['plain']:.3f}x plain); "
              f"compiled loop {chunks[name]:6.2f} steps/s "
              f"({chunks[name] / chunks['plain']:.3f}x plain)")
    print(json.dumps(result))


def _chunk_speeds(lab, variants, rounds: int) -> dict[str, float]:
    """Median steps/s of one 64-step compiled greedy call per variant, alternating."""
    import numpy as np

    from gemma_lab.decoding import MAX_CHUNK, decoder

    runtime = lab.runtime
    models = {name: decoder(runtime, runtime.check_hooks(hooks)) if hooks is not None
              else decoder(runtime) for name, hooks in variants.items()}
    ids = lab.tokenizer.encode(PROMPT, add_bos=True)
    never = np.asarray([-1], "int32")  # no stop id: every call runs all MAX_CHUNK steps

    def one_call(model) -> float:
        cache = model.prefill(ids, 256, lab.tokenizer.pad_id)
        started = time.perf_counter()
        out = model._greedy(np.asarray([[ids[-1]]], "int32"), cache, np.int32(len(ids) - 1),
                            np.int32(MAX_CHUNK), never)
        np.asarray(out[0])  # wait for the result
        return MAX_CHUNK / (time.perf_counter() - started)

    for model in models.values():
        one_call(model)
    speeds: dict[str, list[float]] = {name: [] for name in models}
    order = list(models)
    for round_ in range(rounds):
        for name in order if round_ % 2 == 0 else order[::-1]:
            speeds[name].append(one_call(models[name]))
    return {name: statistics.median(values) for name, values in speeds.items()}


if __name__ == "__main__":
    main()
