"""Gemma 4 GGUF files: tiny random keras-hub Gemma 4 → GGUF, checked against transformers'
own GGUF reader (an independent implementation), and GGUF → gemma_lab.load → the same model.

transformers' "gemma4" GGUF reader maps only a few metadata keys into the config (sizes, head
counts, eps, sliding window, vocabulary; `attention.key_length` as the global head size) and
leaves the rest at Gemma4TextConfig's defaults (a 256-wide sliding head, no MoE, no KV sharing,
no per-layer inputs, partial RoPE 0.25...). Those are passed to `from_pretrained` from the
keras-hub model's own config, so the reference check covers every tensor transformers reads.
gguf-py's tensor map has no name for the router's `scale` and `router.per_expert_scale`, so
transformers drops those tensors: for the reference check they are set to transformers'
initial value (1) in the model; the round trip checks them at random values.
"""

import numpy as np
import pytest

from gemma_lab.backend import import_keras, to_numpy
from gemma_lab.errors import GGUFError, ModelLoadError
from gemma_lab.testing import keras_hub_inputs, tiny_gemma4

IDS = [2, *range(10, 40)]


def _keras_logits(causal_lm, ids=IDS):
    ids = np.asarray([ids], dtype="int32")
    return to_numpy(causal_lm(keras_hub_inputs(causal_lm.backbone, ids)))[0]


def _transformers_overrides(causal_lm):
    """What transformers' GGUF reader does not take from the file, from keras-hub's config."""
    b = causal_lm.backbone
    overrides = dict(
        head_dim=b.head_dim, layer_types=list(b.layer_types),
        global_head_dim=b.global_head_dim or b.head_dim,
        num_global_key_value_heads=b.num_global_key_value_heads,
        attention_k_eq_v=b.num_global_key_value_heads is not None,
        num_key_value_heads=b.num_key_value_heads,
        num_kv_shared_layers=b.num_kv_shared_layers,
        hidden_size_per_layer_input=b.hidden_size_per_layer_input,
        vocab_size_per_layer_input=b.vocab_size_per_layer_input or b.vocabulary_size,
        final_logit_softcapping=causal_lm.final_logit_cap or b.final_logit_soft_cap,
        enable_moe_block=b.enable_moe_block, use_double_wide_mlp=b.use_double_wide_mlp,
        rope_parameters={
            "full_attention": {"rope_type": "proportional",
                               "partial_rotary_factor": b.global_rope_partial_rotary_factor,
                               "rope_theta": b.global_rope_wavelength or 1e6},
            "sliding_attention": {"rope_type": "default",
                                  "rope_theta": b.local_rope_wavelength or 1e4}},
    )
    if b.enable_moe_block:
        overrides.update(num_experts=b.num_experts, top_k_experts=b.num_experts_per_token,
                         moe_intermediate_size=b.expert_intermediate_dim)
    return overrides


def _transformers_logits(path, overrides, ids=IDS):
    import_keras()  # before transformers, which may import Keras
    import torch
    import transformers
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    # The config transformers' reader takes from the file's metadata, completed with what it
    # cannot read (passing these as from_pretrained kwargs trips over Gemma4TextConfig's
    # per-layer attributes); the weights come through its GGUF tensor reader.
    read = load_gguf_checkpoint(str(path), return_tensors=False)["config"]
    assert read["model_type"] == "gemma4_text"
    settings = {k: v for k, v in read.items() if k not in ("model_type", "_model_name_or_path")}
    config = transformers.Gemma4TextConfig(**{**settings, **overrides})
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, config=config, dtype=torch.float32,
        attn_implementation="eager").eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def _unit_router_scales(causal_lm):
    # The two tensors transformers' GGUF reader cannot place (see the module docstring).
    for block in causal_lm.backbone.transformer_layers:
        if block.enable_moe_block:
            for weight in (block.moe_router.per_dim_scale, block.moe_expert_bank.per_expert_scale):
                weight.assign(np.ones(tuple(weight.shape), dtype="float32"))


