"""Render the example notebooks, with outputs, into docs/examples/ for GitHub's viewer.

examples/ is kept without outputs (tests/test_examples.py); this executes each example the way
`gemma-lab demo --notebook ... --executed ...` does (a fresh kernel on this interpreter) and
writes docs/examples/NAME.ipynb with outputs a static viewer can show:

* text/plain and text/html outputs and stdout are kept; stderr (logs, progress bars) is dropped;
* a plotly figure becomes a static SVG (plotly + kaleido, with a local Chrome/Chromium) and a
  one-line text/plain; its JSON and its HTML (which loads plotly.js) are dropped. Without
  kaleido a figure keeps only the text line;
* widget state, cell timings and output metadata are dropped, memory addresses and this
  machine's paths are replaced, execution counts renumbered: re-rendering on the same machine
  gives the same file.

Usage (kaleido comes with `pip install -e ".[docs]"`):
    .venv/bin/python scripts/render_examples.py              # every example
    .venv/bin/python scripts/render_examples.py 05 06         # examples whose name starts so
    .venv/bin/python scripts/render_examples.py --executed /tmp/run   # keep / reuse executed
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
DOCS = REPO / "docs" / "examples"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
KEPT_MIMES = ("text/html", "text/plain")
FIGURE_SIZE = {"width": 800, "height": 450}
MAX_BYTES = 300_000

_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")
_TQDM_TIMES = re.compile(r"\s*\[\d[\d:]*<[^\]]*\]")
_RATE = re.compile(r"\b\d+(?:\.\d+)? ?(tokens/s|tok/s|it/s|s/it)")
_RATE_FIELD = re.compile(r"\b(tokens per s|tokens_per_s)([ :='\"]+)\d+(?:\.\d+)?")
_TIMESTAMP = re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:[+-]\d\d:\d\d|Z)?")
_MEMORY = re.compile(r"(Peak process memory(?::\s*|</th>\s*<td[^>]*>))\d+(?:\.\d+)? ?[KMGT]?i?B")
_LOAD_TIME = re.compile(r"(\bin )\d+(?:\.\d+)? s\b")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="example name prefixes (default: all)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    parser.add_argument("--executed", metavar="DIR", type=Path,
                        help="keep each executed notebook as DIR/NAME.ipynb, and take it "
                             "from there instead of running it again where it is there "
                             "(e.g. from `gemma-lab demo --notebook ... --executed "
                             "DIR/NAME.ipynb`)")
    args = parser.parse_args(argv)
    paths = sorted(EXAMPLES.glob("*.ipynb"))
    if args.names:
        paths = [p for p in paths if any(p.stem.startswith(n) for n in args.names)]
        if not paths:
            parser.error(f"no example matches {args.names}")
    DOCS.mkdir(parents=True, exist_ok=True)
    exporter = FigureExporter()
    failed = []
    for path in paths:
        ready = args.executed / path.name if args.executed else None
        if ready is not None and ready.exists():
            executed = nbformat.read(ready, as_version=4)
        else:
            executed = execute(path, args.timeout)
            if ready is not None and executed is not None:
                ready.parent.mkdir(parents=True, exist_ok=True)
                nbformat.write(executed, ready)
        if executed is None:
            failed.append(path.name)
            continue
        notebook = clean(executed, exporter)
        target = DOCS / path.name
        nbformat.write(notebook, target)
        size = target.stat().st_size
        note = "" if size <= MAX_BYTES else f"  (over {MAX_BYTES // 1000} KB)"
        print(f"wrote {target.relative_to(REPO)} ({size / 1000:.0f} KB){note}", file=sys.stderr)
    write_index()
    if not exporter.available:
        print("kaleido (or Chrome) is not available: figures were rendered as text only.",
              file=sys.stderr)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def execute(path: Path, timeout: int) -> Any:
    """The executed notebook (nbformat), through `gemma-lab demo`, or None if a cell failed."""
    with tempfile.TemporaryDirectory() as tmp:
        executed = Path(tmp) / path.name
        done = subprocess.run(
            [sys.executable, "-m", "gemma_lab.cli", "demo", "--notebook", str(path),
             "--output", str(Path(tmp) / "report.html"), "--executed", str(executed),
             "--timeout", str(timeout)],
            cwd=REPO, env=os.environ.copy(), capture_output=True, text=True)
        sys.stderr.write(done.stderr[-3000:])
        if done.returncode != 0:
            return None
        return nbformat.read(executed, as_version=4)


class FigureExporter:
    """Plotly JSON to SVG with kaleido, or None where kaleido or a browser is missing.

    SVG, not PNG: text and lines stay vector and a heatmap is one small embedded image of its
    cells, so a figure is a few tens of KB."""

    def __init__(self) -> None:
        self.available = True
        self._server = False
        if not os.environ.get("BROWSER_PATH"):
            for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
                found = shutil.which(name)
                if found:
                    os.environ["BROWSER_PATH"] = found
                    break

    def svg(self, spec: dict[str, Any]) -> str | None:
        if not self.available:
            return None
        try:
            import plotly.io as pio

            if not self._server:
                import kaleido

                kaleido.start_sync_server(silence_warnings=True)  # one browser for all
                self._server = True
            figure = pio.from_json(json.dumps(spec), skip_invalid=True)
            return stable_svg(figure.to_image(format="svg", **FIGURE_SIZE).decode("utf-8"))
        except Exception as err:  # kaleido missing, no browser, ...
            print(f"static figure export failed ({type(err).__name__}: {err}); "
                  "keeping text only", file=sys.stderr)
            self.available = False
            return None


def clean(notebook: Any, exporter: FigureExporter) -> Any:
    """A copy of `notebook` with deterministic, viewer-friendly outputs."""
    notebook.metadata = nbformat.from_dict({
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    })
    count = 0
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("widgets", None)
        if cell.cell_type != "code":
            continue
        count += 1
        cell.execution_count = count
        raw, keys = [], []
        for output in cell.outputs:
            key = figure_key(output)
            if key is not None and keys and keys[-1] == key:
                raw[-1] = output  # frames of a live figure (same title and traces): the last
            else:
                raw.append(output)
                keys.append(key)
        outputs = []
        for output in raw:
            kept = clean_output(output, exporter, count)
            if kept is None:
                continue
            if kept.output_type == "stream" and outputs and outputs[-1].output_type == "stream":
                outputs[-1].text += kept.text
            else:
                outputs.append(kept)
        cell.outputs = outputs
    notebook.metadata.pop("widgets", None)
    return notebook


def clean_output(output: Any, exporter: FigureExporter, count: int) -> Any:
    kind = output.output_type
    if kind == "stream":
        if output.name != "stdout":
            return None
        return nbformat.v4.new_output("stream", name="stdout", text=scrub(output.text))
    if kind == "error":
        return output
    data = output.get("data", {})
    if WIDGET_MIME in data:
        return None  # a widget (progress bar): its state is not saved, so it shows nothing
    kept: dict[str, Any] = {}
    if PLOTLY_MIME in data:
        spec = data[PLOTLY_MIME]
        svg = exporter.svg(spec)
        if svg is not None:
            kept["image/svg+xml"] = svg
        kept["text/plain"] = figure_text(spec)
    else:
        for mime in KEPT_MIMES:
            if mime in data:
                kept[mime] = scrub(_text(data[mime]))
        for mime in ("image/png", "image/svg+xml"):
            if mime in data:
                kept[mime] = data[mime]
    if not kept:
        return None
    if kind == "execute_result":
        return nbformat.v4.new_output("execute_result", data=kept, execution_count=count)
    return nbformat.v4.new_output("display_data", data=kept)


def stable_svg(svg: str) -> str:
    """`svg` with plotly's random ids (the figure's uid in clip-path and gradient ids, and a
    colorbar's `cb…` and a trace's `trace…` classes) replaced by numbers in order."""
    tokens = re.findall(r'id="defs-([0-9a-f]{6})"|\b(?:cb|trace)([0-9a-f]{6})\b', svg)
    tokens = [first or second for first, second in tokens]
    for index, token in enumerate(dict.fromkeys(tokens)):
        svg = svg.replace(token, f"{index:06d}")
    return compact_svg(svg)


_FONT = "font-family: 'Open Sans', verdana, arial, sans-serif;"
_TEXT_RULE = "<style>text{font-family:'Open Sans',verdana,arial,sans-serif;white-space:pre}</style>"


def compact_svg(svg: str) -> str:
    """Plotly's default font and `white-space: pre`, written on every text element, set once
    in a stylesheet instead (a heatmap with cell labels shrinks by a quarter)."""
    opening = re.match(r"<svg\b[^>]*>", svg)
    if opening is None or _FONT not in svg:
        return svg
    svg = re.sub(r"(<text\b[^>]*style=\"[^\"]*)" + re.escape(_FONT) + " ?", r"\1", svg)
    svg = re.sub(r"(<text\b[^>]*style=\"[^\"]*)white-space: pre; ?", r"\1", svg)
    return svg[:opening.end()] + _TEXT_RULE + svg[opening.end():]


def figure_key(output: Any) -> tuple[str, tuple[str, ...]] | None:
    """What tells a live figure's successive frames apart from different figures."""
    spec = output.get("data", {}).get(PLOTLY_MIME)
    if spec is None:
        return None
    return figure_text(spec), tuple(str(t.get("type")) for t in spec.get("data", []))


