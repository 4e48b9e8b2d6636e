"""Tracing: attention probabilities, residual stream and logit lens from one forward pass,
checked against the keras-hub model's own outputs (tiny models, every architecture) and
against transformers' eager attention (real default model)."""

from __future__ import annotations

import numpy as np
import pytest

from gemma_lab.errors import InputError

TEXT = "hello world, this is a tiny corpus for a tiny gemma."


def _session(architecture: str, num_layers: int):
    from gemma_lab.models.loading import LoadedModel
    from gemma_lab.session import GemmaLab
    from gemma_lab.testing import tiny_causal_lm

    causal_lm = tiny_causal_lm(architecture, num_layers=num_layers)
    return GemmaLab(LoadedModel(causal_lm, f"tiny-{architecture}-{num_layers}", "test", None,
                                "float32"))


@pytest.fixture(scope="module", params=["gemma", "gemma2", "gemma3"])
def lab(request):
    # Seven layers: Gemma 3's sixth (index 5) is its first global-attention layer.
    return _session(request.param, num_layers=7)


@pytest.fixture(scope="module")
def traced(lab):
    return lab.trace(TEXT)


def _model_logits(lab, token_ids):
    from gemma_lab.backend import to_numpy

    ids = np.asarray([token_ids], dtype="int32")
    return to_numpy(lab.causal_lm({"token_ids": ids, "padding_mask": np.ones_like(ids)}))[0]


def _softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def test_final_logits_equal_the_models(lab, traced):
    assert traced.tokens[0] == "<bos>" and len(traced.tokens) > 8
    assert traced.logits.shape == (len(traced.tokens), lab.backbone.vocabulary_size)
    diff = np.abs(traced.logits - _model_logits(lab, traced.token_ids)).max()
    print(f"\nmax |trace logits - model logits| = {diff:.2e}")
    assert diff <= 1e-4


def test_each_block_output_equals_calling_the_block(lab, traced):
    from gemma_lab.backend import to_numpy

    mask = np.ones((1, len(traced.tokens)), dtype="int32")
    worst = 0.0
    for index, block in enumerate(lab.backbone.transformer_layers):
        expected = to_numpy(block(traced.residual[index][None], padding_mask=mask))[0]
        worst = max(worst, float(np.abs(traced.residual[index + 1] - expected).max()))
    print(f"\nmax |traced block - block()| = {worst:.2e}")
    assert worst <= 1e-4
    assert traced.residual.shape == (lab.backbone.num_layers + 1, len(traced.tokens),
                                     lab.backbone.hidden_dim)


def test_attention_is_a_distribution_inside_the_causal_window_only(lab, traced):
    n = len(traced.tokens)
    query, key = np.indices((n, n))
    assert traced.attention.shape == (7, lab.backbone.num_query_heads, n, n)
    kinds = set()
    for index, window in enumerate(traced.windows):
        allowed = key <= query
        if window is not None:
            allowed &= query - key < window
        probs = traced.attention[index]
        assert np.all(probs[:, ~allowed] == 0.0), f"layer {traced.layers[index]} leaks"
        assert np.all(probs[:, allowed] > 0.0)
        np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
        kinds.add(window)
    arch = type(lab.backbone).__name__
    if arch == "Gemma3Backbone":
        assert traced.windows == (4, 4, 4, 4, 4, None, 4)
    elif lab.backbone.use_sliding_window_attention:  # Gemma 2 alternates local, global
        assert traced.windows[:2] == (4, None)
    else:
        assert kinds == {None}


def test_layer_and_head_filters_select_the_same_matrices(lab, traced):
    picked = lab.trace(TEXT, layers=[5, 1, -1], heads=[3, 0])
    assert picked.layers == (1, 5, 6) and picked.heads == (0, 3)
    assert picked.attention.shape == (3, 2, len(traced.tokens), len(traced.tokens))
    for i, layer in enumerate(picked.layers):
        for j, head in enumerate(picked.heads):
            np.testing.assert_allclose(picked.attention[i, j], traced.attention[layer, head],
                                       atol=1e-6)
            np.testing.assert_array_equal(picked.attention_matrix(layer, head),
                                          picked.attention[i, j])
    np.testing.assert_allclose(picked.residual, traced.residual, atol=1e-6)
    with pytest.raises(InputError, match="layers: 7 is not an index"):
        lab.trace(TEXT, layers=[7])
    with pytest.raises(InputError, match="heads: 4 is not an index"):
        lab.trace(TEXT, heads=[4])
    with pytest.raises(InputError, match="layers=\\[2\\]"):
        picked.attention_matrix(2, 0)


