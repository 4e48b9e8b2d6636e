"""The generation Playground: prompt, sampler controls, Generate / Stop, streamed tokens
coloured by probability, alternatives of a clicked token, branching and branch history; in
chat mode the prompt is the next message of the session's conversation (`lab.chat`)."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from gemma_lab._markup import Html, tag
from gemma_lab.defaults import MAX_NEW_TOKENS, MAX_NEW_TOKENS_LIMIT
from gemma_lab.errors import GemmaLabError, InputError
from gemma_lab.figures import steps_figure
from gemma_lab.widgets import _static
from gemma_lab.widgets._background import BackgroundJob
from gemma_lab.widgets._branches import Branch, forced_step
from gemma_lab.widgets._chat_view import ChatBranch, turns_html
from gemma_lab.widgets._controls import natural_labels
from gemma_lab.widgets._figure_widget import FigureSlot
from gemma_lab.widgets._snapshot import LIVE_CLASS, Snapshot, SnapshotDisplay, status_line
from gemma_lab.widgets._token_strip import TokenStrip, prompt_entries, step_entry

if TYPE_CHECKING:
    from gemma_lab.chat import Chat
    from gemma_lab.generation import Generation, GenerationStream
    from gemma_lab.session import GemmaLab
    from gemma_lab.token_stats import TokenStats

MODES = ("Complete", "Chat")
SNAPSHOT_TOKENS = 512  # the saved view draws at most this many tokens


class Playground(SnapshotDisplay, w.VBox):
    """Generate interactively: tokens stream in coloured by probability; click one to see
    its top-k alternatives and branch (regenerate from there with an alternative).

    Generation runs on a background thread, so Stop works (within one decode step) and a
    second Generate while busy is ignored. `update_interval` throttles how often the token
    strip is refreshed while streaming (0: every token).

    `mode="Chat"` makes the prompt box the next user message of the session's conversation
    (the one `lab.chat` continues, so `lab.chat_history` and the turns shown agree), with an
    optional system prompt at its start; the reply streams into the token strip. A reply
    joins the conversation only when it is complete (Stop leaves it out), and a completed
    branch of the last reply replaces it, so the conversation continues from the branch.

    A saved notebook keeps the shown branch (`snapshot`: its tokens, their probabilities
    and the status line) as static HTML.

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> playground = Playground(tiny_session(), prompt="hello", max_new_tokens=4)
        >>> playground.generate_button.click(); playground.wait()
        >>> len(playground.branches), len(playground.current.steps) <= 4
        (1, True)
        >>> chat = Playground(tiny_session(), prompt="hello", max_new_tokens=4, mode="Chat")
        >>> chat.generate_button.click(); chat.wait()
        >>> [turn["role"] for turn in chat.lab.chat_history]
        ['user', 'model']
    """

    def __init__(self, lab: GemmaLab, prompt: str = "", max_new_tokens: int = MAX_NEW_TOKENS,
                 temperature: float = 0.0, update_interval: float = 0.1, mode: str = "Complete",
                 system: str = ""):
        if mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}.")
        self.lab = lab
        self.update_interval = update_interval
        self.branches: list[Branch] = []
        self._stream: GenerationStream | None = None
        self._job = BackgroundJob(self._set_busy, self._show_error)
        self.snapshot = Snapshot("Playground")

        self.mode = w.ToggleButtons(options=list(MODES), value=mode,
                                    tooltips=["Continue the prompt as written",
                                              "Talk to the model in its chat template"])
        self.prompt = w.Textarea(value=prompt, placeholder="Prompt",
                                 layout=w.Layout(width="100%", height="80px"))
        self.system = w.Text(value=system, placeholder="optional, set when a chat starts",
                             description="system prompt", layout=w.Layout(width="100%"))
        self.conversation = w.HTML(layout=w.Layout(width="100%"))
        self.new_chat_button = w.Button(description="New chat", icon="refresh",
                                        tooltip="Forget the conversation (lab.reset_chat())")
        self.max_new_tokens = w.BoundedIntText(value=max_new_tokens, min=1,
                                               max=MAX_NEW_TOKENS_LIMIT,
                                               description="max tokens")
        self.temperature = w.BoundedFloatText(value=temperature, min=0.0, max=10.0, step=0.1,
                                              description="temperature")
        self.top_k = w.BoundedIntText(value=0, min=0, max=lab.tokenizer.vocabulary_size,
                                      description="top-k", tooltip="0: all tokens")
        self.top_p = w.BoundedFloatText(value=1.0, min=0.01, max=1.0, step=0.05,
                                        description="top-p", tooltip="1: all tokens")
        self.seed = w.Text(value="", placeholder="none", description="seed")
        self.generate_button = w.Button(description="Generate", button_style="primary",
                                        icon="play")
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop",
                                    disabled=True)
        self.status = w.Label(value=f"Model: {lab.model_id} ({lab.backend})")
        self.strip = TokenStrip()
        self.token_info = w.Label(value="Click a generated token to see its alternatives.")
        self.alternatives = w.Select(options=[], rows=5, description="alternatives",
                                     layout=w.Layout(width="60%"))
        self.branch_button = w.Button(description="Branch from here", icon="code-fork",
                                      disabled=True)
        self.history = w.Dropdown(options=[], description="branches",
                                  layout=w.Layout(width="100%"))
        self.figure_box = FigureSlot()
        natural_labels(self.max_new_tokens, self.temperature, self.top_k, self.top_p,
                       self.seed, self.alternatives, self.history, self.system)

        self.generate_button.on_click(lambda _: self.generate())
        self.stop_button.on_click(lambda _: self.stop())
        self.branch_button.on_click(lambda _: self.branch())
        self.new_chat_button.on_click(lambda _: self.new_chat())
        self.mode.observe(lambda _: self._show_mode(), names="value")
        self.strip.observe(self._on_token_selected, names="selected")
        self.history.observe(self._on_history, names="value")

        controls = w.HBox([self.max_new_tokens, self.temperature, self.top_k, self.top_p,
                           self.seed], layout=w.Layout(flex_flow="row wrap"))
        super().__init__([
            self.mode, self.system, self.conversation, self.prompt, controls,
            w.HBox([self.generate_button, self.stop_button, self.new_chat_button,
                    self.status]),
            self.strip, self.token_info,
            w.HBox([self.alternatives, self.branch_button]),
            self.history, self.figure_box,
        ])
        self.add_class("gemma-lab-playground")
        self.add_class(LIVE_CLASS)
        self._show_mode()
        self._save_snapshot()

    # --- state -------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._job.busy

    @property
    def current(self) -> Branch | None:
        """The branch shown now (None before the first generation)."""
        index = self.history.value
        return None if index is None else self.branches[index]

    @property
    def chatting(self) -> bool:
        """Whether the Playground is in chat mode."""
        return self.mode.value == "Chat"

    @property
    def error(self) -> BaseException | None:
        """The error that ended the last run, if one did."""
        return self._job.error

    def wait(self, timeout: float | None = None) -> None:
        """Block until the running generation has finished (for scripts and tests)."""
        self._job.wait(timeout)

    # --- actions -----------------------------------------------------------------------
    def generate(self) -> bool:
        """Start a fresh generation from the prompt box (in chat mode: send it as the next
        message); False if one is already running or the input is refused."""
        if self.busy:
            return False
        try:
            if self.chatting:
                running, branch = self._chat_stream(self.prompt.value)
            else:
                running = self.lab.stream(self.prompt.value, **self._sampling())
                branch = Branch(prompt=running.prompt, prompt_ids=tuple(running.prompt_ids),
                                prompt_tokens=(), steps=())
        except GemmaLabError as error:
            self._show_error(str(error))
            return False
        return self._start(running, branch)

    def new_chat(self) -> None:
        """Forget the conversation (`lab.reset_chat()`); ignored while a reply is running."""
        if self.busy:
            return
        self.lab.reset_chat()
        self._show_conversation()
        self.status.value = "New chat."
        self._save_snapshot()

    def branch(self) -> bool:
        """Regenerate from the selected token with the selected alternative in its place."""
        parent_index, parent = self.history.value, self.current
        position = self._selected_position()
        if self.busy or parent is None or position is None or self.alternatives.value is None:
            return False
        if isinstance(parent, ChatBranch) and parent.place_in(self._chat) is None:
            self._show_error("This reply is from an earlier point of the conversation; only "
                             "the last reply (or one not yet in it) can be branched.")
            return False
        chosen_id = parent.steps[position].top_k_ids[self.alternatives.value]  # value: an index
        ends_turn = chosen_id in self.lab.tokenizer.stop_ids
        if isinstance(parent, ChatBranch) and ends_turn:
            # A reply cannot continue past its end of turn: the history would not be what
            # the model saw.
            self._show_error("That alternative ends the turn; pick another token to branch a "
                             "reply with.")
            return False
        forced = forced_step(parent.steps[position], self.alternatives.value)
        inherited = (*parent.steps[:position], forced)
        options = self._sampling()
        try:
            running = self.lab.stream(
                parent.prompt + "".join(s.text for s in inherited), **options,
                prompt_ids=parent.prefix_ids(position, forced.token_id),
            )
        except GemmaLabError as error:
            self._show_error(str(error))
            return False
        # replace() keeps a chat reply's conversation fields along with the prompt.
        branch = dataclasses.replace(parent, steps=inherited, parent=parent_index,
                                     forced=position, finish_reason="running")
        return self._start(running, branch)

    def stop(self) -> None:
        """Ask the running generation to finish after the decode step in progress."""
        if self._stream is not None:
            self._stream.stop()

    # --- the run -----------------------------------------------------------------------
    def _start(self, running: GenerationStream, branch: Branch) -> bool:
        if self.busy:  # clicks arrive on the kernel's one thread, so this check suffices
            return False
        self._stream = running
        return self._job.start(lambda: self._run(running, branch))

    def _run(self, running: GenerationStream, branch: Branch) -> None:
        inherited = branch.steps
        steps: list[TokenStats] = []
        last_draw = 0.0
        self._show_tokens(branch)
        self.figure_box.clear()  # the last run's chart goes while this one streams
        if isinstance(branch, ChatBranch):
            self._show_conversation(pending=branch.message if branch.parent is None else None)
        self.status.value = ("Generating… (the first run of a length or sampler compiles "
                             "it: a few seconds)")
        try:
            for step in running:
                steps.append(step)
                if time.monotonic() - last_draw >= self.update_interval:
                    self._show_tokens(dataclasses.replace(branch, steps=(*inherited, *steps)))
                    last_draw = time.monotonic()
        finally:
            result = running.result
            if result is not None:
                branch = dataclasses.replace(
                    branch, steps=(*inherited, *result.steps),
                    prompt_tokens=branch.prompt_tokens or result.prompt_tokens,
                    finish_reason=result.finish_reason)
                self._add_branch(branch)
                count = len(result.steps)
                self.status.value = (f"{count} token{'' if count == 1 else 's'}, "
                                     f"{result.finish_reason}, "
                                     f"{result.timing.get('tokens_per_s', 0.0):.1f} tokens/s")
            self._stream = None
            if isinstance(branch, ChatBranch):
                self._record_reply(branch, result)
            self._save_snapshot()

    def _record_reply(self, branch: ChatBranch, result: Generation | None) -> None:
        """Put a finished chat reply into the conversation (if complete), then redraw it."""
        note = ""
        if result is not None:
            reply = dataclasses.replace(  # the whole reply, from the conversation's prompt
                result, prompt=branch.prompt, prompt_token_ids=branch.prompt_ids,
                steps=branch.steps, prompt_tokens=branch.prompt_tokens,
                text=self.lab.tokenizer.decode([s.token_id for s in branch.steps]))
            place = branch.place_in(self._chat)
            if place == "commit":
                kept = self._chat.commit(branch.message, branch.system, reply)
            elif place == "replace":
                kept = self._chat.replace_last_reply(reply)
            else:
                kept = False
            if kept and branch.parent is None:
                self.prompt.value = ""  # sent: the box is ready for the next message
            note = ("" if kept else "; not added to the conversation"
                    + ("" if place else " (it changed meanwhile)"))
        self._show_conversation()
        self.status.value += note

    def _add_branch(self, branch: Branch) -> None:
        self.branches.append(branch)
        index = len(self.branches) - 1
        self.history.options = [(b.label(i), i) for i, b in enumerate(self.branches)]
        self.history.value = index  # shows it (see _on_history)

    def _show_tokens(self, branch: Branch) -> None:
        self.strip.selected = -1
        self.strip.tokens = [*self._prompt_entries(branch),
                             *(step_entry(s, "branch" if i == branch.forced else "generated")
                               for i, s in enumerate(branch.steps))]

    def _prompt_entries(self, branch: Branch) -> list[dict[str, Any]]:
        # A chat reply's prompt is the whole templated conversation, shown as turns instead.
        if isinstance(branch, ChatBranch):
            return []
        return prompt_entries(branch.prompt_tokens or (branch.prompt,))

    def _show_conversation(self, pending: str | None = None) -> None:
        chat = self._chat
        self.conversation.value = turns_html(chat.history, pending)
        started = bool(chat.turns)
        self.system.disabled = started or self.busy
        if started:  # set when the conversation started, and shown as its first turn
            self.system.value = chat.system or ""

    def _show_mode(self) -> None:
        chatting = self.chatting
        for control in (self.system, self.conversation, self.new_chat_button):
            control.layout.display = None if chatting else "none"
        self.prompt.placeholder = "Message (Send: the next user turn)" if chatting else "Prompt"
        self.generate_button.description = "Send" if chatting else "Generate"
        if chatting:
            self._show_conversation()

    def _show_figure(self, branch: Branch) -> None:
        if not branch.steps:
            self.figure_box.clear()
            return
        figure = steps_figure(branch.steps, "probs", title=_figure_title(branch))
        self.figure_box.show(figure)  # its JSON is the slot's state: a reload redraws it

    def _save_snapshot(self) -> None:
        """Redraw the saved view: the status, the conversation (chat mode), the shown
        branch's tokens and the probability of each generated one."""
        parts = [status_line(self.status.value)]
        if self.chatting:
            parts.append(Html(self.conversation.value))  # turns_html: every text escaped
        branch, tokens = self.current, self.strip.tokens  # the strip shows that branch
        if tokens:
            parts.append(_static.strip(tokens[:SNAPSHOT_TOKENS]))
        summary = "nothing generated yet"
        if branch is not None:
            label = self.history.label or ""
            parts.insert(1, tag("div", f"branch {label}", class_="gemma-lab-snapshot-branch",
                                style="color:#555;font-size:11px"))
            steps = branch.steps[:SNAPSHOT_TOKENS]
            if steps:
                parts.append(_static.bars([s.prob for s in steps],
                                          [s.text or s.piece for s in steps],
                                          _figure_title(branch), top=1.0))
            count = len(branch.steps)
            summary = (f"{count} token{'' if count == 1 else 's'} generated "
                       f"({branch.finish_reason})")
        if len(tokens) > SNAPSHOT_TOKENS:
            parts.append(status_line(f"(first {SNAPSHOT_TOKENS} of {len(tokens)} tokens)"))
        self.snapshot.update(parts, summary)

    # --- events ------------------------------------------------------------------------
    def _on_history(self, change: dict[str, Any]) -> None:
        index = change["new"]
        if index is None:
            return
        branch = self.branches[index]
        self._show_tokens(branch)
        self._show_figure(branch)
        self._clear_alternatives()
        self._save_snapshot()

    def _on_token_selected(self, change: dict[str, Any]) -> None:
        position = self._selected_position()
        branch = self.current
        if position is None or branch is None or self.busy:
            self._clear_alternatives()
            return
        step = branch.steps[position]
        self.token_info.value = (f"Token {position} {step.text or step.piece!r}: "
                                 f"p {step.prob:.4f}, rank {step.rank}, "
                                 f"entropy {step.entropy:.3f} nats")
        self.alternatives.options = [(f"{piece!r}  p {prob:.4f}", j)
                                     for j, (piece, prob) in enumerate(step.top_k)]
        # Preselect the best alternative that differs from the chosen token.
        others = [j for j, token_id in enumerate(step.top_k_ids) if token_id != step.token_id]
        self.alternatives.value = others[0] if others else 0
        self.branch_button.disabled = False

    def _selected_position(self) -> int | None:
        branch = self.current
        if branch is None or self.strip.selected < 0:
            return None
        position = self.strip.selected - len(self._prompt_entries(branch))
        return position if 0 <= position < len(branch.steps) else None

    def _clear_alternatives(self) -> None:
        self.alternatives.options = []
        self.branch_button.disabled = True
        self.token_info.value = "Click a generated token to see its alternatives."

    def _set_busy(self, busy: bool) -> None:
        self.generate_button.disabled = busy
        self.branch_button.disabled = busy or self.alternatives.value is None
        self.history.disabled = busy
        self.stop_button.disabled = not busy
        self.mode.disabled = busy
        self.new_chat_button.disabled = busy
        self.system.disabled = busy or bool(self._chat.turns)

    def _show_error(self, message: str) -> None:
        self.status.value = message
        self._save_snapshot()

    @property
    def _chat(self) -> Chat:
        return self.lab.conversation  # the one lab.chat continues

    def _chat_stream(self, message: str) -> tuple[GenerationStream, ChatBranch]:
        """The stream of the reply to `message` after the conversation, and its branch."""
        from gemma_lab.sampling import SamplerConfig

        chat = self._chat
        options = self._sampling()
        # The system prompt belongs to the start of a conversation (Chat refuses a new one).
        system = (self.system.value.strip() or None) if not chat.turns else None
        self.lab.runtime.ensure_idle("chat")
        running = chat.stream(message, system, options.pop("max_new_tokens"),
                              SamplerConfig(**options))
        return running, ChatBranch(
            prompt=running.prompt, prompt_ids=tuple(running.prompt_ids), prompt_tokens=(),
            steps=(), message=message, system=chat.system if system is None else system,
            before=tuple(chat.turns))

    def _sampling(self) -> dict[str, Any]:
        seed_text = self.seed.value.strip()
        try:
            seed = int(seed_text) if seed_text else None
        except ValueError:
            raise InputError(f"seed must be an integer or empty, got {seed_text!r}.") from None
        return {
            "max_new_tokens": self.max_new_tokens.value,
            "temperature": self.temperature.value,
            "top_k": self.top_k.value or None,
            "top_p": None if self.top_p.value >= 1.0 else self.top_p.value,
            "seed": seed,
        }


def _figure_title(branch: Branch) -> str:
    after = "of the reply" if isinstance(branch, ChatBranch) else "after the prompt"
    return f"Probability of each token {after}"


def playground(lab: GemmaLab, **options: Any) -> Playground:
    """Open the generation Playground on `lab` (what `%gemma playground` shows).

    Example:
        >>> from gemma_lab.testing import tiny_session
        >>> playground(tiny_session()).generate_button.description
        'Generate'
    """
    return Playground(lab, **options)


__all__ = ["Playground", "playground"]
