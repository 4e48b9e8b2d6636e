"""Long contexts: peak memory and time of scoring and of prefill + generate at thousands of
tokens, Gemma 3 270M (the default model), one fresh process per case.

    python benchmarks/long_context.py [--cases score:4000,one-call-score:4000,generate:12000,...]
                                      [--new-tokens 32] [--out benchmarks/long_context.md]

A case is `score:N` (`lab.score` of an N-token text), `generate:N` (an N-token prompt,
then `--new-tokens` greedy tokens) or `one-call-score:N` (`score:N` with the chunking
turned off: the whole text in one call, as before issue 18). Each runs in its own
subprocess so its peak RSS (`ru_maxrss`) is its own; the time excludes loading the model
and includes compilation (a researcher's first call). Issue 18's targets: score 4k
tokens under 6 GB and 20 s; prefill 12k and generate under 6 GB and 120 s.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

CASES = "score:4000,one-call-score:4000,generate:12000,generate:24000"
PARAGRAPH = (
    "The history of the printing press begins in the fifteenth century, when movable type "
    "made books cheaper to produce than ever before. Within decades, presses spread across "
    "Europe, and the number of printed works grew from thousands to millions. "
)


def text_of(tokenizer, n: int) -> str:
    """A text of about `n` tokens (repeated prose; re-encoding a cut merges a few tokens,
    so the cut is widened once by what that lost)."""
    unit = tokenizer.encode(PARAGRAPH)
    ids = unit * (2 * n // len(unit) + 2)
    text = tokenizer.decode(ids[:n])
    lost = n - len(tokenizer.encode(text))
    return tokenizer.decode(ids[:n + max(lost, 0)])


def worker(case: str, new_tokens: int) -> dict:
    import gemma_lab

    kind, n = case.split(":")
    lab = gemma_lab.load(progress=False)
    text = text_of(lab.runtime.tokenizer, int(n))
    tokens = len(lab.runtime.tokenizer.encode(text))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    started = time.perf_counter()
    if kind == "one-call-score":
        from gemma_lab.decoding import decoder

        decoder(lab.runtime).long_tokens = 10**9
    if kind in ("score", "one-call-score"):
        result = lab.score(text)
        detail = f"perplexity {result.perplexity:.2f}"
    else:
        result = lab.generate(text, max_new_tokens=new_tokens)
        detail = f"{len(result.steps)} new tokens, prefill {result.timing['prefill_s']:.1f} s"
    seconds = time.perf_counter() - started
    return {"case": case, "tokens": tokens, "seconds": round(seconds, 1),
            "peak_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "loaded_gb": round(before, 2), "detail": detail}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=CASES)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--out", default=str(Path(__file__).with_name("long_context.md")))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.new_tokens)))
        return
    rows = []
    for case in args.cases.split(","):
        done = subprocess.run([sys.executable, __file__, "--worker", case, "--new-tokens",
                               str(args.new_tokens)], capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            rows.append({"case": case, "detail": f"failed (exit {done.returncode})"})
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    lines = ["| case | tokens | time (s) | peak RSS (GB) | after load (GB) | detail |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r.get('tokens', '')} | {r.get('seconds', '')} | "
              f"{r.get('peak_gb', '')} | {r.get('loaded_gb', '')} | {r['detail']} |"
              for r in rows]
    table = "\n".join(lines)
    print(table)
    Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
