"""Gemma 4 (llama.cpp architecture "gemma4") GGUF files, both ways.

Reading goes GGUF → a Hugging Face-named view of the tensors → keras-hub's own Gemma 4
converter (`keras_hub.src.utils.transformers.convert_gemma4`: `convert_backbone_config` for the
architecture, `convert_weights` for every weight). The GGUF metadata is first turned into the
Hugging Face `gemma4_text` config keys that converter reads; tensor names are translated with
gguf-py's own `TensorNameMap` for `MODEL_ARCH.GEMMA4`. So KV sharing, K=V global layers, the
mixture of experts and per-layer embeddings are ported by keras-hub itself, as for a Hugging
Face folder, with no files written.

Writing is the inverse: one small layout rule per tensor (keras-hub kernel → Hugging Face
layout, which is the numpy view of a GGUF tensor), named by the same `TensorNameMap`. Gemma 4's
RMSNorm multiplies by its weight (no `1 + w`), so norms are stored as they are: transformers'
GGUF reader applies no offset for "gemma4" either.

Metadata keys (gguf-py's `Keys`): `attention.key_length` is the global (full-attention) head
size, as transformers' reader maps it; `key_length_swa` the sliding one; `head_count_kv` is
one count (the sliding layers'; the global layers' follows from their attn_k shape) or, as
read, a list per layer; `attention.sliding_window_pattern` is a per-layer list (True =
sliding); `attention.shared_kv_layers`, `embedding_length_per_layer_input`, `expert_count` /
`expert_used_count` / `expert_feed_forward_length`, `rope.freq_base` (global) /
`rope.freq_base_swa` (sliding), `rope.dimension_count` (rotated dims of a global head).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gemma_lab.errors import GGUFError

ARCHITECTURE = "gemma4"

# The router's per-dimension scale and the per-expert output scale have no entry in gguf-py's
# map; they take llama.cpp's names, the MoE module's GGUF name plus ".scale".
_ROUTER_SCALE = "ffn_gate_inp.scale"
_EXPERT_SCALE = "ffn_down_exps.scale"
# Hugging Face parameters without a ".weight" suffix (experts.gate_up_proj, layer_scalar...)
# keep none in the GGUF name, as gguf-py's map and transformers' reader have them; files that
# add ".weight" are read too (`_GGUFLoader._resolve`).


# --- names ------------------------------------------------------------------------------------
def _name_map(num_layers: int) -> Any:
    import gguf

    return gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA4, num_layers)


def gguf_name(hf_name: str, num_layers: int, name_map: Any = None) -> str:
    """The GGUF tensor name of a Hugging Face Gemma 4 text weight (`model.` prefix optional).

    Example:
        >>> gguf_name("model.layers.3.self_attn.q_proj.weight", 4)
        'blk.3.attn_q.weight'
        >>> gguf_name("model.layers.0.experts.gate_up_proj", 4)
        'blk.0.ffn_gate_up_exps'
    """
    name_map = name_map or _name_map(num_layers)
    name = hf_name if hf_name.startswith("model.") or hf_name == "lm_head.weight" else (
        "model." + hf_name)
    for module, extra in ((".router.scale", _ROUTER_SCALE), (".router.per_expert_scale",
                                                             _EXPERT_SCALE)):
        if name.endswith(module):
            block = name[: -len(module)].rsplit(".", 1)[-1]
            return f"blk.{block}.{extra}"
    stem, suffix = name, ""
    if name.endswith((".weight", ".bias")):
        stem, suffix = name.rsplit(".", 1)
        suffix = "." + suffix
    mapped = name_map.get_name(stem)
    if mapped is None:
        raise GGUFError(f"gguf-py knows no Gemma 4 GGUF name for {hf_name!r}.")
    return mapped + suffix


# --- reading ----------------------------------------------------------------------------------
class _GGUFLoader:
    """The part of keras-hub's `SafetensorLoader` its Gemma 4 converter calls, serving
    Hugging Face-named tensors out of a parsed GGUF file."""

    def __init__(self, model: Any, num_layers: int, progress: Any = None):
        self.model = model
        self.num_layers = num_layers
        self.name_map = _name_map(num_layers)
        self.available = set(model.tensor_names)
        self.used: set[str] = set()
        self.progress = progress

    def _resolve(self, hf_name: str) -> str:
        name = gguf_name(hf_name, self.num_layers, self.name_map)
        for candidate in (name, name + ".weight"):
            if candidate in self.available:
                return candidate
        raise GGUFError(f"Tensor {name!r} (for {hf_name}) is missing from {self.model.path}; "
                        "the file is incomplete or describes a different Gemma 4 layout.")

    def get_tensor(self, hf_name: str) -> np.ndarray:
        name = self._resolve(hf_name)
        self.used.add(name)
        return self.model.tensor(name)

    def port_weight(self, keras_variable: Any, hf_weight_key: str, hook_fn: Any = None) -> None:
        value = self.get_tensor(hf_weight_key)
        shape = tuple(keras_variable.shape)
        if hook_fn is not None:
            value = hook_fn(value, list(shape))
        value = np.asarray(value)
        if value.size == int(np.prod(shape)) and value.shape != shape and len(shape) <= 1:
            value = value.reshape(shape)  # layer_scalar: () in keras-hub, (1,) in the file
        if tuple(value.shape) != shape:
            raise GGUFError(f"Tensor for {hf_weight_key} has shape {value.shape}; keras-hub's "
                            f"Gemma 4 expects {shape}. The file's metadata and tensors disagree.")
        keras_variable.assign(value.astype(keras_variable.dtype))
        if self.progress is not None:
            self.progress.update(1)


def _per_layer(value: Any, num_layers: int, key: str) -> list[Any]:
    if isinstance(value, (list, tuple)):
        if len(value) != num_layers:
            raise GGUFError(f"GGUF key {key!r} has {len(value)} values for {num_layers} layers.")
        return list(value)
    return [value] * num_layers


def _field(model: Any, key: str, default: Any = ...) -> Any:
    value = model.metadata.get(f"{ARCHITECTURE}.{key}", default)
    if value is ...:
        raise GGUFError(f"GGUF key '{ARCHITECTURE}.{key}' is missing; this is not a complete "
                        "Gemma 4 GGUF file (re-convert it with llama.cpp or gemma_lab).")
    return value


def hf_text_config(model: Any) -> dict[str, Any]:
    """The Hugging Face `gemma4_text` config keys keras-hub's converter reads, from a parsed
    Gemma 4 GGUF's metadata and tensor names.

    Example:
        >>> import tempfile, os
        >>> from gemma_lab.testing import tiny_gemma4
        >>> from gemma_lab.models.gguf_file import read_gguf
        >>> path = export_gemma4(tiny_gemma4(), os.path.join(tempfile.mkdtemp(), "m.gguf"))
        >>> hf_text_config(read_gguf(path))["layer_types"][:2]
        ['sliding_attention', 'full_attention']
    """
    hp = model.hparams
    layers = hp.num_layers
    names = set(model.tensor_names)
    pattern = _field(model, "attention.sliding_window_pattern", None)
    if isinstance(pattern, (list, tuple)):
        sliding = [bool(v) for v in _per_layer(pattern, layers, "sliding_window_pattern")]
    else:  # a period: every `pattern`-th layer is global, as in keras-hub's default
        period = int(pattern or 6)
        sliding = [i % period != period - 1 for i in range(layers)]
    layer_types = ["sliding_attention" if s else "full_attention" for s in sliding]
    kv_heads = [int(v) for v in _per_layer(_field(model, "attention.head_count_kv",
                                                  hp.num_query_heads), layers, "head_count_kv")]
    global_head_dim = int(_field(model, "attention.key_length"))
    shared = int(_field(model, "attention.shared_kv_layers", 0))
    own_kv = [i for i in range(layers - shared) if not sliding[i]]
    if not isinstance(_field(model, "attention.head_count_kv", None), (list, tuple)):
        # one count in the file: the global layers' own count is in their key projection
        for i in own_kv:
            kv_heads[i] = model.tensor_shape(f"blk.{i}.attn_k.weight")[0] // global_head_dim
    local_kv = {k for k, s in zip(kv_heads, sliding, strict=True) if s} or {kv_heads[0]}
    global_kv = {kv_heads[i] for i in own_kv} or local_kv
    if len(local_kv) != 1 or len(global_kv) != 1:
        raise GGUFError(f"head_count_kv {kv_heads} varies within sliding or global layers; "
                        "keras-hub's Gemma 4 has one count for each kind.")
    k_eq_v = bool(own_kv) and all(f"blk.{i}.attn_v.weight" not in names for i in own_kv)
    if not k_eq_v and global_kv != local_kv:
        raise GGUFError("Global layers have their own KV head count and value projections; "
                        "keras-hub's Gemma 4 only builds that with K=V (no attn_v on them).")
    ffn = [int(v) for v in _per_layer(_field(model, "feed_forward_length"), layers,
                                      "feed_forward_length")]
    double_wide = len(set(ffn)) > 1
    if double_wide and any(f != (2 * ffn[0] if i >= layers - shared else ffn[0])
                           for i, f in enumerate(ffn)):
        raise GGUFError(f"feed_forward_length {ffn} is not Gemma 4's pattern (KV-shared layers "
                        "twice as wide, the rest equal); keras-hub cannot build it.")
    per_layer = int(_field(model, "embedding_length_per_layer_input", 0))
    experts = int(_field(model, "expert_count", 0))
    rotated = _field(model, "rope.dimension_count", global_head_dim)
    config: dict[str, Any] = {
        "model_type": "gemma4_text",
        "vocab_size": hp.vocabulary_size,
        "num_hidden_layers": layers,
        "num_attention_heads": hp.num_query_heads,
        "num_key_value_heads": local_kv.pop(),
        "hidden_size": hp.hidden_dim,
        "intermediate_size": ffn[0],
        "head_dim": int(_field(model, "attention.key_length_swa", global_head_dim)),
        "global_head_dim": global_head_dim,
        "num_global_key_value_heads": global_kv.pop() if k_eq_v else None,
        "attn_logit_softcapping": hp.attention_logit_soft_cap,
        "final_logit_softcapping": hp.final_logit_soft_cap,
        "sliding_window": hp.sliding_window_size or 0,
        "rms_norm_eps": hp.layer_norm_epsilon,
        "layer_types": layer_types,
        "num_kv_shared_layers": shared,
        "hidden_size_per_layer_input": per_layer,
        "use_double_wide_mlp": double_wide,
        "enable_moe_block": experts > 0,
        "rope_parameters": {
            "full_attention": {"rope_theta": float(_field(model, "rope.freq_base", 1e6)),
                               "partial_rotary_factor": float(rotated) / global_head_dim},
            "sliding_attention": {"rope_theta": float(_field(model, "rope.freq_base_swa",
                                                             1e4))},
        },
    }
    if per_layer:
        config["vocab_size_per_layer_input"] = int(
            model.tensor_shape("per_layer_token_embd.weight")[0])
    if experts:
        config.update(num_experts=experts, top_k_experts=int(_field(model, "expert_used_count")),
                      moe_intermediate_size=int(_field(model, "expert_feed_forward_length")))
    return config


def _tokenizer(vocabulary: Any) -> Any:
    import keras_hub

    from gemma_lab.models.gguf_tokenizer import sentencepiece_proto

    tokens = set(vocabulary.tokens)
    return keras_hub.models.Gemma4Tokenizer(
        proto=sentencepiece_proto(vocabulary),
        has_vision_tokens="<|image|>" in tokens, has_audio_tokens="<|audio|>" in tokens,
        has_video_tokens="<|video|>" in tokens)


def convert_gemma4(model: Any, dtype: str = "float32", progress: bool = True,
                   sequence_length: int = 512) -> Any:
    """A keras-hub `Gemma4CausalLM` from a parsed Gemma 4 GGUF (see `read_gguf`), built and
    filled by keras-hub's own Gemma 4 converter.

    Example:
        >>> import tempfile, os
        >>> from gemma_lab.testing import tiny_gemma4
        >>> from gemma_lab.models.gguf_file import read_gguf
        >>> path = export_gemma4(tiny_gemma4(), os.path.join(tempfile.mkdtemp(), "m.gguf"))
        >>> type(convert_gemma4(read_gguf(path), progress=False)).__name__
        'Gemma4CausalLM'
    """
    from gemma_lab._progress import progress_counter
    from gemma_lab.backend import import_keras

    import_keras()
    import keras_hub
    from keras_hub.src.utils.transformers import convert_gemma4 as hf_gemma4

    config = hf_text_config(model)
    try:
        backbone = keras_hub.models.Gemma4Backbone(
            **hf_gemma4.convert_backbone_config(config), dtype=dtype)
    except (TypeError, ValueError, KeyError) as err:
        raise GGUFError(f"{model.path}: keras-hub cannot build this Gemma 4 ({err}).") from err
    bar = progress_counter(len(backbone.weights), desc="Converting GGUF", disable=not progress)
    loader = _GGUFLoader(model, backbone.num_layers, bar)
    try:
        hf_gemma4.convert_weights(backbone, loader, config)
    finally:
        bar.close()
    unused = sorted(loader.available - loader.used - {"rope_freqs.weight"})
    if unused:
        raise GGUFError(f"{model.path} has tensors keras-hub's Gemma 4 does not use: "
                        f"{unused[:5]}. Is it a text-only Gemma 4 GGUF?")
    preprocessor = keras_hub.models.Gemma4CausalLMPreprocessor(
        tokenizer=_tokenizer(model.vocabulary), sequence_length=sequence_length)
    return keras_hub.models.Gemma4CausalLM(backbone=backbone, preprocessor=preprocessor)


# --- writing ----------------------------------------------------------------------------------
def _heads_in(x: np.ndarray) -> np.ndarray:  # keras (heads, hidden, head_dim) -> (h*d, hidden)
    heads, hidden, head_dim = x.shape
    return x.transpose(0, 2, 1).reshape(heads * head_dim, hidden)


def _heads_out(x: np.ndarray) -> np.ndarray:  # keras (heads, head_dim, hidden) -> (hidden, h*d)
    heads, head_dim, hidden = x.shape
    return x.transpose(2, 0, 1).reshape(hidden, heads * head_dim)


def hf_weights(backbone: Any) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (Hugging Face name, float32 array in Hugging Face layout) for every text weight
    of a keras-hub Gemma4Backbone: the inverse of keras-hub's `convert_weights`.

    Example:
        >>> from gemma_lab.testing import tiny_gemma4
        >>> dict(hf_weights(tiny_gemma4().backbone))["model.layers.0.experts.gate_up_proj"].shape
        (4, 32, 32)
    """
    from gemma_lab.backend import to_numpy

    def value(variable: Any) -> np.ndarray:
        return np.asarray(to_numpy(variable.value), dtype=np.float32)

    def copy(v: Any) -> np.ndarray:
        return value(v)

    def transposed(v: Any) -> np.ndarray:
        return value(v).T

    if backbone.vision_encoder is not None or backbone.audio_encoder is not None:
        raise GGUFError("Only Gemma 4's text model goes to GGUF here; vision and audio "
                        "encoders are not exported. Export a text-only Gemma4CausalLM.")
    yield "model.embed_tokens.weight", copy(backbone.get_layer("token_embedding").embeddings)
    if backbone.hidden_size_per_layer_input > 0:
        yield ("model.embed_tokens_per_layer.weight",
               copy(backbone.get_layer("per_layer_token_embedding").embeddings))
        yield ("model.per_layer_model_projection.weight",
               transposed(backbone.get_layer("per_layer_model_projection").kernel))
        yield ("model.per_layer_projection_norm.weight",
               copy(backbone.get_layer("per_layer_projection_norm").scale))
    for i in range(backbone.num_layers):
        block = backbone.get_layer(f"decoder_block_{i}")
        attention = block.attention
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", copy(block.pre_attention_norm.scale)
        yield p + "post_attention_layernorm.weight", copy(block.post_attention_norm.scale)
        yield p + "pre_feedforward_layernorm.weight", copy(block.pre_ffw_norm.scale)
        yield p + "post_feedforward_layernorm.weight", copy(block.post_ffw_norm.scale)
        yield p + "self_attn.q_proj.weight", _heads_in(value(attention.query_dense.kernel))
        yield p + "self_attn.q_norm.weight", copy(attention.query_norm.scale)
        if not attention.is_kv_shared_layer:
            yield p + "self_attn.k_proj.weight", _heads_in(value(attention.key_dense.kernel))
            yield p + "self_attn.k_norm.weight", copy(attention.key_norm.scale)
            if attention.value_dense is not None:
                yield p + "self_attn.v_proj.weight", _heads_in(value(attention.value_dense.kernel))
        yield p + "self_attn.o_proj.weight", _heads_out(value(attention.output_dense.kernel))
        yield p + "mlp.gate_proj.weight", transposed(block.gating_ffw.kernel)
        yield p + "mlp.up_proj.weight", transposed(block.gating_ffw_2.kernel)
        yield p + "mlp.down_proj.weight", transposed(block.ffw_linear.kernel)
        if block.hidden_size_per_layer_input > 0:
            yield p + "per_layer_input_gate.weight", transposed(block.per_layer_input_gate.kernel)
            yield p + "per_layer_projection.weight", transposed(block.per_layer_up_proj.kernel)
            yield (p + "post_per_layer_input_norm.weight",
                   copy(block.post_per_layer_input_norm.scale))
        if block.enable_moe_block:
            bank = block.moe_expert_bank
            yield p + "post_feedforward_layernorm_1.weight", copy(block.post_ffw_norm_dense.scale)
            yield p + "pre_feedforward_layernorm_2.weight", copy(block.pre_ffw_norm_moe.scale)
            yield p + "post_feedforward_layernorm_2.weight", copy(
                block.post_ffw_norm_moe_path.scale)
            yield p + "router.scale", copy(block.moe_router.per_dim_scale)
            yield p + "router.proj.weight", transposed(block.moe_router.proj.kernel)
            # keras-hub: gate/up [E, H, I], down [E, I, H]; HF: gate_up [E, 2I, H], down [E, H, I]
            yield p + "experts.gate_up_proj", np.concatenate(
                [value(bank.gate_proj).transpose(0, 2, 1), value(bank.up_proj).transpose(0, 2, 1)],
                axis=1)
            yield p + "experts.down_proj", value(bank.down_proj).transpose(0, 2, 1)
            yield p + "router.per_expert_scale", copy(bank.per_expert_scale)
        yield p + "layer_scalar", value(block.layer_scalar).reshape(1)
    yield "model.norm.weight", copy(backbone.get_layer("final_normalization").scale)


