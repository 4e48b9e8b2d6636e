"""One background job at a time for a widget: long model work runs off the kernel's main
thread so the widget (and its Stop button) stays responsive."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from gemma_lab.errors import GemmaLabError


class BackgroundJob:
    """Runs one function at a time on a daemon thread.

    `start()` refuses (returns False) while a job is running, so a double click starts one
    run. `on_busy(flag)` is called when a job starts and when it ends; a job's error is kept
    in `error` and reported through `on_error(message)`, because a thread has no caller to
    raise to.

    Example:
        >>> job = BackgroundJob(on_busy=lambda busy: None, on_error=print)
        >>> job.start(lambda: None)
        True
        >>> job.wait()
        >>> job.busy
        False
    """

    def __init__(self, on_busy: Callable[[bool], None], on_error: Callable[[str], None]):
        self._on_busy = on_busy
        self._on_error = on_error
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, work: Callable[[], Any]) -> bool:
        """Run `work()` in the background unless a job is already running."""
        with self._lock:
            if self.busy:
                return False
            self.error = None
            self._on_busy(True)
            self._thread = threading.Thread(target=self._run, args=(work,), daemon=True,
                                            name="gemma-lab-widget")
            self._thread.start()
            return True

    def wait(self, timeout: float | None = None) -> None:
        """Block until the running job (if any) has finished."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self, work: Callable[[], Any]) -> None:
        try:
            work()
        except GemmaLabError as error:
            self.error = error
            self._on_error(str(error))
        except Exception as error:  # a thread has no caller: shown, and kept in .error
            self.error = error
            self._on_error(f"{type(error).__name__}: {error}")
        finally:
            self._on_busy(False)


__all__ = ["BackgroundJob"]
