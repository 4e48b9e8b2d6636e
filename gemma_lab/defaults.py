"""Every user-facing default and limit, in one place: the API, the magics, the widgets, the CLI
and the help text all read them from here.

Example:
    >>> from gemma_lab import defaults
    >>> defaults.MAX_NEW_TOKENS, defaults.FINETUNE["rank"]
    (64, 4)
"""

from __future__ import annotations

from types import MappingProxyType

# --- generation ----------------------------------------------------------------------------
MAX_NEW_TOKENS = 64  # default continuation length
MAX_NEW_TOKENS_LIMIT = 8192  # most tokens one generate / stream call may ask for
TOP_K = 5  # alternatives recorded per token (generate, stream, score, logit lens)

# --- attribution ---------------------------------------------------------------------------
ATTRIBUTION_METHOD = "grad_x_input"
# 256 integrated-gradients points keep the completeness error of Gemma 3 270M near 1%.
INTEGRATED_GRADIENTS_STEPS = 256

# --- LoRA fine-tuning ----------------------------------------------------------------------
FINETUNE = MappingProxyType({
    "rank": 4,
    "epochs": 1,
    "learning_rate": 2e-4,
    "batch_size": 4,
    "max_length": 128,
})

__all__ = [
    "ATTRIBUTION_METHOD",
    "FINETUNE",
    "INTEGRATED_GRADIENTS_STEPS",
    "MAX_NEW_TOKENS",
    "MAX_NEW_TOKENS_LIMIT",
    "TOP_K",
]
