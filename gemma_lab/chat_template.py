"""A checkpoint's own chat template: the Jinja source a GGUF (`tokenizer.chat_template`) or
a Hugging Face folder (`chat_template.jinja`, or `chat_template` in `tokenizer_config.json`)
carries, rendered the way transformers' `apply_chat_template` renders it.

The environment is transformers' (`ImmutableSandboxedEnvironment` with `trim_blocks`,
`lstrip_blocks` and loop controls; `raise_exception`, `strftime_now` and a `tojson` that
keeps non-ASCII text): a template cannot reach Python objects or the file system, and a
template that raises says so as an `InputError`. Roles are passed as the checkpoint
expects them: gemma_lab's "model" turns as "assistant".
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from gemma_lab.errors import InputError, ModelLoadError

_MAX_SOURCE = 1 << 20  # a template longer than 1 MiB is not a chat template


@dataclass(frozen=True)
class CheckpointTemplate:
    """A Jinja chat template and where it came from.

    Example:
        >>> t = CheckpointTemplate("{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]"
        ...                        "{{ m['content'] }}{% endfor %}", origin="example")
        >>> t.render([{"role": "user", "content": "hi"}], bos_token="<bos>")
        '<bos>[user]hi'
    """

    source: str
    origin: str  # e.g. "GGUF tokenizer.chat_template"
    name: str = "checkpoint"

    @cached_property
    def _compiled(self) -> Any:
        import jinja2
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise jinja2.exceptions.TemplateError(message)

        def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
                   separators: Any = None, sort_keys: bool = False) -> str:
            return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent,
                              separators=separators, sort_keys=sort_keys)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=[loopcontrols])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            return env.from_string(self.source)
        except jinja2.TemplateError as err:
            raise ModelLoadError(f"The chat template from {self.origin} does not parse "
                                 f"({err}); set lab.chat_template = None to use gemma_lab's "
                                 "built-in Gemma template.") from err

    def render(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True,
               bos_token: str = "<bos>", eos_token: str = "<eos>") -> str:
        """The template's text for `messages` ({"role", "content"}; "model" is passed as
        "assistant"), with the generation prompt when `add_generation_prompt`."""
        import jinja2

        roles = [{**m, "role": "assistant" if m["role"] == "model" else m["role"]}
                 for m in messages]
        try:
            return self._compiled.render(messages=roles,
                                         add_generation_prompt=add_generation_prompt,
                                         bos_token=bos_token, eos_token=eos_token,
                                         tools=None, documents=None)
        except jinja2.TemplateError as err:
            raise InputError(f"The model's chat template ({self.origin}) refused this "
                             f"conversation: {err}") from err


def from_text(source: Any, origin: str) -> CheckpointTemplate | None:
    """A template from a metadata value, None when there is none (or it is not text)."""
    if isinstance(source, list):  # tokenizer_config.json may hold named templates
        named = {item.get("name"): item.get("template") for item in source
                 if isinstance(item, Mapping)}
        source = named.get("default")
    if not isinstance(source, str) or not source.strip() or len(source) > _MAX_SOURCE:
        return None
    return CheckpointTemplate(source, origin)


def from_gguf(path: str | Path) -> CheckpointTemplate | None:
    """The `tokenizer.chat_template` of a GGUF file (read from its header only).

    Example:
        >>> import tempfile
        >>> from gemma_lab.testing import tiny_gguf
        >>> path = tiny_gguf(directory=tempfile.mkdtemp(), chat_template="{{ bos_token }}")
        >>> from_gguf(path).origin
        'GGUF tokenizer.chat_template'
        >>> from gemma_lab.models.default_model import default_gguf_path
        >>> from_gguf(default_gguf_path()) is None  # the released 270M GGUF carries none
        True
    """
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return None
    value = _gguf_template_source(str(path), stat.st_size, stat.st_mtime_ns)
    return from_text(value, "GGUF tokenizer.chat_template")


@functools.lru_cache(maxsize=8)
def _gguf_template_source(path: str, size: int, mtime_ns: int) -> str | None:
    """The raw `tokenizer.chat_template` string of a GGUF (None when it has none), from the
    bounded header scan (`gguf_validate`, ~0.6 s for the default model: gguf's GGUFReader
    parses every vocabulary entry into arrays, ~30 s on a busy 2-core box); remembered per
    file version."""
    from gemma_lab.errors import GemmaLabError
    from gemma_lab.models.gguf_validate import validate_gguf

    try:
        entry = validate_gguf(path).metadata.get("tokenizer.chat_template")
    except (GemmaLabError, OSError):
        return None
    return entry.value if entry is not None and isinstance(entry.value, str) else None


def from_hf_folder(path: str | Path) -> CheckpointTemplate | None:
    """A Hugging Face folder's template: `chat_template.jinja`, else `tokenizer_config.json`'s
    `chat_template` (None when neither has one)."""
    path = Path(path)
    jinja_file = path / "chat_template.jinja"
    if jinja_file.is_file() and jinja_file.stat().st_size <= _MAX_SOURCE:
        return from_text(jinja_file.read_text(encoding="utf-8", errors="replace"),
                         "chat_template.jinja")
    config = path / "tokenizer_config.json"
    if config.is_file() and config.stat().st_size <= 64 * _MAX_SOURCE:
        try:
            value = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        except (ValueError, AttributeError):
            return None
        return from_text(value, "tokenizer_config.json chat_template")
    return None


def control_pattern(pieces: Sequence[str]) -> re.Pattern[str]:
    """A regex matching any of `pieces` (longest first), for splitting rendered text.

    Example:
        >>> control_pattern(["<bos>", "<start_of_turn>"]).split("<bos>a<start_of_turn>b")
        ['', '<bos>', 'a', '<start_of_turn>', 'b']
    """
    ordered = sorted(set(pieces), key=len, reverse=True)
    if not ordered:
        return re.compile("(?!)")  # matches nothing
    return re.compile("(" + "|".join(re.escape(p) for p in ordered) + ")")


__all__ = ["CheckpointTemplate", "control_pattern", "from_gguf", "from_hf_folder", "from_text"]
