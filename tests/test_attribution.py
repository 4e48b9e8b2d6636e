"""Attribution (gradient × input, integrated gradients) on tiny models of every architecture,
and trace + attribution agreeing across the JAX, TensorFlow and torch backends.

Run as a script, this file is the per-backend worker of the cross-backend test:
    GEMMA_LAB_BACKEND=torch python tests/test_attribution.py WEIGHTS.npz OUT.npz
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

PROMPT = "the quick brown"
TARGET = " fox jumps"
# A target whose log-probability the prompt moves by > 0.3 nats on every tiny model, so that
# completeness is measured against a change well above float32 noise.
IG_TARGET = " fox"
CROSS_ARCHS = {"gemma3": 7, "gemma2": 2}
CROSS_TEXT = "hello world, this is a tiny corpus."


@pytest.fixture(scope="module", params=["gemma", "gemma2", "gemma3"])
def lab(request):
    from gemma_lab.testing import tiny_session

    return tiny_session(request.param)


@pytest.fixture(params=["gemma4", "gemma3n"])
def jumpy_lab(request):
    """Models where integrated gradients' completeness does not hold (Gemma 4: MoE routing
    and, even dense, its normalised attention; Gemma 3n: activation sparsity, AltUp)."""
    from gemma_lab.testing import tiny_session

    return tiny_session(request.param)


def _target_logprob(lab, prompt, target):
    """log p(target | <bos> prompt) from a plain keras-hub forward pass."""
    from gemma_lab.backend import to_numpy

    prompt_ids = lab.tokenizer.encode(prompt, add_bos=True)
    ids = prompt_ids + lab.tokenizer.encode(target)
    from gemma_lab.testing import keras_hub_inputs, numpy_log_softmax

    logprobs = numpy_log_softmax(to_numpy(lab.causal_lm(keras_hub_inputs(lab.backbone, [ids])))[0])
    positions = np.arange(len(prompt_ids) - 1, len(ids) - 1)
    return float(logprobs[positions, np.asarray(ids[len(prompt_ids):])].sum())


def test_grad_x_input_record(lab):
    a = lab.attribute(PROMPT, target=TARGET)
    assert a.method == "grad_x_input" and a.steps is None and a.baseline_logprob is None
    assert a.tokens == tuple(lab.tokenizer.pieces(lab.tokenizer.encode(PROMPT)))
    assert a.scores.shape == (len(a.tokens),) and np.isfinite(a.scores).all()
    assert a.target_tokens == tuple(lab.tokenizer.pieces(lab.tokenizer.encode(TARGET)))
    assert abs(a.target_logprob - _target_logprob(lab, PROMPT, TARGET)) <= 1e-4
    assert a.metadata == lab.metadata() and a.completeness_error is None


def test_grad_x_input_equals_finite_difference_directional_derivative(lab):
    """score_p = d/dε log p(target) along x_p → (1 + ε) x_p: check it by central differences."""
    _check_grad_x_input(lab)


def test_grad_x_input_on_moe_and_gemma3n_and_no_integrated_gradients(jumpy_lab):
    """Gradient × input is local: it holds on Gemma 4 MoE and Gemma 3n too (by central
    differences); integrated gradients is refused there, saying why."""
    from gemma_lab.errors import NotAvailableError

    _check_grad_x_input(jumpy_lab)
    with pytest.raises(NotAvailableError, match="grad_x_input"):
        jumpy_lab.attribute(PROMPT, target=TARGET, method="integrated_gradients")


def _check_grad_x_input(lab):
    from gemma_lab.inspect.attribution import target_logprob_for

    a = lab.attribute(PROMPT, target=TARGET)
    prompt_ids = lab.tokenizer.encode(PROMPT, add_bos=True)
    ids = prompt_ids + lab.tokenizer.encode(TARGET)
    compiled = target_logprob_for(lab.runtime, lab.runtime.active_hooks)
    inputs = compiled.inputs(ids, len(prompt_ids))
    x = compiled.embeddings(inputs)
    eps = 1e-2
    directions = np.zeros((len(a.tokens) + 1, *x.shape[1:]), dtype="float32")
    for p in range(len(a.tokens)):
        directions[p, 1 + p] = x[0, 1 + p]
    directions[-1, 1:len(prompt_ids)] = x[0, 1:len(prompt_ids)]  # all prompt tokens at once
    plus = compiled.value(x + eps * directions, inputs)
    minus = compiled.value(x - eps * directions, inputs)
    numeric = (plus - minus) / (2 * eps)
    expected = np.append(a.scores, a.scores.sum())
    print(f"\nmax |grad×input - finite difference| = {np.abs(numeric - expected).max():.2e}")
    np.testing.assert_allclose(numeric, expected, atol=5e-3, rtol=2e-2)


def test_integrated_gradients_completeness(lab):
    a = lab.attribute(PROMPT, target=IG_TARGET, method="integrated_gradients", steps=256)
    assert a.steps == 256 and a.baseline_logprob is not None
    change = a.target_logprob - a.baseline_logprob
    assert abs(change) > 0.3
    relative = abs(a.completeness_error) / abs(change)
    print(f"\nIG completeness: Σ scores {a.scores.sum():+.4f} vs Δ log p {change:+.4f} "
          f"({100 * relative:.2f}% off)")
    # Measured on the tiny models at 256 steps: 0.36%, 0.01%, 0.04%; bound 1.7x the worst
    # (a wrong path or a missing embedding gradient is off by tens of percent).
    assert relative <= 0.006
    assert abs(a.target_logprob - _target_logprob(lab, PROMPT, IG_TARGET)) <= 1e-4


def test_integrated_gradients_baseline_zeroes_the_prompt_embeddings(lab):
    from gemma_lab.inspect.attribution import target_logprob_for

    a = lab.attribute(PROMPT, target=TARGET, method="integrated_gradients", steps=8)
    prompt_ids = lab.tokenizer.encode(PROMPT, add_bos=True)
    ids = prompt_ids + lab.tokenizer.encode(TARGET)
    compiled = target_logprob_for(lab.runtime, lab.runtime.active_hooks)
    inputs = compiled.inputs(ids, len(prompt_ids))
    baseline = compiled.embeddings(inputs)
    baseline[:, 1:len(prompt_ids)] = 0
    assert abs(compiled.value(baseline, inputs)[0] - a.baseline_logprob) <= 1e-5 * max(
        1.0, abs(a.baseline_logprob))


def test_bad_arguments_name_the_fix(tiny_lab):
    from gemma_lab.errors import InputError

    with pytest.raises(InputError, match="grad_x_input"):
        tiny_lab.attribute(PROMPT, target=TARGET, method="saliency")
    with pytest.raises(InputError, match="target"):
        tiny_lab.attribute(PROMPT, target="")
    with pytest.raises(InputError, match="prompt"):
        tiny_lab.attribute("", target=TARGET)


def test_payload_extras_and_figure(tiny_lab):
    import jsonschema
    import plotly.graph_objects as go

    from gemma_lab.schema import JSON_SCHEMA, SCHEMA_VERSION

    a = tiny_lab.attribute("<i>hello</i>", target=" world")
    extras = a.payload_extras()
    payload = {"version": SCHEMA_VERSION, "kind": "attribution", "text": a.prompt,
               "tokens": [{"text": t, "id": i, "role": "prompt"}
                          for t, i in zip(a.tokens, a.token_ids, strict=True)],
               "metadata": a.metadata, **extras}
    jsonschema.validate(payload, JSON_SCHEMA)
    assert extras["attribution"]["target"] == " world"
    np.testing.assert_allclose(extras["attribution"]["scores"], a.scores, atol=1e-6)
    figure = a.figure()
    assert isinstance(figure, go.Figure)
    np.testing.assert_allclose(figure.data[0].y, a.scores)
    assert "<i>" not in "".join(figure.layout.xaxis.ticktext)
    assert "Attribution" in repr(a) and str(a) == "<i>hello</i>"


# --- the same tiny models on JAX, TensorFlow and torch ----------------------------------------
def _save_weights(path):
    from gemma_lab.testing import tiny_causal_lm

    arrays = {}
    for arch, layers in CROSS_ARCHS.items():
        for i, weight in enumerate(tiny_causal_lm(arch, num_layers=layers).backbone.weights):
            arrays[f"{arch}/{i:03d}"] = np.asarray(weight.numpy())
    np.savez(path, **arrays)


def _worker(weights_path: str, out_path: str) -> None:
    """Build each tiny model on this process' backend, load the shared weights, and save the
    trace and attributions the parent compares."""
    from gemma_lab.models.loading import LoadedModel
    from gemma_lab.session import GemmaLab
    from gemma_lab.testing import tiny_causal_lm

    shared = np.load(weights_path)
    out, summary = {}, {}
    for arch, layers in CROSS_ARCHS.items():
        causal_lm = tiny_causal_lm(arch, num_layers=layers)
        weights = causal_lm.backbone.weights
        same_by_seed = all(np.array_equal(np.asarray(w.numpy()), shared[f"{arch}/{i:03d}"])
                           for i, w in enumerate(weights))
        for i, weight in enumerate(weights):
            weight.assign(shared[f"{arch}/{i:03d}"])
        loaded = all(np.array_equal(np.asarray(w.numpy()), shared[f"{arch}/{i:03d}"])
                     for i, w in enumerate(weights))
        lab = GemmaLab(LoadedModel(causal_lm, f"tiny-{arch}", "test", None, "float32"))
        traced = lab.trace(CROSS_TEXT)
        out[f"{arch}/attention"] = traced.attention
        out[f"{arch}/logits"] = traced.logits
        out[f"{arch}/residual"] = traced.residual
        out[f"{arch}/lens_target_probs"] = traced.lens_target_probs
        out[f"{arch}/grad_x_input"] = lab.attribute(PROMPT, target=TARGET).scores
        ig = lab.attribute(PROMPT, target=TARGET, method="integrated_gradients", steps=64)
        out[f"{arch}/integrated_gradients"] = ig.scores
        summary[arch] = {"same_by_seed": same_by_seed, "loaded": loaded,
                         "backend": lab.backend, "target_logprob": ig.target_logprob,
                         "baseline_logprob": ig.baseline_logprob}
    np.savez(out_path, **out)
    print(json.dumps(summary))


@pytest.mark.slow
def test_trace_and_attribution_agree_across_backends(tmp_path):
    weights = tmp_path / "weights.npz"
    _save_weights(weights)
    runs = {}
    for backend in ("jax", "tensorflow", "torch"):
        env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
        env["GEMMA_LAB_BACKEND"] = backend
        out = tmp_path / f"{backend}.npz"
        runs[backend] = (out, subprocess.Popen(
            [sys.executable, __file__, str(weights), str(out)], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results, summaries = {}, {}
    for backend, (out, process) in runs.items():
        stdout, stderr = process.communicate(timeout=1200)
        assert process.returncode == 0, f"{backend}:\n{stderr[-4000:]}"
        summaries[backend] = json.loads(stdout.strip().splitlines()[-1])
        results[backend] = np.load(out)
    for backend, summary in summaries.items():
        for arch in CROSS_ARCHS:
            assert summary[arch]["backend"] == backend and summary[arch]["loaded"]
    # keras.random differs per backend, so equal seeds give equal weights only on JAX.
    assert summaries["jax"]["gemma3"]["same_by_seed"]
    reference = results["jax"]
    report = []
    for backend in ("tensorflow", "torch"):
        for key in reference.files:
            expected, actual = reference[key], results[backend][key]
            # NaN where JAX has NaN (an undefined entry) and nowhere else; then the values.
            nan = np.isnan(expected)
            assert expected.shape == actual.shape, (backend, key)
            assert np.array_equal(nan, np.isnan(actual)), (backend, key, "NaN mask differs")
            expected, actual = expected[~nan], actual[~nan]
            scale = max(float(np.abs(expected).max(initial=0.0)), 1e-6)
            relative = float(np.abs(actual - expected).max(initial=0.0)) / scale
            report.append(f"{backend:>10} {key:<32} {relative:.2e}")
            assert relative <= 1e-3, report[-1]
    print("\nmax |diff| / max |jax| per array:\n" + "\n".join(report))


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
