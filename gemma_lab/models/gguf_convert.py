"""Converting a parsed Gemma GGUF into a keras-hub CausalLM (backbone + tokenizer)."""

from __future__ import annotations

from typing import Any

from gemma_lab._progress import progress_bar
from gemma_lab.backend import import_keras
from gemma_lab.errors import GGUFError
from gemma_lab.models.gguf_file import GemmaHyperParams, GGUFModel
from gemma_lab.models.gguf_tokenizer import sentencepiece_proto
from gemma_lab.models.weight_layout import weight_rules


def backbone_config(hp: GemmaHyperParams) -> dict[str, Any]:
    """keras-hub backbone constructor arguments for these hyper-parameters.

    Example:
        >>> from gemma_lab.models.gguf_file import GemmaHyperParams
        >>> hp = GemmaHyperParams(architecture="gemma", vocabulary_size=256, num_layers=2,
        ...     num_query_heads=2, num_key_value_heads=1, hidden_dim=16, intermediate_dim=32,
        ...     head_dim=8, layer_norm_epsilon=1e-6, context_length=128)
        >>> backbone_config(hp)["intermediate_dim"]  # GemmaBackbone counts both MLP branches
        64
    """
    common = dict(
        vocabulary_size=hp.vocabulary_size,
        num_layers=hp.num_layers,
        num_query_heads=hp.num_query_heads,
        num_key_value_heads=hp.num_key_value_heads,
        hidden_dim=hp.hidden_dim,
        head_dim=hp.head_dim,
        layer_norm_epsilon=hp.layer_norm_epsilon,
    )
    if hp.architecture == "gemma":
        return dict(common, intermediate_dim=hp.intermediate_dim * 2)
    if hp.architecture == "gemma2":
        return dict(
            common,
            intermediate_dim=hp.intermediate_dim * 2,
            query_head_dim_normalize=hp.query_head_dim_normalize,
            use_post_ffw_norm=True,
            use_post_attention_norm=True,
            final_logit_soft_cap=hp.final_logit_soft_cap,
            attention_logit_soft_cap=hp.attention_logit_soft_cap,
            use_sliding_window_attention=hp.sliding_window_size is not None,
            sliding_window_size=hp.sliding_window_size or 4096,
        )
    if hp.architecture == "gemma3":
        return dict(
            common,
            image_size=None,
            intermediate_dim=hp.intermediate_dim,
            query_head_dim_normalize=hp.query_head_dim_normalize,
            use_query_key_norm=True,
            use_post_ffw_norm=True,
            use_post_attention_norm=True,
            attention_logit_soft_cap=hp.attention_logit_soft_cap,
            final_logit_soft_cap=hp.final_logit_soft_cap,
            use_sliding_window_attention=hp.sliding_window_size is not None,
            sliding_window_size=hp.sliding_window_size or 4096,
            global_rope_scaling_factor=hp.global_rope_scaling_factor,
            vision_encoder=None,
        )
    raise GGUFError(f"Unsupported architecture {hp.architecture!r}.")


def build_causal_lm(
    hp: GemmaHyperParams, proto: bytes, dtype: str = "float32", sequence_length: int = 512
) -> Any:
    """A randomly initialised keras-hub Gemma CausalLM with this architecture and tokenizer."""
    import_keras()
    import keras_hub

    if hp.architecture == "gemma3":
        tokenizer = keras_hub.models.Gemma3Tokenizer(proto=proto, has_vision_tokens=False)
        backbone = keras_hub.models.Gemma3Backbone(**backbone_config(hp), dtype=dtype)
        preprocessor = keras_hub.models.Gemma3CausalLMPreprocessor(
            tokenizer=tokenizer, sequence_length=sequence_length
        )
        return keras_hub.models.Gemma3CausalLM(backbone=backbone, preprocessor=preprocessor)
    tokenizer = keras_hub.models.GemmaTokenizer(proto=proto)
    backbone = keras_hub.models.GemmaBackbone(**backbone_config(hp), dtype=dtype)
    preprocessor = keras_hub.models.GemmaCausalLMPreprocessor(
        tokenizer=tokenizer, sequence_length=sequence_length
    )
    return keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=preprocessor)


def convert_gguf(model: GGUFModel, dtype: str = "float32", progress: bool = True) -> Any:
    """Dequantise a GGUF model into a keras-hub Gemma CausalLM (Gemma 4: `Gemma4CausalLM`,
    through `gguf_gemma4.convert_gemma4`).

    Example:
        >>> from gemma_lab.testing import tiny_gguf
        >>> from gemma_lab.models.gguf_file import read_gguf
        >>> causal_lm = convert_gguf(read_gguf(tiny_gguf("gemma3")), progress=False)
        >>> type(causal_lm).__name__
        'Gemma3CausalLM'
    """
    if model.hparams.architecture == "gemma4":
        from gemma_lab.models.gguf_gemma4 import convert_gemma4

        return convert_gemma4(model, dtype=dtype, progress=progress)
    causal_lm = build_causal_lm(model.hparams, sentencepiece_proto(model.vocabulary), dtype)
    rules = list(weight_rules(causal_lm.backbone))
    expected = {name for name, _, _ in rules}
    unexpected = sorted(set(model.tensor_names) - expected - {"rope_freqs.weight"})
    if unexpected:
        raise GGUFError(
            f"{model.path} has tensors this Gemma converter does not know: {unexpected[:5]}. "
            "Is it a text-only gemma/gemma2/gemma3/gemma4 model?"
        )
    for name, variable, layout in progress_bar(rules, desc="Converting GGUF", disable=not progress):
        value = layout.to_keras(model.tensor(name), tuple(variable.shape))
        if tuple(value.shape) != tuple(variable.shape):
            raise GGUFError(
                f"Tensor {name} has shape {value.shape}, the model expects {tuple(variable.shape)}."
            )
        variable.assign(value)
    return causal_lm
