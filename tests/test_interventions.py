"""Interventions on tiny real keras-hub Gemmas: ablation, steering, patching, logit attribution
and comparisons, checked against NumPy on the model's own weights, keras-hub's own
`layer_intercept_fn` seam, and exact properties (a patch of the only differing embedding
restores the clean run). The real default model against transformers is in
test_interventions_real.py."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from gemma_lab import interventions as iv
from gemma_lab.backend import import_keras
from gemma_lab.errors import GemmaLabError, HookError, InputError
from gemma_lab.inspect.activations import record_token_ids
from gemma_lab.testing import numpy_log_softmax, tiny_session

ops = import_keras().ops  # the backend conftest chose (GEMMA_LAB_BACKEND)
TEXT = "hello world"
CLEAN, CORRUPTED = "hello world", "hello wurld"  # same token count, one token differs


@pytest.fixture(scope="module")
def gemma1():
    return tiny_session("gemma")  # no post-attention / post-MLP norms: outputs are linear


# --- ablation ------------------------------------------------------------------------------
def test_zero_ablated_head_equals_numpy_on_the_output_projection(gemma1):
    lab = gemma1
    names = ["blocks.0.attn.z", "blocks.0.attn_out"]
    plain = lab.run_with_cache(TEXT, names=names)
    with lab.hooks(iv.ablate_heads([(0, 1), (0, 3)])):
        ablated = lab.run_with_cache(TEXT, names=names)
    kernel = ops.convert_to_numpy(lab.backbone.transformer_layers[0].attention.output_dense.kernel)
    z = plain["blocks.0.attn.z"].copy()
    z[:, [1, 3]] = 0.0
    expected = np.einsum("phd,hdm->pm", z, kernel)
    np.testing.assert_allclose(ablated["blocks.0.attn_out"], expected, atol=1e-5)
    assert np.abs(plain["blocks.0.attn_out"] - expected).max() > 1e-3  # it changed something
    assert not ablated["blocks.0.attn.z"][:, [1, 3]].any()
    np.testing.assert_array_equal(ablated["blocks.0.attn.z"][:, [0, 2]], z[:, [0, 2]])


def test_zero_ablated_neurons_equal_numpy_on_the_down_projection(gemma1):
    lab = gemma1
    names = ["blocks.1.mlp.post", "blocks.1.mlp_out"]
    plain = lab.run_with_cache(TEXT, names=names)
    neurons = [0, 5, 17]
    with lab.hooks(iv.ablate_neurons(1, neurons)):
        ablated = lab.run_with_cache(TEXT, names=names)
    kernel = ops.convert_to_numpy(lab.backbone.transformer_layers[1].ffw_linear.kernel)
    post = plain["blocks.1.mlp.post"].copy()
    post[:, neurons] = 0.0
    np.testing.assert_allclose(ablated["blocks.1.mlp_out"], post @ kernel, atol=1e-5)
    assert np.abs(plain["blocks.1.mlp_out"] - post @ kernel).max() > 1e-4


def test_mean_ablation_writes_the_reference_mean_after_bos(tiny_lab):
    reference = tiny_lab.run_with_cache("the quick brown fox", names=["blocks.1.attn.z"])
    with tiny_lab.hooks(iv.ablate_heads([(1, 2)], mode="mean", reference=reference)):
        ablated = tiny_lab.run_with_cache(TEXT, names=["blocks.1.attn.z"])
    mean = reference["blocks.1.attn.z"][1:, 2].mean(axis=0)
    np.testing.assert_allclose(ablated["blocks.1.attn.z"][:, 2], np.broadcast_to(
        mean, ablated["blocks.1.attn.z"][:, 2].shape), atol=1e-6)
    # a dataset: several caches average over all their non-<bos> positions
    other = tiny_lab.run_with_cache("lorem ipsum", names=["blocks.1.attn.z"])
    with tiny_lab.hooks(iv.ablate_heads([(1, 2)], mode="mean", reference=[reference, other])):
        pooled = tiny_lab.run_with_cache(TEXT, names=["blocks.1.attn.z"])
    rows = np.concatenate([reference["blocks.1.attn.z"][1:, 2], other["blocks.1.attn.z"][1:, 2]])
    np.testing.assert_allclose(pooled["blocks.1.attn.z"][0, 2], rows.mean(0), atol=1e-6)
    with pytest.raises(InputError, match="reference activations"):
        iv.ablate_heads([(1, 2)], mode="mean")
    with pytest.raises(InputError, match=r"has no 'blocks\.0\.attn\.z'"):
        iv.ablate_heads([(0, 2)], mode="mean", reference=reference)


@pytest.mark.parametrize("architecture", ["gemma2", "gemma3"])
def test_ablation_holds_in_every_cached_decode_step(architecture):
    """Greedy decoding under ablation picks, at every step, the argmax of a full-sequence
    pass under the same ablation, with the same log-probabilities."""
    lab = tiny_session(architecture)
    hooks = iv.ablate_heads([(0, 0), (1, 1), (1, 3)]) | iv.ablate_neurons(0, range(0, 64, 3))
    plain = lab.generate("hello", max_new_tokens=8)
    with lab.hooks(hooks):
        g = lab.generate("hello", max_new_tokens=8)
        ids = list(g.prompt_token_ids) + list(g.token_ids)
        # the exact ids (re-encoding the text could split it differently)
        logits = record_token_ids(lab.runtime, ids, ["logits"])["logits"][:len(ids)]
    logprobs = numpy_log_softmax(logits.astype("float64"))
    n = len(g.prompt_token_ids)
    rows = np.arange(n - 1, len(ids) - 1)
    np.testing.assert_array_equal(logprobs[rows].argmax(-1), g.token_ids)
    np.testing.assert_allclose(logprobs[rows, g.token_ids], g.logprobs, atol=1e-4)
    assert not np.allclose(plain.logprobs[:1], g.logprobs[:1], atol=1e-4) or (
        plain.token_ids != g.token_ids)


# --- steering -----------------------------------------------------------------------------
@pytest.mark.parametrize("architecture", ["gemma", "gemma2"])
def test_steering_equals_keras_hubs_layer_intercept(architecture):
    lab = tiny_session(architecture)
    vector = np.random.default_rng(1).normal(size=lab.backbone.hidden_dim).astype("float32")
    ids = lab.tokenizer.encode(TEXT, add_bos=True)
    positions = [0, 3, 4]
    with lab.hooks(iv.add(vector, layer=1, scale=2.5, positions=positions)):
        steered = lab.score(TEXT)
    mask = np.zeros((1, len(ids), 1), "float32")
    mask[0, positions] = 1.0
    logits = ops.convert_to_numpy(lab.causal_lm.score(
        ops.convert_to_tensor(np.asarray([ids], "int32")),
        layer_intercept_fn=lambda x, i: x + 2.5 * mask * vector if i == 1 else x))[0]
    expected = numpy_log_softmax(logits.astype("float64"))[np.arange(len(ids) - 1), ids[1:]]
    np.testing.assert_allclose(steered.logprobs, expected, atol=1e-4)
    assert np.abs(np.asarray(lab.score(TEXT).logprobs) - expected).max() > 1e-3


def test_steered_streaming_equals_steered_generation(tiny_lab):
    vector = tiny_lab.steering_vector(["good great fine"], ["bad awful poor"], layer=0)
    with tiny_lab.hooks(iv.add(vector, layer=0, scale=40.0)):
        streamed = [step.token_id for step in tiny_lab.stream("hello", max_new_tokens=6)]
        generated = tiny_lab.generate("hello", max_new_tokens=6)
    assert streamed == list(generated.token_ids)
    plain = tiny_lab.generate("hello", max_new_tokens=6)
    assert plain.token_ids != generated.token_ids or not np.allclose(
        plain.logprobs, generated.logprobs, atol=1e-3)


def test_steering_vector_is_the_mean_difference_of_resid_post(tiny_lab):
    positive, negative = ["I love it", "so good"], ["I hate it"]
    vector = tiny_lab.steering_vector(positive, negative, layer=1)

    def mean(texts):
        return np.mean([tiny_lab.run_with_cache(t, names=["blocks.1.resid_post"])[
            "blocks.1.resid_post"][1:].mean(0) for t in texts], axis=0)

    np.testing.assert_allclose(vector, mean(positive) - mean(negative), atol=1e-5)
    assert vector.shape == (tiny_lab.backbone.hidden_dim,) and vector.dtype == np.float32


# --- patching -----------------------------------------------------------------------------
def _differing_position(lab):
    a = lab.tokenizer.encode(CLEAN, add_bos=True)
    b = lab.tokenizer.encode(CORRUPTED, add_bos=True)
    assert len(a) == len(b)
    differ = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    assert len(differ) == 1
    return differ[0]


def test_patching_the_only_differing_embedding_restores_the_clean_run(tiny_lab):
    p = _differing_position(tiny_lab)
    clean = tiny_lab.run_with_cache(CLEAN, names=["blocks.0.resid_pre", "final_norm"])
    with tiny_lab.hooks(iv.patch(clean, "blocks.0.resid_pre", positions=[p])):
        patched = tiny_lab.run_with_cache(CORRUPTED, names=["final_norm"])
    np.testing.assert_allclose(patched["final_norm"], clean["final_norm"], atol=1e-5)
    corrupted = tiny_lab.run_with_cache(CORRUPTED, names=["final_norm"])
    assert np.abs(corrupted["final_norm"] - clean["final_norm"]).max() > 1e-3


@pytest.mark.parametrize("over", ["resid_pre", "attn_out", "mlp_out", "heads"])
def test_patch_sweep_equals_one_patch_at_a_time(tiny_lab, over):
    """Each batched sweep score equals the same patch done alone with iv.patch + score."""
    r = tiny_lab.patch(CLEAN, CORRUPTED, target=" ok", over=over, progress=False)
    columns = tiny_lab.backbone.num_query_heads if over == "heads" else len(r.tokens)
    assert r.scores.shape == (tiny_lab.backbone.num_layers, columns)
    target_ids = tiny_lab.tokenizer.encode(" ok", add_bos=False)
    point = {"heads": "attn.z"}.get(over, over)
    clean = tiny_lab.run_with_cache(CLEAN, names=[f"blocks.{i}.{point}" for i in range(2)])
    text = CORRUPTED + " ok"
    ids = tiny_lab.tokenizer.encode(text, add_bos=True)
    assert ids == tiny_lab.tokenizer.encode(CORRUPTED, add_bos=True) + target_ids
    n = len(r.tokens)
    for layer, column in [(0, 1), (1, columns - 1), (1, 0)]:
        name = f"blocks.{layer}.{point}"
        if over == "heads":
            source = tiny_lab.run_with_cache(CORRUPTED, names=[name])[name].copy()
            source[:, column] = clean[name][:, column]

            def write(z, ctx, source=source, column=column):
                positions = ctx.positions
                inside = ops.less(positions, n)
                taken = ops.take(ops.convert_to_tensor(source), ops.clip(positions, 0, n - 1),
                                 axis=0)[None]
                head = ops.equal(ops.arange(z.shape[2]), column)
                hit = ops.logical_and(inside[None, :, None], head[None, None, :])[..., None]
                return ops.where(hit, taken, z)

            hooks = {name: write}
        else:
            hooks = iv.patch(clean, name, positions=[column])
        with tiny_lab.hooks(hooks):
            alone = sum(tiny_lab.score(text).logprobs[-len(target_ids):])
        assert abs(r.scores[layer, column] - alone) < 1e-4, (layer, column)
    assert abs(r.clean - sum(tiny_lab.score(CLEAN + " ok").logprobs[-len(target_ids):])) < 1e-4
    assert abs(r.corrupted - sum(tiny_lab.score(text).logprobs[-len(target_ids):])) < 1e-4


def test_patch_sweep_layer_zero_resid_pre_is_clean_where_tokens_differ(tiny_lab):
    p = _differing_position(tiny_lab)
    r = tiny_lab.patch(CLEAN, CORRUPTED, target=" ok", progress=False)
    assert abs(r.scores[0, p] - r.clean) < 1e-4
    same = [i for i in range(len(r.tokens)) if i != p]
    np.testing.assert_allclose(r.scores[0, same], r.corrupted, atol=1e-4)
    assert abs(r.clean - r.corrupted) > 1e-3
    np.testing.assert_allclose(r.recovered[0, p], 1.0, atol=1e-3)
    assert r.figure().data[0].z.shape == r.scores.shape
    assert r.figure("recovered").data[0].zmid == 0.0


def test_patch_rejects_prompts_of_different_lengths_with_both_counts(tiny_lab):
    with pytest.raises(InputError, match=r"has 10 tokens and the corrupted one 8.*same token"):
        tiny_lab.patch("hello world", "hello there", target=" ok")
    with pytest.raises(InputError, match="over="):
        tiny_lab.patch(CLEAN, CORRUPTED, target=" ok", over="mlp")
    with pytest.raises(InputError, match="target"):
        tiny_lab.patch(CLEAN, CORRUPTED, target="")


# --- logit attribution -------------------------------------------------------------------
@pytest.mark.parametrize("architecture", ["gemma", "gemma3"])
def test_logit_attribution_adds_up_to_keras_hubs_logit(architecture):
    lab = tiny_session(architecture)
    la = lab.logit_attribution(TEXT, target=" there")
    ids = np.asarray([lab.tokenizer.encode(TEXT, add_bos=True)], "int32")
    logits = ops.convert_to_numpy(lab.causal_lm({"token_ids": ids,
                                                 "padding_mask": np.ones_like(ids)}))[0, -1]
    target_id = lab.tokenizer.encode(" there", add_bos=False)[0]
    assert la.target_id == target_id
    assert abs(la.logit - float(logits[target_id])) < 1e-4
    assert abs(la.direct_sum - la.logit) < 1e-3
    assert abs(la.embed + la.attn.sum() + la.mlp.sum() - la.direct_sum) < 1e-6
    np.testing.assert_allclose(la.heads.sum(axis=1), la.attn, atol=1e-4)
    assert np.abs(la.heads).max() > 0
    top = lab.logit_attribution(TEXT)
    assert top.target_id == int(np.argmax(logits))
    assert top.figure().data[0].y is not None and top.figure("heads").data[0].z.shape == (2, 4)


# --- comparisons --------------------------------------------------------------------------
def test_compare_with_and_without_hooks_and_two_texts(tiny_lab):
    hooks = iv.ablate_heads([(0, 0)])
    c = tiny_lab.compare(TEXT, hooks=hooks)
    with tiny_lab.hooks(hooks):
        ablated = tiny_lab.score(TEXT)
    np.testing.assert_allclose(c.logprobs_b, ablated.logprobs)
    np.testing.assert_allclose(c.logprobs_a, tiny_lab.score(TEXT).logprobs)
    np.testing.assert_allclose(c.diff, c.logprobs_b - c.logprobs_a)
    assert c.diverged_at is None and abs(c.total_diff) > 1e-4
    two = tiny_lab.compare(CLEAN, CORRUPTED)
    assert two.diverged_at == _differing_position(tiny_lab) - 1  # tokens exclude <bos>
    assert len(two.diff) == two.diverged_at
    assert tiny_lab.compare(ablated, tiny_lab.score(TEXT)).labels == ("a", "b")
    with pytest.raises(InputError, match="one of"):
        tiny_lab.compare(TEXT)
    with pytest.raises(InputError, match="two texts or two results"):
        tiny_lab.compare(TEXT, ablated)
    assert c.figure().data[0].type == "bar" and len(c.figure("logprobs").data) == 2


# --- bad input: one clear error, the session keeps working -------------------------------
def test_bad_interventions_get_one_clear_error(tiny_lab):
    hidden = tiny_lab.backbone.hidden_dim
    cases = [
        (lambda: iv.add(np.ones(hidden + 1), layer=0), r"shape \(33,\).*hidden size is 32"),
        (lambda: iv.add(np.ones(hidden), layer=5), r"Layer 5 is out of range.*0\.\.1"),
        (lambda: iv.ablate_heads([(0, 9)]), r"Head 9 of layer 0 is out of range.*0\.\.3"),
        (lambda: iv.ablate_heads([(3, 0)]), r"Layer 3 is out of range"),
        (lambda: iv.ablate_neurons(0, [10_000]), r"Neurons \[10000\].*out of range"),
        (lambda: iv.ablate_heads([(0, 0)], mode="half"), "mode=.half.: choose one of"),
        (lambda: iv.ablate_heads("0.1"), r"heads must be a list, e.g. \[\(3, 1\)"),
        (lambda: iv.add(np.ones((2, hidden)), layer=0), "one-dimensional"),
        (lambda: iv.add([np.nan] * hidden, layer=0), "NaN"),
        (lambda: iv.add(np.ones(hidden), layer=0, positions=[-1]), "non-negative"),
        (lambda: tiny_lab.steering_vector("a", "b", layer=7), "Layer 7 is out of range"),
    ]
    for make, message in cases:
        with pytest.raises(InputError, match=message):
            with tiny_lab.hooks(make()):
                pass
    assert not tiny_lab.runtime.active_hooks.fns  # nothing was left applied


def test_a_hook_that_raises_leaves_the_session_and_its_compiled_code_usable(tiny_lab):
    before = tiny_lab.score(TEXT).logprobs
    plain_compiled = {key for key in tiny_lab.runtime._compiled if key[2].empty}

    def broken(value, ctx):
        raise RuntimeError("boom")

    for call in (lambda: tiny_lab.score(TEXT), lambda: tiny_lab.generate("hi", max_new_tokens=2),
                 lambda: tiny_lab.trace(TEXT)):
        with pytest.raises(HookError, match=r"'broken' on 'blocks\.0\.attn\.z' raised "
                                            r"RuntimeError: boom") as raised:
            with tiny_lab.hooks({"blocks.0.attn.z": broken}):
                call()
        assert "Arguments received" not in str(raised.value)
    with pytest.raises(HookError, match="dtype int32"):
        with tiny_lab.hooks({"blocks.0.resid_post": lambda v, ctx: ops.cast(v, "int32")}):
            tiny_lab.score(TEXT)
    assert tiny_lab.score(TEXT).logprobs == before
    assert plain_compiled <= set(tiny_lab.runtime._compiled)  # nothing plain was dropped
    assert isinstance(HookError("x"), GemmaLabError)


def test_hooks_apply_only_to_the_thread_that_set_them(tiny_lab):
    plain = tiny_lab.score(TEXT).total_logprob
    seen = {}
    with tiny_lab.hooks(iv.ablate_heads([(0, 0), (1, 1)])):
        worker = threading.Thread(target=lambda: seen.update(
            total=tiny_lab.score(TEXT).total_logprob))
        worker.start()
        worker.join()
        ablated = tiny_lab.score(TEXT).total_logprob
    assert seen["total"] == plain and ablated != plain


def test_hook_sets_compose_with_dicts_and_run_in_order(tiny_lab):
    seen = []
    first = iv.add(np.ones(32), layer=0)
    combined = {"blocks.0.resid_post": lambda v, ctx: seen.append("dict")} | first
    assert len(combined.fns) == 2 and combined.fns[0][0] == "blocks.0.resid_post"
    with tiny_lab.hooks(combined | {"logits": lambda v, ctx: seen.append("logits")}):
        tiny_lab.score(TEXT)
    assert seen[:1] == ["dict"] and "logits" in seen


# --- rendering ---------------------------------------------------------------------------
def test_every_new_result_renders_as_a_schema_valid_escaped_bundle(tiny_lab):
    import jsonschema

    from gemma_lab.schema import JSON_SCHEMA, MIME_TYPE, SCHEMA_VERSION
    from tests.test_trace import _start_tags

    hostile = "<img src=x onerror=alert(1)>"
    results = [
        tiny_lab.run_with_cache(hostile, names=["embed", "blocks.0.attn.pattern"]),
        tiny_lab.patch(CLEAN, CORRUPTED, target=hostile, progress=False),
        tiny_lab.patch(CLEAN, CORRUPTED, target=" ok", over="heads", progress=False),
        tiny_lab.logit_attribution(hostile, target=hostile),
        tiny_lab.compare(hostile, hooks=iv.ablate_heads([(0, 1)])),
        tiny_lab.compare(hostile, hostile + "!"),
    ]
    kinds = set()
    for result in results:
        bundle = result._repr_mimebundle_()
        payload = bundle[MIME_TYPE]
        jsonschema.Draft202012Validator(JSON_SCHEMA).validate(payload)
        assert payload["version"] == SCHEMA_VERSION == 3
        kinds.add(payload["kind"])
        assert hostile not in bundle["text/html"] and "<script" not in bundle["text/html"]
        assert _start_tags(bundle["text/html"]) <= {"div", "span", "style", "table", "tr", "th",
                                                    "td"}
    assert kinds == {"cache", "patching", "logit_attribution", "comparison"}
    patching = results[2].to_dict()["patching"]
    assert patching["columns"] == ["H0", "H1", "H2", "H3"]
    np.testing.assert_allclose(patching["scores"], results[2].scores, atol=1e-4)
    assert "blue" in results[4]._repr_mimebundle_()["text/html"]
