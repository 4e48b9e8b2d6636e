"""A real multi-process run: two JAX processes joined by `gemma_lab.distributed.initialize`
(coordinator on 127.0.0.1), two simulated CPU devices each, one 4-device mesh over both.

Three workers (multiprocess_worker.py) run at once: the reference (one process, one device)
and processes 0 and 1. The model-parallel mesh (1, 4) spans both processes, so every
sharded matmul crosses between them; the data-parallel mesh (4, 1) splits each LoRA batch
across them. Every number is compared with the one-device reference; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gemma_lab import distributed
from gemma_lab.errors import InputError
from gemma_lab.models.distribution import CoordinatorTimeoutError

WORKER = Path(__file__).with_name("multiprocess_worker.py")
DEADLINE_S = 900


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
            "JAX_PLATFORMS": "cpu", "GEMMA_LAB_BACKEND": "jax", "KERAS_BACKEND": "jax",
            # one thread pool each: three processes share the machine
            "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("multiprocess")
    coordinator = f"127.0.0.1:{_free_port()}"
    commands = {
        "reference": ([sys.executable, str(WORKER), "reference", str(work)], _env(1)),
        "process0": ([sys.executable, str(WORKER), "process", "0", str(work), coordinator],
                     _env(2)),
        "process1": ([sys.executable, str(WORKER), "process", "1", str(work), coordinator],
                     _env(2)),
    }
    logs = {name: (work / f"{name}.log").open("w") for name in commands}
    procs = {name: subprocess.Popen(cmd, env=env, stdout=logs[name], stderr=subprocess.STDOUT)
             for name, (cmd, env) in commands.items()}
    deadline = time.monotonic() + DEADLINE_S
    failed = None
    try:
        while any(p.poll() is None for p in procs.values()):
            failed = next((n for n, p in procs.items() if p.poll() not in (None, 0)), None)
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        failed = failed or next((n for n, p in procs.items() if p.poll() not in (None, 0)),
                                None)
    finally:
        for p in procs.values():  # one failed: the others would wait on it; stop them all
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in logs.values():
            f.close()
    tails = "\n".join(f"--- {n} (rc {p.returncode}) ---\n"
                      + (work / f"{n}.log").read_text()[-3000:] for n, p in procs.items())
    assert failed is None and all(p.returncode == 0 for p in procs.values()), tails
    return {name: json.loads((work / f"{name}.json").read_text()) for name in commands}


def _close(a, b, atol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=atol)


def test_two_processes_join_one_four_device_run(run):
    for pid in (0, 1):
        joined = run[f"process{pid}"]["joined"]
        assert joined["process_id"] == pid and joined["num_processes"] == 2
        assert joined["local_devices"] == 2 and joined["global_devices"] == 4
    assert run["reference"]["devices"] == 1 and run["reference"]["processes"] == 1


def test_model_parallel_across_processes_equals_one_device(run):
    ref = run["reference"]["base"]
    for pid in (0, 1):
        mp = run[f"process{pid}"]["model_parallel"]
        _close(mp["logits"], ref["logits"], atol=1e-5)
        assert mp["greedy_ids"] == ref["greedy_ids"]
        _close(mp["greedy_logprobs"], ref["greedy_logprobs"])
        _close(mp["score_logprobs"], ref["score_logprobs"])
        assert mp["score_ranks"] == ref["score_ranks"]


def test_weights_are_sharded_over_both_processes(run):
    p0 = run["process0"]
    specs = p0["model_parallel_sharding"]
    assert specs["decoder_block_1/ffw_gating/kernel"] == "P('batch', 'model')"
    info = p0["model_parallel_info"]
    assert info["mesh"]["processes"] == 2 and info["mesh"]["devices"] == 4
    assert tuple(info["mesh"]["mesh_shape"]) == (1, 4)
    assert "(data=1, model=4)" in p0["model_parallel_info_text"]
    # info lists this process's own devices, each holding a fraction of the weights
    per_device = info["device_weights_bytes"]
    assert len(per_device) == 2 and max(per_device.values()) < info["weights_bytes"] / 2
    # every result carries the mesh (the renderer's footer shows it)
    assert p0["model_parallel_result_mesh"] == str(info["mesh"]["kind"]) + \
        " mesh (data=1, model=4) over 4 cpu device(s), 2 process(es)"


def test_interventions_and_sae_features_on_the_sharded_model_equal_one_device(run):
    ref = run["reference"]["interventions"]
    for pid in (0, 1):
        got = run[f"process{pid}"]["model_parallel_interventions"]
        for name in ("ablate", "steer"):
            _close(got[name]["score_logprobs"], ref[name]["score_logprobs"])
            assert got[name]["greedy_ids"] == ref[name]["greedy_ids"]
        # SAE features and an SAE spliced in, on the model sharded over both processes
        acts, ref_acts = np.asarray(got["sae"]["acts"]), np.asarray(ref["sae"]["acts"])
        _close(acts, ref_acts, atol=1e-5)
        _close(got["sae"]["spliced_logprobs"], ref["sae"]["spliced_logprobs"], atol=1e-5)
    assert (np.asarray(ref["sae"]["acts"]) > 0).mean() > 0.05  # features do fire
    # the hooks did something: the numbers differ from the plain model's
    base = run["reference"]["base"]["score_logprobs"]
    assert not np.allclose(ref["sae"]["spliced_logprobs"], base, atol=1e-4)
    assert not np.allclose(ref["ablate"]["score_logprobs"], base, atol=1e-4)
    assert not np.allclose(ref["steer"]["score_logprobs"], base, atol=1e-4)


def test_data_parallel_lora_step_across_processes_gives_single_device_loss(run):
    ref = run["reference"]["finetune"]
    for pid in (0, 1):
        got = run[f"process{pid}"]["data_parallel_finetune"]
        _close(got["loss"], ref["loss"], atol=1e-5)
        _close(got["after"]["score_logprobs"], ref["after"]["score_logprobs"], atol=1e-5)
    assert run["process0"]["data_parallel_info"]["mesh"]["kind"] == "data_parallel"


def test_adapter_saved_from_the_distributed_run_loads_on_one_device(run):
    loaded = run["reference"]["loaded_adapter"]
    trained_here = run["reference"]["finetune"]["after"]
    trained_there = run["process0"]["data_parallel_finetune"]["after"]
    _close(loaded["score_logprobs"], trained_there["score_logprobs"], atol=1e-5)
    _close(loaded["score_logprobs"], trained_here["score_logprobs"], atol=1e-5)
    base = run["reference"]["base"]["score_logprobs"]
    assert not np.allclose(loaded["score_logprobs"], base, atol=1e-4)


def test_mesh_and_batch_errors_are_clear_across_processes(run):
    p0 = run["process0"]
    assert p0["mesh_error"].startswith("MeshError")
    assert "4" in p0["mesh_error"]
    assert p0["batch_size_error"].startswith("BatchSizeError")


def test_a_coordinator_that_does_not_answer_times_out_with_a_clear_error():
    port = _free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(CoordinatorTimeoutError, match="did not answer within"):
        distributed.wait_for_coordinator(f"127.0.0.1:{port}", timeout_s=1.0)
    assert time.monotonic() - started < 10


def test_a_joining_process_without_a_coordinator_fails_instead_of_hanging(tmp_path):
    code = ("from gemma_lab import distributed\n"
            "from gemma_lab.errors import GemmaLabError\n"
            "try:\n"
            f"    distributed.initialize('127.0.0.1:{_free_port()}', 2, 1, timeout_s=2)\n"
            "except GemmaLabError as err:\n"
            "    print(type(err).__name__)\n")
    done = subprocess.run([sys.executable, "-c", code], env=_env(1), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "CoordinatorTimeoutError"


@pytest.mark.parametrize("args", [("nohost", 2, 0), ("127.0.0.1:1", 2, 2),
                                  ("127.0.0.1:1", 0, 0), ("127.0.0.1:1", True, 0)])
def test_bad_process_settings_are_input_errors(args):
    with pytest.raises(InputError):
        distributed.initialize(*args, timeout_s=1)
