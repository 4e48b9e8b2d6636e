"""Chat transcripts as model input: a conversation rendered in the model's chat template,
its token ids exactly as the model sees them, and who "speaks" each token.

`lab.score`, `lab.trace` and `lab.run_with_cache` accept a transcript (a list of
{"role", "content"} turns, e.g. `lab.chat_history`, or a `Transcript`) as well as plain
text. The ids are `chat.encode` of `chat.render`'s text with every turn closed (no
generation prompt): the official template's ids. A chat history's transcript starts with
the ids its last reply was generated from unless the tokenizer merges the "model\n" header
with the reply's first characters (the tests check it on the tiny vocabulary). Each token
is labelled "system", "user", "model", or "markup" (`<bos>`, the turn markers and the role
names), for colouring and for masks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gemma_lab.chat import GEMMA, Template, Turn, encode, render
from gemma_lab.errors import GemmaLabError, InputError

if TYPE_CHECKING:
    from gemma_lab.tokenizer import Tokenizer

SPEAKERS = ("system", "user", "model", "markup")
_ROLE_ALIASES = {"assistant": "model"}


@dataclass(frozen=True)
class Transcript:
    """A conversation as the model reads it.

    Attributes:
        text: the rendered template (without `<bos>`).
        token_ids: `<bos>` and every id, exactly what the model sees.
        speakers: per id, "system", "user", "model" or "markup".
        turns: the conversation's turns; system: its system prompt, if any.

    Example:
        >>> from gemma_lab.testing import tiny_tokenizer
        >>> t = transcript(tiny_tokenizer(), [{"role": "user", "content": "hi"},
        ...                                  {"role": "model", "content": "hello"}])
        >>> t.speakers[0], "user" in t.speakers and "model" in t.speakers
        ('markup', True)
    """

    text: str
    token_ids: tuple[int, ...]
    speakers: tuple[str, ...]
    turns: tuple[Turn, ...]
    system: str | None = None


def is_transcript(value: Any) -> bool:
    """Whether `value` looks like a list of {"role", "content"} turns (or a `Transcript`)."""
    if isinstance(value, Transcript):
        return True
    return (isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0
            and all(isinstance(turn, (Mapping, Turn)) for turn in value))


def _turns(value: Sequence[Mapping[str, Any] | Turn]) -> tuple[str | None, list[Turn]]:
    system, turns = None, []
    for index, item in enumerate(value):
        role = item.role if isinstance(item, Turn) else item.get("role")
        content = item.content if isinstance(item, Turn) else item.get("content")
        role = _ROLE_ALIASES.get(role, role)
        if not isinstance(content, str) or (role != "model" and not content.strip()):
            # (a model turn may be empty: a reply that ended its turn at once)
            raise InputError(f"Turn {index} of the transcript has no text content.")
        if role == "system":
            if index != 0:
                raise InputError("A system prompt can only be the transcript's first turn.")
            system = content
            continue
        if role not in ("user", "model"):
            raise InputError(f"Turn {index} has role {role!r}; roles are 'system' (first), "
                             "'user' and 'model' (or 'assistant').")
        expected = "user" if len(turns) % 2 == 0 else "model"
        if role != expected:
            raise InputError(f"Turn {index} is {role!r} but should be {expected!r}: turns "
                             "alternate user / model, starting with user.")
        turns.append(Turn(role, content))
    if not turns:
        raise InputError("The transcript has no user or model turns.")
    return system, turns


def transcript(tokenizer: Tokenizer, value: Sequence[Mapping[str, Any] | Turn] | Transcript,
               template: Template = GEMMA) -> Transcript:
    """The `Transcript` of a list of turns in `template`, every turn closed.

    Example:
        >>> from gemma_lab.testing import tiny_tokenizer
        >>> t = transcript(tiny_tokenizer(), [{"role": "system", "content": "Be brief."},
        ...                                  {"role": "user", "content": "hi"}])
        >>> t.text
        '<start_of_turn>user\\nBe brief.\\n\\nhi<end_of_turn>\\n'
    """
    if isinstance(value, Transcript):  # rebuilt: it may come from another model's tokenizer
        value = ([{"role": "system", "content": value.system}] if value.system else []) + [
            turn.to_dict() for turn in value.turns]
    if not is_transcript(value):
        raise InputError("A transcript is a non-empty list of {'role', 'content'} turns, "
                         "e.g. lab.chat_history.")
    system, turns = _turns(value)
    prompt = f"{template.start}model\n"
    text = render(turns, system, template)[:-len(prompt)]
    ids = encode(tokenizer, text, template)
    return Transcript(text, tuple(ids), _speakers(tokenizer, text, ids, turns, system,
                                                  template), tuple(turns), system)


def _labels(text: str, turns: list[Turn], system: str | None, template: Template) -> list[str]:
    """A speaker per character of the rendered `text`."""
    labels: list[str] = []
    rendered = ""

    def add(part: str, speaker: str) -> None:
        nonlocal rendered
        rendered += part
        labels.extend([speaker] * len(part))

    if system and template.system_turn:
        add(f"{template.start}system\n", "markup")
        add(system.strip(), "system")
        add(f"{template.end}\n", "markup")
    for index, turn in enumerate(turns):
        add(f"{template.start}{turn.role}\n", "markup")
        if index == 0 and system and not template.system_turn:
            add(f"{system}\n\n", "system")
        add(turn.content.strip(), turn.role)
        add(f"{template.end}\n", "markup")
    if rendered != text:  # the template changed without this: fail loudly, not mislabel
        raise GemmaLabError("Internal error: transcript speakers are out of step with "
                            "chat.render; please report it.")
    return labels


def _speakers(tokenizer: Tokenizer, text: str, ids: list[int], turns: list[Turn],
              system: str | None, template: Template) -> tuple[str, ...]:
    from gemma_lab.tokenizer import IncrementalDecoder

    labels = _labels(text, turns, system, template)
    markers = {tokenizer.piece_id(template.start): template.start,
               tokenizer.piece_id(template.end): template.end}
    decoder = IncrementalDecoder(tokenizer)
    speakers, at = ["markup"], 0  # <bos>
    for token_id in ids[1:]:
        if token_id in markers:
            width = len(markers[token_id])
            decoder = IncrementalDecoder(tokenizer)  # a marker ends the text before it
        else:
            width = len(decoder.push(token_id))
        # (a byte of an unfinished character adds no text yet: it belongs to the next one)
        span = labels[at:at + width] if width else labels[at:at + 1]
        spoken = [label for label in span if label != "markup"]
        speakers.append(spoken[0] if spoken else "markup")
        at += width
    return tuple(speakers)


__all__ = ["SPEAKERS", "Transcript", "is_transcript", "transcript"]
