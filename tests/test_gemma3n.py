"""Gemma 3n behind the same session, on a tiny random keras-hub Gemma3nCausalLM (text only)
with two AltUp streams, Laurel, per-layer inputs, KV sharing, sliding and global layers and
activation sparsity on. Values are checked against keras-hub's own CausalLM call, its own
generate(), direct calls of its own layers, NumPy and exact properties; the Hugging Face
route against transformers' eager forward on a tiny random checkpoint it wrote."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest

from gemma_lab import interventions as iv
from gemma_lab.backend import import_keras, to_numpy
from gemma_lab.errors import InputError, NotAvailableError
from gemma_lab.reference import keras_hub_greedy_ids
from gemma_lab.testing import keras_hub_inputs, numpy_log_softmax, tiny_session

ops = import_keras().ops
TEXT = "hello world, this is a tiny corpus"


@pytest.fixture(scope="module")
def lab():
    return tiny_session("gemma3n")


def test_the_model_has_every_gemma3n_feature_on(lab):
    adapter = lab.runtime.adapter
    assert adapter.family == "Gemma 3n" and lab.info().family == "Gemma 3n"
    assert [adapter.kv_source(i) for i in range(4)] == [None, None, 0, 1]
    assert [adapter.sliding_window(i) for i in range(4)] == [4, None, 4, None]
    model = adapter.language_model
    assert model.altup_num_inputs == 2 and model.laurel_rank == 4
    assert model.activation_sparsity_pattern[0] > 0
    shape = adapter.shape
    assert shape.per_layer_dim == 8 and shape.mlp_dim == 64 and shape.experts == 0
    info = lab.info()
    assert "ablate neurons" in info.features and "logit attribution" in info.not_supported
    assert info.num_layers == 4 and info.vocabulary_size == shape.vocabulary_size


def test_scores_equal_keras_hub_own_causal_lm_call(lab):
    ids = lab.tokenizer.encode(TEXT, add_bos=True)
    logits = to_numpy(lab.causal_lm(keras_hub_inputs(lab.backbone, [ids])))[0]
    expected = numpy_log_softmax(logits.astype("float64"))[np.arange(len(ids) - 1), ids[1:]]
    scored = lab.score(TEXT)
    assert list(scored.token_ids) == ids[1:]
    np.testing.assert_allclose(scored.logprobs, expected, atol=1e-4)


def test_greedy_tokens_equal_keras_hub_generate(lab):
    g = lab.generate("the quick brown", max_new_tokens=8)
    expected = keras_hub_greedy_ids(lab.causal_lm, list(g.prompt_token_ids), 8)
    assert list(g.token_ids) == expected[:len(g.token_ids)]


def test_every_point_has_its_documented_shape(lab):
    cache = lab.run_with_cache(TEXT)
    shape = lab.runtime.adapter.shape
    n = len(cache.tokens)
    assert set(cache.values) == set(lab.hook_points())
    for name in cache.values:
        want = shape.per_position(name)
        if want is not None:
            assert cache[name].shape == (n, *want), name
    assert cache["blocks.0.attn.pattern"].shape == (4, n, n)
    # KV-shared layers project no keys / values of their own.
    assert "blocks.2.attn.k" not in cache.values and "blocks.3.attn.v" not in cache.values
    for layer in range(3):
        np.testing.assert_array_equal(cache[f"blocks.{layer}.resid_post"],
                                      cache[f"blocks.{layer + 1}.resid_pre"])
    # The active stream entering block 0 is the √hidden-scaled embedding.
    np.testing.assert_allclose(cache["blocks.0.resid_pre"], cache["embed"] * np.sqrt(32),
                               rtol=1e-6)
    # Layer 0's Gaussian top-k keeps few neurons; the others are dense.
    assert (cache["blocks.0.mlp.post"] == 0).mean() > 0.5
    assert (cache["blocks.1.mlp.post"] == 0).mean() < 0.1


def test_resid_post_and_ple_in_equal_keras_hub_own_layers(lab):
    """Blocks 0 and 1 called directly on the stream stack keras-hub's text model builds."""
    ids = np.asarray([lab.tokenizer.encode(TEXT, add_bos=True)], "int32")
    cache = lab.run_with_cache(TEXT)
    model = lab.runtime.adapter.language_model
    embeds, per_layer = lab.backbone.embedding_processor({"token_ids": ids})
    # Gemma3nTextModel.call: stream 0 is the embedding, stream i its AltUp projection
    # rescaled to the embedding's RMS.
    target = ops.sqrt(ops.mean(embeds**2, axis=-1, keepdims=True))
    projected = model.altup_projections[0](embeds)
    magnitude = ops.sqrt(ops.maximum(ops.mean(projected**2, axis=-1, keepdims=True), 1e-5))
    streams = ops.stack([embeds, projected * target / magnitude], axis=0)
    mask = np.ones_like(ids, dtype=bool)
    for layer in range(2):
        np.testing.assert_allclose(cache[f"blocks.{layer}.ple.in"],
                                   to_numpy(per_layer)[0, :, layer], atol=1e-5)
        streams, _ = model.transformer_layers[layer]((streams, per_layer[:, :, layer], mask))
        np.testing.assert_allclose(cache[f"blocks.{layer}.resid_post"],
                                   to_numpy(streams)[0, 0], atol=1e-4)