@pytest.mark.parametrize("features", [
    dict(),  # per-layer inputs, MoE, KV sharing, K=V global layers with wider heads
    dict(moe=False, per_layer=False, kv_shared=0, num_global_key_value_heads=None,
         global_rope_partial_rotary_factor=0.25),
])
def test_export_matches_transformers_gguf_reader(features, tmp_path):
    from gemma_lab.models.gguf_export import export_gguf

    original = tiny_gemma4(seed=3, **features)
    _unit_router_scales(original)
    path = export_gguf(original, tmp_path / "gemma4.gguf")
    want = _keras_logits(original)
    got = _transformers_logits(path, _transformers_overrides(original))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_gguf_round_trip_through_load_keeps_logits_and_greedy_tokens(tmp_path):
    import gemma_lab
    from gemma_lab.models.gguf_export import export_gguf

    original = tiny_gemma4(seed=5)
    path = export_gguf(original, tmp_path / "gemma4.gguf")
    session = gemma_lab.load(str(path), progress=False)
    restored = session.runtime.causal_lm if hasattr(session, "runtime") else session.causal_lm
    assert type(restored).__name__ == "Gemma4CausalLM"
    np.testing.assert_allclose(_keras_logits(restored), _keras_logits(original), atol=1e-5,
                               rtol=0)
    assert _greedy(restored, [2, 10, 11, 12]) == _greedy(original, [2, 10, 11, 12])


def _greedy(causal_lm, ids, steps=8):
    ids = list(ids)
    for _ in range(steps):
        ids.append(int(_keras_logits(causal_lm, ids)[-1].argmax()))
    return ids


# Median |Δ logit| / max |logit|, measured: F16 6.0e-5, Q8_0 1.6e-3; bounds ~1.7-1.9x those.
@pytest.mark.parametrize("quantization,tolerance", [("F16", 1e-4), ("Q8_0", 3e-3)])
def test_quantized_export_stays_close(quantization, tolerance, tmp_path):
    from gemma_lab.models.gguf_convert import convert_gguf
    from gemma_lab.models.gguf_export import export_gguf
    from gemma_lab.models.gguf_file import read_gguf

    original = tiny_gemma4(seed=7)
    parsed = read_gguf(export_gguf(original, tmp_path / "m.gguf", quantization=quantization))
    assert quantization in {t.tensor_type.name for t in parsed._tensors.values()}
    want = _keras_logits(original)
    got = _keras_logits(convert_gguf(parsed, progress=False))
    # Q8_0 noise can flip a top-2 expert choice at a position (a large local jump), so the
    # typical error is bounded; a layout bug would be ~100% everywhere.
    assert np.median(np.abs(want - got)) < tolerance * np.abs(want).max()
    assert np.mean(want.argmax(-1) == got.argmax(-1)) >= 0.9


def test_tokenizer_survives_the_round_trip(tmp_path):
    from gemma_lab.models.gguf_convert import convert_gguf
    from gemma_lab.models.gguf_export import export_gguf
    from gemma_lab.models.gguf_file import read_gguf

    original = tiny_gemma4(num_layers=2, kv_shared=0)
    restored = convert_gguf(read_gguf(export_gguf(original, tmp_path / "m.gguf")),
                            progress=False)
    text = "hello  world\n\nthe quick brown fox"
    assert (to_numpy(restored.preprocessor.tokenizer(text)).tolist()
            == to_numpy(original.preprocessor.tokenizer(text)).tolist())


@pytest.mark.parametrize("architecture", ["llama", "gemma3n"])
def test_unsupported_architectures_name_what_is_supported(architecture, tmp_path):
    import gguf

    import gemma_lab

    path = tmp_path / f"{architecture}.gguf"
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelLoadError, match="gemma4") as info:
        gemma_lab.load(str(path), progress=False)
    assert isinstance(info.value, GGUFError) and architecture in str(info.value)


def test_a_hugging_face_gemma4_exports_with_its_own_special_tokens(tmp_path):
    """keras-hub rebuilds a Gemma 4 tokenizer.json as a SentencePiece proto without bos / eos
    ids (SentencePiece's defaults would name <eos> as bos); the GGUF must still carry the
    model's own <bos> / <eos>, and the loaded file encodes text the same."""
    import gemma_lab
    from gemma_lab.models.gguf_export import export_gguf
    from gemma_lab.testing import tiny_hf_folder

    lab = gemma_lab.load(str(tiny_hf_folder("gemma4", tmp_path / "hf")), progress=False)
    path = export_gguf(lab.causal_lm, tmp_path / "hf.gguf")
    back = gemma_lab.load(str(path), progress=False)
    for tokenizer in (lab.tokenizer, back.tokenizer):
        assert tokenizer.piece(tokenizer.bos_id) == "<bos>"
        assert tokenizer.piece(tokenizer.eos_id) == "<eos>"
    text = "the quick brown fox"
    assert back.tokenizer.encode(text, add_bos=True) == lab.tokenizer.encode(text, add_bos=True)
