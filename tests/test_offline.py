"""Offline by default: with every socket refused, the embedded default model loads and runs, and
remote presets fail with a ModelLoadError that says why."""

from __future__ import annotations

import socket

import pytest

import gemma_lab
from gemma_lab.errors import ModelLoadError


@pytest.fixture
def no_network(monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled by test_offline")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


@pytest.mark.real_model
def test_default_model_loads_and_generates_with_the_network_blocked(no_network):
    lab = gemma_lab.load(progress=False)
    g = lab.generate("The capital of France is", max_new_tokens=4)
    assert len(g.token_ids) >= 1 and g.metadata["weights_sha256"]
    assert no_network == []  # nothing even tried to connect


@pytest.mark.parametrize("spec", ["kaggle://keras/gemma/keras/gemma_2b_en/2", "hf://google/x"])
def test_remote_presets_offline_say_they_need_the_network(no_network, spec):
    with pytest.raises(ModelLoadError, match="network access"):
        gemma_lab.load(spec, progress=False)