def test_logit_lens_last_layer_is_the_model_distribution(lab, traced):
    probs = _softmax(_model_logits(lab, traced.token_ids).astype("float64"))
    k = traced.lens_top_ids.shape[-1]
    expected_ids = np.argsort(-probs, axis=-1)[:, :k]
    np.testing.assert_array_equal(traced.lens_top_ids[-1], expected_ids)
    np.testing.assert_allclose(traced.lens_top_probs[-1],
                               np.take_along_axis(probs, expected_ids, axis=-1), atol=1e-5)
    next_ids = np.asarray(traced.token_ids[1:])
    np.testing.assert_allclose(traced.lens_target_probs[-1, :-1],
                               probs[np.arange(len(next_ids)), next_ids], atol=1e-5)
    assert np.isnan(traced.lens_target_probs[:, -1]).all()
    assert traced.lens_top_tokens[-1, 0, 0] == lab.tokenizer.piece(traced.lens_top_ids[-1, 0, 0])
    assert traced.lens_layers == tuple(range(8))


def test_logit_lens_reads_every_depth_through_the_final_norm_and_unembedding(lab, traced):
    from gemma_lab.backend import to_numpy

    backbone = lab.backbone
    depth = 3
    logits = to_numpy(backbone.token_embedding(
        backbone.get_layer("final_normalization")(traced.residual[depth][None]), reverse=True
    ))[0]
    probs = _softmax(logits.astype("float64"))
    np.testing.assert_allclose(traced.lens_top_probs[depth, :, 0], probs.max(axis=-1), atol=1e-5)


def test_payload_extras_fit_the_schema_and_cap_long_texts(lab):
    import jsonschema

    from gemma_lab.schema import JSON_SCHEMA, SCHEMA_VERSION

    long_text = " ".join(["the quick brown fox jumps over the lazy dog."] * 6)
    traced = lab.trace(long_text)
    n = len(traced.tokens)
    extras = traced.payload_extras()
    payload = {"version": SCHEMA_VERSION, "kind": "trace", "text": traced.text,
               "tokens": [{"text": t, "id": i, "role": "prompt"}
                          for t, i in zip(traced.tokens, traced.token_ids, strict=True)],
               "metadata": traced.metadata, **extras}
    jsonschema.validate(payload, JSON_SCHEMA)
    attention = extras["attention"]
    shown = len(attention["data"][0][0])
    assert n > shown >= 64 and attention["truncated"]
    assert "layers=[...]" in attention["note"]
    assert len(attention["data"]) == 7 and len(attention["data"][0]) == 4
    lens = extras["lens"]
    assert len(lens["top_tokens"]) == 8 and len(lens["top_tokens"][0]) == n
    assert len(lens["target_probs"][0]) == n - 1
    one = lab.trace(long_text, layers=[0], heads=[0]).payload_extras()["attention"]
    assert len(one["data"][0][0]) == n and not one["truncated"]


def test_metadata_and_text(lab, traced):
    assert traced.metadata == lab.metadata()
    assert str(traced) == TEXT and "Trace" in repr(traced)
    with pytest.raises(InputError):
        lab.trace("")


def test_figures_escape_token_labels(lab):
    import plotly.graph_objects as go

    traced = lab.trace("<b>hello</b> & world", layers=[0, 5])
    for kind in ("attention", "heads", "token", "lens"):
        figure = traced.figure(kind, layer=5, head=1)
        assert isinstance(figure, go.Figure)
        blob = figure.to_json()
        assert "<b>hello" not in blob.replace("<b>%{", "")  # only our own markup is raw
    heatmap = traced.figure("attention", layer=0, head=2)
    assert heatmap.layout.yaxis.ticktext[1] == "&lt;"
    np.testing.assert_allclose(np.asarray(heatmap.data[0].z), traced.attention[0, 2])
    bars = traced.figure("token", layer=0, head=None, query=3)
    np.testing.assert_allclose(bars.data[0].y, traced.attention[0, :, 3].mean(axis=0))
    assert len(traced.figure("heads", layer=5).data) == 4
    with pytest.raises(InputError):
        traced.figure("attention", layer=3)
    with pytest.raises(InputError):
        traced.figure("nope")


