"""The one exception family of gemma_lab: every message names the next step."""

from __future__ import annotations


class GemmaLabError(Exception):
    """Base class of every error gemma_lab raises on purpose.

    Example:
        >>> try:
        ...     raise GemmaLabError("call %gemma load first")
        ... except GemmaLabError as err:
        ...     print(err)
        call %gemma load first
    """


class BackendError(GemmaLabError):
    """The Keras backend is unknown, missing, or already fixed for this process."""


class ModelLoadError(GemmaLabError):
    """A model spec could not be resolved, downloaded, converted or loaded."""


class GGUFError(ModelLoadError):
    """A GGUF file is malformed, unsupported or inconsistent."""


class CacheError(GemmaLabError):
    """The model cache could not be read or written."""


class InputError(GemmaLabError, ValueError):
    """An argument or a piece of user data is invalid."""


class NoModelError(GemmaLabError):
    """An operation needs a loaded model and none is loaded."""


class ModelBusyError(GemmaLabError):
    """The model is being fine-tuned (e.g. from the Fine-tune panel); other work must wait."""


class HookError(GemmaLabError):
    """A hook function raised, or returned a value of the wrong shape or dtype; the session,
    its model and its compiled functions are left as they were."""


class NotAvailableError(GemmaLabError):
    """A feature this gemma_lab build does not have yet (the message says what to use)."""
