"""keras-hub's own generate(), run on the same model: the reference our decode loop must equal."""

from __future__ import annotations

from typing import Any

import numpy as np

from gemma_lab.backend import to_numpy


def keras_hub_greedy_ids(causal_lm: Any, prompt_ids: list[int], max_new_tokens: int,
                         pad_id: int = 0) -> list[int]:
    """Greedy continuation ids from keras-hub's `CausalLM.generate` (no stop tokens).

    Example:
        >>> from gemma_lab.testing import tiny_causal_lm
        >>> len(keras_hub_greedy_ids(tiny_causal_lm(), [2, 10, 11], 4))
        4
    """
    total = len(prompt_ids) + max_new_tokens
    token_ids = np.full((1, total), pad_id, dtype="int32")
    token_ids[0, : len(prompt_ids)] = prompt_ids
    padding_mask = np.zeros((1, total), dtype="int32")
    padding_mask[0, : len(prompt_ids)] = 1
    # generate()'s own pre/post-processing is text-only; its compiled core takes ids.
    causal_lm.compile(sampler="greedy")
    generate_function = causal_lm.make_generate_function()
    out = generate_function({"token_ids": token_ids, "padding_mask": padding_mask}, None)
    ids = to_numpy(out["token_ids"])[0]
    return [int(i) for i in ids[len(prompt_ids) : total]]
