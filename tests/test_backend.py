import subprocess
import sys

import pytest

from gemma_lab.backend import BACKENDS, requested_backend
from gemma_lab.errors import BackendError, GemmaLabError


def _run(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    full_env = {
        k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "GEMMA_LAB_BACKEND")
    }
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300
    )


def test_import_does_not_import_keras():
    result = _run(
        "import sys, gemma_lab; print('keras' in sys.modules, 'tensorflow' in sys.modules)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_default_backend_is_jax():
    result = _run(
        "from gemma_lab.backend import import_keras; print(import_keras().config.backend())"
    )
    assert result.stdout.strip().splitlines()[-1] == "jax", result.stderr[-2000:]


@pytest.mark.parametrize("var", ["GEMMA_LAB_BACKEND", "KERAS_BACKEND"])
def test_environment_variables_choose_the_backend(var):
    code = "from gemma_lab.backend import import_keras; print(import_keras().config.backend())"
    result = _run(code, {var: "tensorflow"})
    assert result.stdout.strip().splitlines()[-1] == "tensorflow", result.stderr[-2000:]


def test_switching_backend_after_keras_import_is_a_clear_error():
    code = (
        "import gemma_lab\n"
        "gemma_lab.set_backend('jax')\n"
        "from gemma_lab.backend import import_keras; import_keras()\n"
        "try:\n"
        "    gemma_lab.set_backend('torch')\n"
        "except gemma_lab.GemmaLabError as err:\n"
        "    print('ERR', err)\n"
    )
    result = _run(code)
    line = [ln for ln in result.stdout.splitlines() if ln.startswith("ERR")]
    assert line, result.stderr[-2000:]
    assert "Restart the kernel" in line[0]


def test_unknown_backend_names_the_choices():
    from gemma_lab.backend import set_backend

    with pytest.raises(BackendError, match="jax, tensorflow, torch"):
        set_backend("mxnet")
    assert issubclass(BackendError, GemmaLabError)


def test_requested_backend_is_known():
    assert requested_backend() in BACKENDS
