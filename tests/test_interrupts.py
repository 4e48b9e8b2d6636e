"""Ctrl-C (KeyboardInterrupt) in the middle of load, generate, stream and trace: the interrupt
reaches the caller (IPython turns it into a message, the kernel lives), nothing half-written
stays in the cache, and the same session gives the same answers afterwards. Fine-tuning and
adapter saves are covered in test_finetune.py / test_adapters.py."""

from __future__ import annotations

import numpy as np
import pytest

import gemma_lab


def _interrupt_on_call(original, call_number):
    """Wrap `original` so that its `call_number`-th call raises KeyboardInterrupt (once)."""
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call_number:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    return wrapper


def test_interrupted_generate_keeps_a_partial_result_and_the_session(tiny_lab, monkeypatch):
    before = tiny_lab.generate("hello world", max_new_tokens=6)
    compiled = tiny_lab.compiled
    monkeypatch.setattr(compiled, "step", _interrupt_on_call(compiled.step, 3))
    stream = tiny_lab.stream("hello world", max_new_tokens=6)
    with pytest.raises(KeyboardInterrupt):
        stream.run()
    assert stream.result.finish_reason == "interrupted"
    assert list(stream.result.token_ids) == list(before.token_ids[:2])
    monkeypatch.undo()
    after = tiny_lab.generate("hello world", max_new_tokens=6)
    assert after.token_ids == before.token_ids
    np.testing.assert_allclose(after.logprobs, before.logprobs, atol=1e-5)


def test_interrupted_stream_iteration_leaves_the_session_usable(tiny_lab, monkeypatch):
    before = tiny_lab.generate("the quick", max_new_tokens=4)
    compiled = tiny_lab.compiled
    monkeypatch.setattr(compiled, "step", _interrupt_on_call(compiled.step, 2))
    seen = []
    with pytest.raises(KeyboardInterrupt):
        for step in tiny_lab.stream("the quick", max_new_tokens=4):
            seen.append(step.token_id)
    assert seen == list(before.token_ids[:1])
    monkeypatch.undo()
    assert tiny_lab.generate("the quick", max_new_tokens=4).token_ids == before.token_ids


def test_interrupted_trace_then_trace_again_gives_the_same_result(tiny_lab, monkeypatch):
    import gemma_lab.inspect.trace as trace_module

    before = tiny_lab.trace("hello world")
    monkeypatch.setattr(trace_module, "to_numpy", _interrupt_on_call(trace_module.to_numpy, 1))
    with pytest.raises(KeyboardInterrupt):
        tiny_lab.trace("hello world")
    monkeypatch.undo()
    after = tiny_lab.trace("hello world")
    np.testing.assert_allclose(after.attention, before.attention, atol=1e-6)


def test_interrupted_load_leaves_no_cache_entry_and_the_next_load_works(tmp_path, monkeypatch):
    import gemma_lab.models.loading as loading
    from gemma_lab.models.cache import read_marker
    from gemma_lab.testing import tiny_gguf

    monkeypatch.setenv("GEMMA_LAB_CACHE", str(tmp_path / "cache"))
    path = tiny_gguf("gemma", directory=tmp_path)
    real_write_entry = loading.write_entry

    def write_then_interrupt(entry, fill, marker):
        def half_fill(directory):
            fill(directory)  # the preset is fully written into the temporary directory ...
            raise KeyboardInterrupt  # ... and Ctrl-C lands before the marker and the rename

        return real_write_entry(entry, half_fill, marker)

    monkeypatch.setattr(loading, "write_entry", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        gemma_lab.load(path, progress=False)
    presets = tmp_path / "cache" / "presets"
    assert [p for p in presets.iterdir()] == []  # no entry, no temporary directory
    monkeypatch.setattr(loading, "write_entry", real_write_entry)
    lab = gemma_lab.load(path, progress=False)
    assert len(lab.generate("hello", max_new_tokens=2).token_ids) <= 2
    (entry,) = presets.iterdir()
    assert read_marker(entry) is not None