def test_ablated_neurons_and_heads_equal_numpy_on_keras_hub_layers(lab):
    block = lab.runtime.adapter.blocks[1]
    names = ["blocks.1.mlp.post", "blocks.1.mlp_out", "blocks.1.attn.z", "blocks.1.attn_out"]
    clean = lab.run_with_cache(TEXT, names=["blocks.1.mlp.post"])["blocks.1.mlp.post"]
    busiest = [int(i) for i in np.argsort(-np.abs(clean).sum(0))[:5]]
    with lab.hooks(iv.ablate_neurons(1, busiest) | iv.ablate_heads([(1, 2)])):
        cache = lab.run_with_cache(TEXT, names=names)
    post, z = cache["blocks.1.mlp.post"], cache["blocks.1.attn.z"]
    assert np.abs(post[:, busiest]).max() == 0 and np.abs(post).max() > 0
    assert np.abs(z[:, 2]).max() == 0 and np.abs(z[:, 1]).max() > 0
    mlp_out = to_numpy(block.post_feedforward_layernorm(block.mlp.down_proj(post[None])))[0]
    np.testing.assert_allclose(cache["blocks.1.mlp_out"], mlp_out, atol=1e-5)
    flat = z.reshape(z.shape[0], -1)[None]
    attn_out = to_numpy(block.post_attention_layernorm(block.attention.o_proj(flat)))[0]
    np.testing.assert_allclose(cache["blocks.1.attn_out"], attn_out, atol=1e-5)
    # The down projection is a plain matmul: NumPy on its kernel agrees.
    kernel = to_numpy(block.mlp.down_proj.kernel)
    np.testing.assert_allclose(to_numpy(block.mlp.down_proj(post[None]))[0], post @ kernel,
                               atol=1e-5)


def test_ablation_holds_in_every_cached_decode_step(lab):
    from gemma_lab.inspect.activations import record_token_ids

    hooks = iv.ablate_neurons(0, [0, 1, 2]) | iv.ablate_heads([(1, 0), (3, 2)])
    plain = lab.generate("the quick brown", max_new_tokens=8)
    with lab.hooks(hooks):
        g = lab.generate("the quick brown", max_new_tokens=8)
        ids = list(g.prompt_token_ids) + list(g.token_ids)
        logits = record_token_ids(lab.runtime, ids, ["logits"])["logits"][:len(ids)]
    logprobs = numpy_log_softmax(logits.astype("float64"))
    rows = np.arange(len(g.prompt_token_ids) - 1, len(ids) - 1)
    np.testing.assert_array_equal(logprobs[rows].argmax(-1), g.token_ids)
    np.testing.assert_allclose(logprobs[rows, g.token_ids], g.logprobs, atol=1e-4)
    assert np.abs(np.asarray(plain.logprobs) - np.asarray(g.logprobs)).max() > 1e-4


