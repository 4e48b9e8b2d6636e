"""A/B: greedy streaming speed of this checkout against another one, in one run.

    python benchmarks/ab_stream.py --base /path/to/other/checkout [--rounds 3] [--tokens 128]

Each round runs both trees in fresh processes, alternating (A, B, B, A, ...), each loading the
default model (JAX, float32), warming the compiled loop up with one stream, then timing
`--repeats` streams of `--tokens` greedy tokens. Prints each tree's median tok/s and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

PROMPT = "The history of the printing press begins"

_CHILD = f"""
import json, statistics, sys, time
import gemma_lab
lab = gemma_lab.load(progress=False)
tokens, repeats = int(sys.argv[1]), int(sys.argv[2])
list(lab.stream({PROMPT!r}, max_new_tokens=tokens))
speeds = []
for _ in range(repeats):
    started = time.perf_counter()
    n = sum(1 for _ in lab.stream({PROMPT!r}, max_new_tokens=tokens))
    speeds.append(n / (time.perf_counter() - started))
print(json.dumps(speeds))
"""


def _run(tree: Path, tokens: int, repeats: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "GEMMA_LAB_BACKEND": "jax"}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(tokens), str(repeats)], env=env,
                         check=True, capture_output=True, text=True, cwd=tree).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    trees = {"this": Path(__file__).resolve().parents[1], "base": args.base.resolve()}
    speeds: dict[str, list[float]] = {name: [] for name in trees}
    order = list(trees)
    for round_ in range(args.rounds):
        for name in order if round_ % 2 == 0 else order[::-1]:
            speeds[name] += _run(trees[name], args.tokens, args.repeats)
            print(f"round {round_ + 1} {name}: {speeds[name][-args.repeats:]}", flush=True)
    medians = {name: statistics.median(values) for name, values in speeds.items()}
    for name, value in medians.items():
        print(f"{name:>5}: {value:6.2f} tok/s (median of {len(speeds[name])})")
    print(f"ratio this / base: {medians['this'] / medians['base']:.3f}")


if __name__ == "__main__":
    main()
