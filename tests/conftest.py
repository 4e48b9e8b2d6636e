"""Shared fixtures: tiny real keras-hub Gemmas (fast) and the real default model (marked)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GEMMA_LAB_BACKEND", os.environ.get("KERAS_BACKEND", "jax"))


@pytest.fixture(scope="session")
def tiny_lab():
    from gemma_lab.testing import tiny_session

    return tiny_session("gemma3")


@pytest.fixture(scope="session", params=["gemma", "gemma2", "gemma3", "gemma3n", "gemma4"])
def tiny_lab_any(request):
    from gemma_lab.testing import tiny_session

    return tiny_session(request.param)


@pytest.fixture(scope="session")
def default_lab():
    """The real default model (Gemma 3 270M), loaded once per test session."""
    import gemma_lab

    return gemma_lab.load(progress=False)


@pytest.fixture(scope="session")
def hf_gguf_model():
    """transformers' own loader on the same GGUF (float32, eager attention so attention
    probabilities can be returned), loaded once per test session: the independent reference."""
    import torch
    from transformers import AutoModelForCausalLM

    from gemma_lab.models.default_model import default_gguf_path

    gguf = default_gguf_path()
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, attn_implementation="eager", dtype=torch.float32
    )
    return model.eval()


# --- the real default model on every Keras backend ------------------------------------------
BACKENDS = ("jax", "tensorflow", "torch")
WORKER = Path(__file__).with_name("real_model_worker.py")
_workers: dict[str, tuple[subprocess.Popen, Path]] = {}


def real_model_worker():
    """tests/real_model_worker.py as a module (its constants and run functions)."""
    loader = importlib.util.spec_from_file_location("real_model_worker", WORKER)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


_deselected_llama_cpp: list[str] = []


def pytest_collection_modifyitems(config, items):
    """Tests marked `llama_cpp` need llama-cpp-python (the `bench` extra, built from source):
    without it they are deselected, and the terminal summary says which."""
    if importlib.util.find_spec("llama_cpp") is not None:
        return
    keep = [item for item in items if item.get_closest_marker("llama_cpp") is None]
    dropped = [item for item in items if item.get_closest_marker("llama_cpp") is not None]
    if dropped:
        _deselected_llama_cpp.extend(item.nodeid for item in dropped)
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_terminal_summary(terminalreporter):
    if _deselected_llama_cpp:
        terminalreporter.write_line(
            f"{len(_deselected_llama_cpp)} llama.cpp test(s) deselected: llama-cpp-python is "
            "not installed (pip install -e '.[bench]'): " + ", ".join(_deselected_llama_cpp))


def pytest_collection_finish(session):
    """When tests need `backend_runs`, start the other backends' workers right away, at low
    CPU priority: they fill the idle time of the tests that run before them."""
    if not any("backend_runs" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    folder = Path(tempfile.mkdtemp(prefix="gemma-lab-backends-"))
    for backend in BACKENDS:
        if backend == os.environ["GEMMA_LAB_BACKEND"]:
            continue  # runs in this process, on `default_lab`
        env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
        env["GEMMA_LAB_BACKEND"] = backend
        out = folder / f"{backend}.npz"
        with open(folder / f"{backend}.log", "w") as log:
            process = subprocess.Popen(
                ["nice", "-n", "10", sys.executable, str(WORKER), str(out)],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        _workers[backend] = (process, out)


@pytest.fixture(scope="session")
def backend_runs(default_lab):
    """{backend: arrays} of tests/real_model_worker.py on jax, tensorflow and torch: this
    process's backend on `default_lab`, the others from the workers started at collection."""
    worker = real_model_worker()
    started = time.perf_counter()
    runs = {default_lab.backend: {**worker.run_model(default_lab),
                                  **worker.run_interventions(default_lab)}}
    print(f"\n[{default_lab.backend}] in-process run {time.perf_counter() - started:.1f}s")
    for backend, (process, out) in _workers.items():
        try:
            process.wait(timeout=2400)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail(f"the {backend} worker ran past 2400 s")
        log = out.with_suffix(".log").read_text()
        assert process.returncode == 0, (backend, log[-4000:])
        summary = json.loads(log.strip().splitlines()[-1])
        assert summary["backend"] == backend
        print(f"[{backend}] worker: " + ", ".join(f"{k} {v:.1f}s" for k, v in summary.items()
                                                 if k != "backend"))
        runs[backend] = dict(np.load(out))
    assert sorted(runs) == sorted(BACKENDS)
    return runs


def pytest_sessionfinish(session, exitstatus):
    """In CI nothing may be skipped silently: a skipped real-model or browser test fails.
    Backend workers no test waited for are stopped."""
    for process, _ in _workers.values():
        if process.poll() is None:
            process.kill()
    if not os.environ.get("CI") or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        print(f"\nCI: {len(skipped)} test(s) were skipped; failing the run.")
        session.exitstatus = 1
