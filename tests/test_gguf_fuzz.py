"""Crafted and fuzzed GGUF files end in a GGUFError before the gguf package parses them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from gemma_lab.errors import GGUFError
from gemma_lab.models.gguf_file import read_gguf
from gemma_lab.models.gguf_validate import validate_gguf
from gemma_lab.testing import tiny_gguf


@pytest.fixture(scope="module")
def seed_gguf(tmp_path_factory):
    return tiny_gguf("gemma", "Q8_0", directory=tmp_path_factory.mktemp("seed"))


def _crafted(seed, tmp_path, edit):
    """A copy of `seed` with `edit(reader, data)` applied to its bytes (offsets from gguf)."""
    from gguf import GGUFReader

    path = tmp_path / "crafted.gguf"
    shutil.copy(seed, path)
    reader = GGUFReader(seed)
    data = bytearray(path.read_bytes())
    base = reader.data.ctypes.data

    def put(part, value):
        offset = part.ctypes.data - base
        data[offset:offset + part.nbytes] = int(value).to_bytes(part.nbytes, "little")

    def rename(key, new_key):
        part = reader.fields[key].parts[1]
        offset = part.ctypes.data - base
        assert len(new_key) == part.nbytes
        data[offset:offset + part.nbytes] = new_key.encode()

    edit(reader, put, rename)
    path.write_bytes(bytes(data))
    return path


def _tensor(reader, name):
    return next(t for t in reader.tensors if t.name == name).field


# (what llama.cpp fixed, edit, words the message must contain)
CRAFTED = {
    "nested array type": (
        lambda r, put, ren: put(r.fields["tokenizer.ggml.scores"].parts[3], 9), "nested"),
    "unknown array type": (
        lambda r, put, ren: put(r.fields["tokenizer.ggml.scores"].parts[3], 77), "element type"),
    "huge array count": (
        lambda r, put, ren: put(r.fields["tokenizer.ggml.tokens"].parts[4], 1 << 62), "limit"),
    "huge string length": (
        lambda r, put, ren: put(r.fields["general.name"].parts[3], (1 << 64) - 1), "limit"),
    "huge alignment": (
        lambda r, put, ren: (ren("gemma.block_count", "general.alignment"),
                             put(r.fields["gemma.block_count"].parts[3], 1 << 31)), "alignment"),
    "block_count beyond limits": (
        lambda r, put, ren: put(r.fields["gemma.block_count"].parts[3], 1 << 30), "block_count"),
    "tensor offset past the file": (
        lambda r, put, ren: put(_tensor(r, "output_norm.weight").parts[5], 1 << 40), "past the"),
    "dims product overflow": (
        lambda r, put, ren: [put(_tensor(r, "token_embd.weight").parts[3][i:i + 1], 1 << 31)
                             for i in range(2)],
        "elements"),
    "too many dims": (
        lambda r, put, ren: put(_tensor(r, "output_norm.weight").parts[2], 1 << 20), "dims"),
    "unknown tensor type": (
        lambda r, put, ren: put(_tensor(r, "token_embd.weight").parts[4], 999), "GGML type"),
    "embedding disagrees with the vocabulary": (
        lambda r, put, ren: put(_tensor(r, "token_embd.weight").parts[3][1:], 32), "vocabulary"),
    "token id outside the vocabulary": (
        lambda r, put, ren: put(r.fields["tokenizer.ggml.bos_token_id"].parts[3], 1 << 31),
        "outside the vocabulary"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_file_is_refused_before_parsing_with_a_named_reason(case, seed_gguf, tmp_path):
    edit, words = CRAFTED[case]
    path = _crafted(seed_gguf, tmp_path, edit)
    with pytest.raises(GGUFError, match=words):
        validate_gguf(path)
    with pytest.raises(GGUFError):
        read_gguf(path)


@pytest.mark.parametrize("keep", [0, 3, 23, 200, -1])
def test_truncated_files_are_a_gguf_error(keep, seed_gguf, tmp_path):
    data = seed_gguf.read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[:keep] if keep >= 0 else data[:-1])
    with pytest.raises(GGUFError, match=r"truncated|too short|[Rr]e-download"):
        read_gguf(path)


def test_valid_files_pass_and_describe_their_tensors(seed_gguf):
    header = validate_gguf(seed_gguf)
    model = read_gguf(seed_gguf)
    assert set(header.tensors) == set(model.tensor_names)
    assert len(header.tokens) == model.hparams.vocabulary_size
    assert header.data_offset % header.alignment == 0


def test_300_mutations_end_as_clean_reads_or_gemma_lab_errors(seed_gguf):
    # In a child process with a 2 GiB address-space cap and a per-case alarm: a crash, a hang
    # or a memory blow-up is counted, not fatal. benchmarks/gguf_fuzz.py runs thousands.
    run = subprocess.run(
        [sys.executable, "-m", "gemma_lab.models.gguf_fuzz", str(seed_gguf), "--cases", "300",
         "--seed", "7", "--memory-mb", "2048"],
        capture_output=True, text=True, timeout=300,
    )
    report = json.loads(run.stdout)
    assert report["bad"] == 0, report["crashes"]
    assert set(report["outcomes"]) == {"ok", "GemmaLabError:GGUFError"}
    assert report["outcomes"]["GemmaLabError:GGUFError"] > 100
