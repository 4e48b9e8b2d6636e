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


# Gemma 4's turn markers, and the video placeholder keras-hub's Gemma 4 converter expects.
GEMMA4_SPECIALS = ("<|turn>", "<turn|>", "<|video|>")
# The image / audio markers keras-hub's Gemma3nTokenizer requires in every proto.
GEMMA3N_SPECIALS = ("<image_soft_token>", "<audio_soft_token>", "<start_of_image>",
                    "<end_of_image>", "<start_of_audio>", "<end_of_audio>", "[multimodal]")
# Seven more specials than the 320-piece proto leaves room for: Gemma 3n's is a bit larger.
GEMMA3N_VOCAB = 328


@functools.cache
def tiny_proto(vocab_size: int = 320, extra_specials: tuple[str, ...] = ()) -> bytes:
    """A small SentencePiece BPE proto with Gemma's special tokens and ids (`extra_specials`
    add control tokens after them, e.g. `GEMMA4_SPECIALS`).

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
        control_symbols=["<start_of_turn>", "<end_of_turn>", "<mask>", *extra_specials],
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
    """A random keras-hub CausalLM (with preprocessor) of the given architecture: "gemma",
    "gemma2", "gemma3", "gemma3n" (see `tiny_gemma3n`) or "gemma4" (see `tiny_gemma4`).

    `hparams` override `TINY_HPARAMS` (num_query_heads, num_key_value_heads, hidden_dim,
    head_dim), e.g. 8 heads so that every weight axis divides an 8-device mesh.

    Example:
        >>> tiny_causal_lm("gemma").backbone.num_layers
        2
        >>> tiny_causal_lm(num_query_heads=8, num_key_value_heads=8).backbone.num_query_heads
        8
    """
    if architecture == "gemma4":
        return tiny_gemma4(num_layers=max(num_layers, 4), seed=seed, dtype=dtype, **hparams)
    if architecture == "gemma3n":
        return tiny_gemma3n(num_layers=max(num_layers, 4), seed=seed, dtype=dtype, **hparams)
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


def tiny_gemma4(num_layers: int = 4, seed: int = 0, dtype: str = "float32", moe: bool = True,
                per_layer: bool = True, kv_shared: int = 2, **hparams: Any) -> Any:
    """A random keras-hub `Gemma4CausalLM` with Gemma 4's text features on: sliding and
    global layers alternating (global ones with wider heads and one KV head whose values
    reuse the key projection), the last `kv_shared` layers reusing earlier layers' keys and
    values, per-layer embeddings (`per_layer`) and a 4-expert mixture of experts beside the
    dense MLP (`moe`); final logit soft cap 30. `hparams` override the Gemma4Backbone's.

    Example:
        >>> model = tiny_gemma4()
        >>> [block.is_kv_shared_layer for block in model.backbone.transformer_layers]
        [False, False, True, True]
    """
    from gemma_lab.backend import import_keras

    keras = import_keras()  # before keras_hub, which would start Keras on its default backend
    import keras_hub

    keras.utils.set_random_seed(seed)
    config: dict[str, Any] = dict(
        vocabulary_size=len_vocab(GEMMA4_SPECIALS), image_size=None, num_layers=num_layers,
        num_query_heads=4, num_key_value_heads=2, hidden_dim=32, intermediate_dim=64,
        head_dim=8, global_head_dim=16, num_global_key_value_heads=1, sliding_window_size=4,
        sliding_window_pattern=2, num_kv_shared_layers=kv_shared,
        hidden_size_per_layer_input=8 if per_layer else 0, enable_moe_block=moe,
        num_experts=4 if moe else None, expert_intermediate_dim=16 if moe else None,
        num_experts_per_token=2, dtype=dtype)
    config.update(hparams)
    backbone = keras_hub.models.Gemma4Backbone(**config)
    tokenizer = keras_hub.models.Gemma4Tokenizer(
        proto=tiny_proto(extra_specials=GEMMA4_SPECIALS), has_vision_tokens=False,
        has_video_tokens=False)
    preprocessor = keras_hub.models.Gemma4CausalLMPreprocessor(tokenizer=tokenizer,
                                                               sequence_length=64)
    causal_lm = keras_hub.models.Gemma4CausalLM(preprocessor=preprocessor, backbone=backbone,
                                                final_logit_cap=30.0)
    _randomise_norms(backbone, seed, around=1.0)  # Gemma 4's norms multiply by the scale
    # keras-hub starts the router and expert bank at zero: random weights make them count.
    _spread(backbone, backbone.token_embedding.embeddings, seed)
    return causal_lm


def tiny_gemma3n(num_layers: int = 4, seed: int = 0, dtype: str = "float32",
                 **hparams: Any) -> Any:
    """A random keras-hub `Gemma3nCausalLM`, text only, with Gemma 3n's text features on: two
    AltUp streams, Laurel, per-layer inputs, sliding (window 4) and global layers
    alternating, the last half of the layers reusing earlier layers' keys and values, and
    activation sparsity (Gaussian top-k) in layer 0's MLP; final logit soft cap 30.
    `hparams` override the Gemma3nBackbone's.

    Example:
        >>> model = tiny_gemma3n()
        >>> [block.is_kv_shared_layer for block in model.backbone.language_model.transformer_layers]
        [False, False, True, True]
    """
    from gemma_lab.backend import import_keras

    keras = import_keras()  # before keras_hub, which would start Keras on its default backend
    import keras_hub

    keras.utils.set_random_seed(seed)
    vocabulary = len_vocab(GEMMA3N_SPECIALS, GEMMA3N_VOCAB)
    config: dict[str, Any] = dict(
        text_vocab_size=vocabulary, text_hidden_size=32, num_hidden_layers=num_layers,
        pad_token_id=0, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        intermediate_size=[64] * num_layers, hidden_activation="gelu_approximate",
        layer_types=["sliding_attention", "full_attention"] * (num_layers // 2)
        + ["sliding_attention"] * (num_layers % 2),
        sliding_window=4, rope_theta=1_000_000.0, max_position_embeddings=512,
        vocab_size_per_layer_input=vocabulary, hidden_size_per_layer_input=8,
        altup_num_inputs=2, altup_active_idx=0, altup_coef_clip=120.0, laurel_rank=4,
        activation_sparsity_pattern=[0.95] + [0.0] * (num_layers - 1),
        num_kv_shared_layers=num_layers // 2, final_logit_soft_cap=30.0, dtype=dtype)
    config.update(hparams)
    backbone = keras_hub.models.Gemma3nBackbone(**config)
    # Gemma 3n's RMSNorm multiplies by its scale (initialised to one); AltUp's
    # correct_output_scale (also a plain multiplier) starts at zero, which would drop every
    # block's per-layer-input term: random values around one make both count.
    _randomise_norms(backbone, seed, around=1.0)
    _spread(backbone, backbone.language_model.embed_tokens.embedding.embeddings, seed)
    # Only now the task: Gemma3nCausalLM's functional graph captures the tied embedding's
    # value when it is built (keras-hub's reverse embedding reads the variable eagerly), so
    # weights assigned afterwards would not reach its logits.
    tokenizer = keras_hub.models.Gemma3nTokenizer(
        proto=tiny_proto(GEMMA3N_VOCAB, extra_specials=GEMMA3N_SPECIALS))
    preprocessor = keras_hub.models.Gemma3nCausalLMPreprocessor(tokenizer=tokenizer,
                                                                sequence_length=64)
    causal_lm = keras_hub.models.Gemma3nCausalLM(preprocessor=preprocessor, backbone=backbone)
    return causal_lm


# --- tiny Hugging Face checkpoints (transformers writes them) -----------------------------------
def _hf_tokenizer(directory: Path, extra_specials: tuple[str, ...], vocab_size: int = 320) -> int:
    """tokenizer.json / tokenizer_config.json of `tiny_proto(vocab_size, extra_specials)`,
    converted by transformers' own GemmaTokenizer; returns the vocabulary size."""
    import json

    from gemma_lab.backend import import_keras

    import_keras()
    from transformers import GemmaTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.model").write_bytes(tiny_proto(vocab_size, extra_specials))
        tokenizer = GemmaTokenizer.from_pretrained(tmp)
        tokenizer.save_pretrained(directory)
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    for key in ("vocab_file", "is_local", "local_files_only"):  # the temporary folder's
        config.pop(key, None)
    config_path.write_text(json.dumps(config, indent=2))
    (directory / "tokenizer.model").unlink(missing_ok=True)
    return len(tokenizer)