# --- real default model against transformers' eager attention --------------------------------
REAL_TEXT = (
    "The Eiffel Tower, completed in 1889, stands on the Champ de Mars in Paris. "
    "def area(r):\n    return 3.14159 * r * r  # circle"
)


@pytest.mark.real_model
@pytest.mark.slow
def test_real_model_attention_matches_transformers_eager(default_lab, hf_gguf_model):
    import torch

    # Longer than Gemma 3 270M's 512-token sliding window, so local and global layers differ.
    traced = default_lab.trace(" ".join([REAL_TEXT] * 14))
    n = len(traced.tokens)
    assert n > 600 and traced.windows[0] == 512 and traced.windows[5] is None
    assert traced.attention[0, :, n - 1, : n - 512].max() == 0.0
    assert traced.attention[5, :, n - 1, : n - 512].max() > 0.0
    with torch.no_grad():
        out = hf_gguf_model(torch.tensor([traced.token_ids]), output_attentions=True)
    assert len(out.attentions) == traced.num_layers == len(traced.layers)
    worst = 0.0
    for layer, reference in enumerate(out.attentions):
        diff = np.abs(traced.attention[layer] - reference[0].numpy()).max()
        worst = max(worst, float(diff))
        assert diff <= 1e-3, f"layer {layer}: max |diff| {diff:.2e}"
    probs = torch.softmax(out.logits[0].double(), dim=-1).numpy()
    lens_diff = np.abs(traced.lens_top_probs[-1]
                       - np.take_along_axis(probs, traced.lens_top_ids[-1], axis=-1)).max()
    print(f"\n{n} tokens: max |attention - transformers eager| = {worst:.2e}, "
          f"final top-k probs {lens_diff:.2e}")
    assert lens_diff <= 1e-3


def test_trace_and_attribution_render_as_schema_valid_bundles(tiny_lab):
    import jsonschema

    from gemma_lab.schema import JSON_SCHEMA, MIME_TYPE

    hostile = "<img src=x onerror=alert(1)>"
    for record in (tiny_lab.trace(hostile), tiny_lab.attribute(hostile, target=" world")):
        bundle = record._repr_mimebundle_()
        payload = bundle[MIME_TYPE]
        jsonschema.Draft202012Validator(JSON_SCHEMA).validate(payload)
        assert [t["id"] for t in payload["tokens"]] == list(record.token_ids)
        assert hostile not in bundle["text/html"]
        assert _start_tags(bundle["text/html"]) <= {"div", "span", "style"}
    assert "attention" in tiny_lab.trace("hello")._repr_mimebundle_()[MIME_TYPE]


def _start_tags(html: str) -> set[str]:
    from html.parser import HTMLParser

    tags: set[str] = set()
    parser = HTMLParser()
    parser.handle_starttag = lambda tag, attrs: tags.add(tag)
    parser.feed(html)
    return tags


@pytest.mark.parametrize("architecture", ["gemma4", "gemma3n"])
def test_attention_shows_sliding_global_and_kv_shared_layers(architecture):
    """Layers 0, 2 local (window 4; layer 2 reads layer 0's keys and values), 1, 3 global."""
    from gemma_lab.testing import tiny_session

    trace = tiny_session(architecture).trace("hello world, this is a tiny corpus")
    attention = np.asarray(trace.attention)  # [layer, head, query, key]
    n = attention.shape[-1]
    np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-5)
    queries, keys = np.indices((n, n))
    assert np.abs(attention[..., keys > queries]).max() == 0  # causal everywhere
    far = queries - keys >= 4
    for layer in (0, 2):
        assert np.abs(attention[layer][:, far]).max() == 0
    for layer in (1, 3):
        assert attention[layer][:, far].max() > 0
    assert trace.windows == (4, None, 4, None)
