"""Sparse autoencoders on the tiny Gemma 3: file formats, the JumpReLU encoder against a
NumPy formula, splicing (exact SAE: nothing changes; one feature ablated: exactly its decoder
direction removed), feature views, examples over a dataset, inline training (gradients
against finite differences). The default model against transformers: test_sae_real.py."""

from __future__ import annotations

import json
import socket
from html.parser import HTMLParser

import jsonschema
import numpy as np
import pytest

from gemma_lab import interventions as iv
from gemma_lab.errors import GemmaLabError, InputError, ModelLoadError
from gemma_lab.sae import SAE, hook_from_config, load_sae
from gemma_lab.sae.train import _step
from gemma_lab.schema import JSON_SCHEMA

HOOK = "blocks.1.resid_post"
TEXT = "the quick brown fox jumps over the lazy dog"


def _jumprelu(x, w_enc, b_enc, threshold, b_dec=None):
    """Gemma Scope's encoder, written out: pre = x W_enc + b_enc; f = pre · [pre > θ]."""
    x = np.asarray(x, dtype="float64")
    if b_dec is not None:
        x = x - b_dec
    pre = x @ np.asarray(w_enc, "float64") + np.asarray(b_enc, "float64")
    return pre * (pre > threshold)


def _random_sae(d_model, width, seed, hook=HOOK, reference=None):
    """A Gemma-Scope-shaped SAE with random weights; thresholds at the 80th percentile of
    each feature's pre-activation over `reference` activations (plus 1e-3, so no activation
    sits exactly on a threshold), so some fire and some don't."""
    rng = np.random.default_rng(seed)
    w_enc = rng.normal(size=(d_model, width)).astype("float32") / np.sqrt(d_model)
    w_dec = rng.normal(size=(width, d_model)).astype("float32") / np.sqrt(width)
    b_enc = rng.normal(size=width).astype("float32") * 0.1
    threshold = np.zeros(width, "float32")
    if reference is not None:
        threshold = (np.percentile(reference @ w_enc + b_enc, 80, axis=0) + 1e-3).astype(
            "float32")
    return SAE(W_enc=w_enc, W_dec=w_dec, b_enc=b_enc,
               b_dec=rng.normal(size=d_model).astype("float32") * 0.1,
               threshold=np.maximum(threshold, 0), hook=hook)


@pytest.fixture(scope="module")
def resid(tiny_lab):
    return tiny_lab.run_with_cache(TEXT, names=[HOOK])[HOOK]


# --- formats ------------------------------------------------------------------------------
def test_gemma_scope_params_npz_loads_with_the_hook_given(tmp_path, resid):
    sae = _random_sae(32, 48, 0, reference=resid)
    np.savez(tmp_path / "params.npz", W_enc=sae.W_enc, W_dec=sae.W_dec, b_enc=sae.b_enc,
             b_dec=sae.b_dec, threshold=sae.threshold)
    loaded = load_sae(tmp_path / "params.npz", hook=HOOK)
    for name in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(sae, name))
    assert (loaded.hook, loaded.width, loaded.d_model) == (HOOK, 48, 32)
    assert not loaded.apply_b_dec_to_input  # Gemma Scope encodes x itself
    with pytest.raises(InputError, match="pass hook="):
        load_sae(tmp_path / "params.npz")  # the file does not say where it reads


def test_saelens_safetensors_and_cfg_json(tmp_path, resid):
    from safetensors.numpy import save_file

    sae = _random_sae(32, 40, 1, reference=resid)
    save_file({"W_enc": sae.W_enc, "W_dec": sae.W_dec, "b_enc": sae.b_enc,
               "b_dec": sae.b_dec, "log_threshold": np.log(sae.threshold + 1e-3)},
              str(tmp_path / "sae_weights.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps(
        {"architecture": "jumprelu", "d_in": 32, "d_sae": 40,
         "hook_name": "blocks.1.hook_resid_post", "apply_b_dec_to_input": True}))
    loaded = load_sae(tmp_path)
    assert loaded.hook == HOOK and loaded.apply_b_dec_to_input
    np.testing.assert_allclose(loaded.threshold, sae.threshold + 1e-3, rtol=1e-5)
    want = _jumprelu(resid, sae.W_enc, sae.b_enc, sae.threshold + 1e-3, b_dec=sae.b_dec)
    np.testing.assert_allclose(loaded.encode(resid), want, rtol=1e-4, atol=1e-5)


