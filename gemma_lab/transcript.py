"""Chat transcripts as model input: a conversation rendered in the model's chat template,
its token ids exactly as the model sees them, and who "speaks" each token.

`lab.score`, `lab.trace` and `lab.run_with_cache` accept a transcript (a list of
{"role", "content"} turns, e.g. `lab.chat_history`, or a `Transcript`) as well as plain
text. The ids are `chat.conversation_ids` with every turn closed (no generation prompt):
the checkpoint's own template when it carries one, else the official Gemma template's ids.
A chat history's transcript starts with the ids its last reply was generated from unless
the tokenizer merges the "model\n" header with the reply's first characters (the tests
check it on the tiny vocabulary). Each token is labelled "system", "user", "model", or
"markup" (`<bos>`, the turn markers and the role names), for colouring and for masks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gemma_lab.chat import GEMMA, Template, Turn, conversation_ids
from gemma_lab.chat_template import CheckpointTemplate
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
               template: Template | CheckpointTemplate = GEMMA) -> Transcript:
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
    text, ids = conversation_ids(tokenizer, turns, system, template, generation_prompt=False)
    if isinstance(template, CheckpointTemplate):
        labels = _rendered_labels(tokenizer, text, turns, system, template)
    else:
        labels = _labels(text, turns, system, template)
    return Transcript(text, tuple(ids), _speakers(tokenizer, ids, labels), tuple(turns), system)


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


def _rendered_labels(tokenizer: Tokenizer, text: str, turns: list[Turn], system: str | None,
                     template: CheckpointTemplate) -> list[str]:
    """A speaker per character of a checkpoint template's `text`: each message's (stripped)
    content where the template put it, the rest markup. When rendering the first k messages
    gives a prefix of the whole (templates do, as a rule), message k's content is looked for
    in its own part, from the end (so a message "user" is not found in its own role header)
    and a system prompt the template folds into the next turn in that turn; else in order
    through the whole text."""
    messages = ([("system", system)] if system else []) + [(t.role, t.content) for t in turns]
    labels = ["markup"] * len(text)

    def mark(start: int, content: str, speaker: str) -> None:
        labels[start:start + len(content)] = [speaker] * len(content)

    bos = tokenizer.piece(tokenizer.bos_id)
    try:
        ends = [len(template.render([{"role": r, "content": c} for r, c in messages[:k]],
                                    False, bos_token=bos).removeprefix(bos))
                for k in range(1, len(messages) + 1)]
        stable = ends == sorted(ends) and ends[-1] == len(text)
    except InputError:  # a template that refuses a partial conversation
        stable = False
    if not stable:
        at = 0
        for role, content in messages:
            found = text.find(content.strip(), at) if content.strip() else -1
            if found >= 0:
                mark(found, content.strip(), role)
                at = found + len(content.strip())
        return labels
    start, pending = 0, None  # pending: a system prompt not found in its own part yet
    for (role, content), end in zip(messages, ends, strict=True):
        part = text[start:end]
        if pending and (found := part.find(pending)) >= 0:
            mark(start + found, pending, "system")
            part_from, pending = found + len(pending), None
        else:
            part_from = 0
        stripped = content.strip()
        found = part.rfind(stripped, part_from) if stripped else -1
        if found >= 0:
            mark(start + found, stripped, role)
        elif role == "system" and stripped:
            pending = stripped
        start = end
    return labels


def _speakers(tokenizer: Tokenizer, ids: list[int], labels: list[str]) -> tuple[str, ...]:
    """A speaker per id (after `<bos>`) from the speaker of each character of the text."""
    from gemma_lab.tokenizer import IncrementalDecoder

    markers = {i: piece for piece, i in tokenizer.control_ids.items()}
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
