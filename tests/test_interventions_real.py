"""The intervention layer on the real default model (Gemma 3 270M) against an independent peer:
transformers' own GGUF loader of the same model, intervened on with plain torch forward hooks
(`hf_gguf_model`, float32, eager attention), and the same interventions across the three Keras
backends (tests/real_model_worker.py's `run_interventions`: in this process on JAX, in a worker
process on tensorflow and torch; see conftest.py `backend_runs`). Every comparison with
transformers is made for every backend.

What each reference does, in torch terms:
- head ablation: a forward pre-hook on `layers[L].self_attn.o_proj` zeroing its input's
  `[..., H*head_dim:(H+1)*head_dim]`;
- steering: a forward hook on `layers[layer]` adding `scale * v` to its output, every position;
- activation patching: a forward pre-hook on `layers[l]` writing the clean run's input hidden
  state at one position (resid_pre), or on `o_proj` writing one head's slice at every prompt
  position (heads);
- direct logit attribution: forward hooks on `post_attention_layernorm` /
  `post_feedforward_layernorm` (what attention / the MLP add to the residual), a pre-hook on
  the final norm (the residual it normalises), and NumPy for the linearised contributions.

The measured worst differences are printed (run with -s to see them).
"""

from __future__ import annotations

import importlib.util
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

WORKER = Path(__file__).with_name("real_model_worker.py")
# The worker's constants (texts, heads, layer, scale) are the ones the references use.
_loader = importlib.util.spec_from_file_location("real_model_worker", WORKER)
spec = importlib.util.module_from_spec(_loader)
_loader.loader.exec_module(spec)
BACKENDS = ("jax", "tensorflow", "torch")
TOL = 1e-3  # log-probabilities, logits and logit contributions (the peer tolerance)
PATCH_TOL = 1e-2  # patching scores against transformers (the peer tolerance)


# --- plain-torch helpers -------------------------------------------------------------------
@contextmanager
def _hooked(*handles):
    """Remove the given torch hook handles on exit (the HF model is shared by the session)."""
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _hf_logits(hf, ids, **kwargs):
    import torch

    with torch.no_grad():
        return hf(torch.tensor([list(ids)]), **kwargs)


def _hf_logprobs(hf, ids) -> np.ndarray:
    """Teacher-forced log p of ids[1:] (what `lab.score(text).logprobs` holds)."""
    import torch

    logits = _hf_logits(hf, ids).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    return logprobs[torch.arange(len(ids) - 1), torch.tensor(list(ids[1:]))].numpy()


def _hf_greedy(hf, prompt_ids, max_new_tokens: int) -> list[int]:
    import torch

    ids = torch.tensor([list(prompt_ids)])
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                          max_new_tokens=max_new_tokens)
    return [int(i) for i in out[0, len(prompt_ids):]]


def _zero_heads_hooks(hf, heads):
    """Pre-hooks on o_proj zeroing the given heads' slices of its input."""
    head_dim = hf.config.head_dim
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def make(layer_heads):
        def hook(module, args):
            x = args[0].clone()
            for head in layer_heads:
                x[..., head * head_dim:(head + 1) * head_dim] = 0.0
            return (x, *args[1:])
        return hook

    return [hf.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(make(hs))
            for layer, hs in by_layer.items()]


def _add_hook(hf, layer: int, delta):
    """A forward hook on decoder layer `layer` adding `delta` to its output, every position."""
    import torch

    delta = torch.as_tensor(np.asarray(delta, dtype="float32"))

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (output[0] + delta, *output[1:])
        return output + delta

    return hf.model.layers[layer].register_forward_hook(hook)


def _same_greedy(ours: list[int], finish: str, theirs: list[int], stop_ids) -> bool:
    """Our greedy ids equal transformers' (ours stop at any stop id, HF's at <eos> only)."""
    if finish == "length":
        return theirs[:len(ours)] == ours and len(ours) == spec.INTERVENTION_TOKENS
    return theirs[:len(ours)] == ours and (len(theirs) == len(ours)
                                           or theirs[len(ours)] in stop_ids)


def _max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, "float64") - np.asarray(b, "float64")).max())