def _final_soft_cap(causal_lm: Any) -> float | None:
    task_cap = getattr(causal_lm, "final_logit_cap", None)
    backbone_cap = causal_lm.backbone.final_logit_soft_cap
    if task_cap is not None and backbone_cap is not None:
        raise GGUFError("Both Gemma4CausalLM.final_logit_cap and the backbone's "
                        "final_logit_soft_cap are set, so logits are capped twice; GGUF has "
                        "one final_logit_softcapping. Set one of them to None and export again.")
    return task_cap if task_cap is not None else backbone_cap


def write_metadata(writer: Any, causal_lm: Any) -> None:
    """Write Gemma 4's architecture metadata (not the tokenizer) for `causal_lm`."""
    b = causal_lm.backbone
    layers = b.num_layers
    sliding = [t != "full_attention" for t in b.layer_types]
    global_head_dim = b.global_head_dim or b.head_dim
    shared = b.num_kv_shared_layers
    writer.add_context_length(131072)
    writer.add_embedding_length(b.hidden_dim)
    writer.add_block_count(layers)
    if b.use_double_wide_mlp and shared:
        writer.add_feed_forward_length([b.intermediate_dim * (2 if i >= layers - shared else 1)
                                        for i in range(layers)])
    else:
        writer.add_feed_forward_length(b.intermediate_dim)
    writer.add_head_count(b.num_query_heads)
    # One count (the sliding layers'): transformers' reader refuses a per-layer list. The
    # global layers' count is their attn_k tensor's rows / key_length (see hf_text_config).
    writer.add_head_count_kv(b.num_key_value_heads)
    writer.add_key_length(global_head_dim)
    writer.add_value_length(global_head_dim)
    writer.add_key_length_swa(b.head_dim)
    writer.add_value_length_swa(b.head_dim)
    writer.add_layer_norm_rms_eps(b.layer_norm_epsilon)
    if b.use_sliding_window_attention:
        writer.add_sliding_window(b.sliding_window_size)
    writer.add_sliding_window_pattern(sliding)
    writer.add_shared_kv_layers(shared)
    factor = b.global_rope_partial_rotary_factor or 1.0
    writer.add_rope_dimension_count(round(global_head_dim * factor))
    writer.add_rope_freq_base(float(b.global_rope_wavelength or 1_000_000.0))
    writer.add_rope_freq_base_swa(float(b.local_rope_wavelength or 10_000.0))
    if b.attention_logit_soft_cap is not None:
        writer.add_attn_logit_softcapping(b.attention_logit_soft_cap)
    cap = _final_soft_cap(causal_lm)
    if cap is not None:
        writer.add_final_logit_softcapping(cap)
    if b.hidden_size_per_layer_input:
        writer.add_embedding_length_per_layer_input(b.hidden_size_per_layer_input)
    if b.enable_moe_block:
        writer.add_expert_count(b.num_experts)
        writer.add_expert_used_count(b.num_experts_per_token)
        writer.add_expert_feed_forward_length(b.expert_intermediate_dim)


