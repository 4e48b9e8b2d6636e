"""Decode speed, load time, first token, fine-tune speed and peak memory of gemma_lab on every
backend and dtype, next to llama.cpp (llama-cpp-python) and transformers on the same GGUF.

    python benchmarks/run.py [--tokens 128] [--backends jax,tensorflow,torch]
                             [--dtypes float32,bfloat16,int8] [--no-peers] [--cold]
                             [--out benchmarks/results.md]

Each engine runs in its own subprocess (Keras fixes its backend per process), on the same
prompt, greedy, for the same number of new tokens. Prints a markdown table and writes it to
--out. Ratios are computed inside one run; on a shared machine absolute numbers move with
the load, ratios much less.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROMPT = "The history of the printing press begins"
SCORE_TEXT = (
    "The Eiffel Tower was completed in 1889. Water boils at 100 degrees Celsius at sea level. "
    "def add(a, b):\n    return a + b\n"
)
FINETUNE_DATA = [
    {"prompt": f"Q: What is {a} plus {b}?\nA:", "response": f" {a + b}"}
    for a in range(4) for b in range(4)
]


THREADS = 2  # every engine: this many CPU cores (affinity) and compute threads


def _pin(threads: int = THREADS) -> str:
    """Pin this worker to `threads` CPU cores and ask every runtime for that many compute
    threads (XLA / TensorFlow size their pools from the affinity mask; torch, OpenMP and
    llama.cpp take a count). Called first in every worker, so all engines run alike."""
    cores = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cores)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                 "TF_NUM_INTRAOP_THREADS"):
        os.environ[name] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    return f"cores {','.join(map(str, cores))}, {threads} threads"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _best(fn, repeats: int) -> float:
    """Fastest of `repeats` timed calls of fn() -> tokens, as tokens per second."""
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        tokens = fn()
        rates.append(tokens / (time.perf_counter() - started))
    return max(rates)


# --- workers (one process each) --------------------------------------------------------------
def worker_gemma_lab(backend: str, dtypes: list[str], tokens: int, repeats: int,
                     extras: bool) -> list[dict]:
    started = time.perf_counter()
    import gemma_lab
    from gemma_lab.backend import import_keras

    gemma_lab.set_backend(backend)
    import_keras()
    if backend == "torch":
        import torch

        torch.set_num_threads(THREADS)
    import keras_hub  # noqa: F401  (load() imports it; timed here as part of the imports)

    imports_s = time.perf_counter() - started
    rows = []
    for number, dtype in enumerate(dtypes):
        try:
            rows.append(_measure_dtype(backend, dtype, tokens, repeats, extras and number == 0,
                                       time.perf_counter()))
            if number == 0:
                rows[-1]["imports_s"] = imports_s
        except Exception as err:  # report the others; one dtype failing is a result too
            print(f"{backend} {dtype}: {type(err).__name__}: {err}", file=sys.stderr)
    return rows


def _measure_dtype(backend: str, dtype: str, tokens: int, repeats: int, extras: bool,
                   load_started: float) -> dict:
    import gemma_lab

    lab = gemma_lab.load(dtype=dtype, progress=False)
    loaded = time.perf_counter()
    stream = lab.stream(PROMPT, max_new_tokens=tokens)
    next(iter(stream))
    first_token = time.perf_counter()
    stream.run()
    row = {
        "engine": "gemma_lab", "backend": backend, "dtype": dtype,
        "load_s": loaded - load_started, "load_to_first_token_s": first_token - load_started,
    }
    row.update(_decode_rates(lab, tokens, repeats))
    if extras:
        row["finetune_tokens_per_s"] = _finetune_rate(lab)
    row["peak_rss_mb"] = _peak_rss_mb()
    return row


def _decode_rates(lab, tokens: int, repeats: int) -> dict:
    score = lab.score(SCORE_TEXT)
    return {
        "generate": _best(
            lambda: len(lab.generate(PROMPT, max_new_tokens=tokens).steps), repeats),
        "stream": _best(
            lambda: sum(1 for _ in lab.stream(PROMPT, max_new_tokens=tokens)), repeats),
        "sampled": _best(lambda: len(lab.generate(
            PROMPT, max_new_tokens=tokens, temperature=0.8, top_p=0.95, seed=1).steps),
            repeats),
        # 8 prompts in one batched decode (`lab.generate([...])`): tokens of all rows / s.
        "batch8": _best(lambda: sum(len(g.steps) for g in lab.generate(
            [PROMPT] * 8, max_new_tokens=tokens, progress=False)), repeats),
        "keras_hub": _keras_hub_generate(lab, tokens, repeats),
        "score_logprobs": [float(x) for x in score.logprobs],
        "score_top1": [int(s.top_k_ids[0]) for s in score.steps],
    }


def _keras_hub_generate(lab, tokens: int, repeats: int) -> float:
    causal_lm = lab.causal_lm
    causal_lm.compile(sampler="greedy")
    length = len(lab.tokenizer.encode(PROMPT, add_bos=True)) + tokens

    def run() -> int:
        causal_lm.generate(PROMPT, max_length=length, stop_token_ids=None)
        return tokens

    run()  # compile
    return _best(run, repeats)


def _finetune_rate(lab) -> float:
    started = time.perf_counter()
    lab.finetune(FINETUNE_DATA, rank=4, epochs=1, batch_size=4, max_length=32, progress=False)
    elapsed = time.perf_counter() - started
    started = time.perf_counter()
    lab.finetune(FINETUNE_DATA, rank=4, epochs=1, batch_size=4, max_length=32, progress=False)
    warm = time.perf_counter() - started
    lab.adapters.unload()
    tokens = sum(len(lab.tokenizer.encode(d["prompt"] + d["response"])) + 1
                 for d in FINETUNE_DATA)
    return tokens / min(elapsed, warm)


def _gguf_path() -> Path:
    from gemma_lab.models.default_model import default_gguf_path

    return default_gguf_path()


def worker_llama_cpp(tokens: int, repeats: int) -> list[dict]:
    from llama_cpp import Llama

    started = time.perf_counter()
    llm = Llama(model_path=str(_gguf_path()), n_threads=THREADS, n_ctx=512, verbose=False)
    loaded = time.perf_counter() - started

    def run() -> int:
        out = llm.create_completion(PROMPT, max_tokens=tokens, temperature=0.0, top_k=1)
        return out["usage"]["completion_tokens"]

    run()
    return [{"engine": "llama.cpp", "backend": f"cpu, {THREADS} threads", "dtype": "Q4_K_M",
             "load_s": loaded, "generate": _best(run, repeats), "peak_rss_mb": _peak_rss_mb()}]


def worker_transformers(tokens: int, repeats: int) -> list[dict]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(THREADS)
    path = _gguf_path()
    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    loaded = time.perf_counter() - started
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids

    def run() -> int:
        with torch.inference_mode():
            model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        return tokens

    run()
    return [{"engine": "transformers", "backend": f"torch, {THREADS} threads", "dtype": "float32",
             "load_s": loaded, "generate": _best(run, repeats), "peak_rss_mb": _peak_rss_mb()}]


def worker_cold_load() -> list[dict]:
    """Convert the GGUF into an empty cache, then load it again from that cache."""
    import tempfile

    gguf = _gguf_path()
    with tempfile.TemporaryDirectory() as cache:
        (Path(cache) / "gguf").mkdir()
        os.symlink(gguf, Path(cache) / "gguf" / gguf.name)
        os.environ["GEMMA_LAB_CACHE"] = cache
        import gemma_lab

        started = time.perf_counter()
        gemma_lab.load(progress=False)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        gemma_lab.load(progress=False)
        warm = time.perf_counter() - started
    return [{"engine": "cold", "cold_load_s": cold, "warm_reload_s": warm}]


# --- orchestration -------------------------------------------------------------------------
def _spawn(args: list[str], timeout: float) -> list[dict]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        done = subprocess.run([sys.executable, __file__, *args], capture_output=True,
                              text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"  {' '.join(args)}: timed out after {timeout:.0f} s", file=sys.stderr)
        return []
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    print(f"  {' '.join(args)} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
    return []


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a and b else "–"


def _fmt(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def table(rows: list[dict], tokens: int) -> str:
    llama = next((r["generate"] for r in rows if r["engine"] == "llama.cpp"), None)
    hf = next((r["generate"] for r in rows if r["engine"] == "transformers"), None)
    ours = [r for r in rows if r["engine"] == "gemma_lab"]
    best = max((r["stream"] for r in ours), default=None)
    reference = {r["backend"]: r for r in ours if r["dtype"] == "float32"}
    lines = [
        f"Greedy, prompt {PROMPT!r}, {tokens} new tokens; tok/s = best of the repeats. "
        "generate/stream: gemma_lab (per-token top-k, entropy, logprob); keras-hub: its own "
        "`generate` on the same model; sampled: temperature 0.8, top-p 0.95, in the compiled "
        "decode loop; batch-8: all tokens of 8 prompts decoded together per second. "
        f"Every engine runs pinned to {THREADS} CPU cores with {THREADS} "
        "compute threads (`_pin`: affinity + thread counts).",
        "",
        "| engine | backend | dtype | generate tok/s | stream tok/s | sampled tok/s "
        "| keras-hub tok/s | stream ÷ keras-hub | stream ÷ llama.cpp | stream ÷ transformers "
        "| stream ÷ best | imports s | load s | load → 1st token s | max Δ logprob vs f32 "
        "| top-1 agree | peak RSS MB | batch-8 tok/s | batch-8 ÷ llama.cpp |",
        "|" + "---|" * 19,
    ]
    for r in ours:
        ref = reference.get(r["backend"])
        delta = agree = "–"
        if ref and r is not ref:
            delta = f"{max(abs(a - b) for a, b in zip(r['score_logprobs'], ref['score_logprobs'], strict=True)):.3f}"  # noqa: E501
            same = sum(a == b for a, b in zip(r["score_top1"], ref["score_top1"], strict=True))
            agree = f"{same}/{len(ref['score_top1'])}"
        lines.append(
            f"| gemma_lab | {r['backend']} | {r['dtype']} | {_fmt(r['generate'])} "
            f"| {_fmt(r['stream'])} | {_fmt(r.get('sampled'))} | {_fmt(r['keras_hub'])} "
            f"| {_ratio(r['stream'], r['keras_hub'])} | {_ratio(r['stream'], llama)} "
            f"| {_ratio(r['stream'], hf)} | {_ratio(r['stream'], best)} "
            f"| {_fmt(r.get('imports_s'))} | {_fmt(r['load_s'])} "
            f"| {_fmt(r['load_to_first_token_s'])} | {delta} | {agree} "
            f"| {_fmt(r['peak_rss_mb'], 0)} | {_fmt(r.get('batch8'))} "
            f"| {_ratio(r.get('batch8'), llama)} |"
        )
    for r in rows:
        if r["engine"] in ("llama.cpp", "transformers"):
            lines.append(
                f"| {r['engine']} | {r['backend']} | {r['dtype']} | {_fmt(r['generate'])} "
                f"| – | – | – | – | – | – | – | – | {_fmt(r['load_s'])} | – | – | – "
                f"| {_fmt(r['peak_rss_mb'], 0)} | – | – |"
            )
    extras = [r for r in ours if "finetune_tokens_per_s" in r]
    cold = next((r for r in rows if r["engine"] == "cold"), None)
    lines.append("")
    for r in extras:
        lines.append(f"- LoRA fine-tune ({r['backend']}, {r['dtype']}, rank 4, batch 4): "
                     f"{r['finetune_tokens_per_s']:.0f} tokens/s")
    if cold:
        lines.append(f"- Cold load (convert the GGUF into an empty cache): "
                     f"{cold['cold_load_s']:.1f} s; warm reload in the same process: "
                     f"{cold['warm_reload_s']:.1f} s")
    lines.append(f"- Machine: {os.cpu_count()} CPUs, {platform.machine()}, "
                 f"load average {os.getloadavg()[0]:.1f} at the end of the run")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--backends", default="jax,tensorflow,torch")
    parser.add_argument("--dtypes", default="float32,bfloat16,int8", help="on JAX")
    parser.add_argument("--other-dtypes", default="float32", help="on TensorFlow and torch")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--cold", action="store_true", help="also time a cold conversion")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.md")))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    dtypes = args.dtypes.split(",")

    if args.worker:
        _pin()
        if args.worker == "llama.cpp":
            rows = worker_llama_cpp(args.tokens, args.repeats)
        elif args.worker == "transformers":
            rows = worker_transformers(args.tokens, args.repeats)
        elif args.worker == "cold":
            rows = worker_cold_load()
        else:
            rows = worker_gemma_lab(args.worker, dtypes, args.tokens, args.repeats,
                                    extras=args.worker == "jax")
        print("RESULT " + json.dumps(rows))
        return

    common = ["--tokens", str(args.tokens), "--repeats", str(args.repeats)]
    rows: list[dict] = []
    workers = [] if args.no_peers else ["llama.cpp", "transformers"]
    workers += args.backends.split(",")
    workers += ["cold"] if args.cold else []
    for name in workers:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        chosen = args.dtypes if name == "jax" else args.other_dtypes
        rows += _spawn(["--worker", name, "--dtypes", chosen, *common], args.timeout)
    text = table(rows, args.tokens)
    print(text)
    Path(args.out).write_text(f"# gemma_lab benchmark\n\n{text}\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print(f"\nwritten to {args.out}", file=sys.stderr)
    print(f"median stream tok/s: "
          f"{statistics.median([r['stream'] for r in rows if 'stream' in r] or [0]):.1f}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