# --- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """The torch references on one intra-op thread while this module runs: on a small shared
    CPU torch's multi-threaded elementwise kernels run ~100x slower (runtime only)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lab(default_lab):
    return default_lab


@pytest.fixture(scope="module")
def hf(hf_gguf_model):
    return hf_gguf_model


@pytest.fixture(params=BACKENDS)
def run(request, backend_runs):
    """(backend, the arrays of `run_interventions` on it)."""
    return request.param, backend_runs[request.param]


@pytest.fixture(scope="module")
def prompt_pair(lab):
    tokenizer = lab.tokenizer
    clean = tokenizer.encode(spec.CLEAN, add_bos=True)
    corrupted = tokenizer.encode(spec.CORRUPTED, add_bos=True)
    # The pair: both 8 tokens after <bos> (' Col' 'osseum' vs ' Eiffel' ' Tower').
    assert len(clean) == len(corrupted), (tokenizer.pieces(clean), tokenizer.pieces(corrupted))
    target = tokenizer.encode(spec.TARGET, add_bos=False)
    assert len(target) == 1, tokenizer.pieces(target)  # the references score one token
    return clean, corrupted, target[0]


@pytest.fixture(scope="module")
def hf_ablation(lab, hf):
    ids = lab.tokenizer.encode(spec.SCORE_TEXT, add_bos=True)
    prompt_ids = lab.tokenizer.encode(spec.ABLATION_PROMPT, add_bos=True)
    base = _hf_logprobs(hf, ids)
    with _hooked(*_zero_heads_hooks(hf, spec.ABLATED_HEADS)):
        ablated = _hf_logprobs(hf, ids)
        greedy = _hf_greedy(hf, prompt_ids, spec.INTERVENTION_TOKENS)
    return {"base": base, "ablated": ablated, "greedy": greedy,
            "base_greedy": _hf_greedy(hf, prompt_ids, spec.INTERVENTION_TOKENS)}


@pytest.fixture(scope="module")
def hf_vector(lab, hf):
    """The steering vector from transformers' hidden states: mean output of decoder layer
    STEER_LAYER over the positive texts minus that over the negative ones (positions after
    <bos>)."""
    def mean_resid(texts):
        # hidden_states[layer + 1] is the output of decoder layer `layer`.
        means = []
        for text in texts:
            out = _hf_logits(hf, lab.tokenizer.encode(text, add_bos=True),
                             output_hidden_states=True)
            means.append(out.hidden_states[spec.STEER_LAYER + 1][0, 1:].double().numpy()
                         .mean(axis=0))
        return np.mean(means, axis=0)

    return mean_resid(spec.STEER_POSITIVE) - mean_resid(spec.STEER_NEGATIVE)


@pytest.fixture(scope="module")
def hf_steered(lab, hf, backend_runs):
    """{backend: transformers steered by that backend's own vector (score, greedy ids)}."""
    ids = lab.tokenizer.encode(spec.SCORE_TEXT, add_bos=True)
    prompt_ids = lab.tokenizer.encode(spec.STEER_PROMPT, add_bos=True)
    steered = {}
    for backend, arrays in backend_runs.items():
        vector = spec.STEER_SCALE * arrays["own_vector"]
        with _hooked(_add_hook(hf, spec.STEER_LAYER, vector)):
            steered[backend] = {"logprobs": _hf_logprobs(hf, ids),
                                "greedy": _hf_greedy(hf, prompt_ids, spec.INTERVENTION_TOKENS)}
    return steered