def export_gemma4(causal_lm: Any, path: str | Path, quantization: str = "F32",
                  name: str = "gemma_lab export", chat_template: str | None = None) -> Path:
    """Write a keras-hub `Gemma4CausalLM` (text) as a GGUF file of architecture "gemma4".

    `quantization`: "F32", "F16", or "Q8_0" (2-D matrices whose rows are a multiple of 32;
    norms, scales and the expert banks stay F32). `gguf_export.export_gguf` calls this for
    Gemma 4 models.

    Example:
        >>> import tempfile, os
        >>> from gemma_lab.testing import tiny_gemma4
        >>> out = export_gemma4(tiny_gemma4(), os.path.join(tempfile.mkdtemp(), "m.gguf"))
        >>> out.stat().st_size > 0
        True
    """
    import gguf

    from gemma_lab.models.gguf_tokenizer import special_ids, write_vocabulary

    if quantization not in ("F32", "F16", "Q8_0"):
        raise GGUFError(f"quantization={quantization!r} is not supported for Gemma 4; choose "
                        "F32, F16 or Q8_0.")
    backbone = causal_lm.backbone
    path = Path(path)
    writer = gguf.GGUFWriter(str(path), ARCHITECTURE)
    writer.add_name(name)
    write_metadata(writer, causal_lm)
    tokenizer = causal_lm.preprocessor.tokenizer
    write_vocabulary(writer, tokenizer.proto, model="gemma4", specials=special_ids(tokenizer),
                     chat_template=chat_template)
    name_map = _name_map(backbone.num_layers)
    for hf_name, array in hf_weights(backbone):
        array = np.ascontiguousarray(array)
        tensor = gguf_name(hf_name, backbone.num_layers, name_map)
        if quantization == "Q8_0" and array.ndim == 2 and array.shape[-1] % 32 == 0:
            qtype = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(tensor, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
        elif quantization == "F16" and array.ndim == 2:
            writer.add_tensor(tensor, array.astype(np.float16))
        else:
            writer.add_tensor(tensor, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


__all__ = ["ARCHITECTURE", "convert_gemma4", "export_gemma4", "gguf_name", "hf_text_config",
           "hf_weights", "write_metadata"]
