"""Every bad input in README's "Bad inputs" table gets a GemmaLabError that names the fix, and
leaves the session usable (tiny model; no network)."""

from __future__ import annotations

import errno
import json
import shutil

import pytest

import gemma_lab
from gemma_lab.errors import (
    BackendError,
    CacheError,
    GemmaLabError,
    GGUFError,
    InputError,
    ModelLoadError,
)
from gemma_lab.models import cache


def test_empty_prompt_generates_from_bos(tiny_lab):
    # An empty prompt is a real question (what does the model say unconditioned?), not an error.
    g = tiny_lab.generate("", max_new_tokens=3)
    assert g.prompt_token_ids == (tiny_lab.tokenizer.bos_id,)
    assert 1 <= len(g.token_ids) <= 3 or g.finish_reason == "eos"


def test_empty_text_to_score_is_an_input_error(tiny_lab):
    with pytest.raises(InputError, match="non-empty"):
        tiny_lab.score("")


def test_prompt_longer_than_the_context_names_both_numbers(tiny_lab):
    with pytest.raises(InputError, match=r"context of \d+ tokens.*Shorten the prompt"):
        tiny_lab.generate("a b " * (tiny_lab.context_length // 2 + 8), max_new_tokens=4)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(max_new_tokens=10**9), "max_new_tokens must be an integer in 1.."),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(temperature=-0.5), "temperature must be ≥ 0"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_k=0), "top_k must be a positive integer"),
        (dict(seed="one"), "seed must be an integer"),
    ],
)
def test_bad_sampling_arguments_are_input_errors(tiny_lab, kwargs, words):
    with pytest.raises(InputError, match=words):
        tiny_lab.generate("hello", **kwargs)
    assert len(tiny_lab.generate("hello", max_new_tokens=2).token_ids) <= 2  # still usable


def test_non_string_prompt_is_an_input_error(tiny_lab):
    with pytest.raises(InputError, match="must be a string"):
        tiny_lab.generate(b"hello")


def test_unknown_preset_name_says_how_to_load_the_default():
    with pytest.raises(ModelLoadError, match=r"Cannot resolve.*load\(\) with no argument"):
        gemma_lab.load("gemma_does_not_exist_9b", progress=False)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_or_truncated_gguf_is_a_gguf_error(damage, tmp_path, monkeypatch):
    from gemma_lab.testing import tiny_gguf

    monkeypatch.setenv("GEMMA_LAB_CACHE", str(tmp_path / "cache"))
    path = tiny_gguf("gemma", directory=tmp_path)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"GGUF" + b"\xff" * 4096,
                      "empty": b""}[damage])
    with pytest.raises(GGUFError, match=r"truncated|corrupt|too short|version"):
        gemma_lab.load(path, progress=False)
    assert not list((tmp_path / "cache").glob("presets/*"))  # nothing cached from a bad file


def test_cache_dir_not_writable_is_a_cache_error(tmp_path, monkeypatch):
    from gemma_lab.testing import tiny_gguf

    path = tiny_gguf("gemma", directory=tmp_path)
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("GEMMA_LAB_CACHE", str(blocker))
    with pytest.raises(CacheError, match="GEMMA_LAB_CACHE"):
        gemma_lab.load(path, progress=False)


def test_disk_full_during_cache_write_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMMA_LAB_CACHE", str(tmp_path))
    target = cache.entry_path("presets", "entry")

    def fill(directory):
        (directory / "model.weights.h5").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CacheError, match="Free disk space"):
        cache.write_entry(target, fill, {"sha256": "x"})
    assert list(target.parent.iterdir()) == []  # no entry and no temporary directory
    assert cache.read_marker(target) is None


def test_non_utf8_data_file_is_an_input_error(tiny_lab, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_bytes(b'{"prompt": "caf\xe9", "response": "ok"}\n')
    with pytest.raises(InputError, match="UTF-8"):
        tiny_lab.finetune(data, epochs=1, progress=False)
    assert tiny_lab.adapter_name is None


def test_backend_switch_after_keras_import_says_restart(tiny_lab):
    current = tiny_lab.backend
    other = next(b for b in ("jax", "tensorflow", "torch") if b != current)
    with pytest.raises(BackendError, match=r"[Rr]estart"):
        gemma_lab.set_backend(other)
    gemma_lab.set_backend(current)  # asking for the backend in use is fine


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    from gemma_lab.testing import tiny_causal_lm

    directory = tmp_path_factory.mktemp("preset") / "tiny"
    tiny_causal_lm("gemma").save_to_preset(str(directory))
    return directory


def _lambda_config(marker):
    import base64
    import marshal

    def touch(_):
        open(marker, "w").close()  # the attacker's code: must never run

    code = base64.b64encode(marshal.dumps(touch.__code__)).decode()
    return {"module": "builtins", "class_name": "__lambda__",
            "config": {"value": [code, None, None]}, "registered_name": None}


@pytest.mark.parametrize("attack", ["lambda", "unknown_class"])
def test_presets_load_in_keras_safe_mode(attack, tiny_preset, tmp_path):
    import keras

    preset = tmp_path / "preset"
    shutil.copytree(tiny_preset, preset)
    marker = tmp_path / "code_ran"
    if attack == "lambda":
        task = json.loads((preset / "task.json").read_text())
        task["config"]["preprocessor"] = _lambda_config(str(marker))
        (preset / "task.json").write_text(json.dumps(task))
    else:
        config = json.loads((preset / "config.json").read_text())
        config.update(module="os", class_name="system", registered_name="os>system")
        (preset / "config.json").write_text(json.dumps(config))
    keras.config.enable_unsafe_deserialization()  # even then, gemma_lab stays in safe mode
    try:
        with pytest.raises(ModelLoadError, match="safe mode"):
            gemma_lab.load(preset, progress=False)
    finally:
        from keras.src.backend.common import global_state

        global_state.set_global_attribute("safe_mode_saving", None)  # Keras' default again
    assert not marker.exists()


def test_every_bad_input_error_is_one_family():
    for error in (BackendError, CacheError, GGUFError, InputError, ModelLoadError):
        assert issubclass(error, GemmaLabError)