def figure_text(spec: dict[str, Any]) -> str:
    title = (spec.get("layout", {}).get("title") or {})
    text = title.get("text") if isinstance(title, dict) else str(title)
    text = re.sub(r"<[^>]+>", " ", text or "").strip()
    return f"<plotly figure{': ' + text if text else ''}; run the notebook for the interactive one>"


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def scrub(text: str) -> str:
    """Replace what differs between runs or machines: addresses, paths, timings, rates,
    timestamps and process memory."""
    text = _ADDRESS.sub("0x…", text)
    text = _TQDM_TIMES.sub("", text)
    text = _RATE.sub(r"… \1", text)
    text = _RATE_FIELD.sub(r"\1\2…", text)
    text = _TIMESTAMP.sub("<time>", text)
    text = _MEMORY.sub(r"\1…", text)
    text = _LOAD_TIME.sub(r"\1… s", text)
    for path, name in ((str(REPO), "<repo>"), (str(Path.home()), "~"),
                       (tempfile.gettempdir(), "<tmp>")):
        text = re.sub(re.escape(path) + r"(?![\w.-])", name, text)
    return re.sub(r"<tmp>/tmp\w{6,}", "<tmp>/…", text)  # tempfile.mkdtemp() folders


def write_index() -> None:
    lines = [
        "# Example notebooks, rendered",
        "",
        "The notebooks in [`examples/`](../../examples) are saved without outputs; these are the",
        "same notebooks run top to bottom on the default model (Gemma 3 270M, CPU), so GitHub can",
        "show what each cell prints. Figures are static SVGs here; run a notebook for the",
        "interactive ones. Re-render after changing an example:",
        "",
        "```bash",
        ".venv/bin/python scripts/render_examples.py            # all, or e.g. `... 05` for one",
        "```",
        "",
    ]
    for path in sorted(EXAMPLES.glob("*.ipynb")):
        title = path.stem
        source = nbformat.read(path, as_version=4)
        for cell in source.cells:
            if cell.cell_type == "markdown" and cell.source.startswith("# "):
                title = cell.source.splitlines()[0][2:].strip()
                break
        rendered = DOCS / path.name
        status = "" if rendered.exists() else " (not rendered yet)"
        lines.append(f"- [{path.stem}]({path.name}): {title}{status}")
    (DOCS / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
