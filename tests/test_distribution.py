"""Keras distribution (model / data parallel, JAX) on a simulated 8-device CPU mesh.

The mesh needs XLA_FLAGS before JAX starts, so one worker process (distribution_worker.py)
runs a tiny Gemma on one device and sharded, and these tests compare what it wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gemma_lab
from gemma_lab.errors import BackendError, InputError
from gemma_lab.models.distribution import check_backend, mesh_shape

WORKER = Path(__file__).with_name("distribution_worker.py")


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    out = tmp_path_factory.mktemp("distribution") / "out.json"
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
        "GEMMA_LAB_BACKEND": "jax",
        "KERAS_BACKEND": "jax",
    }
    run = subprocess.run([sys.executable, str(WORKER), str(out)], env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(out.read_text())


def _same_numbers(a, b, atol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=atol)


def test_worker_sees_eight_devices(sharded):
    assert sharded["devices"] == 8


def test_model_parallel_logits_and_greedy_tokens_equal_single_device(sharded):
    single, parallel = sharded["single"], sharded["model_parallel"]
    _same_numbers(parallel["logits"], single["logits"], atol=1e-4)
    assert np.argmax(parallel["logits"]) == np.argmax(single["logits"])
    assert parallel["greedy_ids"] == single["greedy_ids"]
    _same_numbers(parallel["greedy_logprobs"], single["greedy_logprobs"])
    _same_numbers(parallel["score_logprobs"], single["score_logprobs"])
    assert parallel["score_ranks"] == single["score_ranks"]


def test_model_parallel_uses_keras_hub_gemma_layout_map(sharded):
    specs = sharded["model_parallel_sharding"]
    assert specs["token_embedding/embeddings"] == "P('model', 'batch')"
    assert specs["decoder_block_0/attention/query/kernel"] == "P('model', 'batch', None)"
    assert specs["decoder_block_1/ffw_gating/kernel"] == "P('batch', 'model')"
    assert specs["decoder_block_1/ffw_linear/kernel"] == "P('model', 'batch')"
    # 2 key/value heads cannot split over a 4-wide model axis: that axis stays whole.
    assert specs["decoder_block_0/attention/key/kernel"] == "P(None, 'batch', None)"


def test_info_shows_mesh_and_per_device_weights(sharded):
    info = sharded["model_parallel_info"]
    assert info["mesh"]["kind"] == "model_parallel"
    assert tuple(info["mesh"]["mesh_shape"]) == (2, 4)
    assert info["mesh"]["devices"] == 8 and info["mesh"]["processes"] == 1
    per_device = info["device_weights_bytes"]
    assert len(per_device) == 8
    # Sharded: each device holds a fraction, all together at least the whole model.
    assert max(per_device.values()) < info["weights_bytes"] / 2
    assert sum(per_device.values()) >= info["weights_bytes"]
    assert "model_parallel mesh (data=2, model=4) over 8 cpu" in sharded["model_parallel_info_text"]

    replicated = sharded["data_parallel_info"]
    assert tuple(replicated["mesh"]["mesh_shape"]) == (8, 1)
    assert set(replicated["device_weights_bytes"].values()) == {replicated["weights_bytes"]}


def test_lora_under_data_parallel_gives_the_single_device_loss(sharded):
    assert len(sharded["single_loss"]) == 2
    _same_numbers(sharded["data_parallel_loss"], sharded["single_loss"])
    _same_numbers(sharded["data_parallel_after"]["score_logprobs"],
                  sharded["single_after"]["score_logprobs"])
    assert "Mesh('batch': 8" in sharded["data_parallel_lora_sharding"]


def test_lora_under_model_parallel_gives_the_single_device_loss(sharded):
    _same_numbers(sharded["model_parallel_loss"], sharded["single_loss"])
    _same_numbers(sharded["model_parallel_after"]["score_logprobs"],
                  sharded["single_after"]["score_logprobs"])
    assert "'model': 4" in sharded["model_parallel_lora_sharding"]


def test_batch_size_must_split_over_the_data_axis(sharded):
    assert sharded["batch_size_error"].startswith("BatchSizeError: batch_size=3")
    assert "multiple of 8" in sharded["batch_size_error"]


# --- checks that need no mesh ------------------------------------------------------------
def test_distribution_on_another_backend_says_use_jax():
    with pytest.raises(BackendError, match=r"set_backend\('jax'\)"):
        check_backend("torch", "model_parallel")
    with pytest.raises(BackendError, match="tensorflow"):
        check_backend("tensorflow", "data_parallel")


def test_mesh_shapes():
    assert mesh_shape("model_parallel", None, 8) == (1, 8)
    assert mesh_shape("data_parallel", None, 8) == (8, 1)
    assert mesh_shape("model_parallel", (2, 4), 8) == (2, 4)
    assert mesh_shape("data_parallel", (8,), 8) == (8, 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"distribution": "pipeline"}, "choose one of model_parallel, data_parallel"),
        ({"mesh": (1, 1)}, "mesh= needs distribution"),
        ({"distribution": "model_parallel", "mesh": (2, 4)}, "spans 8 devices, but 1"),
        ({"distribution": "model_parallel", "mesh": (0, 1)}, "two positive integers"),
        ({"distribution": "data_parallel", "mesh": (1, 1, 1)}, "two positive integers"),
    ],
)
def test_bad_distribution_arguments_fail_before_loading(kwargs, message):
    with pytest.raises(InputError, match=message):
        gemma_lab.load(progress=False, **kwargs)


def test_data_parallel_mesh_has_no_model_axis():
    with pytest.raises(InputError, match="model_parallel"):
        mesh_shape("data_parallel", (2, 4), 8)
