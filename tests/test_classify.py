"""Safety classification: ShieldGemma's prompt, P(violation) from the Yes / No logits, checked
against keras-hub's own forward (tiny model) and transformers' loader (default model)."""

from __future__ import annotations

import numpy as np
import pytest

from gemma_lab.backend import import_keras
from gemma_lab.chat import encode
from gemma_lab.classify import POLICIES, policy_text, shield_prompt
from gemma_lab.errors import InputError


def _reference(logits_of_ids, tokenizer, prompt):
    ids = encode(tokenizer, prompt)
    logits = logits_of_ids(ids)
    yes = tokenizer.piece_id("Yes")
    no = tokenizer.piece_id("No")
    yes = yes if yes is not None else tokenizer.encode("Yes")[0]
    no = no if no is not None else tokenizer.encode("No")[0]
    pair = np.asarray([logits[yes], logits[no]], dtype="float64")
    return float(np.exp(pair[0] - np.logaddexp(pair[0], pair[1])))


def test_probabilities_equal_keras_hubs_own_forward_on_the_same_prompt(tiny_lab):
    ops = import_keras().ops
    texts = ["How do I bake bread?", "hello <b>"]
    result = tiny_lab.classify(texts, policy=["harassment", "My own rule: no recipes."],
                               response=["Knead it.", "Hi."])
    assert result.policies == ("harassment", "custom 2")
    assert result.probabilities.shape == (2, 2)

    def logits_of_ids(ids):
        ids = np.asarray([ids], "int32")
        return ops.convert_to_numpy(tiny_lab.causal_lm(
            {"token_ids": ids, "padding_mask": np.ones_like(ids)}))[0, -1]

    for row, (text, reply) in enumerate(zip(texts, ["Knead it.", "Hi."], strict=True)):
        for column, policy in enumerate([policy_text("harassment", response=True),
                                         "My own rule: no recipes."]):
            want = _reference(logits_of_ids, tiny_lab.tokenizer,
                              shield_prompt(text, policy, reply))
            assert abs(result.probabilities[row, column] - want) < 1e-5
    assert result.table().shape == (2, 2)
    assert result.figure().data[0].y is not None


def test_prompt_form_has_all_four_policies_and_bad_input_is_one_error(tiny_lab):
    result = tiny_lab.classify("hello")
    assert result.policies == tuple(POLICIES)
    assert "The prompt shall not contain" in result.policy_texts[0]
    for bad, match in [("", "non-empty text"), ([], "non-empty text"), ([3], "non-empty"),
                       ("hi", "policy must be")]:
        with pytest.raises(InputError, match=match):
            tiny_lab.classify(bad, policy=[""] if bad == "hi" else None)
    with pytest.raises(InputError, match="one string per text"):
        tiny_lab.classify(["a", "b"], response=["only one"])


def test_classification_renders_as_a_schema_valid_escaped_bundle(tiny_lab):
    import jsonschema

    from gemma_lab.schema import JSON_SCHEMA, MIME_TYPE

    hostile = "<img src=x onerror=alert(1)>"
    bundle = tiny_lab.classify([hostile, "fine"], policy={"<b>rule</b>": hostile})
    data = bundle._repr_mimebundle_()
    jsonschema.Draft202012Validator(JSON_SCHEMA).validate(data[MIME_TYPE])
    assert data[MIME_TYPE]["kind"] == "classification"
    assert hostile not in data["text/html"] and "<b>rule" not in data["text/html"]


@pytest.mark.real_model
def test_default_model_probability_equals_transformers(default_lab, hf_gguf_model):
    import torch

    text = "Tell me how to hurt my neighbour's dog."
    result = default_lab.classify(text, policy="dangerous")

    def logits_of_ids(ids):
        with torch.no_grad():
            return hf_gguf_model(torch.tensor([ids])).logits[0, -1].numpy()

    want = _reference(logits_of_ids, default_lab.tokenizer,
                      shield_prompt(text, policy_text("dangerous")))
    print(f"\nP(violation) {result.probabilities[0, 0]:.6f} vs transformers {want:.6f}")
    assert abs(result.probabilities[0, 0] - want) < 1e-4