def test_a_rewritten_pattern_changes_z_as_keras_hub_values_say(lab):
    """Uniform attention over the causal prefix in layer 1 (global): z is then the running
    mean of the (normed) values, one KV head per two query heads."""
    def uniform(value, ctx):
        rows, keys = ops.shape(value)[2], ops.shape(value)[3]
        causal = ops.cast(ops.arange(keys)[None, :] <= ops.arange(rows)[:, None], value.dtype)
        return ops.broadcast_to(causal / ops.sum(causal, -1, keepdims=True), ops.shape(value))

    with lab.hooks({"blocks.1.attn.pattern": uniform}):
        cache = lab.run_with_cache(TEXT, names=["blocks.1.attn.v", "blocks.1.attn.z"])
    v, z = cache["blocks.1.attn.v"], cache["blocks.1.attn.z"]  # [pos, kv_head | head, dim]
    values = to_numpy(lab.runtime.adapter.blocks[1].attention.v_norm(v))  # keras-hub's V norm
    means = np.cumsum(values, axis=0) / np.arange(1, len(v) + 1)[:, None, None]
    np.testing.assert_allclose(z, np.repeat(means, 2, axis=1), atol=1e-5)


def test_unsupported_features_say_what_to_do(lab):
    with pytest.raises(NotAvailableError, match=r"lab\.attribute"):
        lab.logit_attribution(TEXT)
    with pytest.raises(InputError, match="not a hook point"):
        with lab.hooks({"blocks.2.attn.k": lambda v, c: v}):
            pass
    with pytest.raises(InputError, match=r"experts"):
        with lab.hooks(iv.ablate_experts(0, [0])):
            pass
    assert "logit attribution" in lab.info().not_supported


def test_lora_fine_tuning_on_the_query_and_value_projections(lab):
    """keras-hub's default LoRA targets name no Gemma 3n layer: gemma_lab names q_proj and
    v_proj. Training lowers the loss; unloading gives the base model's numbers back."""
    text = "the quick brown fox jumps over the lazy dog."
    before = lab.score(text).total_logprob
    result = lab.finetune([text] * 8, rank=2, epochs=3, learning_rate=1e-2, progress=False)
    assert result.train_loss[-1] < result.train_loss[0]
    assert lab.score(text).total_logprob > before
    names = {layer.name for layer in lab.backbone._flatten_layers() if
             getattr(layer, "lora_enabled", False)}
    assert names == {"q_proj", "v_proj"}
    lab.adapters.unload()
    assert abs(lab.score(text).total_logprob - before) < 1e-4


# --- the Hugging Face route --------------------------------------------------------------------
@contextlib.contextmanager
def _text_only_gemma3n_converter():
    """Works around a keras-hub 0.32 limitation, for the tiny text-only checkpoint only:
    `convert_gemma3n` always builds the MobileNetV5 vision tower and the audio encoder and
    ports their weights, which a text-only checkpoint does not have. Gemma3nBackbone itself
    takes vision_encoder_config=None / audio_encoder_config=None, so within this block the
    converter builds and ports the language model only. Undone on exit."""
    from keras_hub.src.utils.transformers import convert_gemma3n as converter

    saved = {name: getattr(converter, name) for name in (
        "convert_backbone_config", "convert_weights", "load_image_converter_config",
        "load_audio_converter_config")}

    def convert_backbone_config(transformers_config):
        config = saved["convert_backbone_config"](transformers_config)
        return {**config, "vision_encoder_config": None, "audio_encoder_config": None}

    def convert_weights(backbone, loader, transformers_config):
        converter._port_language_model(loader, backbone)
        return backbone

    converter.convert_backbone_config = convert_backbone_config
    converter.convert_weights = convert_weights
    converter.load_image_converter_config = lambda preset, config: None
    converter.load_audio_converter_config = lambda preset, config: None
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(converter, name, value)


