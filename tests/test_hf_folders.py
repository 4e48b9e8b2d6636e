"""Local Hugging Face checkpoints: tiny random Gemma 3 and Gemma 4 models written by
transformers' own `save_pretrained`, loaded by gemma_lab through keras-hub's converters, give
transformers' own logits (eager attention, float32) and its greedy tokens; the user's folder
is left as it was; other architectures get one clear ModelLoadError."""

from __future__ import annotations

import json

import numpy as np
import pytest

import gemma_lab
from gemma_lab.chat import Turn
from gemma_lab.errors import ModelLoadError
from gemma_lab.inspect.activations import record_token_ids
from gemma_lab.testing import numpy_log_softmax, tiny_hf_folder

TEXT = "the quick brown fox jumps over the lazy dog"
CASES = {
    # per-layer embeddings, 4-expert MoE, KV sharing, 32-wide global heads
    "gemma4": ("gemma4", {}),
    # values from the key projection in global layers, fewer global KV heads, wide MLPs
    "gemma4-k-eq-v": ("gemma4", dict(attention_k_eq_v=True, num_attention_heads=4,
                                     num_key_value_heads=2, num_global_key_value_heads=1,
                                     use_double_wide_mlp=True, enable_moe_block=False)),
    "gemma3": ("gemma3", {}),
}


# Each family's turn markers, the system prompt in a turn of its own (unlike Gemma 3's
# built-in template), so the test can tell the folder's template from the built-in one.
TEMPLATES = {family: (
    "{{ bos_token }}{% for m in messages %}" + start
    + "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] | trim }}"
    + end + "\n{% endfor %}{% if add_generation_prompt %}" + start + "model\n{% endif %}")
    for family, (start, end) in {"gemma3": ("<start_of_turn>", "<end_of_turn>"),
                                 "gemma4": ("<|turn>", "<turn|>")}.items()}


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    import torch
    import transformers

    architecture, overrides = CASES[request.param]
    folder = tiny_hf_folder(architecture, tmp_path_factory.mktemp(request.param), seed=1,
                            **overrides)
    (folder / "chat_template.jinja").write_text(TEMPLATES[architecture])
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    lab = gemma_lab.load(str(folder), progress=False)
    peer = transformers.AutoModelForCausalLM.from_pretrained(
        folder, attn_implementation="eager", dtype=torch.float32).eval()
    return folder, before, lab, peer


def test_logits_equal_transformers_forward(case):
    import torch

    _, _, lab, peer = case
    ids = lab.tokenizer.encode(TEXT, add_bos=True)
    with torch.no_grad():
        expected = peer(torch.tensor([ids])).logits[0].numpy()
    logits = record_token_ids(lab.runtime, ids, ["logits"])["logits"][:len(ids)]
    assert np.abs(expected).max() > 1  # a model whose logits differ, not a flat one
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    score = lab.score(TEXT)
    logprobs = numpy_log_softmax(expected)
    np.testing.assert_allclose(score.logprobs, logprobs[np.arange(len(ids) - 1), ids[1:]],
                               atol=1e-4)


def test_greedy_tokens_equal_transformers_generate(case):
    import torch

    _, _, lab, peer = case
    g = lab.generate("the quick brown", max_new_tokens=10)
    with torch.no_grad():
        out = peer.generate(torch.tensor([list(g.prompt_token_ids)]), max_new_tokens=10,
                            do_sample=False, eos_token_id=None)
    assert list(g.token_ids) == out[0, len(g.prompt_token_ids):].tolist()[:len(g.token_ids)]
    assert len(g.token_ids) == 10 or g.finish_reason == "eos"


def test_the_users_folder_is_left_as_it_was(case):
    folder, before, lab, _ = case
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert lab.info().source == str(folder)


def test_the_tokenizer_equals_transformers(case):
    import transformers

    folder, _, lab, _ = case
    peer = transformers.AutoTokenizer.from_pretrained(folder)
    assert lab.tokenizer.encode(TEXT) == peer(TEXT, add_special_tokens=False)["input_ids"]
    assert lab.tokenizer.bos_id == peer.bos_token_id


def test_a_gemma3_layer_pattern_keras_hub_cannot_build_is_refused(tmp_path):
    config = {"model_type": "gemma3_text", "layer_types": ["sliding_attention", "full_attention"]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="every 6th layer"):
        gemma_lab.load(str(tmp_path), progress=False)


@pytest.mark.parametrize("model_type", ["siglip_vision_model", "gemma3n", "llama"])
def test_unsupported_architectures_name_what_is_supported(tmp_path, model_type):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    with pytest.raises(ModelLoadError, match="gemma4") as err:
        gemma_lab.load(str(tmp_path), progress=False)
    assert model_type in str(err.value)


def test_the_folders_chat_template_gives_transformers_ids(case):
    import transformers

    folder, _, lab, _ = case
    peer = transformers.AutoTokenizer.from_pretrained(folder)
    assert lab.chat_template.origin == "chat_template.jinja"
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
             {"role": "model", "content": "hello there"}, {"role": "user", "content": "again"}]
    hf_turns = [{**t, "role": "assistant" if t["role"] == "model" else t["role"]}
                for t in turns]
    want = peer.apply_chat_template(hf_turns, add_generation_prompt=True, tokenize=True)
    want = list(want["input_ids"] if hasattr(want, "keys") else want)
    lab.reset_chat()
    lab.conversation.system, lab.conversation.turns = "Be brief.", [
        Turn(t["role"], t["content"]) for t in turns[1:3]]
    assert lab.conversation.prompt("again")[1] == want
    assert want.count(lab.tokenizer.bos_id) == 1
    lab.reset_chat()


def test_a_sharded_load_of_an_unverified_family_is_refused(case):
    """Gemma 4's sharding is not verified: distribution= is refused, not guessed (Gemma 3's
    is, tests/test_distribution.py; here it loads on this one-device mesh)."""
    from gemma_lab.errors import NotAvailableError

    folder, _, lab, _ = case
    if lab.info().family == "Gemma 4":
        with pytest.raises(NotAvailableError, match="without distribution="):
            gemma_lab.load(str(folder), progress=False, distribution="data_parallel")
    else:
        sharded = gemma_lab.load(str(folder), progress=False, distribution="data_parallel")
        assert sharded.info().mesh is not None
