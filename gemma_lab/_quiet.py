"""Keeping the native libraries' start-up chatter out of the researcher's output.

Loading a Gemma imports TensorFlow (keras-hub's Gemma 3 / 4 preprocessors need it on every
backend) and builds a tensorflow-text SentencePiece op. Both write C++ log lines straight to
file descriptor 2, before (or outside) any Python logging: the absl pre-init banner, oneDNN
and CUDA-probe notices, CPU-feature hints, SentencePiece's "precompiled_charsmap is empty".
Nothing of that was asked for, and Python logging cannot catch it. So:

* `configure_native_logging(backend)` sets the libraries' log levels through their
  environment variables (only where the user has not set them), before they load;
* `install()` runs the TensorFlow import and the SentencePiece op construction with fd 2
  captured, and writes back every captured line that is not known start-up noise: a real
  warning or error from them, or anything Python printed meanwhile, still reaches stderr.

Nothing here touches Python `warnings` or `logging`: a user's own warnings, and gemma_lab's,
show as before.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

# Lines the native libraries print while they start, that say nothing a researcher needs.
NOISE = tuple(re.compile(pattern) for pattern in (
    # absl, before its logging is initialised (printed before the first line below).
    rb"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to",
    # absl / TSL INFO and WARNING lines ("I0000 00:00:1796... 25537 port.cc:153] oneDNN ...",
    # cudart_stub "Could not find cuda drivers", cpu_feature_guard, TF-TRT ...).
    rb"^[IW]\d{4} [\d:.]+ +\d+ [\w.-]+:\d+\] ",
    # cpu_feature_guard's second line.
    rb"^To enable the following instructions: .* rebuild TensorFlow with the appropriate",
    # CUDA probes of a TensorFlow that only preprocesses text: errors in form, not in fact.
    rb"^E\d{4} [\d:.]+ +\d+ [\w.-]+:\d+\] (failed call to cuInit|"
    rb"Unable to register cu(DNN|FFT|BLAS) factory)",
    # SentencePiece's INFO lines ("normalizer.cc(51) LOG(INFO) precompiled_charsmap ...").
    rb"^[\w.-]+\.cc\(\d+\) LOG\(INFO\) ",
))


def is_noise(line: bytes) -> bool:
    """Whether one captured stderr line is known native start-up noise.

    Example:
        >>> is_noise(b"normalizer.cc(51) LOG(INFO) precompiled_charsmap is empty.")
        True
        >>> is_noise(b"UserWarning: my own warning")
        False
    """
    return any(pattern.search(line) for pattern in NOISE)


@contextlib.contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """Capture file descriptor 2 for the block; afterwards write back the lines that are not
    `is_noise` (in order). Where fd 2 cannot be redirected the block just runs."""
    for stream in (sys.stderr, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    capture = tempfile.TemporaryFile()
    try:
        os.dup2(capture.fileno(), 2)
    except OSError:
        os.close(saved)
        capture.close()
        yield
        return
    try:
        yield
    finally:
        for stream in (sys.stderr, sys.__stderr__):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved, 2)
        os.close(saved)
        capture.seek(0)
        kept = [line for line in capture.read().splitlines(keepends=True) if not is_noise(line)]
        capture.close()
        if kept:
            with contextlib.suppress(OSError):
                os.write(2, b"".join(kept))


def configure_native_logging(backend: str) -> None:
    """Set TensorFlow's and gRPC's log levels before they load, unless the user chose them.

    On JAX and torch TensorFlow only runs keras-hub's text preprocessing on the CPU: its C++
    log (oneDNN, CUDA probes, "failed call to cuInit") is silenced (level 3); its real
    failures still raise Python exceptions. On the TensorFlow backend INFO and WARNING lines
    go (level 2) and errors stay, unless the machine has no NVIDIA device, where its CUDA
    errors are noise too.
    """
    gpu = os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/version")
    level = "2" if backend == "tensorflow" and gpu else "3"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", level)
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def _quiet_sentence_piece(module: Any) -> None:
    """Build keras-hub's tensorflow-text SentencePiece op with its INFO lines filtered."""
    cls = getattr(module, "SentencePieceTokenizer", None)
    method = getattr(cls, "_set_proto_tf", None)
    if method is None or getattr(method, "_gemma_lab_quiet", False):
        return

    @functools.wraps(method)
    def set_proto_tf(self: Any, *args: Any, **kwargs: Any) -> Any:
        with native_stderr_filtered():
            return method(self, *args, **kwargs)

    set_proto_tf._gemma_lab_quiet = True  # type: ignore[attr-defined]
    cls._set_proto_tf = set_proto_tf


# module -> (import it with fd 2 filtered, then call this on the module)
_HOOKS: dict[str, tuple[bool, Callable[[Any], None] | None]] = {
    "tensorflow": (True, None),
    "keras_hub.src.tokenizers.sentence_piece_tokenizer": (False, _quiet_sentence_piece),
}


class _QuietImports(importlib.abc.MetaPathFinder):
    """Wraps the loading of the `_HOOKS` modules; finds nothing itself."""

    def __init__(self) -> None:
        self._busy: set[str] = set()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        hook = _HOOKS.get(fullname)
        if hook is None or fullname in self._busy:
            return None
        self._busy.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        except (ImportError, ValueError):
            return None
        finally:
            self._busy.discard(fullname)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        quiet, after = hook
        exec_module = loader.exec_module

        def wrapped_exec_module(module: Any) -> None:
            with native_stderr_filtered() if quiet else contextlib.nullcontext():
                exec_module(module)
            if after is not None:
                after(module)

        loader.exec_module = wrapped_exec_module  # this spec's own loader instance
        return spec


_FINDER = _QuietImports()


def install() -> None:
    """Quiet the TensorFlow import and keras-hub's SentencePiece op (idempotent); modules
    already imported get the post-import fix directly."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    for name, (_quiet, after) in _HOOKS.items():
        if after is not None and sys.modules.get(name) is not None:
            after(sys.modules[name])


__all__ = ["NOISE", "configure_native_logging", "install", "is_noise", "native_stderr_filtered"]
