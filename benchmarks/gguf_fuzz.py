"""GGUF fuzz run: thousands of crafted mutations of tiny valid GGUFs, outcome counts per seed.

    .venv/bin/python benchmarks/gguf_fuzz.py --cases 1000      # per seed file, 6 seeds

Each seed (gemma / gemma2 / gemma3, F32 and Q8_0) is mutated in a child process capped at
--memory-mb of address space with a per-case alarm (gemma_lab.models.gguf_fuzz). Exits 1 if any
case ended in something other than a clean read or a GemmaLabError.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=1000, help="mutations per seed file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-mb", type=int, default=2048)
    args = parser.parse_args()

    from gemma_lab.testing import tiny_gguf

    directory = Path(tempfile.mkdtemp(prefix="gemma_lab_fuzz_seeds_"))
    total_bad = 0
    totals: dict[str, int] = {}
    for architecture in ("gemma", "gemma2", "gemma3"):
        for quantization in ("F32", "Q8_0"):
            seed_path = tiny_gguf(architecture, quantization, directory=directory)
            run = subprocess.run(
                [sys.executable, "-m", "gemma_lab.models.gguf_fuzz", str(seed_path),
                 "--cases", str(args.cases), "--seed", str(args.seed),
                 "--memory-mb", str(args.memory_mb)],
                capture_output=True, text=True,
            )
            if not run.stdout.strip():
                print(f"{seed_path.name}: fuzz process died (rc={run.returncode})\n{run.stderr}")
                total_bad += args.cases
                continue
            report = json.loads(run.stdout)
            total_bad += report["bad"]
            for outcome, count in report["outcomes"].items():
                totals[outcome] = totals.get(outcome, 0) + count
            print(f"{seed_path.name:28} {json.dumps(report['outcomes'])} "
                  f"peak RSS {report['peak_rss_mb']} MB")
            for crash in report["crashes"]:
                print("   ", crash)
    print(f"total: {json.dumps(totals)}; bad outcomes: {total_bad}")
    return 1 if total_bad else 0


if __name__ == "__main__":
    sys.exit(main())
