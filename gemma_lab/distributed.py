"""Several processes, one model: join a multi-controller JAX run before loading.

Every process (one per host, or several on one host for a test) calls `initialize` first,
before `gemma_lab.load` or any other Keras / JAX work; `keras.distribution.list_devices()`
then lists the devices of every process, and `gemma_lab.load(spec,
distribution="model_parallel", mesh=(data, model))` builds one mesh over all of them.

`initialize` is `jax.distributed.initialize` (what `keras.distribution.initialize` calls)
with three things added: a deadline for the coordinator (a process whose coordinator does
not answer raises `CoordinatorTimeoutError` instead of waiting), Keras' shared random seed
(what `keras.distribution.initialize` does after joining), and messages that say what to do.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from gemma_lab.backend import import_keras
from gemma_lab.errors import InputError
from gemma_lab.models.distribution import (
    CoordinatorTimeoutError,
    DistributionError,
    check_backend,
)

DEFAULT_TIMEOUT_S = 300.0
DEFAULT_HEARTBEAT_S = 100.0
_ENV = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
        "KERAS_DISTRIBUTION_PROCESS_ID")


@dataclass(frozen=True)
class ProcessInfo:
    """Where this process stands in a multi-process run (`initialize` returns it).

    Fields: process_id, num_processes, coordinator ("host:port"), local_devices (this
    process), global_devices (all processes).
    """

    process_id: int
    num_processes: int
    coordinator: str
    local_devices: int
    global_devices: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return (f"process {self.process_id} of {self.num_processes} (coordinator "
                f"{self.coordinator}): {self.local_devices} local of "
                f"{self.global_devices} devices")


def parse_address(address: str) -> tuple[str, int]:
    """(host, port) of a "host:port" coordinator address (the first of a comma-separated
    list, as `KERAS_DISTRIBUTION_JOB_ADDRESSES` may hold one per process).

    Example:
        >>> parse_address("10.0.0.1:1234,10.0.0.2:1234")
        ('10.0.0.1', 1234)
        >>> parse_address("[::1]:8476")
        ('::1', 8476)
    """
    first = str(address).split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(
            f"coordinator must be 'host:port' (process 0's address and a free port, the same "
            f"in every process), got {address!r}; e.g. '10.0.0.1:1234'."
        )
    return host, int(port)


def _settings(coordinator: str | None, num_processes: int | None,
              process_id: int | None) -> tuple[str, int, int]:
    env = [os.environ.get(name) for name in _ENV]
    coordinator = coordinator if coordinator is not None else env[0]
    given = []
    for value, name, env_value in ((num_processes, "num_processes", env[1]),
                                   (process_id, "process_id", env[2])):
        if value is None and env_value is not None:
            if not env_value.strip().isdigit():
                raise InputError(f"{_ENV[1 if name == 'num_processes' else 2]}="
                                 f"{env_value!r} is not a whole number.")
            value = int(env_value)
        given.append(value)
    num_processes, process_id = given
    missing = [name for name, value in (("coordinator", coordinator),
                                        ("num_processes", num_processes),
                                        ("process_id", process_id)) if value is None]
    if missing:
        raise InputError(
            f"gemma_lab.distributed.initialize needs {', '.join(missing)}: pass them, or set "
            f"{', '.join(_ENV)} in every process (process 0's 'host:port', the number of "
            "processes, and this process's number from 0)."
        )
    for name, value in (("num_processes", num_processes), ("process_id", process_id)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise InputError(f"{name} must be a whole number, got {value!r}.")
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise InputError(
            f"process_id must be in 0..{num_processes - 1} for num_processes={num_processes}, "
            f"got process_id={process_id}; number the processes 0, 1, ... and start each once."
        )
    parse_address(coordinator)
    return str(coordinator).split(",")[0].strip(), num_processes, process_id


def wait_for_coordinator(address: str, timeout_s: float) -> None:
    """Return once something accepts TCP connections at `address` ("host:port"); raise
    `CoordinatorTimeoutError` if nothing does within `timeout_s` seconds.

    Example:
        >>> try:
        ...     wait_for_coordinator("127.0.0.1:9", timeout_s=0.2)  # the discard port: closed
        ... except CoordinatorTimeoutError as err:
        ...     print("did not answer" in str(err))
        True
    """
    host, port = parse_address(address)
    deadline = time.monotonic() + timeout_s
    last: OSError | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            with socket.create_connection((host, port), timeout=min(1.0, left)):
                return
        except OSError as err:
            last = err
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0)))
    raise CoordinatorTimeoutError(
        f"The coordinator at {host}:{port} did not answer within {timeout_s:g} s ({last}). "
        "Start process 0 (it runs the coordinator) first, check that every process uses its "
        "address and the same port, and that the port is open between the hosts; or pass a "
        "larger timeout_s."
    )


def _warn_at_deadline(done: threading.Event, timeout_s: float, num_processes: int,
                      coordinator: str) -> None:
    # JAX ends the process itself when not every process registered in time (a fatal error
    # in its C++ client, not a Python exception): say why in words first.
    if not done.wait(timeout_s):
        print(
            f"gemma_lab: CoordinatorTimeoutError: not all {num_processes} processes joined "
            f"the coordinator at {coordinator} within {timeout_s:g} s; JAX ends this process "
            "now. Start every process (process_id 0..num_processes-1) with the same "
            "coordinator address, or pass a larger timeout_s.",
            file=sys.stderr, flush=True,
        )


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S,
               heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_S) -> ProcessInfo:
    """Join this process to a multi-process JAX run; call it first, in every process.

    `coordinator`: process 0's "host:port" (it starts the coordinator there); `num_processes`
    and `process_id` (0 .. num_processes - 1). Each falls back to Keras' environment variables
    `KERAS_DISTRIBUTION_JOB_ADDRESSES`, `KERAS_DISTRIBUTION_NUM_PROCESSES`,
    `KERAS_DISTRIBUTION_PROCESS_ID`. `timeout_s` bounds the wait: a process whose coordinator
    does not answer raises `CoordinatorTimeoutError`; if the coordinator answers but not every
    process joins in time, JAX ends the processes after a gemma_lab message saying so.
    `heartbeat_timeout_s`: after this long without news from a process that died, JAX ends
    the others (no process waits forever on a dead peer). Calling it again with the same
    settings returns the same `ProcessInfo`.

    Example (two processes on one machine, each with two simulated CPU devices):

        # XLA_FLAGS=--xla_force_host_platform_device_count=2 JAX_PLATFORMS=cpu \\
        #   PROCESS_ID=0 python run.py   (and PROCESS_ID=1 in a second shell)
        >>> from gemma_lab import distributed                       # doctest: +SKIP
        >>> info = distributed.initialize("127.0.0.1:8476", 2,      # doctest: +SKIP
        ...                               int(os.environ["PROCESS_ID"]), timeout_s=60)
        >>> info.global_devices                                     # doctest: +SKIP
        4
        >>> lab = gemma_lab.load(preset, distribution="model_parallel",  # doctest: +SKIP
        ...                      mesh=(2, 2))
    """
    coordinator, num_processes, process_id = _settings(coordinator, num_processes, process_id)
    for name, value in (("timeout_s", timeout_s), ("heartbeat_timeout_s", heartbeat_timeout_s)):
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or value <= 0):
            raise InputError(f"{name} must be a positive number of seconds, got {value!r}.")
    keras = import_keras()
    check_backend(keras.config.backend(), "model_parallel")
    import jax
    from jax._src import distributed as jax_distributed
    from jax._src import xla_bridge

    state = jax_distributed.global_state
    if state.client is not None:
        if (state.num_processes, state.process_id) != (num_processes, process_id):
            raise DistributionError(
                f"This process already joined a run as process {state.process_id} of "
                f"{state.num_processes}; JAX joins once per process. Restart it to join "
                f"as process {process_id} of {num_processes}."
            )
        return _info(jax, coordinator)
    if xla_bridge.backends_are_initialized():
        raise DistributionError(
            "JAX has already started on this process (a model was loaded or Keras computed "
            "something), and a process joins a multi-process run only before that. Restart "
            "the kernel / process and call gemma_lab.distributed.initialize(...) first."
        )
    started = time.monotonic()
    if process_id != 0:
        wait_for_coordinator(coordinator, timeout_s)
    left = max(timeout_s - (time.monotonic() - started), 1.0)
    done = threading.Event()
    threading.Thread(target=_warn_at_deadline, args=(done, left, num_processes, coordinator),
                     daemon=True, name="gemma_lab-coordinator-deadline").start()
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator, num_processes=num_processes,
            process_id=process_id,
            # A little after the message above, so that it is printed first.
            initialization_timeout=math.ceil(left) + 2,
            heartbeat_timeout_seconds=math.ceil(heartbeat_timeout_s),
            shutdown_timeout_seconds=math.ceil(max(timeout_s, heartbeat_timeout_s)),
        )
    except (RuntimeError, ValueError) as err:
        raise DistributionError(
            f"JAX could not join process {process_id} of {num_processes} to the coordinator "
            f"at {coordinator}: {err}. Check the address (process 0 must be able to bind its "
            "port) and that every process uses the same num_processes."
        ) from err
    finally:
        done.set()
    _share_random_seed()
    return _info(jax, coordinator)


def _share_random_seed() -> None:
    """Keras' step after joining (`keras.distribution.initialize`): one random seed for all
    processes, so that variables created with random initialisers (LoRA) agree."""
    try:
        from keras.src.backend.jax.distribution_lib import initialize_rng
    except ImportError:  # pragma: no cover - older / newer Keras layout
        return
    initialize_rng()


def _info(jax: Any, coordinator: str) -> ProcessInfo:
    return ProcessInfo(jax.process_index(), jax.process_count(), coordinator,
                       jax.local_device_count(), jax.device_count())


def process_info() -> ProcessInfo | None:
    """This process's `ProcessInfo` if it joined a multi-process run, else None.

    Example:
        >>> process_info() is None or process_info().num_processes >= 1
        True
    """
    if "jax" not in sys.modules:
        return None
    import jax
    from jax._src import distributed as jax_distributed

    state = jax_distributed.global_state
    if state.client is None:
        return None
    return _info(jax, str(state.coordinator_address))


__all__ = [
    "CoordinatorTimeoutError",
    "DistributionError",
    "ProcessInfo",
    "initialize",
    "parse_address",
    "process_info",
    "wait_for_coordinator",
]