def _tiny_hf_gemma3n(directory):
    """A tiny random Gemma 3n text model written by transformers, laid out as keras-hub's
    converter reads a (multimodal) Gemma 3n checkpoint: config.json a full Gemma3nConfig,
    weights under `model.language_model.`, tokenizer.model beside tokenizer.json."""
    import torch
    import transformers
    from safetensors.torch import save_file

    from gemma_lab.testing import (
        GEMMA3N_SPECIALS,
        GEMMA3N_VOCAB,
        _hf_tokenizer,
        _randomise_torch,
        tiny_proto,
    )

    vocabulary = _hf_tokenizer(directory, GEMMA3N_SPECIALS, GEMMA3N_VOCAB)
    (directory / "tokenizer.model").write_bytes(tiny_proto(GEMMA3N_VOCAB, GEMMA3N_SPECIALS))
    text = transformers.Gemma3nTextConfig(
        vocab_size=vocabulary, vocab_size_per_layer_input=vocabulary, hidden_size=32,
        intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, hidden_activation="gelu_pytorch_tanh",
        max_position_embeddings=512, rms_norm_eps=1e-6, sliding_window=4,
        layer_types=["sliding_attention", "full_attention"] * 2, final_logit_softcapping=30.0,
        hidden_size_per_layer_input=8, altup_num_inputs=2, altup_active_idx=0,
        altup_coef_clip=120.0, altup_correct_scale=True, laurel_rank=4, num_kv_shared_layers=2,
        activation_sparsity_pattern=[0.95, 0.0, 0.0, 0.0], tie_word_embeddings=True,
        pad_token_id=0, eos_token_id=1, bos_token_id=2)
    torch.manual_seed(0)
    model = transformers.Gemma3nForCausalLM(text).eval()
    _randomise_torch(model, 0)
    audio = transformers.Gemma3nAudioConfig(hidden_size=32, conf_num_hidden_layers=1,
                                            conf_num_attention_heads=2,
                                            sscp_conv_channel_size=[8, 8])
    config = transformers.Gemma3nConfig(text_config=text.to_dict(),
                                        vision_config=transformers.Gemma3nVisionConfig().to_dict(),
                                        audio_config=audio.to_dict()).to_dict()
    # keras-hub reads text_config["rope_theta"]; transformers 5 keeps it per layer type only.
    config["text_config"]["rope_theta"] = (
        config["text_config"]["rope_parameters"]["full_attention"]["rope_theta"])
    config["architectures"] = ["Gemma3nForConditionalGeneration"]
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    weights = {key.replace("model.", "model.language_model.", 1): value.contiguous().clone()
               for key, value in model.state_dict().items() if key != "lm_head.weight"}
    # keras-hub ports k/v projections for every layer, as released checkpoints carry them;
    # transformers builds none for KV-shared layers. Random stand-ins (unused by both).
    generator = torch.Generator().manual_seed(1)
    for layer, mode in enumerate(text.kv_sharing_modes):
        if mode == "reuse":
            prefix = f"model.language_model.layers.{layer}.self_attn"
            weights[f"{prefix}.k_proj.weight"] = torch.randn(16, 32, generator=generator)
            weights[f"{prefix}.v_proj.weight"] = torch.randn(16, 32, generator=generator)
            weights[f"{prefix}.k_norm.weight"] = torch.rand(16, generator=generator) + 0.5
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return model


def test_hf_checkpoint_through_keras_hub_equals_transformers(tmp_path):
    import keras_hub
    import torch

    from gemma_lab.models.loading import LoadedModel
    from gemma_lab.session import GemmaLab

    reference = _tiny_hf_gemma3n(tmp_path)
    with _text_only_gemma3n_converter():
        causal_lm = keras_hub.models.Gemma3nCausalLM.from_preset(str(tmp_path),
                                                                 dtype="float32")
    hf_lab = GemmaLab(LoadedModel(causal_lm, "tiny-hf-gemma3n", str(tmp_path), None,
                                  "float32"))
    ids = hf_lab.tokenizer.encode("the quick brown fox jumps over the lazy dog.",
                                  add_bos=True)
    from gemma_lab.inspect.activations import record_token_ids

    ours = record_token_ids(hf_lab.runtime, ids, ["logits"])["logits"][:len(ids)]
    with torch.no_grad():
        theirs = reference(input_ids=torch.tensor([ids]), use_cache=False).logits[0].numpy()
    assert np.abs(ours - theirs).max() <= 1e-4
    assert theirs.std() > 1.0  # non-degenerate logits
    g = hf_lab.generate("the quick brown", max_new_tokens=8)
    prompt = torch.tensor([list(g.prompt_token_ids)])
    with torch.no_grad():
        greedy = reference.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                                    do_sample=False, max_new_tokens=8, min_new_tokens=8,
                                    pad_token_id=0, eos_token_id=None)
    assert list(g.token_ids) == greedy[0, prompt.shape[1]:].tolist()[:len(g.token_ids)]
