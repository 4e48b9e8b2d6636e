"""Fuzzing the GGUF reader: crafted mutations of a valid file, each read in a bounded process.

The mutations follow llama.cpp's GGUF parser fixes: forged counts, lengths, element types, dims,
tensor types and offsets, huge alignments, truncations and random header bytes. Every case must
end as a clean read or a `GemmaLabError`; anything else, a hang or a memory blow-up is a bug.
Run it as `python -m gemma_lab.models.gguf_fuzz SEED.gguf --cases 1000` (prints JSON counts).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

_EXTREMES_32 = (0, 1, 2, 3, 7, 9, 13, 31, 33, 255, 1 << 15, (1 << 31) - 1, 1 << 31,
                (1 << 32) - 1)
_EXTREMES_64 = (*_EXTREMES_32, (1 << 40) + 1, 1 << 62, (1 << 63) - 1, 1 << 63, (1 << 64) - 1)


def header_slots(path: str | Path) -> tuple[int, list[tuple[int, int]]]:
    """(data offset, [(byte offset, width)] of every integer / float in the header) of a
    valid GGUF file: the places a forged number does the most damage."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    base = reader.data.ctypes.data
    slots = []
    fields = list(reader.fields.values()) + [t.field for t in reader.tensors]
    for item in fields:
        for part in item.parts:
            if part.dtype.kind in "uif" and part.nbytes in (4, 8) and part.size == 1:
                slots.append((part.ctypes.data - base, part.nbytes))
    return int(reader.data_offset), slots


def mutations(seed_bytes: bytes, data_offset: int, slots: list[tuple[int, int]],
              rng: random.Random) -> Iterator[tuple[str, bytes]]:
    """Endless (strategy, mutated file bytes) pairs derived from one valid GGUF."""
    strategies = ("number", "number", "number", "truncate", "header_bytes", "tensor_bytes",
                  "splice", "append")
    while True:
        data = bytearray(seed_bytes)
        strategy = rng.choice(strategies)
        if strategy == "number":
            offset, width = rng.choice(slots)
            value = rng.choice(_EXTREMES_64 if width == 8 else _EXTREMES_32)
            if rng.random() < 0.3:
                old = int.from_bytes(data[offset:offset + width], "little")
                value = (old + rng.choice((-1, 1, 2, -2, 1 << 16))) % (1 << (8 * width))
            data[offset:offset + width] = value.to_bytes(width, "little")
        elif strategy == "truncate":
            del data[rng.randrange(len(data)):]
        elif strategy == "header_bytes":
            for _ in range(rng.choice((1, 2, 4, 16))):
                data[rng.randrange(data_offset)] = rng.randrange(256)
        elif strategy == "tensor_bytes":
            for _ in range(rng.choice((1, 64, 1024))):
                data[rng.randrange(data_offset, len(data))] = rng.randrange(256)
        elif strategy == "splice":
            start = rng.randrange(data_offset)
            length = rng.randrange(1, 64)
            if rng.random() < 0.5:
                del data[start:start + length]
            else:
                data[start:start] = bytes(rng.randrange(256) for _ in range(length))
        else:
            data += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096)))
        yield strategy, bytes(data)


def read_fully(path: Path) -> None:
    """Everything gemma_lab does with a GGUF short of building Keras layers: parse, rebuild and
    load the tokenizer, dequantise every tensor."""
    import numpy as np

    from gemma_lab.models.gguf_convert import backbone_config
    from gemma_lab.models.gguf_file import read_gguf
    from gemma_lab.models.gguf_tokenizer import sentencepiece_proto

    model = read_gguf(path)
    sentencepiece_proto(model.vocabulary)  # also loads it into SentencePiece
    backbone_config(model.hparams)
    with np.errstate(all="ignore"):  # random bytes dequantise to inf / nan; that is fine
        for name in model.tensor_names:
            model.tensor(name)


class _Timeout(BaseException):
    pass


def _on_alarm(signum: int, frame: object) -> None:
    raise _Timeout


def run_fuzz(seed_path: str | Path, cases: int, seed: int = 0,
             seconds_per_case: int = 20) -> dict[str, object]:
    """Run `cases` mutations of `seed_path` through `read_fully`; count outcomes.

    Outcomes: "ok", "GemmaLabError:<class>", "hang", "memory", "crash:<exception class>".
    Call it in a process whose address space is capped (see `main`) to bound memory.
    """
    from gemma_lab.errors import GemmaLabError

    seed_bytes = Path(seed_path).read_bytes()
    data_offset, slots = header_slots(seed_path)
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    strategies: Counter[str] = Counter()
    crashes: list[str] = []
    signal.signal(signal.SIGALRM, _on_alarm)
    with tempfile.TemporaryDirectory(prefix="gemma_lab_fuzz_") as tmp:
        target = Path(tmp) / "case.gguf"
        stream = mutations(seed_bytes, data_offset, slots, rng)
        for index in range(cases):
            strategy, data = next(stream)
            strategies[strategy] += 1
            target.write_bytes(data)
            signal.alarm(seconds_per_case)
            try:
                read_fully(target)
                outcome = "ok"
            except GemmaLabError as err:
                outcome = f"GemmaLabError:{type(err).__name__}"
            except _Timeout:
                outcome = "hang"
            except MemoryError:
                outcome = "memory"
            except Exception as err:  # the point of fuzzing: record, keep going
                outcome = f"crash:{type(err).__name__}"
                crashes.append(f"case {index} ({strategy}): {type(err).__name__}: {err}"[:300])
            finally:
                signal.alarm(0)
            outcomes[outcome] += 1
    bad = sum(n for k, n in outcomes.items() if not k.startswith(("ok", "GemmaLabError")))
    return {"cases": cases, "outcomes": dict(outcomes), "strategies": dict(strategies),
            "bad": bad, "crashes": crashes[:20],
            "peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> int:
    # VmHWM, not ru_maxrss: ru_maxrss survives exec, so it would report the parent's peak.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("seed_gguf")
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-mb", type=int, default=2048,
                        help="address-space cap for this process (the memory bound)")
    args = parser.parse_args(argv)
    limit = args.memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    report = run_fuzz(args.seed_gguf, args.cases, args.seed)
    print(json.dumps(report, indent=1))
    return 1 if report["bad"] else 0


if __name__ == "__main__":
    sys.exit(main())
