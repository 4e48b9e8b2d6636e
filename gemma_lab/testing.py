"""Real, tiny Gemma models for tests and examples: random keras-hub backbones with a small
trained SentencePiece vocabulary, their GGUF exports, and sessions around them."""

from __future__ import annotations

import functools
import io
import tempfile
from pathlib import Path
from typing import Any

_CORPUS = [
    "hello world, this is a tiny corpus for a tiny gemma.",
    "the quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b",
    "numbers 0 1 2 3 4 5 6 7 8 9 and symbols {} [] () <> !?",
    "research notebooks show token probabilities and attention maps.",
] * 20

TINY_HPARAMS = dict(num_query_heads=4, num_key_value_heads=2, hidden_dim=32, head_dim=8)


@functools.cache
def tiny_proto(vocab_size: int = 320) -> bytes:
    """A small SentencePiece BPE proto with Gemma's special tokens and ids.

    Example:
        >>> len(tiny_proto()) > 1000
        True
    """
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        control_symbols=["<start_of_turn>", "<end_of_turn>", "<mask>"],
        user_defined_symbols=["\n\n", "▁▁"],
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        minloglevel=2,
    )
    return model.getvalue()


def tiny_tokenizer() -> Any:
    """The host-side `Tokenizer` over `tiny_proto()`."""
    from gemma_lab.tokenizer import Tokenizer

    return Tokenizer(tiny_proto())


def tiny_backbone(architecture: str = "gemma3", num_layers: int = 2, seed: int = 0,
                  dtype: str = "float32") -> Any:
    """A random keras-hub backbone of the given architecture ("gemma", "gemma2", "gemma3")."""
    return tiny_causal_lm(architecture, num_layers=num_layers, seed=seed, dtype=dtype).backbone


def tiny_causal_lm(architecture: str = "gemma3", num_layers: int = 2, seed: int = 0,
                   dtype: str = "float32", **hparams: int) -> Any:
    """A random keras-hub CausalLM (with preprocessor) of the given architecture.

    `hparams` override `TINY_HPARAMS` (num_query_heads, num_key_value_heads, hidden_dim,
    head_dim), e.g. 8 heads so that every weight axis divides an 8-device mesh.

    Example:
        >>> tiny_causal_lm("gemma").backbone.num_layers
        2
        >>> tiny_causal_lm(num_query_heads=8, num_key_value_heads=8).backbone.num_query_heads
        8
    """
    from gemma_lab.backend import import_keras
    from gemma_lab.models.gguf_convert import build_causal_lm
    from gemma_lab.models.gguf_file import GemmaHyperParams

    keras = import_keras()
    keras.utils.set_random_seed(seed)
    hp = GemmaHyperParams(
        architecture=architecture,
        vocabulary_size=len_vocab(),
        num_layers=num_layers,
        intermediate_dim=64,
        layer_norm_epsilon=1e-6,
        context_length=8192,
        sliding_window_size=None if architecture == "gemma" else 4,
        attention_logit_soft_cap=50.0 if architecture == "gemma2" else None,
        final_logit_soft_cap=30.0 if architecture == "gemma2" else None,
        **{**TINY_HPARAMS, **hparams},
    )
    causal_lm = build_causal_lm(hp, tiny_proto(), dtype=dtype, sequence_length=64)
    _randomise_norms(causal_lm.backbone, seed)
    return causal_lm


def _randomise_norms(backbone: Any, seed: int) -> None:
    # keras-hub initialises RMSNorm scales to zero; random ones make conversion bugs visible.
    import numpy as np

    rng = np.random.default_rng(seed)
    for weight in backbone.weights:
        if weight.path.endswith("scale"):
            weight.assign(rng.normal(0, 0.2, size=tuple(weight.shape)).astype("float32"))


@functools.cache
def len_vocab() -> int:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_proto=tiny_proto()).get_piece_size()


def tiny_gguf(architecture: str = "gemma3", quantization: str = "F32", num_layers: int = 2,
              directory: str | Path | None = None) -> Path:
    """Export a tiny random model of `architecture` to a GGUF file and return its path.

    Example:
        >>> tiny_gguf("gemma").suffix
        '.gguf'
    """
    from gemma_lab.models.gguf_export import export_gguf

    directory = Path(directory or tempfile.mkdtemp(prefix="gemma_lab_tiny_"))
    path = directory / f"tiny-{architecture}-{quantization.lower()}.gguf"
    return export_gguf(tiny_causal_lm(architecture, num_layers=num_layers), path, quantization)


@functools.lru_cache(maxsize=4)
def tiny_session(architecture: str = "gemma3") -> Any:
    """A `GemmaLab` session around a tiny random model (cached per architecture).

    Example:
        >>> tiny_session().info().vocabulary_size == len_vocab()
        True
    """
    from gemma_lab.models.loading import LoadedModel
    from gemma_lab.session import GemmaLab

    causal_lm = tiny_causal_lm(architecture)
    return GemmaLab(LoadedModel(causal_lm, f"tiny-{architecture}", "gemma_lab.testing", None,
                                "float32"))


def tiny_runtime(architecture: str = "gemma3") -> Any:
    """The `ModelRuntime` of `tiny_session(architecture)`.

    Example:
        >>> tiny_runtime().adapter.num_layers
        2
    """
    return tiny_session(architecture).runtime


# --- running magics on a real IPython shell ----------------------------------------------------
class MagicRun:
    """What one cell run on a real InteractiveShell produced.

    Attributes:
        result: IPython's `ExecutionResult` (`.error_in_exec` holds a raised exception).
        stdout, stderr: the captured streams.
        outputs: the captured display outputs (`RichOutput`: `.data`, `.update`, `.transient`).
    """

    def __init__(self, result: Any, stdout: str, stderr: str, outputs: list[Any]):
        self.result = result
        self.stdout = stdout
        self.stderr = stderr
        self.outputs = outputs

    @property
    def error(self) -> BaseException | None:
        return self.result.error_in_exec or self.result.error_before_exec

    @property
    def texts(self) -> list[str]:
        """The text/plain of every display output, in order."""
        return [output.data.get("text/plain", "") for output in self.outputs]


def ipython_shell() -> Any:
    """The process's real `InteractiveShell`, with `%load_ext gemma_lab` done.

    Example:
        >>> "gemma" in ipython_shell().magics_manager.magics["cell"]
        True
    """
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    if "gemma" not in shell.magics_manager.magics["cell"]:
        shell.run_line_magic("load_ext", "gemma_lab")
    return shell


def run_magic(source: str, shell: Any = None) -> MagicRun:
    """Run `source` (a `%gemma` line, a `%%gemma` cell, any code) as a notebook cell would,
    capturing stdout, stderr and display outputs.

    Example:
        >>> import gemma_lab.magics
        >>> _ = gemma_lab.magics.use(tiny_session())
        >>> run = run_magic("%%gemma --max-new-tokens 2 --no-stream -o g\\nhello")
        >>> run.error is None and len(ipython_shell().user_ns["g"].token_ids) <= 2
        True
    """
    from IPython.utils.capture import capture_output

    shell = shell or ipython_shell()
    with capture_output() as captured:
        result = shell.run_cell(source, store_history=True)
    return MagicRun(result, captured.stdout, captured.stderr, captured.outputs)
