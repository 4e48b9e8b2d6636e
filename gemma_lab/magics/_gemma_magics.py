"""The `%gemma` / `%%gemma` magics: parse the arguments, call the session's public API, render.

Errors gemma_lab raises on purpose (`GemmaLabError`) become IPython `UsageError`s: one red
line, no traceback, and the cell counts as failed so "Run all" stops there.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from traitlets import Bool, Enum, Float, Int

from gemma_lab import ipython_display
from gemma_lab.defaults import MAX_NEW_TOKENS, MAX_NEW_TOKENS_LIMIT
from gemma_lab.errors import GemmaLabError, InputError, NotAvailableError
from gemma_lab.magics._arguments import (
    FORMATS,
    AdaptersArgs,
    CellArgs,
    EvaluateArgs,
    FinetuneArgs,
    HelpShown,
    LoadArgs,
    PatchArgs,
    SimpleArgs,
    full_help,
    parse_cell,
    parse_line,
    parse_patch,
)
from gemma_lab.magics._interpolation import as_text, interpolate
from gemma_lab.magics._state import current, use

if TYPE_CHECKING:
    from gemma_lab.session import GemmaLab

# %gemma widget command -> the gemma_lab.widgets function that opens it on a session.
_WIDGETS = {
    "playground": "playground",
    "attention": "attention_explorer",
    "finetune-panel": "finetune_panel",
    "interventions": "interventions_panel",
}
# What each hook point holds, for `%gemma hooks`.
_POINTS = {
    "embed": "token embeddings (before the √hidden scale)",
    "resid_pre": "residual stream entering the block",
    "attn.q": "queries [head, head_dim]",
    "attn.k": "keys [kv_head, head_dim]",
    "attn.v": "values [kv_head, head_dim]",
    "attn.pattern": "attention probabilities [head, query, key]",
    "attn.z": "per-head attention output [head, head_dim] (iv.ablate_heads)",
    "attn_out": "what attention adds to the residual",
    "mlp.post": "MLP neurons (iv.ablate_neurons)",
    "mlp_out": "what the MLP adds to the residual",
    "resid_post": "residual stream leaving the block (iv.add steers here)",
    "moe.router": "expert router probabilities [expert] (iv.ablate_experts)",
    "moe_out": "what the mixture of experts adds (before the MLP/MoE sum)",
    "laurel_out": "the Laurel (learned augmented residual) branch's output",
    "ple.in": "the per-layer embedding input of the block",
    "ple_out": "what the per-layer embedding adds to the residual",
    "final_norm": "the final norm's output",
    "logits": "logits over the vocabulary",
}


@magics_class
class GemmaMagics(Magics):
    """`%gemma COMMAND` and `%%gemma [flags]`; defaults are configurable traits:

        %config GemmaMagics.max_new_tokens = 128
        %config GemmaMagics.stream = False
    """

    max_new_tokens = Int(MAX_NEW_TOKENS, min=1, max=MAX_NEW_TOKENS_LIMIT,
                         help="Default --max-new-tokens of %%gemma.").tag(config=True)
    temperature = Float(0.0, min=0.0, help="Default --temperature (0 is greedy).").tag(
        config=True)
    top_k = Int(None, allow_none=True, min=1, help="Default --top-k (None: all).").tag(
        config=True)
    top_p = Float(None, allow_none=True, min=0.0, max=1.0,
                  help="Default --top-p (None: all).").tag(config=True)
    seed = Int(None, allow_none=True, help="Default --seed.").tag(config=True)
    stream = Bool(True, help="Stream tokens as they are decoded (--no-stream).").tag(
        config=True)
    interpolate = Bool(True, help="Replace {name} in prompts (--no-interpolate).").tag(
        config=True)
    format = Enum(FORMATS, default_value="text", help="Default --format.").tag(config=True)
    stream_update_interval = Float(
        0.1, min=0.0, help="Seconds between refreshes of streamed output (0: every token)."
    ).tag(config=True)

    def cell_defaults(self) -> CellArgs:
        """The configured defaults as the record a bare `%%gemma` line parses to."""
        return CellArgs(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            seed=self.seed,
            stream=self.stream,
            interpolate=self.interpolate,
            format=self.format,
        )

    @line_cell_magic
    def gemma(self, line: str, cell: str | None = None) -> None:
        """Load a model and work with it (`%gemma help`), or generate from the cell's prompt
        (`%%gemma --help`)."""
        try:
            if cell is None:
                self._run_line(line)
            else:
                self._run_cell(line, cell)
        except HelpShown:
            return
        except GemmaLabError as err:
            raise UsageError(str(err)) from None

    # --- %gemma --------------------------------------------------------------------------
    def _run_line(self, line: str) -> None:
        args = parse_line(line)
        if isinstance(args, LoadArgs):
            self._load(args)
        elif isinstance(args, FinetuneArgs):
            self._finetune(args)
        elif isinstance(args, EvaluateArgs):
            self._evaluate(args)
        elif isinstance(args, AdaptersArgs):
            self._adapters(args)
        elif args.command == "help":
            print(full_help(self.cell_defaults()))
        elif args.command == "info":
            self._show_record(current().info())
        elif args.command == "hooks":
            print(_hook_listing(current().hook_points()))
        elif args.command == "chat":
            current().reset_chat()
            print("Chat history cleared.")
        else:
            self._widget(args)

    def _load(self, args: LoadArgs) -> None:
        from gemma_lab.backend import set_backend
        from gemma_lab.session import load

        if args.backend:
            set_backend(args.backend)
        started = time.perf_counter()
        lab = use(load(args.spec, dtype=args.dtype, distribution=args.distribution,
                       mesh=args.mesh))
        mesh = lab.info().mesh
        print(f"Loaded {lab.model_id} on {lab.backend} ({lab.dtype}"
              + (f", {mesh}" if mesh is not None else "") + ") in "
              f"{time.perf_counter() - started:.1f} s. Generate with %%gemma.")

    def _finetune(self, args: FinetuneArgs) -> None:
        options = dataclasses.asdict(args)
        data = self._finetune_data(options.pop("data"))
        # The progress line carries the loss while it runs; the result shows the curve once.
        self._show_result(current().finetune(data, live_figure=False, **options))

    def _evaluate(self, args: EvaluateArgs) -> None:
        evaluation = current().evaluate(self._finetune_data(args.data, "evaluate"),
                                        metrics=list(args.metrics))
        if args.output:
            self.shell.user_ns[args.output] = evaluation
        self._show_record(evaluation)
        ipython_display.show(evaluation.figure())

    def _finetune_data(self, name: str, command: str = "finetune") -> Any:
        if name in self.shell.user_ns:
            return self.shell.user_ns[name]
        if Path(name).expanduser().is_file():
            return str(Path(name).expanduser())
        raise InputError(
            f"%gemma {command}: {name!r} is neither a variable in the notebook nor a file. "
            "Pass a variable holding the data or a .jsonl / .csv path."
        )

    def _adapters(self, args: AdaptersArgs) -> None:
        adapters = current().adapters
        action = {"save": adapters.save, "load": adapters.load, "unload": adapters.unload,
                  "list": adapters.list}[args.action]
        result = action(args.name) if args.name is not None else action()
        if args.action == "list":
            print("\n".join(map(str, result)) if result else "No saved adapters.")
        elif result is not None:
            self._show_result(result)

    def _widget(self, args: SimpleArgs) -> None:
        from gemma_lab import widgets

        lab = current()
        widget = getattr(widgets, _WIDGETS[args.command])(lab)
        ipython_display.show(widget)

    # --- %%gemma -------------------------------------------------------------------------
    def _run_cell(self, line: str, cell: str) -> None:
        if line.split(maxsplit=1)[:1] == ["patch"]:
            self._patch(parse_patch(line), cell)
            return
        args = parse_cell(line, self.cell_defaults())
        lab = current()
        text = cell.strip("\r\n")
        if not text.strip():
            raise InputError("The %%gemma cell is empty: write the prompt below the %%gemma line.")
        if args.interpolate:
            text = interpolate(text, self.shell.user_ns)
        hooks = self._interventions(args)
        if hooks is None:
            self._run_prompt(lab, args, text)
            return
        with lab.hooks(hooks):
            self._run_prompt(lab, args, text)

    def _interventions(self, args: CellArgs) -> Any:
        """The hook set --ablate / --steer ask for (None: none)."""
        from gemma_lab import interventions as iv

        chosen = iv.ablate_heads(args.ablate) if args.ablate else None
        for name, layer, scale in args.steer:
            if name not in self.shell.user_ns:
                raise InputError(f"--steer {name}@{layer}: there is no variable {name!r} in the "
                                 "notebook. Make one, e.g. "
                                 f"{name} = lab.steering_vector(positive, negative, {layer}).")
            steer = iv.add(self.shell.user_ns[name], layer=layer, scale=scale)
            chosen = steer if chosen is None else chosen | steer
        return chosen

    def _patch(self, args: PatchArgs, cell: str) -> None:
        lines = [line for line in cell.splitlines() if line.strip()]
        if len(lines) != 2:
            raise InputError(f"%%gemma patch needs two lines, the clean prompt then the "
                             f"corrupted one; the cell has {len(lines)} non-empty lines.")
        if args.interpolate:
            lines = [interpolate(line, self.shell.user_ns) for line in lines]
        result = current().patch(lines[0], lines[1], target=args.target, over=args.over)
        if args.output:
            self.shell.user_ns[args.output] = result
        self._show_result(result)  # its own heatmap view; result.figure() draws it in plotly

    def _run_prompt(self, lab: GemmaLab, args: CellArgs, text: str) -> None:

        live = ipython_display.LiveOutput(self.stream_update_interval) if (
            args.stream and not args.score and not args.chat) else None
        if args.score:
            result = lab.score(text)
        elif args.chat:
            result = self._chat(lab, args, text)
        else:
            result = self._generate(lab, args, text, live)
        if args.output:
            self.shell.user_ns[args.output] = result

        if getattr(result, "finish_reason", None) == "interrupted":
            self._render(result, args, live, interrupted=True)
            stored = f" and stored in {args.output}" if args.output else ""
            raise GemmaLabError(
                f"Interrupted after {len(result.steps)} tokens: the partial result is shown"
                f"{stored}. The model is ready for the next cell."
            )
        self._render(result, args, live)
        self._analyse(lab, args, text, result)

    def _generate(self, lab: GemmaLab, args: CellArgs, prompt: str,
                  live: ipython_display.LiveOutput | None) -> Any:
        running = lab.stream(prompt, **args.sampling())
        if live is not None:
            live.start()
        try:
            for step in running:
                if live is not None:
                    live.append(step.text)
        except KeyboardInterrupt:
            # The decode loop records what it has when interrupted; an interrupt that lands in
            # our own code instead leaves the loop suspended, so close it to get the same.
            if running.result is None:
                iter(running).close()
            if running.result is None:  # interrupted before decoding started
                if live is not None:
                    live.finish()
                raise GemmaLabError("Interrupted before the first token; nothing was generated. "
                                    "The model is ready for the next cell.") from None
            return dataclasses.replace(running.result, finish_reason="interrupted")
        return running.result

    def _chat(self, lab: GemmaLab, args: CellArgs, message: str) -> Any:
        return lab.chat(message, **args.sampling())

    def _render(self, result: Any, args: CellArgs, live: ipython_display.LiveOutput | None,
                interrupted: bool = False) -> None:
        final = result
        if not args.score and not interrupted:
            if args.format == "markdown":
                final = ipython_display.as_markdown(as_text(result))
            elif args.format == "code":
                self.shell.set_next_input(as_text(result), replace=False)
        if live is not None:
            live.finish(final)
        else:
            ipython_display.show(final)

    def _analyse(self, lab: GemmaLab, args: CellArgs, text: str, result: Any) -> None:
        if args.probs:
            self._show_figure(result, "probs")
        if args.attention or args.lens:
            full_text = text if args.score else text + as_text(result)
            trace = lab.trace(full_text, layers=None if args.layer is None else [args.layer],
                              heads=None if args.head is None else [args.head])
            # One view per quantity: the trace's own (interactive) view of what was asked.
            self._show_result(trace.view(attention=args.attention, lens=args.lens))
        if args.attribute:
            target = args.target if args.target is not None else (
                None if args.score else as_text(result))
            if not target:
                raise InputError("--attribute needs a continuation: nothing was generated"
                                 "; pass --target STR." if not args.score else
                                 "--attribute with --score needs --target STR.")
            attribution = lab.attribute(text, target=target)
            self._show_result(attribution)

    # --- display -------------------------------------------------------------------------
    @staticmethod
    def _show_result(result: Any) -> None:
        ipython_display.show(result)

    @staticmethod
    def _show_record(record: Any) -> None:
        if any(hasattr(record, name) for name in ("_repr_mimebundle_", "_repr_html_")):
            ipython_display.show(record)
        else:
            print(record)

    @staticmethod
    def _show_figure(result: Any, kind: str, **options: Any) -> None:
        figure = getattr(result, "figure", None)
        if figure is not None:
            ipython_display.show(figure(kind, **options))


def _hook_listing(names: list[str]) -> str:
    """Hook points grouped: each per-block point once with the layers that have it (Gemma 4's
    KV-shared layers have no attn.k / attn.v of their own), each explained."""
    by_point: dict[str, list[int]] = {}
    for name in names:
        if name.startswith("blocks."):
            _, layer, point = name.split(".", 2)
            by_point.setdefault(point, []).append(int(layer))
    layers = sorted({layer for held in by_point.values() for layer in held})
    rows = [f"  {'embed':<32} {_POINTS['embed']}"]
    rows += [f"  {'blocks.{' + _layer_span(held) + '}.' + point:<32} {_POINTS.get(point, '')}"
             for point, held in by_point.items()]
    rows += [f"  {name:<32} {_POINTS[name]}" for name in ("final_norm", "logits")]
    return (f"{len(names)} hook points ({len(layers)} blocks); values are [batch, position, "
            "...]:\n" + "\n".join(rows) + "\nUse them with lab.hooks({name: fn}), "
            "lab.run_with_cache(text, names=[...]) or gemma_lab.interventions.")


def _layer_span(layers: list[int]) -> str:
    """Layers as runs: [0, 1, 2, 5] -> "0..2,5"."""
    runs: list[list[int]] = []
    for layer in sorted(layers):
        if runs and layer == runs[-1][-1] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    return ",".join(f"{run[0]}..{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs)


__all__ = ["GemmaMagics", "NotAvailableError"]
