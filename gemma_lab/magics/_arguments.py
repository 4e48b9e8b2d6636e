"""Parsing `%gemma` lines and `%%gemma` first lines into typed, frozen argument records.

argparse does the parsing; its errors become one-line `InputError`s and `--help` prints the
help (every flag with its default) instead of exiting.
"""

from __future__ import annotations

import argparse
import builtins
import difflib
import keyword
import re
import shlex
from dataclasses import dataclass, fields
from typing import Any, NoReturn

from gemma_lab import validate
from gemma_lab.backend import BACKENDS
from gemma_lab.defaults import FINETUNE, MAX_NEW_TOKENS
from gemma_lab.errors import InputError
from gemma_lab.models.distribution import DISTRIBUTIONS, parse_mesh
from gemma_lab.models.loading import DTYPES

# The one list of output formats: the parser's choices, the record's check and the config trait.
FORMATS = ("text", "markdown", "code")
WIDGET_COMMANDS = ("playground", "attention", "finetune-panel", "interventions")
ADAPTER_ACTIONS = ("save", "load", "unload", "list")
LINE_COMMANDS = ("load", "info", "help", "hooks", "chat", "finetune", "evaluate", "adapters",
                 *WIDGET_COMMANDS)
EVALUATE_METRICS = ("logprob", "mean_logprob", "perplexity", "accuracy")
PATCH_OVER = ("resid_pre", "attn_out", "mlp_out", "heads")


class HelpShown(Exception):
    """Raised instead of SystemExit once argparse has printed a help text."""


class _Parser(argparse.ArgumentParser):
    # argparse exits the process on errors and after --help; in a notebook both must return.
    def error(self, message: str) -> NoReturn:
        raise InputError(f"{self.prog}: {message}.{self._suggestions(message)} "
                         f"See {self.prog} --help.")

    def _suggestions(self, message: str) -> str:
        """' Did you mean --x?' for each unrecognized flag close to a known one."""
        if not message.startswith("unrecognized arguments:"):
            return ""
        known = [flag for action in self._all_actions() for flag in action.option_strings
                 if flag.startswith("--")]
        hints = []
        for word in message.split(":", 1)[1].split():
            if word.startswith("--"):
                close = difflib.get_close_matches(word.split("=")[0], known, n=1, cutoff=0.6)
                if close:
                    hints.append(f"did you mean {close[0]} (not {word})?")
        return (" " + " ".join(hint[0].upper() + hint[1:] for hint in hints)) if hints else ""

    def _all_actions(self) -> list[argparse.Action]:
        actions = list(self._actions)
        for action in self._actions:  # a sub-command's own flags (e.g. %gemma finetune)
            if isinstance(action, argparse._SubParsersAction):
                for parser in action.choices.values():
                    actions.extend(parser._actions)
        return actions

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            raise InputError(message.strip())
        raise HelpShown()


# How argparse lists sub-commands in a help text (they have no default to show).
def _command_action_type() -> type:
    commands = argparse.ArgumentParser().add_subparsers()
    commands.add_parser("x", help="x")
    return type(commands._choices_actions[0])


_COMMAND_ACTION = _command_action_type()


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default: a value, "none", or on/off for switches."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        is_command = isinstance(action, _COMMAND_ACTION)
        if is_command or action.default is argparse.SUPPRESS or (
                action.nargs == 0 and action.const is None):
            return text
        if action.nargs == 0:  # a switch: on when its default already equals what it sets
            state = "on" if action.default == action.const else "off"
        elif action.default in (None, [], ()):
            state = "none"
        else:
            state = "%(default)s"
        return f"{text} (default: {state})"


def _parser(prog: str, description: str, epilog: str | None = None) -> _Parser:
    return _Parser(prog=prog, description=description, epilog=epilog,
                   formatter_class=_Formatter, allow_abbrev=False)


# --- value types (argparse turns their ValueError into a one-line error) ---------------------
# Each parses the text, then applies the check the Python API applies (gemma_lab.validate).
def _checked(check: Any, value: Any) -> Any:
    try:
        return check(value)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err).rstrip(".")) from None


def _positive_int(text: str) -> int:
    return _checked(lambda v: validate.integer(v, "the value", low=1), int(text))


