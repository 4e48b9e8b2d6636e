"""Shared fixtures: tiny real keras-hub Gemmas (fast) and the real default model (marked)."""

from __future__ import annotations

import os

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


def pytest_sessionfinish(session, exitstatus):
    """In CI nothing may be skipped silently: a skipped real-model or browser test fails."""
    if not os.environ.get("CI") or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        print(f"\nCI: {len(skipped)} test(s) were skipped; failing the run.")
        session.exitstatus = 1