@pytest.fixture(scope="module")
def hf_patching(hf, prompt_pair):
    """log p(target) of the corrupted prompt with one clean activation written in, per
    (layer, position) of resid_pre and per (layer, head) of o_proj's input."""
    import torch

    clean, corrupted, target = prompt_pair
    n = len(clean)
    layers = hf.config.num_hidden_layers
    heads, head_dim = hf.config.num_attention_heads, hf.config.head_dim

    def last_logprob(logits):
        return torch.log_softmax(logits[:, -1].double(), dim=-1)[:, target].numpy()

    z_clean: dict[int, torch.Tensor] = {}

    def recorder(layer):
        def hook(module, args):
            z_clean[layer] = args[0][0].clone()  # [position, head * head_dim]
        return hook

    with _hooked(*[hf.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(
            recorder(layer)) for layer in range(layers)]):
        clean_out = _hf_logits(hf, clean, output_hidden_states=True)
    corrupted_out = _hf_logits(hf, corrupted)
    hidden = clean_out.hidden_states  # hidden[l] is the input of decoder layer l (l < layers)

    rows = torch.arange(n)
    resid = np.zeros((layers, n))
    for layer in range(layers):
        source = hidden[layer][0]

        def patch_position(module, args, kwargs, source=source):
            # Row p of the batch takes the clean input of this layer at position p.
            x = (args[0] if args else kwargs["hidden_states"]).clone()
            x[rows, rows] = source[rows]
            if args:
                return (x, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": x}

        with _hooked(hf.model.layers[layer].register_forward_pre_hook(patch_position,
                                                                      with_kwargs=True)):
            with torch.no_grad():
                resid[layer] = last_logprob(hf(torch.tensor([corrupted] * n)).logits)

    per_head = np.zeros((layers, heads))
    for layer in range(layers):
        source = z_clean[layer]

        def patch_head(module, args, source=source):
            # Row h of the batch takes head h's clean slice at every prompt position.
            x = args[0].clone()
            for head in range(heads):
                part = slice(head * head_dim, (head + 1) * head_dim)
                x[head, :, part] = source[:, part]
            return (x, *args[1:])

        with _hooked(hf.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(
                patch_head)):
            with torch.no_grad():
                per_head[layer] = last_logprob(hf(torch.tensor([corrupted] * heads)).logits)
    return {"resid_pre": resid, "heads": per_head,
            "clean": float(last_logprob(clean_out.logits)[0]),
            "corrupted": float(last_logprob(corrupted_out.logits)[0])}


@pytest.fixture(scope="module")
def hf_dla(hf, prompt_pair):
    """Direct logit attribution of the target at the clean prompt's last position, from the
    terms transformers adds to its residual stream."""
    import torch

    clean, _, target = prompt_pair
    layers = hf.config.num_hidden_layers
    heads, head_dim = hf.config.num_attention_heads, hf.config.head_dim
    caught: dict[str, torch.Tensor] = {}

    def keep(name, pre=False):
        if pre:
            return lambda module, args: caught.__setitem__(name, args[0][0, -1].clone())
        return lambda module, args, output: caught.__setitem__(name, output[0, -1].clone())

    handles = [hf.model.norm.register_forward_pre_hook(keep("final", pre=True))]
    for layer, block in enumerate(hf.model.layers):
        handles += [
            block.post_attention_layernorm.register_forward_hook(keep(f"attn{layer}")),
            block.post_feedforward_layernorm.register_forward_hook(keep(f"mlp{layer}")),
            block.self_attn.o_proj.register_forward_pre_hook(keep(f"z{layer}", pre=True)),
        ]
    with _hooked(*handles):
        out = _hf_logits(hf, clean, output_hidden_states=True)
    x = caught["final"]
    with torch.no_grad():
        normed = hf.model.norm(x[None, None])[0, 0]
    r = normed.double().numpy() / x.double().numpy()  # final_norm(x) = r ⊙ x at this x
    u = hf.model.embed_tokens.weight[target].detach().double().numpy()  # tied unembedding
    direction = r * u
    embed = out.hidden_states[0][0, -1].double().numpy()  # the scaled embedding
    attn = np.stack([caught[f"attn{layer}"].double().numpy() for layer in range(layers)])
    mlp = np.stack([caught[f"mlp{layer}"].double().numpy() for layer in range(layers)])

    # Heads: each head's slice of o_proj's input through its columns of o_proj, times the
    # post-attention norm's frozen scale at the layer's o_proj output.
    per_head = np.zeros((layers, heads))
    with torch.no_grad():
        for layer, block in enumerate(hf.model.layers):
            z = caught[f"z{layer}"]
            weight = block.self_attn.o_proj.weight
            parts = torch.stack([weight[:, h * head_dim:(h + 1) * head_dim]
                                 @ z[h * head_dim:(h + 1) * head_dim] for h in range(heads)])
            total = block.self_attn.o_proj(z[None])[0]
            scale = (block.post_attention_layernorm(total[None])[0].double()
                     / total.double()).numpy()
            per_head[layer] = (parts.double().numpy() * scale) @ direction
    return {
        "residual_gap": float(np.abs(embed + attn.sum(0) + mlp.sum(0)
                                     - x.double().numpy()).max()),
        "residual_scale": float(np.abs(x.double().numpy()).max()),
        "embed": float(embed @ direction), "attn": attn @ direction, "mlp": mlp @ direction,
        "heads": per_head, "logit": float(out.logits[0, -1, target]),
        "direct_sum": float(x.double().numpy() @ direction),
    }


# --- 1. zero-ablated heads --------------------------------------------------------------------
def test_head_ablation_matches_transformers_o_proj_hook(lab, run, hf_ablation):
    backend, arrays = run
    base, ablated = arrays["base_logprobs"], arrays["ablate_logprobs"]
    greedy = arrays["ablate_greedy"].tolist()
    diff = _max_diff(ablated, hf_ablation["ablated"])
    effect = _max_diff(ablated, base)
    print(f"\n[{backend}] ablation {spec.ABLATED_HEADS}: max |logprob - HF| {diff:.2e} "
          f"(unablated vs HF {_max_diff(base, hf_ablation['base']):.2e}); effect of the "
          f"ablation {effect:.3f} (HF {_max_diff(hf_ablation['ablated'], hf_ablation['base']):.3f})"
          f"\n  ours {greedy}\n  HF   {hf_ablation['greedy']}")
    assert arrays["ablate_prompt_ids"].tolist() == lab.tokenizer.encode(spec.ABLATION_PROMPT,
                                                                         add_bos=True)
    assert effect > 0.1  # the ablation changes the log-probabilities measurably
    assert _max_diff(base, hf_ablation["base"]) <= TOL
    assert diff <= TOL
    # Hooks hold in every cached decode step: the ablated greedy text differs from the
    # unablated one, and equals transformers' greedy generate under the same hook.
    assert greedy != arrays["base_ablate_greedy"].tolist()
    assert hf_ablation["greedy"] != hf_ablation["base_greedy"]
    assert _same_greedy(greedy, _finish(greedy), hf_ablation["greedy"], lab.tokenizer.stop_ids)


def _finish(greedy: list[int]) -> str:
    return "length" if len(greedy) == spec.INTERVENTION_TOKENS else "eos"


# --- 2. steering ------------------------------------------------------------------------------
def test_steering_vector_matches_numpy_on_transformers_hidden_states(run, hf_vector):
    backend, arrays = run
    vector = arrays["own_vector"]
    diff = np.abs(np.asarray(vector, "float64") - hf_vector)
    scale = float(np.abs(hf_vector).max())
    print(f"\n[{backend}] steering vector (layer {spec.STEER_LAYER}): max |v| {scale:.3f}, "
          f"max |v - HF| {diff.max():.2e} (relative to max |v|: {diff.max() / scale:.2e})")
    assert vector.shape == hf_vector.shape and vector.dtype == np.float32
    # Relative to the vector's scale: the residual stream of Gemma 3 holds entries of 1e4-1e5,
    # whose float32 rounding (~4e-3 at 5e4) alone exceeds 1e-3 absolute in those channels.
    assert diff.max() <= 1e-3 * scale


def test_steering_matches_transformers_forward_hook(lab, run, hf_steered):
    backend, arrays = run
    steered, reference = arrays["steer_logprobs"], hf_steered[backend]
    greedy = arrays["steer_greedy"].tolist()
    diff = _max_diff(steered, reference["logprobs"])
    effect = _max_diff(steered, arrays["base_logprobs"])
    print(f"\n[{backend}] steering x{spec.STEER_SCALE} at layer {spec.STEER_LAYER}: max "
          f"|logprob - HF| {diff:.2e}; effect {effect:.3f}\n  ours {greedy}"
          f"\n  HF   {reference['greedy']}")
    assert effect > 0.1
    assert diff <= TOL
    assert greedy != arrays["base_steer_greedy"].tolist()
    assert _same_greedy(greedy, _finish(greedy), reference["greedy"], lab.tokenizer.stop_ids)


# --- 3. activation patching -------------------------------------------------------------------
@pytest.mark.parametrize("over", ["resid_pre", "heads"])
def test_patching_matches_transformers_hooks(run, prompt_pair, hf_patching, over):
    backend, arrays = run
    scores, want = arrays[f"patch_{over}"], hf_patching[over]
    clean, corrupted = float(arrays[f"patch_{over}_clean"]), float(
        arrays[f"patch_{over}_corrupted"])
    assert scores.shape == want.shape, (scores.shape, want.shape)
    assert arrays[f"patch_{over}_ids"].tolist() == list(prompt_pair[1])
    diff = _max_diff(scores, want)
    baselines = max(abs(clean - hf_patching["clean"]), abs(corrupted - hf_patching["corrupted"]))
    print(f"\n[{backend}] patching {over} {want.shape}: max |score - HF| {diff:.2e}, "
          f"baselines {baselines:.2e} (clean {clean:.3f}, corrupted {corrupted:.3f}, scores "
          f"{want.min():.3f}..{want.max():.3f})")
    assert clean - corrupted > 1.0 and np.ptp(want) > 1.0  # a sweep that can fail
    assert baselines <= PATCH_TOL
    assert diff <= PATCH_TOL


# --- 4. direct logit attribution --------------------------------------------------------------
def test_logit_attribution_matches_numpy_on_transformers_terms(run, hf_dla):
    backend, la = run
    la = {name: la[f"dla_{name}"] for name in ("embed", "attn", "mlp", "heads", "logit",
                                               "direct_sum")}
    sums = abs(float(la["direct_sum"]) - float(la["logit"]))
    heads_sum = _max_diff(la["heads"].sum(axis=1), la["attn"])
    terms = {name: _max_diff(la[name], hf_dla[name]) for name in la}
    print(f"\n[{backend}] logit attribution: logit {float(la['logit']):.4f}, |direct_sum - "
          f"logit| {sums:.2e}, |Σ heads - attn| {heads_sum:.2e}; HF residual reassembly gap "
          f"{hf_dla['residual_gap']:.2e} of max {hf_dla['residual_scale']:.0f}; vs HF: "
          + ", ".join(f"{k} {v:.2e}" for k, v in terms.items()))
    assert hf_dla["residual_gap"] <= 1e-5 * hf_dla["residual_scale"]  # the reference is sound
    assert sums <= TOL
    assert heads_sum <= TOL
    # Absolute, in logit units (contributions here are 0.01-10).
    for name, diff in terms.items():
        assert diff <= TOL, (name, diff)


# --- 5. across backends -----------------------------------------------------------------------
CROSS = ["base_logprobs", "ablate_logprobs", "steer_logprobs", "patch_resid_pre",
         "patch_resid_pre_clean", "patch_resid_pre_corrupted", "patch_heads",
         "patch_heads_clean", "patch_heads_corrupted", "dla_embed", "dla_attn", "dla_mlp",
         "dla_heads", "dla_logit", "dla_direct_sum"]


def test_interventions_agree_across_backends(backend_runs):
    worst = {}
    for name in [*CROSS, "own_vector"]:
        worst[name] = max(_max_diff(backend_runs[a][name], backend_runs[b][name])
                          for i, a in enumerate(BACKENDS) for b in BACKENDS[i + 1:])
    print("\nacross jax / tensorflow / torch, max |diff|: "
          + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
    for name in ("ablate_prompt_ids", "ablate_greedy", "steer_prompt_ids", "steer_greedy"):
        values = [backend_runs[b][name].tolist() for b in BACKENDS]
        assert values[0] == values[1] == values[2], (name, values)
    for name in CROSS:
        assert worst[name] <= TOL, (name, worst[name])
    scale = float(np.abs(backend_runs["jax"]["own_vector"]).max())
    assert worst["own_vector"] <= 1e-3 * scale  # as against HF: relative to max |v|