def _mesh(text: str) -> tuple[int, int]:
    return _checked(parse_mesh, text)


def _max_new_tokens(text: str) -> int:
    return _checked(validate.max_new_tokens, int(text))


def _top_k(text: str) -> int:
    return _checked(validate.top_k, int(text))


def _seed(text: str) -> int:
    return _checked(validate.seed, int(text))


def _non_negative_int(text: str) -> int:
    return _checked(lambda v: validate.integer(v, "the value", low=0), int(text))


def _temperature(text: str) -> float:
    return _checked(validate.temperature, float(text))


def _probability(text: str) -> float:
    return _checked(validate.top_p, float(text))


def _positive_float(text: str) -> float:
    return _checked(lambda v: validate.number(v, "the value", low=0.0, low_open=True),
                    float(text))


def _heads(text: str) -> list[tuple[int, int]]:
    """`L.H[,L.H...]` → [(L, H), ...]."""
    pairs = []
    for item in text.split(","):
        layer, dot, head = item.strip().partition(".")
        if not dot or not layer.isdigit() or not head.isdigit():
            raise argparse.ArgumentTypeError(
                f"{item.strip()!r} is not LAYER.HEAD (e.g. --ablate 3.1,5.0)")
        pairs.append((int(layer), int(head)))
    return pairs


def _steer(text: str) -> tuple[str, int, float]:
    """`VAR@LAYER[:SCALE]` → (VAR, LAYER, SCALE)."""
    name, at, rest = text.partition("@")
    layer, colon, scale = rest.partition(":")
    try:
        if not at or not is_variable_name(name) or not layer.isdigit():
            raise ValueError
        value = validate.number(float(scale), "scale") if colon else 1.0
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not VAR@LAYER[:SCALE] (e.g. --steer calm@6:4)") from None
    return name, int(layer), value


def _stop_string(text: str) -> str:
    # Shell quoting keeps backslashes, so `--stop "\n"` arrives as two characters.
    return text.replace("\\n", "\n").replace("\\t", "\t")


for _fn, _name in [(_heads, "LAYER.HEAD list"), (_steer, "VAR@LAYER[:SCALE]"),
                   (_positive_int, "positive integer"), (_max_new_tokens, "integer"),
                   (_top_k, "integer"), (_seed, "integer"),
                   (_non_negative_int, "integer"), (_temperature, "number"),
                   (_probability, "probability"), (_positive_float, "number")]:
    _fn.__name__ = _name  # argparse names the type in "invalid <name> value" messages


