"""The `gemma-lab` command line: doctor, convert, generate, demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gemma_lab.cli import find_quickstart, main

REPO = Path(__file__).resolve().parents[1]


def gemma_lab_cli(*args, env=None, timeout=600):
    environment = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "gemma_lab.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=environment, cwd=REPO)


def test_doctor_reports_versions_backend_devices_and_cache(tmp_path):
    done = gemma_lab_cli("doctor", "--json", env={"GEMMA_LAB_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    versions = report["versions"]
    for package in ("gemma_lab", "keras", "keras-hub", "jax", "tensorflow", "torch"):
        assert versions[package]  # a version or "not installed"
    assert versions["gemma_lab"] == "0.1.0"
    assert report["backend"]["active"] == report["backend"]["requested"]
    assert "cpu" in report["backend"]["devices"].lower()
    assert report["cache"] == {"directory": str(tmp_path / "cache"), "exists": False,
                               "size": "0 B"}
    model = report["default model"]
    assert model["gguf in cache"] is False and model["converted preset in cache"] is False


def test_doctor_text_output(capsys):
    assert main(["doctor", "--no-devices"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("versions:\n") and "default model:" in out and "requested" in out
    assert "model families:" in out and "Gemma 4" in out and "Gemma 3n" in out


def test_convert_tiny_gguf_to_a_loadable_preset(tmp_path, tiny_lab, capsys):
    import gemma_lab
    from gemma_lab.testing import tiny_gguf

    gguf = tiny_gguf("gemma3", directory=tmp_path)
    out = tmp_path / "preset"
    assert main(["convert", str(gguf), str(out)]) == 0
    assert "Wrote a keras-hub gemma3 preset (2 layers, float32)" in capsys.readouterr().out
    assert (out / "config.json").is_file()
    lab = gemma_lab.load(str(out), progress=False)
    assert lab.info().num_layers == 2
    # The preset holds the same model the GGUF was exported from.
    text = "hello world, this is a tiny corpus"
    np.testing.assert_allclose(lab.score(text).logprobs, tiny_lab.score(text).logprobs,
                               atol=1e-4)


def test_convert_refuses_a_non_empty_directory(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file.txt").write_text("x")
    assert main(["convert", str(tmp_path / "model.gguf"), str(tmp_path / "taken")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err


def test_convert_missing_gguf_is_one_line(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "nope.gguf"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gemma-lab: error: No GGUF file") and err.count("\n") == 1


def test_generate_streams_from_a_preset_dir(tmp_path, tiny_lab, capsys):
    tiny_lab.causal_lm.save_to_preset(str(tmp_path / "tiny"))
    assert main(["generate", "hello", "--model", str(tmp_path / "tiny"),
                 "--max-new-tokens", "5", "--quiet"]) == 0
    expected = tiny_lab.generate("hello", max_new_tokens=5).text
    assert capsys.readouterr().out == expected + "\n"


def test_generate_json_prints_the_v1_payload(tmp_path, tiny_lab, capsys):
    from gemma_lab.schema import JSON_SCHEMA

    jsonschema = pytest.importorskip("jsonschema")
    tiny_lab.causal_lm.save_to_preset(str(tmp_path / "tiny"))
    assert main(["generate", "hello", "--model", str(tmp_path / "tiny"),
                 "--max-new-tokens", "4", "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    jsonschema.validate(result, JSON_SCHEMA)
    expected = tiny_lab.generate("hello", max_new_tokens=4)
    generated = [t["id"] for t in result["tokens"] if t["role"] == "generated"]
    assert generated == expected.token_ids and result["text"] == expected.text


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--max-new-tokens", "0"], "--max-new-tokens must be in 1..8192, got 0."),
     (["--temperature", "-1"], "temperature must be ≥ 0"),
     (["--top-p", "2"], "top_p must be in (0, 1]"),
     (["--mesh", "2x4"], "--mesh needs --distribution")],
)
def test_generate_rejects_bad_values_before_loading(capsys, flags, message):
    assert main(["generate", "hello", "--model", "/nowhere", *flags]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gemma-lab: error: ") and message in err and err.count("\n") == 1


def test_generate_mesh_reaches_load(tmp_path, tiny_lab, capsys):
    tiny_lab.causal_lm.save_to_preset(str(tmp_path / "preset"))
    assert main(["generate", "hello", "--model", str(tmp_path / "preset"), "--quiet",
                 "--distribution", "model_parallel", "--mesh", "3x5"]) == 1
    err = capsys.readouterr().err
    assert "spans 15 devices, but 1 are available" in err and err.count("\n") == 1


def test_demo_without_a_notebook_is_one_line(tmp_path, capsys):
    assert main(["demo", "--notebook", str(tmp_path / "missing.ipynb")]) == 1
    expected = f"gemma-lab: error: No notebook at {tmp_path}/missing.ipynb.\n"
    assert capsys.readouterr().err == expected


def test_quickstart_is_found_and_stripped():
    import nbformat

    path = find_quickstart()
    assert path == REPO / "examples" / "01_quickstart.ipynb"
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    sources = "\n".join(cell.source for cell in code)
    for needed in ("%load_ext gemma_lab", "%gemma load", "%%gemma", "%%gemma --probs",
                   "lab.generate(", "g.top_k[0]", "lab.score("):
        assert needed in sources


@pytest.mark.real_model
@pytest.mark.slow
def test_generate_with_the_default_model(default_lab):
    # The installed console script, the way users run it.
    script = Path(sys.executable).with_name("gemma-lab")
    assert script.is_file(), "gemma_lab is not installed in this environment (pip install -e .)"
    done = subprocess.run([str(script), "generate", "The capital of France is",
                           "--max-new-tokens", "8"], capture_output=True, text=True,
                          timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr
    expected = default_lab.generate("The capital of France is", max_new_tokens=8).text
    assert done.stdout == expected + "\n"
    assert "8 tokens" in done.stderr or "finish: eos" in done.stderr


@pytest.mark.real_model
@pytest.mark.slow
def test_demo_runs_the_quickstart_and_writes_html(tmp_path):
    import nbformat

    report, executed = tmp_path / "report.html", tmp_path / "executed.ipynb"
    done = gemma_lab_cli("demo", "--output", str(report), "--executed", str(executed),
                         timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {report}" in done.stdout
    notebook = nbformat.read(executed, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    outputs = [o for cell in code for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    rich = [o for o in outputs if "application/vnd.gemma-lab.v1+json" in o.get("data", {})]
    assert len(rich) >= 4  # three %%gemma cells and the score
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>") and "The capital of France is" in page
    assert "Paris" in page


def test_report_html_inlines_plotly_and_loads_no_require_js():
    import nbformat
    import plotly.graph_objects as go

    from gemma_lab.cli import _plain_html, notebook_html

    figure = go.Figure(go.Bar(x=["a"], y=[1])).to_plotly_json()
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "fig", outputs=[nbformat.v4.new_output("display_data", data={
            "application/vnd.plotly.v1+json": figure, "text/plain": "<&figure>"})])])
    page = notebook_html(notebook)
    assert "plotly-graph-div" in page and "require.min.js" not in page
    assert "text/html" not in notebook.cells[0].outputs[0].data  # the input is left as it was
    plain = _plain_html(notebook)
    assert "&lt;&amp;figure&gt;" in plain and "<&figure>" not in plain
