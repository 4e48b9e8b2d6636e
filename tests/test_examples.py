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
        if any(flag in lines[0] for flag in ("--probs", "--attention", "--lens")):
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
