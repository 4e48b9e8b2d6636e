"""Every bad input in README's "Bad inputs" table gets a GemmaLabError that names the fix, and
leaves the session usable (tiny model; no network)."""

from __future__ import annotations

import errno
import json
import shutil

import numpy as np
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
from gemma_lab.testing import run_magic


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
    entries = [p for p in (tmp_path / "cache").glob("presets/*") if p.suffix != ".lock"]
    assert not entries  # nothing cached from a bad file (a build lock is no entry)


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


# --- saved adapters: damaged files, junk metadata, bad names ----------------------------------
TEXT = "the quick brown fox"


@pytest.fixture(scope="module")
def lora_lab():
    """A tiny session of its own (its LoRA weights change here) with a rank-2 adapter whose
    B matrices are random, so every adapter matrix changes the scores."""
    from gemma_lab.finetune import lora
    from tests.test_finetune import fresh_lab

    lab = fresh_lab(seed=0)
    lora.ensure_lora(lab.runtime, 2)
    rng = np.random.default_rng(0)
    lora.assign_lora(lab.backbone, {key: rng.normal(0, 0.5, value.shape).astype("float32")
                                    for key, value in lora.lora_weights(lab.backbone).items()})
    return lab


@pytest.fixture
def saved_adapter(lora_lab, tmp_path, monkeypatch):
    """Adapter "good" saved and active, and "bad": a copy with every matrix doubled (so any
    matrix it overwrites changes the scores), to be damaged by the test."""
    monkeypatch.setenv("GEMMA_LAB_CACHE", str(tmp_path / "cache"))
    good = lora_lab.adapters.save("good")
    lora_lab.adapters.load("good")
    bad = good.parent / "bad"
    shutil.copytree(good, bad)
    with np.load(good / "lora.npz") as archive:
        doubled = {key: 2 * archive[key] for key in archive.files}
    return lora_lab, bad, doubled


def _scores(lab):
    return np.asarray(lab.score(TEXT).logprobs)


def _rewrite_weights(bad, weights):
    """Write `weights` as the adapter's lora.npz, as a tool without fingerprints would: the
    marker's record of the original file goes too."""
    with open(bad / "lora.npz", "wb") as handle:
        np.savez(handle, **weights)
    marker = json.loads((bad / cache.MARKER).read_text())
    marker.pop("files", None)
    (bad / cache.MARKER).write_text(json.dumps(marker))


def _damage_adapter(damage, bad, doubled):
    weights_file = bad / "lora.npz"
    data = weights_file.read_bytes()
    last = sorted(doubled)[-1]
    if damage == "truncated":
        weights_file.write_bytes(data[: len(data) // 2])
    elif damage == "truncated_unfingerprinted":
        _rewrite_weights(bad, doubled)
        weights_file.write_bytes(weights_file.read_bytes()[:-100])
    elif damage == "altered":
        middle = len(data) // 2
        weights_file.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 8])
                                 + data[middle + 8:])
    elif damage == "wrong_shape":
        _rewrite_weights(bad, {**doubled, last: np.zeros((3, 5), "float32")})
    elif damage == "wrong_size":  # right rank, wrong width: only the model can tell
        rank, width = doubled[last].shape
        _rewrite_weights(bad, {**doubled, last: np.zeros((rank, width + 1), "float32")})
    elif damage == "wrong_dtype":  # the last matrix is text: the others would be assigned first
        _rewrite_weights(bad, {**doubled, last: np.full(doubled[last].shape, "x")})
    elif damage == "not_finite":
        _rewrite_weights(bad, {**doubled, last: np.full(doubled[last].shape, np.nan, "float32")})
    elif damage == "missing_matrix":
        _rewrite_weights(bad, {k: v for k, v in doubled.items() if k != last})
    elif damage == "foreign_name":
        _rewrite_weights(bad, {**doubled, "0/../../kernel": doubled[last]})
    elif damage == "one_array":  # a bare .npy where the archive should be
        _rewrite_weights(bad, {})
        np.save(bad / "lora.npy", doubled[last])
        (bad / "lora.npy").rename(weights_file)
    elif damage == "junk_rank":
        metadata = json.loads((bad / "adapter.json").read_text())
        (bad / "adapter.json").write_text(json.dumps({**metadata, "rank": "two"}))
        marker = json.loads((bad / cache.MARKER).read_text())
        marker.pop("files", None)
        (bad / cache.MARKER).write_text(json.dumps(marker))


