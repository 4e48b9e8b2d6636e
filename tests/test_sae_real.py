"""SAEs on the default model (Gemma 3 270M) against transformers' own GGUF loader:
feature activations equal a NumPy JumpReLU of transformers' hidden states; a spliced SAE
gives the log-probabilities of transformers with the same reconstruction written in by a
torch forward hook; an exact SAE changes nothing; an SAE trained inline on the residual
stream explains a reported share of held-out variance."""

from __future__ import annotations

import numpy as np
import pytest

from gemma_lab import interventions as iv
from gemma_lab.sae import SAE, load_sae

pytestmark = pytest.mark.real_model

LAYER = 6
HOOK = f"blocks.{LAYER}.resid_post"
TEXT = "The Eiffel Tower is in Paris, and the Colosseum is in Rome."
# A small corpus for inline training (the last fifth is held out).
CORPUS = [
    "The cat sat on the mat and looked out of the window.",
    "Paris is the capital of France; Berlin is the capital of Germany.",
    "She opened the box and found a small golden key inside.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "The stock market fell sharply after the announcement on Monday.",
    "He played the violin every evening before dinner.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
    "The train to London leaves from platform nine at seven o'clock.",
    "def add(a, b):\n    return a + b",
    "In 1969, astronauts landed on the Moon for the first time.",
    "My favourite fruits are apples, oranges and ripe bananas.",
    "The committee will meet again next Thursday to vote on the budget.",
    "Rain is expected tomorrow, so bring an umbrella and a coat.",
    "The recipe needs two eggs, a cup of flour and some butter.",
    "Quantum computers use qubits that can be in superpositions.",
    "The children laughed as the puppy chased its own tail.",
    "Mount Everest is the highest mountain above sea level.",
    "for i in range(10):\n    print(i * i)",
    "The library closes at nine, but the reading room stays open.",
    "A triangle has three sides and its angles add up to 180 degrees.",
    "The orchestra tuned their instruments before the concert began.",
    "Tokyo is a busy city with trains that run exactly on time.",
    "The doctor asked him to rest and drink plenty of water.",
    "Shakespeare wrote plays such as Hamlet, Macbeth and Othello.",
    "The river flooded the fields after a week of heavy rain.",
    "Bitcoin prices rose again as investors bought more coins.",
    "The old lighthouse guided ships safely into the harbour.",
    "Our team won the final match by two goals to one.",
    "Elephants are the largest land animals on Earth.",
    "Please send the report to the manager before Friday noon.",
]


@pytest.fixture(scope="module")
def lab(default_lab):
    return default_lab


@pytest.fixture(scope="module")
def hf_hidden(lab, hf_gguf_model):
    """transformers' output of decoder layer LAYER (hidden_states[LAYER + 1]) for TEXT."""
    import torch

    ids = lab.tokenizer.encode(TEXT, add_bos=True)
    with torch.no_grad():
        out = hf_gguf_model(torch.tensor([ids]), output_hidden_states=True)
    return ids, out.hidden_states[LAYER + 1][0].double().numpy()


def _gemma_scope_like(x: np.ndarray, width: int, seed: int) -> dict[str, np.ndarray]:
    """Random Gemma-Scope-shaped parameters whose thresholds sit halfway between two
    neighbouring pre-activations of `x` (about the 80th percentile), so every activation is
    far from its threshold compared to the float32 differences between two implementations."""
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    w_enc = rng.normal(size=(d, width)) / np.sqrt(d * (x ** 2).mean())
    b_enc = rng.normal(size=width) * 0.05
    pre = np.sort(x @ w_enc + b_enc, axis=0)
    k = int(0.8 * len(x))
    threshold = np.maximum((pre[k - 1] + pre[k]) / 2, 0.0)
    return {"W_enc": w_enc.astype("float32"), "W_dec": (rng.normal(size=(width, d)) * np.sqrt(
        (x[1:] ** 2).mean() / width)).astype("float32"), "b_enc": b_enc.astype("float32"),
        "b_dec": np.zeros(d, "float32"), "threshold": threshold.astype("float32")}


def _jumprelu(x, p):
    pre = x @ p["W_enc"].astype("float64") + p["b_enc"]
    return pre * (pre > p["threshold"])


def test_features_equal_numpy_jumprelu_on_transformers_hidden_states(lab, hf_hidden, tmp_path):
    ids, hidden = hf_hidden
    params = _gemma_scope_like(hidden[1:], 512, seed=0)
    np.savez(tmp_path / "params.npz", **params)  # Gemma Scope's file format
    sae = load_sae(tmp_path / "params.npz", hook=HOOK)
    fa = lab.features(TEXT, sae, splice_loss=False)
    assert list(fa.token_ids) == list(ids)
    want = _jumprelu(hidden, params)
    active = want[1:] > 0
    assert 0.05 < active.mean() < 0.5
    error = np.abs(fa.acts - want).max() / np.abs(want).max()
    print(f"SAE features vs NumPy JumpReLU on transformers: max rel error {error:.2e}")
    assert error <= 1e-3
    assert np.array_equal(fa.acts[1:] > 0, active)


def test_spliced_sae_equals_transformers_with_the_same_reconstruction(lab, hf_hidden,
                                                                      hf_gguf_model):
    import torch

    ids, hidden = hf_hidden
    params = _gemma_scope_like(hidden[1:], 512, seed=1)
    sae = SAE(**params, hook=HOOK)

    def splice_hook(module, args, output):
        x = (output[0] if isinstance(output, tuple) else output)[0].double().numpy()
        recon = _jumprelu(x, params) @ params["W_dec"] + params["b_dec"]
        new = torch.as_tensor(recon[None], dtype=torch.float32)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = hf_gguf_model.model.layers[LAYER].register_forward_hook(splice_hook)
    try:
        with torch.no_grad():
            logits = hf_gguf_model(torch.tensor([ids])).logits[0].double()
    finally:
        handle.remove()
    theirs = torch.log_softmax(logits, -1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    fa = lab.features(TEXT, sae)
    diff = np.abs(np.asarray(fa.spliced_logprobs) - theirs.numpy()).max()
    print(f"spliced log p vs transformers with the same splice: max |diff| {diff:.2e}; "
          f"loss added {fa.loss_added:.3f} nats")
    assert diff <= 2e-3
    assert fa.loss_added > 0.1  # a random SAE is a poor one: the splice matters


def test_splicing_an_exact_sae_leaves_log_probabilities_unchanged(lab):
    exact = SAE.identity_like(640, HOOK, seed=0)
    base = lab.score(TEXT).logprobs
    with lab.hooks(iv.sae_splice(exact)):
        spliced = lab.score(TEXT).logprobs
    diff = float(np.abs(np.asarray(spliced) - np.asarray(base)).max())
    print(f"exact SAE spliced at {HOOK}: max |Δ log p| {diff:.2e}")
    assert diff <= 1e-3


def test_an_sae_trained_inline_explains_held_out_variance(lab):
    sae = lab.train_sae(CORPUS, hook=HOOK, width=512, steps=300, batch_size=256, l1=1.0,
                        progress=False)
    report = sae.training
    print(f"trained SAE at {HOOK}: {report.train_tokens} training / {report.held_out_tokens} "
          f"held-out tokens, variance explained {report.variance_explained:.3f}, L0 "
          f"{report.l0:.1f}, dead {report.dead_fraction:.1%}")
    assert report.losses[-1] < report.losses[0] / 2
    assert report.variance_explained > 0.5
    assert report.l0 < sae.width / 4  # sparse
    fa = lab.features(CORPUS[-1], sae)
    assert fa.variance_explained > 0.3 and fa.loss_added is not None