def is_variable_name(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


# Names the shell itself relies on: every builtin (print, list, len ...), what IPython keeps in
# the user namespace (In, Out, get_ipython, exit, quit, the _ / _i / _oh / _dh history) or adds
# to builtins (display, get_ipython), and the module dunders (__name__, __builtins__ ...).
_SHELL_NAMES = frozenset(dir(builtins)) | {
    "In", "Out", "get_ipython", "exit", "quit", "display", "open", "_ih", "_oh", "_dh",
    "_exit_code", "__builtin__", "__IPYTHON__"}
_SHELL_PATTERN = re.compile(r"_+|_i{1,3}|_i\d+|_\d+|__\w+__")


def check_output_name(name: str | None) -> None:
    """Refuse `-o NAME` unless storing a result under NAME leaves the notebook working: it
    must be a Python variable name (no keyword) that hides no builtin and none of IPython's
    own names (In, Out, _, _i3, _12, get_ipython, exit ...).

    Example:
        >>> check_output_name("g")
        >>> try:
        ...     check_output_name("Out")
        ... except InputError as err:
        ...     print(str(err)[:47])
        -o 'Out' would replace a name Python or IPython
    """
    if name is None:
        return
    if not is_variable_name(name):
        raise InputError(f"-o {name!r} is not a valid Python variable name.")
    if name in _SHELL_NAMES or _SHELL_PATTERN.fullmatch(name):
        raise InputError(
            f"-o {name!r} would replace a name Python or IPython itself uses (a builtin, the "
            "In/Out/_ history or a shell helper); choose another variable name, e.g. -o result."
        )


# --- %%gemma --------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class CellArgs:
    """What one `%%gemma` cell asks for (its first line, over the configured defaults).

    Attributes:
        max_new_tokens, temperature, top_k, top_p, seed, stop: the sampler, as in
            `GemmaLab.generate`.
        probs: also show the token-probability figure.
        attention, lens: also trace the text (attention maps / logit lens).
        attribute: also attribute the continuation (or `target`) to the prompt.
        target: the continuation to attribute; the generated text when None.
        score: score the cell text instead of generating from it.
        chat: send the cell as a chat message (instruct models).
        stream: show tokens as they are decoded.
        interpolate: replace `{name}` with values from the user namespace.
        output: store the result object in this user variable.
        format: "text" (the rich result), "markdown" (rendered) or "code" (into a new cell).
        layer, head: restrict --attention / --lens to one layer / head.
        ablate: (layer, head) pairs zero-ablated for the whole cell.
        steer: (variable, layer, scale) steering vectors added to resid_post for the cell.

    Example:
        >>> CellArgs(max_new_tokens=8).format
        'text'
    """

    max_new_tokens: int = MAX_NEW_TOKENS
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    probs: bool = False
    attention: bool = False
    lens: bool = False
    attribute: bool = False
    target: str | None = None
    score: bool = False
    chat: bool = False
    stream: bool = True
    interpolate: bool = True
    output: str | None = None
    format: str = "text"
    layer: int | None = None
    head: int | None = None
    ablate: tuple[tuple[int, int], ...] = ()
    steer: tuple[tuple[str, int, float], ...] = ()

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InputError(f"format={self.format!r}: choose one of {', '.join(FORMATS)}.")
        check_output_name(self.output)
        if self.score and self.chat:
            raise InputError("--score and --chat do not combine: score a text or chat, not both.")
        if self.target is not None and not self.attribute:
            raise InputError("--target only makes sense with --attribute.")
        if (self.layer is not None or self.head is not None) and not (
                self.attention or self.lens):
            raise InputError("--layer and --head only make sense with --attention or --lens.")

    def sampling(self) -> dict[str, Any]:
        """The keyword arguments of `GemmaLab.generate` / `stream`."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": list(self.stop) or None,
        }


def cell_parser(defaults: CellArgs) -> _Parser:
    """The `%%gemma` option parser, its defaults taken from `defaults` (the configuration)."""
    parser = _parser(
        "%%gemma",
        "Generate a continuation of the cell's text (the prompt) with the loaded model.",
        "{name}, {obj.attr}, {d['key']} and {Out[3]} in the prompt are replaced by values from\n"
        "the notebook (results by their text); write {{ and }} for literal braces.\n"
        "Change defaults with %config GemmaMagics.<name> = value "
        "(e.g. GemmaMagics.max_new_tokens).",
    )
    sampler = parser.add_argument_group("sampling")
    sampler.add_argument("--max-new-tokens", type=_max_new_tokens, metavar="N",
                         help="tokens to generate at most")
    sampler.add_argument("--temperature", type=_temperature, metavar="T",
                         help="0 is greedy; higher samples more freely")
    sampler.add_argument("--top-k", type=_top_k, metavar="K",
                         help="sample among the K most likely tokens; none keeps all")
    sampler.add_argument("--top-p", type=_probability, metavar="P",
                         help="sample from the smallest set of tokens reaching this "
                              "probability; none keeps all")
    sampler.add_argument("--seed", type=_seed, metavar="S", help="random seed for sampling")
    sampler.add_argument("--stop", type=_stop_string, action="append", metavar="STR",
                         help="stop at this string (repeatable; \\n is a newline)")
    analysis = parser.add_argument_group("analysis")
    analysis.add_argument("--probs", action="store_true",
                          help="also plot each token's probability and alternatives")
    analysis.add_argument("--attention", action="store_true",
                          help="also trace the text and show its attention maps")
    analysis.add_argument("--lens", action="store_true",
                          help="also trace the text and show the logit lens")
    analysis.add_argument("--attribute", action="store_true",
                          help="also attribute the continuation to the prompt's tokens")
    analysis.add_argument("--target", metavar="STR",
                          help="with --attribute: the continuation to attribute; none takes "
                               "the generated text")
    analysis.add_argument("--layer", type=_non_negative_int, metavar="L",
                          help="with --attention: only this layer (default: every layer, "
                               "picked in the view)")
    analysis.add_argument("--head", type=_non_negative_int, metavar="H",
                          help="with --attention: only this head (default: the mean of "
                               "heads, each head selectable in the view)")
    change = parser.add_argument_group("interventions (for the whole cell)")
    change.add_argument("--ablate", type=_heads, action="append", metavar="L.H[,L.H...]",
                        help="zero-ablate these attention heads (repeatable)")
    change.add_argument("--steer", type=_steer, action="append", metavar="VAR@LAYER[:SCALE]",
                        help="add the vector in variable VAR, times SCALE (1), to the "
                             "residual stream after block LAYER (repeatable)")
    mode = parser.add_argument_group("mode and output")
    mode.add_argument("--score", action="store_true",
                      help="score the cell text (teacher-forced) instead of generating")
    mode.add_argument("--chat", action="store_true",
                      help="send the cell as a chat message (instruct models)")
    mode.add_argument("--no-stream", dest="stream", action="store_false",
                      help="wait for the whole generation instead of streaming tokens")
    mode.add_argument("--no-interpolate", dest="interpolate", action="store_false",
                      help="take the cell text literally (no {name} replacement)")
    mode.add_argument("-o", "--output", metavar="VAR",
                      help="store the result object in the variable VAR")
    mode.add_argument("--format", choices=FORMATS,
                      help="text: rich result; markdown: rendered; code: into a new cell")
    values = {f.name: getattr(defaults, f.name) for f in fields(CellArgs)}
    parser.set_defaults(**{**values, "stop": list(defaults.stop), "ablate": [],
                           "steer": list(defaults.steer)})  # append needs a list
    return parser


def parse_cell(line: str, defaults: CellArgs) -> CellArgs:
    """Parse the arguments after `%%gemma` into a `CellArgs` (raises `HelpShown` on --help).

    Example:
        >>> parse_cell("--max-new-tokens 8 --stop '\\\\n' -o g", CellArgs()).stop
        ('\\n',)
    """
    namespace = cell_parser(defaults).parse_args(_split(line, "%%gemma"))
    values = vars(namespace)
    values["stop"] = tuple(values["stop"] or ())
    values["ablate"] = tuple(pair for group in values["ablate"] or () for pair in group)
    values["steer"] = tuple(values["steer"] or ())
    return CellArgs(**values)


@dataclass(frozen=True, kw_only=True)
class PatchArgs:
    """`%%gemma patch --target STR [--over O] [-o VAR]`: the cell's two lines are the clean
    and the corrupted prompt."""

    target: str
    over: str = "resid_pre"
    output: str | None = None
    interpolate: bool = True

    def __post_init__(self) -> None:
        check_output_name(self.output)


def patch_parser() -> _Parser:
    parser = _parser(
        "%%gemma patch",
        "Activation patching: the cell's first line is the clean prompt, its second the "
        "corrupted one (same token count). Shows log p(TARGET) after the corrupted prompt "
        "with each activation taken from the clean run.")
    parser.add_argument("--target", required=True, metavar="STR",
                        help="the answer the clean prompt leads to, e.g. ' Paris'")
    parser.add_argument("--over", choices=PATCH_OVER, default="resid_pre",
                        help="what to patch: residual stream, attention / MLP outputs, or "
                             "single heads")
    parser.add_argument("-o", "--output", metavar="VAR", help="store the PatchingResult")
    parser.add_argument("--no-interpolate", dest="interpolate", action="store_false",
                        help="take the cell text literally")
    return parser


def parse_patch(line: str) -> PatchArgs:
    """Parse the arguments after `%%gemma patch`.

    Example:
        >>> parse_patch("--target ' Paris' --over heads")
        PatchArgs(target=' Paris', over='heads', output=None, interpolate=True)
    """
    words = _split(line, "%%gemma patch")
    if words[:1] == ["patch"]:
        words = words[1:]
    return PatchArgs(**vars(patch_parser().parse_args(words)))


# --- %gemma ---------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class LoadArgs:
    """`%gemma load [SPEC] [--backend B] [--dtype D] [--distribution K] [--mesh DxM]`."""

    spec: str | None = None
    backend: str | None = None
    dtype: str = "float32"
    distribution: str | None = None
    mesh: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.mesh is not None and self.distribution is None:
            raise InputError("--mesh needs --distribution model_parallel or data_parallel "
                             "(e.g. %gemma load --distribution model_parallel --mesh 2x4).")


@dataclass(frozen=True, kw_only=True)
class FinetuneArgs:
    """`%gemma finetune DATA [--rank R] [--epochs E] [--lr LR] [--batch-size B]`."""

    data: str
    rank: int = FINETUNE["rank"]
    epochs: int = FINETUNE["epochs"]
    learning_rate: float = FINETUNE["learning_rate"]
    batch_size: int = FINETUNE["batch_size"]
    max_length: int = FINETUNE["max_length"]


@dataclass(frozen=True, kw_only=True)
class EvaluateArgs:
    """`%gemma evaluate DATA [--metric M[,M...]] [-o VAR]`."""

    data: str
    metrics: tuple[str, ...] = ("logprob", "perplexity")
    output: str | None = None

    def __post_init__(self) -> None:
        check_output_name(self.output)


def _metric_list(value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in EVALUATE_METRICS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown metric {', '.join(unknown) or repr(value)}: choose from "
            f"{', '.join(EVALUATE_METRICS)} (comma-separated)")
    return names


@dataclass(frozen=True, kw_only=True)
class AdaptersArgs:
    """`%gemma adapters save|load|unload|list [NAME]`."""

    action: str
    name: str | None = None

    def __post_init__(self) -> None:
        if self.action in ("save", "load") and not self.name:
            raise InputError(f"%gemma adapters {self.action} needs a NAME.")


@dataclass(frozen=True, kw_only=True)
class SimpleArgs:
    """A `%gemma` command without options: info, help, chat reset, or a widget."""

    command: str


LineArgs = LoadArgs | FinetuneArgs | EvaluateArgs | AdaptersArgs | SimpleArgs


def line_parser() -> _Parser:
    """The `%gemma` command parser (one sub-parser per command)."""
    parser = _parser("%gemma", "Load a Gemma model and work with it. Generate with %%gemma.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND",
                                     parser_class=_Parser)
    add = commands.add_parser

    load = add("load", help="load a model (default: the embedded Gemma 3 270M)",
               description="Load a model and make it the current one.",
               formatter_class=_Formatter)
    load.add_argument("spec", nargs="?", metavar="SPEC",
                      help="preset name, kaggle:// or hf:// handle, preset dir or .gguf; "
                           "none loads the embedded default")
    load.add_argument("--backend", choices=BACKENDS,
                      help="Keras backend, chosen before Keras starts; none keeps "
                           "GEMMA_LAB_BACKEND / KERAS_BACKEND or jax")
    load.add_argument("--dtype", choices=DTYPES, default="float32", help="weights dtype")
    load.add_argument("--distribution", choices=DISTRIBUTIONS,
                      help="JAX only: shard the weights (model_parallel) or the batches "
                           "(data_parallel) over keras.distribution.list_devices()")
    load.add_argument("--mesh", type=_mesh, metavar="DxM",
                      help="the (data x model) device mesh, e.g. 2x4; none uses every device "
                           "on the distribution's axis")

    add("info", help="show the loaded model: id, architecture, size, backend, memory",
        description="Show the loaded model.")
    add("help", help="list every command and %%%%gemma flag with its default",
        description="List every command and flag.")
    chat = add("chat", help="chat history: %%gemma chat reset", description="Chat history.",
               formatter_class=_Formatter)
    chat.add_argument("action", choices=("reset",), help="reset: forget the chat history")

    finetune = add("finetune", help="LoRA fine-tune on DATA (a variable name or a file)",
                   description="LoRA fine-tune the loaded model.", formatter_class=_Formatter)
    finetune.add_argument("data", metavar="DATA",
                          help="a variable holding the data, or a .jsonl / .csv path")
    finetune.add_argument("--rank", type=_positive_int, default=FINETUNE["rank"],
                          help="LoRA rank")
    finetune.add_argument("--epochs", type=_positive_int, default=FINETUNE["epochs"],
                          help="passes over DATA")
    finetune.add_argument("--lr", dest="learning_rate", type=_positive_float,
                          default=FINETUNE["learning_rate"],
                          help="learning rate")
    finetune.add_argument("--batch-size", type=_positive_int,
                          default=FINETUNE["batch_size"], help="batch size")
    finetune.add_argument("--max-length", type=_positive_int,
                          default=FINETUNE["max_length"],
                          help="tokens per example at most")

    evaluate = add("evaluate", help="per-example metrics of DATA (a variable name or a file)",
                   description="Score every example of DATA (strings, prompt/response rows, a "
                               "DataFrame, or a .jsonl / .csv file) and show a table, the "
                               "distribution and the worst examples.",
                   formatter_class=_Formatter)
    evaluate.add_argument("data", metavar="DATA",
                          help="a notebook variable holding the data, or a .jsonl / .csv path")
    evaluate.add_argument("--metric", dest="metrics", type=_metric_list,
                          default=("logprob", "perplexity"), metavar="M[,M...]",
                          help=f"metrics, from {', '.join(EVALUATE_METRICS)}")
    evaluate.add_argument("-o", "--output", metavar="VAR", help="store the Evaluation")

    adapters = add("adapters", help="save / load / unload / list LoRA adapters",
                   description="Manage LoRA adapters.", formatter_class=_Formatter)
    adapters.add_argument("action", choices=ADAPTER_ACTIONS)
    adapters.add_argument("name", nargs="?", metavar="NAME", help="adapter name")

    add("hooks", help="list the loaded model's hook points (for lab.hooks, run_with_cache)",
        description="List the hook points.")
    widget_names = ("the generation playground", "the attention explorer", "the fine-tune panel",
                    "the interventions panel (heads off, steering)")
    for widget, what in zip(WIDGET_COMMANDS, widget_names, strict=True):
        add(widget, help=f"open {what}", description=f"Open {what}.")
    return parser


def parse_line(line: str) -> LineArgs:
    """Parse a `%gemma` line into its command's record (raises `HelpShown` on --help).

    Example:
        >>> parse_line("load --dtype bfloat16")
        LoadArgs(spec=None, backend=None, dtype='bfloat16', distribution=None, mesh=None)
        >>> parse_line("load --distribution model_parallel --mesh 2x4").mesh
        (2, 4)
    """
    words = _split(line, "%gemma")
    if words in (["-h"], ["--help"]):
        # `%%gemma --help` alone is refused by IPython (empty cell), so the line form shows all.
        return SimpleArgs(command="help")
    if not words:
        raise InputError("%gemma needs a command: " + ", ".join(LINE_COMMANDS)
                         + ". See %gemma help.")
    if words[0] not in LINE_COMMANDS and not words[0].startswith("-"):
        raise InputError(
            f"Unknown %gemma command {words[0]!r}: choose one of {', '.join(LINE_COMMANDS)}. "
            "To generate, write the prompt under a %%gemma cell magic."
        )
    values = vars(line_parser().parse_args(words))
    command = values.pop("command")
    if command == "load":
        return LoadArgs(**values)
    if command == "finetune":
        return FinetuneArgs(**values)
    if command == "evaluate":
        return EvaluateArgs(**values)
    if command == "adapters":
        return AdaptersArgs(**values)
    return SimpleArgs(command=command)


def full_help(defaults: CellArgs) -> str:
    """Every `%gemma` command and every `%%gemma` flag, each with its default."""
    parser = line_parser()
    sections = [parser.format_help()]
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("load", "finetune", "evaluate", "adapters"):
        sections.append(subparsers.choices[name].format_help())
    sections.append(cell_parser(defaults).format_help())
    sections.append(patch_parser().format_help())
    return "\n".join(sections)


def _split(line: str, prog: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as err:
        raise InputError(f"{prog}: cannot split the arguments ({err}); check the quotes.") from None


__all__ = [
    "DTYPES",
    "FORMATS",
    "AdaptersArgs",
    "CellArgs",
    "FinetuneArgs",
    "HelpShown",
    "LineArgs",
    "LoadArgs",
    "PatchArgs",
    "SimpleArgs",
    "cell_parser",
    "full_help",
    "line_parser",
    "parse_cell",
    "parse_line",
    "parse_patch",
]