DAMAGES = ["truncated", "truncated_unfingerprinted", "altered", "wrong_shape", "wrong_size",
           "wrong_dtype", "not_finite", "missing_matrix", "foreign_name", "one_array",
           "junk_rank"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_adapter_changes_nothing(saved_adapter, damage):
    lab, bad, doubled = saved_adapter
    before = _scores(lab)
    _damage_adapter(damage, bad, doubled)
    with pytest.raises(GemmaLabError) as caught:
        lab.adapters.load("bad")
    message = str(caught.value)
    assert str(bad) in message and "save it again" in message, message
    assert "\n" not in message
    assert lab.adapter_name == "good"
    np.testing.assert_array_equal(_scores(lab), before)  # bit-identical: nothing was assigned
    lab.adapters.load("good")  # the session still loads adapters


def test_a_damaged_adapter_leaves_a_session_without_lora_on_its_base_model(saved_adapter):
    from tests.test_finetune import fresh_lab

    _, bad, doubled = saved_adapter
    _damage_adapter("wrong_size", bad, doubled)  # passes every check but the model's shapes
    lab = fresh_lab(seed=0)
    before = _scores(lab)
    with pytest.raises(CacheError, match="save it again"):
        lab.adapters.load("bad")
    assert lab.adapter_name is None
    np.testing.assert_array_equal(_scores(lab), before)


@pytest.mark.parametrize("junk", [b"not json {", b"\xff\xfe\x00", b"[1, 2, 3]", b'"text"',
                                  b"null", b'{"format": "gemma_lab.lora_adapter"}',
                                  "base-str", "rank-str", "format-int"])
def test_a_junk_adapter_json_is_flagged_by_list_not_raised(saved_adapter, junk):
    lab, bad, _ = saved_adapter
    metadata = json.loads((bad / "adapter.json").read_text())
    edits = {"base-str": {"base": "tiny"}, "rank-str": {"rank": "2"},
             "format-int": {"format_version": "1"}}
    if isinstance(junk, str):
        (bad / "adapter.json").write_text(json.dumps({**metadata, **edits[junk]}))
    else:
        (bad / "adapter.json").write_bytes(junk)
    rows = {row["name"]: row for row in lab.adapters.list()}
    assert sorted(rows) == ["bad", "good"]
    assert rows["good"]["damaged"] is None and rows["good"]["active"]
    assert rows["bad"]["damaged"] and not rows["bad"]["compatible"], rows["bad"]
    assert str(bad / "adapter.json") in rows["bad"]["damaged"]
    with pytest.raises(CacheError, match="save it again"):
        lab.adapters.load("bad")
    assert lab.adapter_name == "good"


@pytest.mark.parametrize("name", ["bad\n", "tab\there", "nul\x00", "bell\x07", "esc\x1b[31m",
                                  "del\x7f", "line\u2028sep", "a/b", "a\\b", "", ".", "..",
                                  "x" * 129, " lead", 3, None])
def test_bad_adapter_names_are_refused_at_save(lora_lab, tmp_path, monkeypatch, name):
    monkeypatch.setenv("GEMMA_LAB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(InputError, match="is not valid: use letters, digits"):
        lora_lab.adapters.save(name)
    assert not (tmp_path / "cache" / "adapters").exists() or \
        not list((tmp_path / "cache" / "adapters").iterdir())


# --- %%gemma -o NAME ---------------------------------------------------------------------------
@pytest.fixture
def shell(tiny_lab):
    import gemma_lab.magics
    from gemma_lab.testing import ipython_shell

    shell = ipython_shell()
    gemma_lab.magics.use(tiny_lab)
    return shell


SHADOWING = ["print", "list", "len", "str", "display", "In", "Out", "get_ipython", "exit",
             "quit", "_", "__", "___", "_i", "_ii", "_iii", "_ih", "_oh", "_dh", "_i3", "_12",
             "__name__", "__builtins__"]
NOT_NAMES = ["3x", "a-b", "class", "None", "lambda", "a.b", "a+b"]


@pytest.mark.parametrize("name", SHADOWING + NOT_NAMES)
@pytest.mark.parametrize("command", ["%%gemma --max-new-tokens 2 --no-stream -o {name}\nhello",
                                     "%%gemma patch --target ' b' -o {name}\na\nb"])
def test_output_names_that_would_break_the_kernel_are_one_line_errors(shell, name, command):
    from tests.test_magics import assert_one_line_error

    before = {key: shell.user_ns[key] for key in ("In", "Out", "get_ipython", "exit", "quit",
                                                  "_ih", "_oh", "_dh") if key in shell.user_ns}
    kept = shell.user_ns.get(name, "<absent>")
    try:
        run = run_magic(command.format(name=name))
        fragment = "not a valid Python variable name" if name in NOT_NAMES else "choose another"
        assert_one_line_error(run, f"-o {name!r}", fragment)
        assert all(shell.user_ns.get(key) is value for key, value in before.items())
        stored = shell.user_ns.get(name)
        assert not type(stored).__module__.startswith("gemma_lab"), stored  # no result there
    finally:  # before the fix the result landed in the namespace: put back what was there
        shell.user_ns.update(before)
        if kept == "<absent>":
            shell.user_ns.pop(name, None)
        else:
            shell.user_ns[name] = kept


def test_an_ordinary_output_name_still_works(shell):
    run = run_magic("%%gemma --max-new-tokens 2 --no-stream -o result_1\nhello")
    assert run.error is None and shell.user_ns.pop("result_1").token_ids


# --- damaged cache entries ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def pristine_cache(tmp_path_factory):
    """A cache holding one converted tiny GGUF, flat weights file included (written by the
    first load), that GGUF, and the scores of the model loaded from it."""
    from gemma_lab.testing import tiny_gguf

    root = tmp_path_factory.mktemp("pristine")
    gguf = tiny_gguf("gemma3", directory=root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GEMMA_LAB_CACHE", str(root / "cache"))
        lab = gemma_lab.load(gguf, progress=False)
    (entry,) = [p for p in (root / "cache" / "presets").iterdir() if not p.name.startswith(".")]
    assert (entry / "gemma_lab_weights.npy").is_file()
    return root / "cache", entry.name, gguf, _scores(lab)


def _cache_copy(pristine_cache, tmp_path, monkeypatch):
    root, name, gguf, scores = pristine_cache
    shutil.copytree(root, tmp_path / "cache")
    monkeypatch.setenv("GEMMA_LAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "presets" / name, gguf, scores


def _overwrite_middle(file, data):
    size = file.stat().st_size
    with open(file, "r+b") as handle:
        handle.seek(size // 2 - len(data) // 2)
        handle.write(data)


def _damage_entry(damage, entry):
    if damage == "config":
        (entry / "config.json").write_text('{"module": "keras_hub.src.models')
    elif damage == "task":
        (entry / "task.json").write_text("[]")
    elif damage == "vocabulary":
        (entry / "assets" / "tokenizer" / "vocabulary.spm").write_bytes(b"\x00garbage" * 64)
    elif damage == "flat_zeros":  # 4 KiB of zeros in the middle of the flat weights
        _overwrite_middle(entry / "gemma_lab_weights.npy", bytes(4096))
    elif damage == "flat_truncated":
        file = entry / "gemma_lab_weights.npy"
        file.write_bytes(file.read_bytes()[:-4096])
    elif damage == "flat_index":
        (entry / "gemma_lab_weights.json").write_text("[[")
    elif damage == "h5_zeros":  # a load that reads the h5 (no flat file yet)
        (entry / "gemma_lab_weights.npy").unlink()
        (entry / "gemma_lab_weights.json").unlink()
        _overwrite_middle(entry / "model.weights.h5", bytes(4096))
    elif damage == "marker":
        (entry / cache.MARKER).write_text('{"sha256": ')


@pytest.mark.parametrize("damage", ["config", "task", "vocabulary", "flat_zeros",
                                    "flat_truncated", "flat_index", "h5_zeros", "marker"])
def test_a_damaged_cache_entry_is_rebuilt_from_its_gguf(pristine_cache, tmp_path, monkeypatch,
                                                         damage):
    entry, gguf, scores = _cache_copy(pristine_cache, tmp_path, monkeypatch)
    _damage_entry(damage, entry)
    lab, [warning] = _load_noting_rebuilds(gguf)
    np.testing.assert_array_equal(_scores(lab), scores)  # the model it was converted from
    if damage == "marker":  # an entry without its marker is incomplete: built, no warning
        assert warning is None
    else:
        assert str(entry) in warning and "rebuilt" in warning, warning
    assert cache.entry_damage(entry) is None
    assert {"config.json", "model.weights.h5", "gemma_lab_weights.npy",
            "assets/tokenizer/vocabulary.spm"} <= cache.recorded_files(entry)
    again, [warning] = _load_noting_rebuilds(gguf)  # intact now: no rebuild, same model
    assert warning is None
    np.testing.assert_array_equal(_scores(again), scores)


def _load_noting_rebuilds(gguf):
    """The session loaded from `gguf`, and [the cache's "damaged ... rebuilt" warning or None]."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lab = gemma_lab.load(gguf, progress=False)
    rebuilt = [str(w.message) for w in caught if str(w.message).startswith("The cache entry")]
    assert len(rebuilt) <= 1, rebuilt
    return lab, rebuilt or [None]


def test_a_damaged_cache_entry_that_cannot_be_rebuilt_says_delete_this_folder(
        pristine_cache, tmp_path, monkeypatch):
    from gemma_lab.models.default_model import _package, default_gguf_sha256

    entry, _, _ = _cache_copy(pristine_cache, tmp_path, monkeypatch)
    default_entry = entry.parent / default_gguf_sha256()[:24]  # as if it were the default's
    entry.rename(default_entry)
    _damage_entry("config", default_entry)
    source = cache.entry_path("gguf", _package().MODEL_NAME)  # the default GGUF, damaged too
    source.parent.mkdir(parents=True)
    source.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(CacheError) as caught:
        gemma_lab.load(progress=False)
    message = str(caught.value)
    assert str(default_entry) in message and "Delete this folder" in message, message
    assert "config.json" in message and "\n" not in message


def test_cache_entries_fingerprint_every_file_and_name_the_damaged_one(tmp_path):
    target = tmp_path / "entry"

    def fill(directory):
        (directory / "a.bin").write_bytes(b"x" * 100)
        (directory / "sub").mkdir()
        (directory / "sub" / "b.txt").write_text("y")

    cache.write_entry(target, fill, {"k": 1})
    assert cache.recorded_files(target) == {"a.bin", "sub/b.txt"}
    assert cache.entry_damage(target) is None
    (target / "sub" / "b.txt").write_text("z")
    assert cache.entry_damage(target) == "sub/b.txt changed after it was written (sha256 differs)"
    assert cache.entry_damage(target, ["a.bin"]) is None  # only the files asked about
    (target / "a.bin").write_bytes(b"x")
    assert "has 1 bytes, 100 when written" in cache.entry_damage(target, ["a.bin"])


@pytest.mark.parametrize("rate", [float("nan"), float("inf"), 1e6, 0.0, -1e-3, True, "1e-3"])
def test_a_learning_rate_that_cannot_train_is_refused_before_training(rate):
    from gemma_lab.models.loading import LoadedModel
    from gemma_lab.session import GemmaLab
    from gemma_lab.testing import tiny_causal_lm

    lab = GemmaLab(LoadedModel(tiny_causal_lm(), "tiny-lr", "test", None, "float32"))
    before = np.asarray(lab.score("hello world").logprobs)
    with pytest.raises(InputError, match=r"learning_rate must be a number in \(0, 1\]"):
        lab.finetune(["hello world"] * 4, epochs=1, learning_rate=rate, progress=False)
    assert lab.adapter_name is None
    np.testing.assert_array_equal(lab.score("hello world").logprobs, before)


def test_divergence_is_seen_in_the_loss_or_the_lora_weights():
    """What makes a fine-tune roll back (`trainer._divergence`): a non-finite loss, or a
    non-finite LoRA matrix on the real model; a finite run passes. (lr <= 1 keeps the tiny
    model's runs finite, so the rollback itself is reached only through these.)"""
    from gemma_lab.finetune import lora
    from gemma_lab.finetune.trainer import _divergence
    from gemma_lab.models.loading import LoadedModel
    from gemma_lab.session import GemmaLab
    from gemma_lab.testing import tiny_causal_lm

    lab = GemmaLab(LoadedModel(tiny_causal_lm(), "tiny-diverge", "test", None, "float32"))
    lab.finetune(["hello world"] * 4, epochs=1, batch_size=2, learning_rate=1e-2,
                 progress=False)
    assert _divergence([5.1, 4.9], lab.backbone) is None
    assert "loss nan at step 2" in _divergence([5.1, float("nan")], lab.backbone)
    _, layer = next(iter(lora.lora_layers(lab.backbone)))
    layer.lora_kernel_b.assign(np.full(layer.lora_kernel_b.shape, np.inf, dtype="float32"))
    assert "non-finite LoRA weights" in _divergence([5.1], lab.backbone)


def _adapted_lab(name, trained=True):
    """A tiny session with a trained adapter (the state a failed run must not lose)."""
    from gemma_lab.models.loading import LoadedModel
    from gemma_lab.session import GemmaLab
    from gemma_lab.testing import tiny_causal_lm

    lab = GemmaLab(LoadedModel(tiny_causal_lm(), name, "test", None, "float32"))
    if trained:
        lab.finetune(["hello world"] * 4, rank=2, epochs=1, batch_size=2, learning_rate=1e-2,
                     seed=0, progress=False)
    return lab


def test_a_step_that_fails_mid_run_restores_the_adapter_from_before():
    from gemma_lab.backend import import_keras
    from gemma_lab.errors import GemmaLabError

    lab = _adapted_lab("tiny-fail")
    keras = import_keras()
    name = lab.adapter_name
    before = np.asarray(lab.score("hello world").logprobs)

    class FailsAtStepTwo(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:  # step 1 already changed the LoRA matrices
                raise MemoryError("RESOURCE_EXHAUSTED: out of memory allocating 9 GiB")

    with pytest.raises(GemmaLabError, match="Fine-tuning failed at step") as failed:
        lab.finetune(["the cat sat"] * 8, rank=2, epochs=1, batch_size=2,
                     learning_rate=1e-2, callbacks=[FailsAtStepTwo()], progress=False)
    assert "lower batch_size / rank / max_length" in str(failed.value)
    assert lab.adapter_name == name
    np.testing.assert_array_equal(lab.score("hello world").logprobs, before)
    # and the session still trains, generates and unloads
    lab.finetune(["the cat sat"] * 4, rank=2, epochs=1, batch_size=2, progress=False)
    assert len(lab.generate("hello", max_new_tokens=2).token_ids) >= 1


@pytest.mark.parametrize(("kwargs", "trained"), [
    ({"batch_size": 10**6, "rank": 2}, True),
    ({"rank": 10**8}, False)])  # a new rank needs a session without LoRA
def test_a_step_that_cannot_fit_is_refused_before_anything_is_allocated(kwargs, trained):
    lab = _adapted_lab("tiny-huge", trained)
    name = lab.adapter_name
    before = np.asarray(lab.score("hello world").logprobs)
    with pytest.raises(InputError, match=r"would need about .* GiB of memory"):
        lab.finetune(["hello world"] * 4, epochs=1, progress=False, **kwargs)
    assert lab.adapter_name == name
    np.testing.assert_array_equal(lab.score("hello world").logprobs, before)
