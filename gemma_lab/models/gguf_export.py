"""Writing a keras-hub Gemma CausalLM to a GGUF file (the inverse of gguf_convert).

Used to round-trip models in tests and to hand a model to llama.cpp-based tools.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gemma_lab.backend import to_numpy
from gemma_lab.models.gguf_tokenizer import special_ids, write_vocabulary
from gemma_lab.models.weight_layout import weight_rules

_QUANTIZABLE = {"Q8_0"}


def _architecture(backbone: Any) -> str:
    if type(backbone).__name__ == "Gemma3Backbone":
        return "gemma3"
    return "gemma2" if backbone.use_post_ffw_norm else "gemma"


def export_gguf(causal_lm: Any, path: str | Path, quantization: str = "F32",
                name: str = "gemma_lab export", chat_template: str | None = None) -> Path:
    """Write `causal_lm` (keras-hub GemmaCausalLM, Gemma3CausalLM or Gemma4CausalLM) as a GGUF
    file.

    `quantization`: "F32", or "Q8_0" for the matrices (norms stay F32), which exercises the
    same dequantisation path as llama.cpp's quantised files (Gemma 4 also takes "F16"; see
    `gguf_gemma4.export_gemma4`). `chat_template`: Jinja source to store as the file's
    `tokenizer.chat_template` (what `chat` then uses when the file is loaded).

    Example:
        >>> import tempfile, os
        >>> from gemma_lab.testing import tiny_causal_lm
        >>> out = export_gguf(tiny_causal_lm("gemma2"), os.path.join(tempfile.mkdtemp(), "m.gguf"))
        >>> out.stat().st_size > 0
        True
    """
    import gguf

    backbone = causal_lm.backbone
    if type(backbone).__name__ == "Gemma4Backbone":
        from gemma_lab.models.gguf_gemma4 import export_gemma4

        return export_gemma4(causal_lm, path, quantization, name, chat_template)
    arch = _architecture(backbone)
    path = Path(path)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(name)
    writer.add_context_length(8192)
    writer.add_embedding_length(backbone.hidden_dim)
    writer.add_block_count(backbone.num_layers)
    ffn = backbone.intermediate_dim if arch == "gemma3" else backbone.intermediate_dim // 2
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(backbone.num_query_heads)
    writer.add_head_count_kv(backbone.num_key_value_heads)
    writer.add_key_length(backbone.head_dim)
    writer.add_value_length(backbone.head_dim)
    writer.add_layer_norm_rms_eps(backbone.layer_norm_epsilon)
    if getattr(backbone, "use_sliding_window_attention", False):
        writer.add_sliding_window(backbone.sliding_window_size)
    if arch == "gemma3":
        # llama.cpp's Gemma 3 reads the global layers' RoPE base from the file (default
        # 10,000); keras-hub's global layers use their own (1,000,000), the local ones 10,000.
        bases = {layer.attention.rope_wavelength for layer in backbone.transformer_layers
                 if not layer.use_sliding_window_attention}
        writer.add_rope_freq_base(float(max(bases, default=1_000_000.0)))
    if arch == "gemma2":
        writer.add_attn_logit_softcapping(backbone.attention_logit_soft_cap)
        writer.add_final_logit_softcapping(backbone.final_logit_soft_cap)
    tokenizer = causal_lm.preprocessor.tokenizer
    write_vocabulary(writer, tokenizer.proto, specials=special_ids(tokenizer),
                     chat_template=chat_template)

    for tensor_name, variable, layout in weight_rules(backbone):
        array = np.ascontiguousarray(layout.to_gguf(to_numpy(variable.value).astype(np.float32)))
        if quantization in _QUANTIZABLE and array.ndim == 2 and array.shape[-1] % 32 == 0:
            qtype = getattr(gguf.GGMLQuantizationType, quantization)
            writer.add_tensor(tensor_name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(tensor_name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
