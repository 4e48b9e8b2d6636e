"""One check per kind of argument, shared by every public entry point (the session's
methods, `gemma_lab.interventions`, the magics' value parsing).

Each check returns the value in its plain Python form (a NumPy integer becomes an `int`) or
raises one `InputError` that names the argument, what it got and what to give instead. The
operations call them where they read their arguments, so each argument is checked once.

Booleans are refused wherever a number goes (`True` is an `int` to Python, never a layer or
a token count to a researcher), numeric strings ("5") are refused wherever a number goes,
and text must be encodable as UTF-8 (no lone surrogates such as "\\ud800").

Example:
    >>> integer(3, "layer", low=0, high=17)
    3
    >>> try:
    ...     integer(True, "max_new_tokens", low=1)
    ... except InputError as err:
    ...     print(err)
    max_new_tokens must be an integer ≥ 1, got True (a bool).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from gemma_lab.errors import InputError

# Seeds: what NumPy's and Keras' seeding accept (the sampler keys its draws by seed % 2**31).
SEED_LIMIT = 2**32
# Temperatures beyond this are a uniform distribution for any model's logits.
MAX_TEMPERATURE = 1000.0
# The largest index the compiled code takes (int32).
INT32_LIMIT = 2**31 - 1
# Integrated-gradients path points (each 1/8 of a compiled forward + backward pass).
MAX_ATTRIBUTION_STEPS = 4096
# Estimated peak working memory of one inspection call (trace, attribute, patch) or one
# fine-tuning step beyond which it is refused before anything is allocated. None: the free
# memory of the first accelerator when the backend reports it (JAX, torch), else
# `DEFAULT_WORKING_BYTES`. Set a number of bytes to choose the limit yourself.
MAX_WORKING_BYTES: int | None = None
DEFAULT_WORKING_BYTES = 16 * 2**30
# Token positions one activation-patching sweep may run in all (patched runs × their
# length): beyond it the sweep runs for many minutes.
MAX_PATCH_TOKENS = 2**22


def _got(value: Any) -> str:
    if isinstance(value, bool):
        return f"{value!r} (a bool)"
    if isinstance(value, str):
        return f"{_short(value)} (a string)"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return repr(value)
    return f"{_short(value)} (a {type(value).__name__})"


def _short(value: Any, limit: int = 60) -> str:
    shown = repr(value)
    return shown if len(shown) <= limit else shown[:limit - 3] + "..."


def _real(value: Any) -> bool:
    """A finite real number that is not a bool (nor a string)."""
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int beyond any float
        return False


def is_integer(value: Any) -> bool:
    """An int or NumPy integer that is not a bool.

    Example:
        >>> is_integer(np.int64(2)), is_integer(True), is_integer(2.0)
        (True, False, False)
    """
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def integer(value: Any, what: str, *, low: int | None = None, high: int | None = None,
            hint: str = "") -> int:
    """`value` as an int in low..high (either bound optional).

    Example:
        >>> integer(np.int32(4), "top_k", low=1)
        4
    """
    if not is_integer(value) or (low is not None and value < low) or (
            high is not None and value > high):
        if low is not None and high is not None:
            span = f"an integer in {low}..{high}"
        elif low is not None:
            span = f"an integer ≥ {low}"
        elif high is not None:
            span = f"an integer ≤ {high}"
        else:
            span = "an integer"
        raise InputError(f"{what} must be {span}, got {_got(value)}.{hint and ' ' + hint}")
    return int(value)


def optional_integer(value: Any, what: str, *, low: int | None = None,
                     high: int | None = None, hint: str = "") -> int | None:
    """None, or `integer(value, ...)`.

    Example:
        >>> optional_integer(None, "top_k", low=1) is None
        True
    """
    return None if value is None else integer(value, what, low=low, high=high, hint=hint)


def number(value: Any, what: str, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False, hint: str = "") -> float:
    """`value` as a finite float in [low, high] (`low_open` / `high_open`: excluded).

    Example:
        >>> number(1, "scale")
        1.0
        >>> try:
        ...     number(float("nan"), "temperature", low=0)
        ... except InputError as err:
        ...     print(err)
        temperature must be a finite number ≥ 0, got nan.
    """
    ok = _real(value)
    if ok:
        as_float = float(value)
        ok = not ((low is not None and (as_float < low or (low_open and as_float == low)))
                  or (high is not None and (as_float > high or (high_open and as_float == high))))
    if not ok:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        if low is not None and high is not None:
            span = f"a number in {lo}{low:g}, {high:g}{hi}"
        elif low is not None:
            span = f"a finite number {'>' if low_open else '≥'} {low:g}"
        elif high is not None:
            span = f"a finite number {'<' if high_open else '≤'} {high:g}"
        else:
            span = "a finite number"
        raise InputError(f"{what} must be {span}, got {_got(value)}.{hint and ' ' + hint}")
    return float(value)


def flag(value: Any, what: str) -> bool:
    """`value` as a bool: True / False (or a NumPy bool), nothing else.

    Example:
        >>> flag(np.bool_(True), "keep_partial")
        True
    """
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{what} must be True or False, got {_got(value)}.")
    return bool(value)


def seed(value: Any, what: str = "seed") -> int | None:
    """None, or an integer seed in 0..2**32 - 1.

    Example:
        >>> seed(7), seed(None)
        (7, None)
    """
    return optional_integer(value, what, low=0, high=SEED_LIMIT - 1,
                            hint="Use a non-negative integer such as 0 or 1234 (or None).")


def text(value: Any, what: str, *, empty: bool = True) -> str:
    """`value` if it is a string that UTF-8 can encode (no lone surrogate), else an
    `InputError`; `empty=False` also refuses "" and whitespace-only strings.

    Example:
        >>> text("hello", "prompt")
        'hello'
        >>> try:
        ...     text("a\\ud800", "prompt")
        ... except InputError as err:
        ...     print(str(err)[:58])
        prompt holds a lone surrogate '\\ud800' at index 1: it is
    """
    if not isinstance(value, str):
        raise InputError(f"{what} must be a string, got {_got(value)}.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InputError(
            f"{what} holds a lone surrogate {value[err.start]!r} at index {err.start}: it is "
            "not text UTF-8 can encode (half of a UTF-16 pair, e.g. from a JSON \\ud83d "
            "escape). Remove it, or join the pair: s.encode('utf-16', 'surrogatepass')"
            ".decode('utf-16').") from None
    if not empty and not value.strip():
        raise InputError(f"{what} must be a non-empty string, got {value!r}.")
    return value


def optional_text(value: Any, what: str, *, empty: bool = True) -> str | None:
    """None, or `text(value, ...)`.

    Example:
        >>> optional_text(None, "system") is None
        True
    """
    return None if value is None else text(value, what, empty=empty)


def sequence(value: Any, what: str, *, example: str, ordered: bool = False) -> list[Any]:
    """The items of a list, tuple, range, NumPy array, set or generator as a list (`ordered`:
    no set); a string, bytes, a mapping or a scalar is an `InputError` showing `example`.

    Example:
        >>> sequence((1, 2), "positions", example="[0, 3]")
        [1, 2]
    """
    if isinstance(value, np.ndarray):
        return value.tolist() if value.ndim else [value.item()]
    unordered = isinstance(value, (set, frozenset))
    if (isinstance(value, (str, bytes, bytearray, Mapping)) or not isinstance(value, Iterable)
            or (ordered and unordered)):
        kind = "an ordered list" if ordered and unordered else "a list"
        raise InputError(f"{what} must be {kind}, e.g. {example}, got {_got(value)}.")
    return sorted(value, key=repr) if unordered else list(value)


def texts(value: Any, what: str, *, empty: bool = False) -> list[str]:
    """One string, or a non-empty list / tuple of strings, as a list.

    Example:
        >>> texts("a", "texts"), texts(["a", "b"], "texts")
        (['a'], ['a', 'b'])
    """
    if isinstance(value, str):
        return [text(value, what, empty=empty)]
    items = sequence(value, what, example='["one text", "another"]', ordered=True)
    if not items:
        raise InputError(f"{what} is an empty list: give at least one string.")
    return [text(item, f"{what}[{index}]", empty=empty) for index, item in enumerate(items)]


def choice(value: Any, options: Iterable[str], what: str) -> str:
    """`value` if it is one of `options`.

    Example:
        >>> choice("zero", ("zero", "mean"), "mode")
        'zero'
    """
    options = tuple(options)
    if not isinstance(value, str) or value not in options:
        raise InputError(f"{what}={_short(value)}: choose one of "
                         f"{', '.join(map(repr, options))}.")
    return value


def max_new_tokens(value: Any) -> int:
    """An integer in 1..`defaults.MAX_NEW_TOKENS_LIMIT`.

    Example:
        >>> max_new_tokens(16)
        16
    """
    from gemma_lab.defaults import MAX_NEW_TOKENS_LIMIT

    return integer(value, "max_new_tokens", low=1, high=MAX_NEW_TOKENS_LIMIT)


def temperature(value: Any) -> float:
    """A finite number in 0..`MAX_TEMPERATURE` (0 is greedy).

    Example:
        >>> temperature(0)
        0.0
    """
    if not _real(value) or not 0 <= float(value) <= MAX_TEMPERATURE:
        raise InputError(f"temperature must be ≥ 0 and ≤ {MAX_TEMPERATURE:g}, a number (0 is "
                         f"greedy; 0.7-1.0 samples), got {_got(value)}.")
    return float(value)


def top_k(value: Any) -> int | None:
    """None (keep every token) or a positive integer.

    Example:
        >>> top_k(40), top_k(None)
        (40, None)
    """
    if value is not None and (not is_integer(value) or not 1 <= value <= INT32_LIMIT):
        raise InputError(f"top_k must be a positive integer (at most {INT32_LIMIT}) or None "
                         f"(None keeps every token), got {_got(value)}.")
    return None if value is None else int(value)


def top_p(value: Any) -> float | None:
    """None (keep every token) or a number in (0, 1].

    Example:
        >>> top_p(0.9)
        0.9
    """
    if value is not None and (not _real(value) or not 0 < float(value) <= 1):
        raise InputError(f"top_p must be in (0, 1], a number (None keeps every token), got "
                         f"{_got(value)}.")
    return None if value is None else float(value)


def stop_strings(value: Any) -> list[str]:
    """None, one stop string, or a list / tuple of them, as a list (empty strings dropped).

    Example:
        >>> stop_strings("\\n"), stop_strings(None), stop_strings(["a", ""])
        (['\\n'], [], ['a'])
    """
    if value is None:
        return []
    if isinstance(value, str):
        return [s for s in [text(value, "stop")] if s]
    if not isinstance(value, (list, tuple)):
        raise InputError(f"stop must be a string or a list of strings, e.g. stop=['\\n'], got "
                         f"{_got(value)}.")
    return [s for index, item in enumerate(value) if (s := text(item, f"stop[{index}]"))]


def token_ids(value: Any, vocabulary_size: int, what: str = "prompt_ids") -> list[int]:
    """A non-empty list of token ids, each in 0..vocabulary_size - 1.

    Example:
        >>> token_ids([2, 10], 320)
        [2, 10]
    """
    items = sequence(value, what, example="[2, 651, 1234]", ordered=True)
    if not items:
        raise InputError(f"{what} is empty: give at least the <bos> id, or None.")
    ids = []
    for index, item in enumerate(items):
        if not is_integer(item) or not 0 <= item < vocabulary_size:
            raise InputError(
                f"{what}[{index}] is {_got(item)}: token ids are integers in "
                f"0..{vocabulary_size - 1} (this vocabulary); lab.tokenizer.encode(text) "
                "gives them.")
        ids.append(int(item))
    return ids


def indices(value: Any, count: int, what: str, *, negative: bool = False) -> tuple[int, ...]:
    """None (all of 0..count - 1), one index or a list of them, each in 0..count - 1
    (`negative`: also -count..-1, counted from the end), as a sorted tuple without repeats.

    Example:
        >>> indices([1, 0, 1], 4, "heads"), indices(None, 2, "layers"), indices(-1, 3, "x",
        ...                                                                       negative=True)
        ((0, 1), (0, 1), (2,))
    """
    if value is None:
        return tuple(range(count))
    items = [value] if is_integer(value) else sequence(value, what, example="[0, 2]")
    if not items:
        raise InputError(f"{what}=[] chooses nothing: give at least one index, or None for "
                         "all.")
    low = -count if negative else 0
    chosen = set()
    for item in items:
        if not is_integer(item) or not low <= item < count:
            span = f"0..{count - 1}" + (f", or -{count}..-1 from the end" if negative else "")
            raise InputError(f"{what}: {_got(item)} is not an index of this model's {count} "
                             f"{what} (integers {span}).")
        chosen.add(int(item) % count)
    return tuple(sorted(chosen))


def point_names(value: Any, what: str = "names") -> list[str]:
    """One hook-point name or a non-empty list / tuple of them (checked against the model
    elsewhere: `forward.check_names`).

    Example:
        >>> point_names("embed")
        ['embed']
    """
    if isinstance(value, str):
        return [value]
    items = sequence(value, what, example='["blocks.0.resid_post", "logits"]')
    if not items:
        raise InputError(f"{what}=[] keeps nothing: give at least one hook point "
                         "(lab.hook_points() lists them), or None for all.")
    for item in items:
        if not isinstance(item, str):
            raise InputError(f"{what} holds {_got(item)}: hook points are names such as "
                             "'blocks.0.resid_post' (lab.hook_points() lists them).")
    return list(dict.fromkeys(items))


def predicate(fn: Callable[[str], Any], name: str) -> bool:
    """`fn(name)` of a user's name filter, its exceptions as one `InputError`.

    Example:
        >>> predicate(lambda n: n.endswith("z"), "blocks.0.attn.z")
        True
    """
    try:
        return bool(fn(name))
    except Exception as err:
        raise InputError(f"The names= filter raised {type(err).__name__} on {name!r}: {err}. "
                         "It takes a hook-point name and returns True to keep it.") from err


def turns(value: Any) -> None:
    """Check a transcript's turns: each a mapping with a string 'role' and a string
    'content' that UTF-8 can encode (the transcript itself checks their order).

    Example:
        >>> turns([{"role": "user", "content": "hi"}])
    """
    for index, item in enumerate(value):
        if isinstance(item, Mapping):
            if "role" not in item or "content" not in item:
                raise InputError(
                    f"Turn {index} of the transcript has keys {sorted(map(str, item))}; a turn "
                    "is {'role': 'user' | 'model' | 'system', 'content': text}.")
            role, content = item["role"], item["content"]
        elif hasattr(item, "role") and hasattr(item, "content"):  # a chat.Turn
            role, content = item.role, item.content
        else:
            raise InputError(f"Turn {index} of the transcript is {_got(item)}; a turn is "
                             "{'role': 'user' | 'model' | 'system', 'content': text}.")
        if not isinstance(role, str):
            raise InputError(f"Turn {index} has role {_got(role)}; roles are 'system', 'user' "
                             "and 'model' (or 'assistant').")
        text(content, f"The content of turn {index}")


def fits_memory(needed: float, what: str, advice: str, limit: float | None = None) -> None:
    """Refuse work whose estimated peak memory `needed` (bytes) exceeds `limit`
    (default `MAX_WORKING_BYTES`), before anything is allocated.

    Example:
        >>> fits_memory(2**20, "A trace", "Trace a shorter text.")
        >>> try:
        ...     fits_memory(2**40, "A trace", "Trace a shorter text.", limit=2**30)
        ... except InputError as err:
        ...     print(str(err)[:50])
        A trace would need about 1024.0 GiB of memory, mor
    """
    limit = working_memory_limit() if limit is None else limit
    if needed > limit:
        raise InputError(
            f"{what} would need about {needed / 2**30:.1f} GiB of memory, more than the limit "
            f"of {limit / 2**30:.1f} GiB (gemma_lab.validate.MAX_WORKING_BYTES). {advice}")


def working_memory_limit() -> int:
    """`MAX_WORKING_BYTES` when set, else the free memory of the first accelerator (bytes
    it can still allocate), else `DEFAULT_WORKING_BYTES` (on the CPU).

    Example:
        >>> working_memory_limit() > 0
        True
    """
    if MAX_WORKING_BYTES is not None:
        return int(MAX_WORKING_BYTES)
    free = _accelerator_free_bytes()
    return free if free else DEFAULT_WORKING_BYTES


def _accelerator_free_bytes() -> int | None:
    """Bytes the first GPU / TPU can still allocate, if the backend in use says."""
    import sys

    try:
        if "jax" in sys.modules:
            import jax

            device = jax.local_devices()[0]
            if device.platform != "cpu":
                stats = device.memory_stats() or {}
                if "bytes_limit" in stats:
                    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
        if "torch" in sys.modules:
            import torch

            if torch.cuda.is_available():
                return int(torch.cuda.mem_get_info()[0])
    except Exception:  # a backend that cannot say: the default limit holds
        return None
    return None


def forward_bytes(shape: Any, batch: int, length: int, *, backward: bool = False,
                  logits_rows: int = 0, dtype_bytes: int = 4) -> int:
    """An estimate of the peak memory of one forward pass (with `backward`, the activations
    kept for the gradient and the gradient itself) of `batch` sequences of `length` tokens on
    a model of `shape` (`forward.ModelShape`): per layer the attention scores and
    probabilities [batch, heads, length, length] and the hidden / MLP activations, plus
    `logits_rows` rows of vocabulary logits per sequence.

    Example:
        >>> from gemma_lab.forward import ModelShape
        >>> forward_bytes(ModelShape(2, 4, 2, 8, 32, 64, 100), 1, 16) > 0
        True
    """
    per_layer = (2 * shape.num_heads * length * length
                 + length * (8 * shape.hidden_dim + 3 * shape.mlp_dim
                             + 4 * shape.num_heads * shape.head_dim))
    # A forward pass frees each layer's work; a backward pass keeps every layer's.
    layers = shape.num_layers if backward else 1
    logits = 3 * logits_rows * shape.vocabulary_size
    return int(batch * (layers * per_layer + logits) * dtype_bytes)


__all__ = [
    "INT32_LIMIT",
    "MAX_ATTRIBUTION_STEPS",
    "MAX_PATCH_TOKENS",
    "MAX_TEMPERATURE",
    "MAX_WORKING_BYTES",
    "SEED_LIMIT",
    "choice",
    "fits_memory",
    "flag",
    "forward_bytes",
    "indices",
    "integer",
    "is_integer",
    "max_new_tokens",
    "number",
    "optional_integer",
    "optional_text",
    "point_names",
    "predicate",
    "seed",
    "sequence",
    "stop_strings",
    "temperature",
    "text",
    "texts",
    "token_ids",
    "top_k",
    "top_p",
    "turns",
]
