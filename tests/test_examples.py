"""The example notebooks: saved clean, and each runs top to bottom on the default model.

01_quickstart runs in tests/test_cli.py (through `gemma-lab demo`); the others run here the
same way, each on a fresh kernel, and every `%%gemma` cell and every cell ending in
`.figure(...)` must have produced its rich output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.ipynb"))
GEMMA_MIME = "application/vnd.gemma-lab.v1+json"
PLOTLY_MIME = "application/vnd.plotly.v1+json"


def test_the_promised_examples_exist():
    names = [path.stem for path in EXAMPLES]
    assert names == ["01_quickstart", "02_token_probabilities", "03_attention_and_logit_lens",
                     "04_attribution", "05_lora_finetune", "06_backends",
                     "07_interventions", "08_chat", "09_gemma4", "10_sae_features"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
def test_examples_are_saved_with_outputs_stripped(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def expected_outputs(cell) -> set[str]:
    """The MIME types a code cell must show, read off its source."""
    wanted = set()
    lines = cell.source.strip().splitlines()
    if lines and lines[0].startswith("%%gemma"):
        wanted.add(GEMMA_MIME)
        if "--probs" in lines[0]:  # --attention / --lens: the trace's own view, no copy
            wanted.add(PLOTLY_MIME)
    elif lines and ".figure(" in lines[-1] and not lines[-1].rstrip().endswith(";"):
        wanted.add(PLOTLY_MIME)
    return wanted


@pytest.mark.real_model
@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in EXAMPLES if p.stem != "01_quickstart"],
                         ids=lambda path: path.stem)
def test_example_runs_top_to_bottom(path, tmp_path):
    executed = tmp_path / path.name
    done = subprocess.run(
        [sys.executable, "-m", "gemma_lab.cli", "demo", "--notebook", str(path),
         "--output", str(tmp_path / "report.html"), "--executed", str(executed)],
        capture_output=True, text=True, timeout=900, cwd=REPO, env={**os.environ},
    )
    print(done.stderr[-2000:])  # per-cell timings, shown with -rA or on failure
    assert done.returncode == 0, done.stderr[-3000:]
    notebook = nbformat.read(executed, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"{cell.source[:60]!r}: {errors}"
        shown = {mime for o in cell.outputs for mime in o.get("data", {})}
        missing = expected_outputs(cell) - shown
        assert not missing, f"{cell.source[:60]!r} did not show {missing}"


DOCS = REPO / "docs" / "examples"
RENDER = ".venv/bin/python scripts/render_examples.py"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
def test_examples_are_rendered_with_outputs_in_docs(path):
    """docs/examples/ holds each example as it ran (for GitHub's viewer), up to date."""
    rendered = DOCS / path.name
    hint = f"re-render it with `{RENDER} {path.stem[:2]}`"
    assert rendered.exists(), f"docs/examples/{path.name} is missing: {hint}"
    source = nbformat.read(path, as_version=4)
    notebook = nbformat.read(rendered, as_version=4)
    nbformat.validate(notebook)
    assert [(c.cell_type, c.source) for c in notebook.cells] == [
        (c.cell_type, c.source) for c in source.cells], (
        f"examples/{path.name} changed since docs/examples/{path.name} was rendered: {hint}")
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for cell in code:
        assert cell.execution_count is not None, f"{cell.source[:60]!r} did not run: {hint}"
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.source[:60]
        if expected_outputs(cell):
            assert cell.outputs, f"{cell.source[:60]!r} has no output: {hint}"
        assert "metadata" not in cell or "widgets" not in cell.metadata
    assert any(cell.outputs for cell in code), hint
    assert "widgets" not in notebook.metadata
    assert rendered.stat().st_size < 300_000, f"docs/examples/{path.name} is over 300 KB"
    assert f"]({path.name})" in (DOCS / "README.md").read_text(encoding="utf-8")


def test_rendering_keeps_what_a_viewer_shows_and_nothing_that_changes():
    import importlib.util

    spec = importlib.util.spec_from_file_location("render_examples",
                                                  REPO / "scripts" / "render_examples.py")
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    cell = nbformat.v4.new_code_cell("x")
    cell.metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00Z"}
    frame = {"data": [{"type": "scatter", "uid": "a"}], "layout": {"title": {"text": "Loss"}}}
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="Loading: 100%"),
        nbformat.v4.new_output("display_data", data={
            render.WIDGET_MIME: {"model_id": "abc"}, "text/plain": "0%| | 0/2"}),
        nbformat.v4.new_output("stream", name="stdout", text=f"at 0x7f00deadbeef in {REPO}\n"),
        nbformat.v4.new_output("display_data", data={render.PLOTLY_MIME: frame}),
        nbformat.v4.new_output("display_data", data={render.PLOTLY_MIME: frame}),
        nbformat.v4.new_output("execute_result", execution_count=7, data={
            "text/plain": "run, 23.5 tokens/s, at 2026-12-03T10:02:53+00:00",
            "application/vnd.gemma-lab.v1+json": {"a": 1}}),
    ]
    notebook = nbformat.v4.new_notebook(cells=[cell])
    exporter = render.FigureExporter()
    exporter.available = False  # no browser here: figures keep their text line
    cleaned = render.clean(notebook, exporter)
    nbformat.validate(cleaned)
    out = cleaned.cells[0]
    assert out.metadata == {} and out.execution_count == 1
    assert [o.output_type for o in out.outputs] == ["stream", "display_data", "execute_result"]
    assert out.outputs[0].text == "at 0x… in <repo>\n"
    assert out.outputs[1].data == {
        "text/plain": "<plotly figure: Loss; run the notebook for the interactive one>"}
    assert out.outputs[2].data == {"text/plain": "run, … tokens/s, at <time>"}
    assert out.outputs[2].execution_count == 1
    svg = ('<defs id="defs-3fa9c1"/><clipPath id="clip3fa9c1xy"/><g class="cb77ab0e colorbar">'
           '<g class="trace scatter trace0d1e2f"/><use href="#clip3fa9c1xy"/>')
    assert render.stable_svg(svg) == (
        '<defs id="defs-000000"/><clipPath id="clip000000xy"/><g class="cb000001 colorbar">'
        '<g class="trace scatter trace000002"/><use href="#clip000000xy"/>')