def _randomise_torch(model: Any, seed: int) -> None:
    """Every float parameter and buffer redrawn: matrices N(0, 0.2), vectors (norm scales,
    router and expert scales, layer scalars) U(0.5, 1.5), so a converter that drops one or
    confuses `w` with `1 + w` shows in the logits."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, tensor in sorted(model.state_dict().items()):
            if not tensor.is_floating_point():
                continue
            if tensor.ndim <= 1:
                new = 0.5 + torch.rand(tensor.shape, generator=generator)
            else:
                new = torch.randn(tensor.shape, generator=generator) * 0.2
            tensor.copy_(new.to(tensor.dtype))


def tiny_hf_folder(architecture: str = "gemma4", directory: str | Path | None = None,
                   seed: int = 0, **config: Any) -> Path:
    """A tiny random Hugging Face checkpoint written by transformers' own `save_pretrained`
    (config.json, model.safetensors, tokenizer.json): "gemma3" (Gemma3ForCausalLM) or
    "gemma4" (Gemma4ForCausalLM with per-layer embeddings, a 4-expert mixture of experts and
    KV sharing on; `config` overrides Gemma4TextConfig / Gemma3TextConfig fields).

    Example:
        >>> (tiny_hf_folder("gemma3") / "model.safetensors").is_file()
        True
    """
    from gemma_lab.backend import import_keras

    import_keras()  # first: transformers may import Keras, which would start it on TensorFlow
    import torch
    import transformers

    directory = Path(directory or tempfile.mkdtemp(prefix=f"gemma_lab_hf_{architecture}_"))
    directory.mkdir(parents=True, exist_ok=True)
    specials = GEMMA4_SPECIALS if architecture == "gemma4" else ()
    vocabulary = _hf_tokenizer(directory, specials)
    common = dict(vocab_size=vocabulary, hidden_size=32, intermediate_size=64,
                  num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1,
                  head_dim=16, hidden_activation="gelu_pytorch_tanh",
                  max_position_embeddings=512, rms_norm_eps=1e-6, sliding_window=4,
                  layer_types=["sliding_attention", "full_attention"] * 2,
                  final_logit_softcapping=30.0, tie_word_embeddings=True, pad_token_id=0,
                  eos_token_id=1, bos_token_id=2)
    if architecture == "gemma4":
        settings = dict(common, global_head_dim=32, hidden_size_per_layer_input=8,
                        vocab_size_per_layer_input=vocabulary, num_kv_shared_layers=2,
                        enable_moe_block=True, num_experts=4, top_k_experts=2,
                        moe_intermediate_size=16, attention_k_eq_v=False,
                        use_double_wide_mlp=False)
        settings.update(config)
        model_config = transformers.Gemma4TextConfig(**settings)
        model_class = transformers.Gemma4ForCausalLM
    elif architecture == "gemma3":  # Gemma 3's own pattern: five local layers, one global
        settings = dict(common, query_pre_attn_scalar=16, num_hidden_layers=6,
                        layer_types=["sliding_attention"] * 5 + ["full_attention"])
        settings.update(config)
        model_config = transformers.Gemma3TextConfig(**settings)
        model_class = transformers.Gemma3ForCausalLM
    else:
        raise ValueError(f"tiny_hf_folder builds 'gemma3' or 'gemma4', not {architecture!r}")
    torch.manual_seed(seed)
    model = model_class(model_config).eval()
    _randomise_torch(model, seed)
    model.save_pretrained(directory)
    return directory


def _spread(backbone: Any, embeddings: Any, seed: int) -> None:
    """Unit-variance token `embeddings` (keras-hub's fan-in initialiser gives near-uniform
    next-token distributions at this size; these give logits that differ, so interventions
    show), and every trainable weight keras-hub left at zero redrawn N(0, 0.2)."""
    import numpy as np

    from gemma_lab.backend import to_numpy

    rng = np.random.default_rng(seed + 1)
    embeddings.assign(rng.normal(0, 1, size=tuple(embeddings.shape)).astype(embeddings.dtype))
    for weight in backbone.weights:
        if weight.trainable and not np.any(to_numpy(weight)):
            weight.assign(rng.normal(0, 0.2, size=tuple(weight.shape)).astype(weight.dtype))


def numpy_log_softmax(logits: Any) -> Any:
    """log softmax over the last axis in float64 NumPy: the tests' independent reference.

    Example:
        >>> import numpy as np
        >>> float(np.exp(numpy_log_softmax(np.array([1.0, 2.0]))).sum())
        1.0
    """
    import numpy as np

    values = np.asarray(logits, dtype="float64")
    top = values.max(-1, keepdims=True)
    return values - top - np.log(np.exp(values - top).sum(-1, keepdims=True))


def keras_hub_inputs(backbone: Any, token_ids: Any) -> dict[str, Any]:
    """The inputs keras-hub's own functional call of `backbone` (or its CausalLM) takes for
    unpadded `token_ids` [batch, length]: a reference path for tests, free of gemma_lab's
    forward pass. Gemma 4 also wants `position_ids`.

    Example:
        >>> import numpy as np
        >>> sorted(keras_hub_inputs(tiny_backbone(), np.array([[2, 10]])))
        ['padding_mask', 'token_ids']
    """
    import numpy as np

    ids = np.asarray(token_ids, dtype="int32")
    feed = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    if "position_ids" in backbone.input:
        feed["position_ids"] = np.broadcast_to(np.arange(ids.shape[1], dtype="int32"),
                                               ids.shape).copy()
    return feed


def _randomise_norms(backbone: Any, seed: int, around: float = 0.0) -> None:
    # keras-hub initialises RMSNorm scales to zero (Gemma 1-3: x * (1 + scale)) or one
    # (Gemma 3n, Gemma 4: x * scale); random ones around that make conversion bugs visible.
    import numpy as np

    rng = np.random.default_rng(seed)
    for weight in backbone.weights:
        if weight.path.endswith("scale"):
            noise = rng.normal(0, 0.2, size=tuple(weight.shape))
            weight.assign((around + noise).astype(weight.dtype))


@functools.cache
def len_vocab(extra_specials: tuple[str, ...] = (), vocab_size: int = 320) -> int:
    import sentencepiece as spm

    proto = tiny_proto(vocab_size, extra_specials=extra_specials)
    return spm.SentencePieceProcessor(model_proto=proto).get_piece_size()


def tiny_gguf(architecture: str = "gemma3", quantization: str = "F32", num_layers: int = 2,
              directory: str | Path | None = None, chat_template: str | None = None) -> Path:
    """Export a tiny random model of `architecture` to a GGUF file and return its path
    (with `chat_template` as its `tokenizer.chat_template` when given).

    Example:
        >>> tiny_gguf("gemma").suffix
        '.gguf'
    """
    from gemma_lab.models.gguf_export import export_gguf

    directory = Path(directory or tempfile.mkdtemp(prefix="gemma_lab_tiny_"))
    path = directory / f"tiny-{architecture}-{quantization.lower()}.gguf"
    return export_gguf(tiny_causal_lm(architecture, num_layers=num_layers), path, quantization,
                       chat_template=chat_template)


@functools.lru_cache(maxsize=6)
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