def test_gemma_lab_save_round_trip(tmp_path):
    sae = SAE.identity_like(32, "blocks.0.mlp_out", seed=3)
    loaded = load_sae(sae.save(tmp_path / "mine"))
    assert loaded.hook == "blocks.0.mlp_out" and loaded.width == 64
    np.testing.assert_array_equal(loaded.W_dec, sae.W_dec)


@pytest.mark.parametrize("name, want", [
    ("blocks.6.hook_resid_post", "blocks.6.resid_post"), ("blocks.0.hook_mlp_out",
                                                          "blocks.0.mlp_out"),
    ("blocks.3.attn.hook_z", "blocks.3.attn.z"), ("model.layers.5.output", "blocks.5.resid_post"),
    ("blocks.2.resid_pre", "blocks.2.resid_pre"), ("nonsense", None), (7, None)])
def test_hook_names_from_configs(name, want):
    assert hook_from_config(name) == want


def test_damaged_and_foreign_files_say_what_they_are(tmp_path):
    (tmp_path / "params.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelLoadError, match="damaged"):
        load_sae(tmp_path / "params.npz", hook=HOOK)
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(ModelLoadError, match="lacks W_enc"):
        load_sae(tmp_path / "other.npz", hook=HOOK)
    np.savez(tmp_path / "t.npz", W_enc=np.zeros((4, 6)), W_dec=np.zeros((4, 6)),
             b_enc=np.zeros(6), b_dec=np.zeros(4), threshold=np.zeros(6))
    with pytest.raises(InputError, match="W_dec has shape"):
        load_sae(tmp_path / "t.npz", hook=HOOK)
    (tmp_path / "cfg.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"cfg\.json"):
        load_sae(tmp_path / "t.npz")
    with pytest.raises(ModelLoadError, match="No SAE"):
        load_sae(tmp_path / "missing")
    with pytest.raises(InputError, match="not a gemma_lab hook point"):
        load_sae(tmp_path / "t.npz", hook="layer six")


def test_hf_handle_offline_says_it_needs_the_network(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise OSError("network disabled by test_sae")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError, match="network access"):
        load_sae("hf://google/gemma-scope-2-270m-pt/resid_post/layer_6_width_16k_l0_small",
                 hook="blocks.6.resid_post")


def test_width_or_hook_mismatch_is_refused_before_running(tiny_lab):
    with pytest.raises(InputError, match=r"width 16.*32 values"):
        tiny_lab.features(TEXT, _random_sae(16, 8, 0))
    with pytest.raises(InputError, match="Layer 9 is out of range"):
        tiny_lab.features(TEXT, _random_sae(32, 8, 0, hook="blocks.9.resid_post"))
    with pytest.raises(InputError, match="no hook point"):
        tiny_lab.features(TEXT, _random_sae(32, 8, 0, hook="blocks.0.nowhere"))
    with pytest.raises(InputError, match="takes an SAE"):
        tiny_lab.features(TEXT, "params.npz")
    with pytest.raises(InputError, match="takes an SAE"):
        iv.sae_splice(np.zeros(3))
    # attn.z is [head, head_dim] a position: an SAE of that product width reads it flat
    z = tiny_lab.run_with_cache(TEXT, names=["blocks.0.attn.z"])["blocks.0.attn.z"]
    flat = z.reshape(len(z), -1)
    sae = _random_sae(flat.shape[1], 24, 2, hook="blocks.0.attn.z", reference=flat)
    fa = tiny_lab.features(TEXT, sae, splice_loss=False)
    np.testing.assert_allclose(fa.acts, _jumprelu(flat, sae.W_enc, sae.b_enc, sae.threshold),
                               rtol=1e-4, atol=1e-5)


# --- features -----------------------------------------------------------------------------
def test_feature_activations_equal_the_numpy_jumprelu(tiny_lab, resid):
    sae = _random_sae(32, 64, 4, reference=resid)
    fa = tiny_lab.features(TEXT, sae)
    want = _jumprelu(resid, sae.W_enc, sae.b_enc, sae.threshold)
    assert fa.acts.shape == (len(fa.tokens), 64) and fa.tokens[0] == "<bos>"
    np.testing.assert_allclose(fa.acts, want, rtol=1e-4, atol=1e-5)
    assert 0 < (fa.acts > 0).mean() < 0.5  # thresholds: some fire, most do not
    recon = want @ sae.W_dec + sae.b_dec
    error = ((resid - recon) ** 2).sum(axis=1) / (resid ** 2).sum(axis=1)
    np.testing.assert_allclose(fa.relative_error, error, rtol=1e-3)
    body, body_recon = resid[1:], recon[1:]
    fvu = ((body - body_recon) ** 2).sum() / ((body - body.mean(axis=0)) ** 2).sum()
    assert fa.variance_explained == pytest.approx(1 - fvu, rel=1e-4)
    # top(): per position the largest active features, in order
    top = fa.top(k=3)
    for position, group in top.groupby("position"):
        row = want[position]
        expected = [int(i) for i in np.argsort(-row)[:3] if row[i] > 0]
        assert list(group["feature"]) == expected
    strongest = fa.strongest(k=5)
    peaks = want[1:].max(axis=0)
    assert list(strongest["feature"]) == [int(i) for i in np.argsort(-peaks)[:5]]


def test_splicing_an_exact_sae_changes_nothing_and_a_lossy_one_does(tiny_lab_any):
    lab = tiny_lab_any
    hidden = lab.info().hidden_dim if hasattr(lab.info(), "hidden_dim") else None
    d_model = int(lab.run_with_cache(TEXT, names=["blocks.0.resid_post"])[
        "blocks.0.resid_post"].shape[-1])
    assert hidden in (None, d_model)
    exact = SAE.identity_like(d_model, "blocks.0.resid_post", seed=0)
    fa = lab.features(TEXT, exact)
    assert abs(fa.loss_added) < 1e-3 and fa.variance_explained > 0.9999
    np.testing.assert_allclose(fa.spliced_logprobs, fa.logprobs, atol=1e-3)
    lossy = _random_sae(d_model, 16, 5, hook="blocks.0.resid_post")
    assert abs(lab.features(TEXT, lossy).loss_added) > 1e-2


def test_ablating_a_feature_removes_exactly_its_decoder_direction(tiny_lab, resid):
    sae = _random_sae(32, 64, 6, reference=resid)
    acts = _jumprelu(resid, sae.W_enc, sae.b_enc, sae.threshold)
    feature = int(np.argmax((acts[1:] > 0).sum(axis=0)))  # the one that fires most
    with tiny_lab.hooks(iv.sae_splice(sae, ablate=[feature])):
        edited = tiny_lab.run_with_cache(TEXT, names=[HOOK])[HOOK]
    want = resid - acts[:, [feature]] * sae.W_dec[feature][None, :]
    np.testing.assert_allclose(edited, want, atol=1e-4)
    assert np.abs(edited - resid).max() > 1e-3
    level = 5.0
    with tiny_lab.hooks(iv.sae_splice(sae, clamp={feature: level})):
        clamped = tiny_lab.run_with_cache(TEXT, names=[HOOK])[HOOK]
    np.testing.assert_allclose(clamped, want + level * sae.W_dec[feature][None, :], atol=1e-4)
    # steering with a feature direction is iv.add on the decoder row
    with tiny_lab.hooks(iv.add(sae.W_dec[feature], layer=1, scale=level)):
        steered = tiny_lab.run_with_cache(TEXT, names=[HOOK])[HOOK]
    np.testing.assert_allclose(steered, resid + level * sae.W_dec[feature], atol=1e-4)
    for bad in (dict(ablate=[64]), dict(ablate=[True]), dict(clamp={1: float("nan")}),
                dict(clamp=[1, 2]), dict(keep_error="yes")):
        with pytest.raises(InputError):
            iv.sae_splice(sae, **bad)


def test_features_payload_view_and_escaping(tiny_lab, resid):
    from gemma_lab.render import mimebundle
    from gemma_lab.schema import MIME_TYPE

    sae = _random_sae(32, 64, 7, reference=resid)
    hostile = "<script>alert(1)</script> & <b>bold</b>"
    fa = tiny_lab.features(hostile, sae)
    bundle = mimebundle(fa)
    payload = bundle[MIME_TYPE]
    jsonschema.validate(payload, JSON_SCHEMA)
    assert payload["kind"] == "features" and payload["version"] == 3
    strongest = fa.strongest(k=24)
    assert [row["feature"] for row in payload["features"]["top"]] == list(strongest["feature"])
    np.testing.assert_allclose(payload["features"]["top"][0]["acts"],
                               fa.acts[:, payload["features"]["top"][0]["feature"]], rtol=1e-5)
    for position, pairs in enumerate(payload["features"]["per_token"]):
        assert all(fa.acts[position, f] == pytest.approx(a, rel=1e-5) for f, a in pairs)
        assert [a for _, a in pairs] == sorted((a for _, a in pairs), reverse=True)

    class Tags(HTMLParser):
        def __init__(self):
            super().__init__()
            self.found: list[str] = []

        def handle_starttag(self, tag, attrs):
            self.found.append(tag)

    parser = Tags()
    parser.feed(bundle["text/html"])
    assert "script" not in parser.found and "b" not in parser.found
    assert "variance explained" in bundle["text/html"]
    figure = fa.figure(k=8)
    labels = list(figure.layout.xaxis2.ticktext)
    assert all("<" not in label for label in labels)
    assert len(figure.data[0].y) == 8


# --- a dataset: top activations -----------------------------------------------------------
def test_feature_examples_equal_a_brute_force_search(tiny_lab, resid):
    texts = ["the quick brown fox", "jumps over the lazy dog", "hello world", "a tiny corpus"]
    sae = _random_sae(32, 64, 8, reference=resid)
    features = [0, 5, 9]
    examples = tiny_lab.feature_examples(texts, sae, features, k=3, progress=False)
    for feature in features:
        found = []
        for index, text in enumerate(texts):
            x = tiny_lab.run_with_cache(text, names=[HOOK])[HOOK]
            acts = _jumprelu(x, sae.W_enc, sae.b_enc, sae.threshold)[:, feature]
            found += [(float(a), index, p) for p, a in enumerate(acts) if p > 0 and a > 0]
        want = sorted(found, key=lambda t: (-t[0], t[1], t[2]))[:3]
        got = [(r["activation"], r["text"], r["position"]) for r in examples.rows
               if r["feature"] == feature]
        assert [(i, p) for _, i, p in got] == [(i, p) for _, i, p in want]
        np.testing.assert_allclose([a for a, _, _ in got], [a for a, _, _ in want], rtol=1e-4)
    html = examples._repr_html_()
    assert "feature 5" in html
    with pytest.raises(InputError, match="feature indices"):
        tiny_lab.feature_examples(texts, sae, [64])


def test_batched_activations_equal_one_text_at_a_time_with_hooks_in_force(tiny_lab):
    from gemma_lab.sae.activations import BATCH_ROWS, activation_batches

    words = TEXT.split()
    texts = [" ".join(words[: 1 + i % len(words)]) for i in range(BATCH_ROWS + 3)]
    texts.append(" ".join(words * 12))  # a long one: its own batch
    ids = [tiny_lab.tokenizer.encode(t, add_bos=True) for t in texts]
    hooks = iv.ablate_heads([(0, 1)])
    with tiny_lab.hooks(hooks):
        batches = list(activation_batches(tiny_lab.runtime, HOOK, ids))
        singles = [tiny_lab.run_with_cache(t, names=[HOOK])[HOOK] for t in texts]
    assert len(batches) > 1 and all(len(batch) <= BATCH_ROWS for batch in batches)
    got = dict(item for batch in batches for item in batch)
    assert sorted(got) == list(range(len(texts)))
    for index, single in enumerate(singles):
        np.testing.assert_allclose(got[index], single, rtol=1e-4, atol=1e-5)
    unhooked = tiny_lab.run_with_cache(texts[-1], names=[HOOK])[HOOK]
    assert not np.allclose(unhooked, singles[-1])  # the hook was in force in the batches


# --- training -----------------------------------------------------------------------------
def test_training_gradients_equal_finite_differences():
    rng = np.random.default_rng(0)
    d, width, n = 6, 10, 9
    params = {"W_enc": rng.normal(size=(d, width)), "W_dec": rng.normal(size=(width, d)),
              "b_enc": rng.normal(size=width) * 0.3, "b_dec": rng.normal(size=d) * 0.3}
    x = rng.normal(size=(n, d))
    _, _, grads = _step(params, x, l1=0.7)
    eps = 1e-6
    for name, value in params.items():
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            up, down = {k: v.copy() for k, v in params.items()}, {
                k: v.copy() for k, v in params.items()}
            up[name][index] += eps
            down[name][index] -= eps
            numeric[index] = (_step(up, x, 0.7)[0] - _step(down, x, 0.7)[0]) / (2 * eps)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-4, atol=1e-7, err_msg=name)


def test_train_sae_on_the_tiny_model(tiny_lab):
    texts = [f"the quick brown fox number {i} jumps over the lazy dog" for i in range(10)]
    sae = tiny_lab.train_sae(texts, hook=HOOK, width=64, steps=150, l1=0.5, progress=False)
    report = sae.training
    assert (sae.width, sae.d_model, sae.hook, report.steps) == (64, 32, HOOK, 150)
    assert report.losses[-1] < report.losses[0]
    assert report.held_out_tokens > 0 and report.train_tokens > report.held_out_tokens
    # the report's held-out number is the NumPy one on the held-out texts' activations
    held = np.concatenate([tiny_lab.run_with_cache(t, names=[HOOK])[HOOK][1:]
                           for t in texts[-2:]])
    recon = sae.decode(sae.encode(held))
    fvu = ((held - recon) ** 2).sum() / ((held - held.mean(axis=0)) ** 2).sum()
    assert report.variance_explained == pytest.approx(1 - fvu, abs=1e-4)
    assert report.variance_explained > 0.3
    again = tiny_lab.train_sae(texts, hook=HOOK, width=64, steps=150, l1=0.5, progress=False)
    np.testing.assert_array_equal(again.W_enc, sae.W_enc)  # seeded: reproducible
    assert "variance explained" in sae._repr_html_()
    assert len(report.figure().data) == 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(width=1), "width"), (dict(width=2.5), "width"), (dict(steps=0), "steps"),
    (dict(steps=True), "steps"), (dict(l1=float("nan")), "l1"), (dict(learning_rate=3), "learn"),
    (dict(held_out=1.0), "held_out"), (dict(hook="blocks.0.attn.pattern"), "not a hook point"),
    (dict(hook="blocks.77.resid_post"), "not a hook point"), (dict(data=["one"]), "two"),
    (dict(data=[1, 2]), "two"), (dict(data=42), "list of texts")])
def test_train_sae_refuses_bad_arguments(tiny_lab, kwargs, match):
    args = dict(data=["a b c", "d e f"], hook=HOOK, width=8, steps=2, progress=False)
    args.update(kwargs)
    with pytest.raises(GemmaLabError, match=match):
        tiny_lab.train_sae(**args)
    assert np.isfinite(tiny_lab.score("hello").total_logprob)
