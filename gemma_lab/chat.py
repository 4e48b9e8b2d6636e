"""Chat: a conversation with a Gemma model through its chat template, history kept.

Gemma 1, 2 and 3 share one turn format (the official `tokenizer_config.json` template):

    <bos><start_of_turn>user
    {system}\\n\\n{message}<end_of_turn>
    <start_of_turn>model
    {reply}<end_of_turn>
    <start_of_turn>model            <- the generation prompt

A system prompt has no turn of its own there: it is folded into the first user turn (as
written). Gemma 4 marks turns with `<|turn>` / `<turn|>` and gives a system prompt its own
turn (`GEMMA4`):

    <bos><|turn>system
    {system}<turn|>
    <|turn>user
    {message}<turn|>
    <|turn>model

Each message is stripped of surrounding whitespace, as the template's `| trim` does. The
prompt is tokenized the way transformers tokenizes a rendered template: the text between
special tokens is encoded piece by piece and the special tokens are inserted by id.
Generation stops at `<end_of_turn>`; a turn joins the history only when its reply is
complete (an interrupted or stopped turn leaves the history as it was).

A checkpoint that carries its own template (a GGUF's `tokenizer.chat_template`, a Hugging
Face folder's `chat_template.jinja`) is rendered with that template instead
(`gemma_lab.chat_template`); `lab.chat_template` shows which one is in force and takes your
own Jinja source, or None for the built-in one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gemma_lab import defaults, validate
from gemma_lab.chat_template import CheckpointTemplate
from gemma_lab.errors import InputError, NotAvailableError

if TYPE_CHECKING:
    from gemma_lab.generation import Generation, GenerationStream
    from gemma_lab.runtime import ModelRuntime
    from gemma_lab.sampling import SamplerConfig
    from gemma_lab.tokenizer import Tokenizer

ROLES = ("user", "model")
START, END = "<start_of_turn>", "<end_of_turn>"


@dataclass(frozen=True)
class Template:
    """A Gemma turn format: the turn markers and where a system prompt goes."""

    name: str
    start: str
    end: str
    system_turn: bool  # False: folded into the first user turn (Gemma 1-3)


GEMMA = Template("Gemma 1-3", START, END, system_turn=False)
GEMMA4 = Template("Gemma 4", "<|turn>", "<turn|>", system_turn=True)


def template_for(family: str) -> Template:
    """The chat template of a model family ("Gemma 1" .. "Gemma 4").

    Example:
        >>> template_for("Gemma 4").end, template_for("Gemma 3").end
        ('<turn|>', '<end_of_turn>')
    """
    return GEMMA4 if family == "Gemma 4" else GEMMA


def template_of(runtime: ModelRuntime) -> Template | CheckpointTemplate:
    """The template a session's chat and transcripts use: the checkpoint's own when it has
    one (or the one set through `lab.chat_template`), else the family's built-in one.

    Example:
        >>> from gemma_lab.testing import tiny_runtime
        >>> template_of(tiny_runtime()).name
        'Gemma 1-3'
    """
    return runtime.chat_template or template_for(runtime.adapter.family)


@dataclass(frozen=True)
class Turn:
    """One message of a conversation: `role` "user" or "model", and its text."""

    role: str
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


def render(turns: Sequence[Turn], system: str | None = None,
           template: Template = GEMMA) -> str:
    """The chat template for `turns`, ending with the model's generation prompt (without
    `<bos>`, which `encode` adds).

    Example:
        >>> render([Turn("user", " Hi ")], system="Be brief.")
        '<start_of_turn>user\\nBe brief.\\n\\nHi<end_of_turn>\\n<start_of_turn>model\\n'
        >>> render([Turn("user", "Hi")], system="Be brief.", template=GEMMA4)
        '<|turn>system\\nBe brief.<turn|>\\n<|turn>user\\nHi<turn|>\\n<|turn>model\\n'
    """
    start, end = template.start, template.end
    parts = []
    if system and template.system_turn:
        parts.append(f"{start}system\n{system.strip()}{end}\n")
    for index, turn in enumerate(turns):
        folded = index == 0 and system and not template.system_turn
        prefix = f"{system}\n\n" if folded else ""  # not trimmed, as official
        parts.append(f"{start}{turn.role}\n{prefix}{turn.content.strip()}{end}\n")
    return "".join(parts) + f"{start}model\n"


def encode(tokenizer: Tokenizer, text: str, template: Template = GEMMA) -> list[int]:
    """`<bos>` and the ids of a rendered template: text between the turn markers encoded
    as plain text, the markers as their own ids.

    Example:
        >>> from gemma_lab.testing import tiny_tokenizer
        >>> tok = tiny_tokenizer()
        >>> ids = encode(tok, render([Turn("user", "hello")]))
        >>> ids[:2] == [tok.bos_id, tok.start_of_turn_id], ids.count(tok.end_of_turn_id)
        (True, 1)
    """
    specials = {template.start: tokenizer.piece_id(template.start),
                template.end: tokenizer.piece_id(template.end)}
    if None in specials.values():
        raise NotAvailableError(
            f"This model's vocabulary has no {template.start} / {template.end} tokens, so it "
            f"has no {template.name} chat template. Use lab.generate with your own prompt.")
    ids = [tokenizer.bos_id]
    rest = text
    while rest:
        found = [(rest.find(marker), marker) for marker in specials if marker in rest]
        if not found:
            ids += tokenizer.encode(rest)
            break
        at, marker = min(found)
        if at:
            ids += tokenizer.encode(rest[:at])
        ids.append(int(specials[marker]))
        rest = rest[at + len(marker):]
    return ids


def conversation_ids(tokenizer: Tokenizer, turns: Sequence[Turn], system: str | None,
                     template: Template | CheckpointTemplate,
                     generation_prompt: bool = True) -> tuple[str, list[int]]:
    """The rendered text (without `<bos>`) and the ids (with it) of a conversation, ending
    with the model's generation prompt when `generation_prompt`, else with the last turn.

    Example:
        >>> from gemma_lab.testing import tiny_tokenizer
        >>> tok = tiny_tokenizer()
        >>> text, ids = conversation_ids(tok, [Turn("user", "hi")], None, GEMMA)
        >>> text, ids[0] == tok.bos_id
        ('<start_of_turn>user\\nhi<end_of_turn>\\n<start_of_turn>model\\n', True)
    """
    if isinstance(template, CheckpointTemplate):
        messages = ([{"role": "system", "content": system}] if system else []) + [
            turn.to_dict() for turn in turns]
        bos = tokenizer.piece(tokenizer.bos_id)
        text = template.render(messages, generation_prompt, bos_token=bos,
                               eos_token=tokenizer.piece(tokenizer.eos_id))
        ids = tokenizer.encode_with_controls(text)
        if not ids or ids[0] != tokenizer.bos_id:  # a template without {{ bos_token }}
            ids = [tokenizer.bos_id, *ids]
        return text.removeprefix(bos), ids
    text = render(turns, system, template)
    if not generation_prompt:
        text = text[:-len(f"{template.start}model\n")]
    return text, encode(tokenizer, text, template)


class Chat:
    """The conversation of one session: `history`, the `system` prompt, and the next turn.

    Example:
        >>> from gemma_lab.testing import tiny_runtime
        >>> chat = Chat(tiny_runtime())
        >>> reply = chat.say("hello", max_new_tokens=3)
        >>> [turn["role"] for turn in chat.history]
        ['user', 'model']
    """

    def __init__(self, runtime: ModelRuntime):
        self.runtime = runtime
        self.system: str | None = None
        self.turns: list[Turn] = []

    @property
    def history(self) -> list[dict[str, str]]:
        """The conversation so far, oldest first, as {"role", "content"} dicts (a system
        prompt first, with role "system", when there is one)."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [turn.to_dict() for turn in self.turns]

    def reset(self) -> None:
        self.system = None
        self.turns = []

    def prompt(self, message: str, system: str | None = None) -> tuple[str, list[int]]:
        """The rendered template and its ids for `message` after the history."""
        if not isinstance(message, str) or not message.strip():
            raise InputError("chat() needs a non-empty message.")
        validate.text(message, "The message")
        validate.optional_text(system, "system")
        if system is not None and self.turns and system != self.system:
            raise InputError("The system prompt is set when a conversation starts; call "
                             "lab.reset_chat() to start one with a new system prompt.")
        system = self.system if system is None else system
        return conversation_ids(self.runtime.tokenizer, [*self.turns, Turn("user", message)],
                                system, template_of(self.runtime))

    def stream(self, message: str, system: str | None = None,
               max_new_tokens: int = defaults.MAX_NEW_TOKENS,
               sampler: SamplerConfig | None = None,
               stop: Sequence[str] = ()) -> GenerationStream:
        """A generation of the model's reply (hooks in force apply); `commit` its result."""
        from gemma_lab.generation import GenerationStream
        from gemma_lab.sampling import SamplerConfig

        max_new_tokens = validate.max_new_tokens(max_new_tokens)
        text, ids = self.prompt(message, system)
        if len(ids) + max_new_tokens > self.runtime.context_length:
            raise InputError(
                f"The conversation is {len(ids)} tokens; with {max_new_tokens} new ones it "
                f"exceeds the model's context of {self.runtime.context_length}. Call "
                "lab.reset_chat() or ask for fewer tokens.")
        return GenerationStream(self.runtime, text, max_new_tokens=max_new_tokens,
                                sampler=sampler or SamplerConfig(),
                                stop=validate.stop_strings(stop),
                                prompt_ids=ids)

    def commit(self, message: str, system: str | None, reply: Generation) -> bool:
        """Add the user message and the model's reply to the history, if the reply is
        complete (it ended at end of turn, end of sequence or the token limit)."""
        if reply.finish_reason not in ("eos", "length", "stop_string"):
            return False
        if system is not None and not self.turns:
            self.system = system
        self.turns += [Turn("user", message), Turn("model", reply.text)]
        return True

    def say(self, message: str, system: str | None = None,
            max_new_tokens: int = defaults.MAX_NEW_TOKENS, temperature: float = 0.0,
            top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
            stop: str | Sequence[str] | None = None) -> Generation:
        """Send `message`, generate the reply, keep both; returns the reply `Generation`."""
        from gemma_lab.sampling import SamplerConfig

        stream = self.stream(message, system, max_new_tokens,
                             SamplerConfig(temperature=temperature, top_k=top_k, top_p=top_p,
                                           seed=seed), validate.stop_strings(stop))
        reply = stream.run()
        self.commit(message, system, reply)
        return reply

    def replace_last_reply(self, reply: Generation) -> bool:
        """Put `reply` in place of the last model turn (e.g. an alternative reply branched
        from it), so the conversation continues from `reply`. It must answer the last user
        message: its `prompt_token_ids` are the ids that message was sent with. As with
        `commit`, an incomplete reply leaves the history as it was (returns False).

        Example:
            >>> import dataclasses
            >>> from gemma_lab.testing import tiny_runtime
            >>> chat = Chat(tiny_runtime())
            >>> first = chat.say("hello", max_new_tokens=3)
            >>> chat.replace_last_reply(dataclasses.replace(first, text="Hi there!"))
            True
            >>> chat.history[-1]
            {'role': 'model', 'content': 'Hi there!'}
        """
        if not self.turns or self.turns[-1].role != "model":
            raise InputError("There is no model reply to replace yet; send a message first.")
        _, asked = conversation_ids(self.runtime.tokenizer, self.turns[:-1], self.system,
                                    template_of(self.runtime))
        if [int(i) for i in reply.prompt_token_ids] != asked:
            raise InputError("This reply answers a different point of the conversation (its "
                             "prompt is not the history up to the last user message); only "
                             "the last reply can be replaced.")
        if reply.finish_reason not in ("eos", "length", "stop_string"):
            return False
        self.turns[-1] = Turn("model", reply.text)
        return True


__all__ = ["END", "GEMMA", "GEMMA4", "ROLES", "START", "Chat", "Template", "Turn",
           "conversation_ids", "encode", "render", "template_for", "template_of"]
