"""Nothing printed that the researcher did not ask for: a quiet model load, readable
`info()`, a self-contained demo page."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

# What TensorFlow / absl / oneDNN / the CUDA probes / SentencePiece print on their own.
NOISE = ("oneDNN", "cuda", "absl", "TF_ENABLE", "sentencepiece", "precompiled_charsmap",
         "I0000", "W0000", "E0000", "cpu_feature_guard")


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY")}
    environ.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=environ,
                          capture_output=True, text=True, timeout=600)


def test_loading_the_tiny_model_on_jax_prints_nothing():
    done = _python("""
        import sys
        from gemma_lab.testing import tiny_session
        lab = tiny_session()
        lab.generate("hello", max_new_tokens=2)
        import keras
        print("backend", keras.config.backend())
    """, GEMMA_LAB_BACKEND="jax")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == "backend jax\n"
    for pattern in NOISE:
        assert pattern.lower() not in done.stderr.lower(), done.stderr[-3000:]
    assert done.stderr == ""


def test_the_filter_drops_only_known_native_noise():
    """Real C++ errors, Python's own warnings and prints during a filtered import reach stderr
    in order; the start-up banners do not."""
    done = _python(r"""
        import os, sys, warnings
        from gemma_lab._quiet import native_stderr_filtered
        with native_stderr_filtered():
            os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called "
                        b"are written to STDERR\n")
            os.write(2, b"I0000 00:00:1796298138.971135   25537 port.cc:153] oneDNN custom "
                        b"operations are on.\n")
            os.write(2, b"E0000 00:00:1796298142.317663   25537 cuda_platform.cc:52] failed "
                        b"call to cuInit: INTERNAL: CUDA error\n")
            os.write(2, b"normalizer.cc(51) LOG(INFO) precompiled_charsmap is empty.\n")
            os.write(2, b"E0000 00:00:1796298142.3 25537 op_kernel.cc:1] a real failure\n")
            warnings.warn("the user's own warning")
            print("a print to stderr", file=sys.stderr)
        print("after", file=sys.stderr)
    """)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert "a real failure" in lines[0]
    assert "UserWarning: the user's own warning" in done.stderr
    assert lines[-2:] == ["a print to stderr", "after"]
    for pattern in ("absl::InitializeLog", "oneDNN", "cuInit", "precompiled_charsmap"):
        assert pattern not in done.stderr


def test_a_log_level_the_user_chose_is_kept(monkeypatch):
    from gemma_lab import _quiet

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    monkeypatch.delenv("GRPC_VERBOSITY", raising=False)
    _quiet.configure_native_logging("jax")
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    assert os.environ["GRPC_VERBOSITY"] == "ERROR"


def test_info_is_readable(tiny_lab):
    info = tiny_lab.info()
    text = str(info)
    assert re.search(r"Weights: \d+(\.\d+)? (B|kB|MB|GB)\b", text), text
    assert re.search(r"Parameters: \d+(\.\d+)?[KMB] \(\d{1,3}(,\d{3})*\)", text), text
    assert "Peak process memory" in text and "bytes" not in text
    assert "ModelInfo(" not in repr(info) and "parameters" in repr(info)
    page = info._repr_html_()
    assert page.startswith("<table") and "<th" in page and "tiny-gemma3" in page
    from IPython.lib.pretty import pretty

    assert pretty(info) == text
    # the data stay as they were
    assert isinstance(info.weights_bytes, int) and info.to_dict()["parameters"] == info.parameters


@pytest.mark.parametrize(("size", "expected"), [
    (512, "512 B"), (1072392704, "1.07 GB"), (2_500_000, "2.50 MB"), (999_600, "1.00 MB")])
def test_human_bytes(size, expected):
    from gemma_lab.model_info import human_bytes

    assert human_bytes(size) == expected


@pytest.mark.parametrize(("count", "expected"), [
    (7, "7"), (28_992, "29.0K"), (268_098_176, "268M"), (2_614_341_888, "2.61B")])
def test_human_count(count, expected):
    from gemma_lab.model_info import human_count

    assert human_count(count) == expected


def test_the_report_page_is_self_contained_and_draws_widgets():
    """No script from the network (require.js, MathJax, mermaid, the widget manager); a
    saved progress bar is drawn from its widget state."""
    import nbformat

    from gemma_lab.cli import notebook_html
    from gemma_lab.figures.token_probs import token_probability_figure

    figure = token_probability_figure(["a", "b"], [0.9, 0.2], [[("a", 0.9)], [("c", 0.5)]])
    assert all(isinstance(c, str) for c in figure.data[0].marker.color)  # plotly.js: no warning
    state = {
        "box": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_l", "IPY_MODEL_p"]}},
        "l": {"model_name": "HTMLModel", "state": {"value": "Loading Gemma: 100%"}},
        "p": {"model_name": "FloatProgressModel", "state": {"value": 2.0, "max": 2.0}},
    }
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("%gemma load", outputs=[nbformat.v4.new_output(
            "display_data", data={
                "application/vnd.jupyter.widget-view+json": {"model_id": "box",
                                                             "version_major": 2},
                "text/plain": "Loading Gemma:   0%"})]),
        nbformat.v4.new_code_cell("fig", outputs=[nbformat.v4.new_output(
            "display_data", data={"application/vnd.plotly.v1+json": figure.to_plotly_json(),
                                  "text/plain": "<figure>"})]),
        nbformat.v4.new_markdown_cell("# Title"),
    ])
    notebook.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {"state": state, "version_major": 2}}
    page = notebook_html(notebook)
    assert not re.findall(r"<script[^>]*\bsrc=[\"']?https?://", page)
    assert "unpkg.com" not in page and "mathjax/2.7.7" not in page
    assert page.count("plotly-graph-div") >= 1
    assert '<progress max="2.0" value="2.0">' in page and "Loading Gemma: 100%" in page
    assert "widgets" in notebook.metadata  # the input is left as it was
