"""Sparse autoencoders over hook points: Gemma Scope / SAELens files, feature activations,
splicing and steering, and small SAEs trained inline.

    from gemma_lab.sae import load_sae
    sae = load_sae("layer_6/width_16k/params.npz", hook="blocks.6.resid_post")
    fa = lab.features("The Eiffel Tower is in Paris", sae)        # FeatureActivations
    with lab.hooks(iv.add(sae.W_dec[123], layer=6, scale=8.0)):    # steer with a feature
        lab.generate("I think")
    with lab.hooks(iv.sae_splice(sae)):                            # the site replaced by x̂
        lab.score("The Eiffel Tower is in Paris")
    small = lab.train_sae(texts, hook="blocks.6.resid_post", width=1024, steps=500)
"""

from gemma_lab.sae.examples import FeatureExamples
from gemma_lab.sae.features import FeatureActivations
from gemma_lab.sae.formats import hook_from_config, load_sae
from gemma_lab.sae.model import SAE
from gemma_lab.sae.train import SAETrainingReport

__all__ = ["SAE", "FeatureActivations", "FeatureExamples", "SAETrainingReport",
           "hook_from_config", "load_sae"]
