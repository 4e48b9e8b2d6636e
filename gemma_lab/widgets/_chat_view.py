"""The Playground's chat mode: a branch that is a model reply in a conversation, and the
conversation drawn as escaped HTML turns labelled with their roles."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gemma_lab._markup import Html, join, tag
from gemma_lab.chat import Chat, Turn
from gemma_lab.widgets._branches import Branch

ROLE_COLOURS = {"system": "#f3ecd9", "user": "#dde8f7", "model": "#e6f2e3"}


@dataclass(frozen=True)
class ChatBranch(Branch):
    """A model reply to `message`: `prompt` / `prompt_ids` are the templated conversation.

    Attributes:
        message: the user message the reply answers.
        system: the system prompt in force for it (None: none).
        before: the conversation's turns before `message`.
    """

    message: str = ""
    system: str | None = None
    before: tuple[Turn, ...] = ()

    def label(self, index: int) -> str:
        """A one-line description for the history selector: the reply and what it answers.

        Example:
            >>> ChatBranch("p", (2,), (), (), message="Hi there").label(0)
            "#0 (reply to 'Hi there', new, 0 tokens, running): "
        """
        asked = " ".join(self.message.split())
        asked = asked if len(asked) <= 20 else asked[:19] + "…"
        return super().label(index).replace(" (", f" (reply to {asked!r}, ", 1)

    def place_in(self, chat: Chat) -> str | None:
        """Where this reply goes in `chat` as it is now: "replace" (its exchange is the
        last one), "commit" (its message is not in the history yet, e.g. the run was
        stopped), or None (the conversation has moved on).

        Example:
            >>> from gemma_lab.testing import tiny_runtime
            >>> ChatBranch("p", (2,), (), (), message="hi").place_in(Chat(tiny_runtime()))
            'commit'
        """
        turns = tuple(chat.turns)
        same_system = not turns or chat.system == self.system
        if turns == self.before and same_system:
            return "commit"
        if (turns[:-1] == (*self.before, Turn("user", self.message))
                and turns[-1].role == "model" and same_system):
            return "replace"
        return None


def turns_html(history: Sequence[Mapping[str, str]], pending: str | None = None) -> Html:
    """The conversation as one block of turns, each labelled with its role; every text is
    escaped (model text is untrusted). `pending` is a user message still being answered.

    Example:
        >>> view = turns_html([{"role": "model", "content": "<b>hi</b>"}])
        >>> "&lt;b&gt;hi&lt;/b&gt;" in view, "<b>" in view, 'data-role="model"' in view
        (True, False, True)
    """
    turns = [dict(turn) for turn in history]
    if pending is not None:
        turns.append({"role": "user", "content": pending, "pending": "true"})
    if not turns:
        return tag("div", "No messages yet: write one below and press Send.",
                   class_="gemma-lab-chat gemma-lab-chat-empty",
                   style="color: #666; font-style: italic; padding: 4px;")
    return tag("div", join(_turn(turn) for turn in turns), class_="gemma-lab-chat",
               style="display: flex; flex-direction: column; gap: 4px; padding: 2px 0;")


def _turn(turn: Mapping[str, str]) -> Html:
    role = turn["role"]
    pending = turn.get("pending") == "true"
    label = f"{role} (waiting for the reply)" if pending else role
    style = (f"background: {ROLE_COLOURS.get(role, '#eee')}; border-radius: 4px; "
             "padding: 4px 8px; line-height: 1.5;" + (" opacity: 0.7;" if pending else ""))
    return tag("div",
               tag("div", label, class_="gemma-lab-chat-role",
                   style="font-size: 0.8em; font-weight: bold; text-transform: uppercase; "
                         "color: #444;"),
               tag("div", turn["content"], class_="gemma-lab-chat-content",
                   style="white-space: pre-wrap; font-family: var(--jp-content-font-family, "
                         "sans-serif);"),
               class_=f"gemma-lab-chat-turn gemma-lab-chat-{role}", data_role=role,
               data_pending="true" if pending else None, style=style)


__all__ = ["ChatBranch", "turns_html"]
