"""The versioned JSON payload every gemma_lab result renders as.

One place defines it: `MIME_TYPE`, `SCHEMA_VERSION` and `JSON_SCHEMA`. The JupyterLab
extension (labextension/src/payload.ts) mirrors it field for field.
"""

from __future__ import annotations

from typing import Any

MIME_TYPE = "application/vnd.gemma-lab.v1+json"
# 2 (gemma_lab 0.3): adds the kinds "cache", "patching", "logit_attribution",
# "comparison", "classification" and their fields; every v1 payload is still valid v2
# apart from its version number.
# 3 (gemma_lab 0.4): adds the kind "features" (SAE feature activations) and its field.
SCHEMA_VERSION = 3

# Payload caps: larger arrays are summarised and `truncated` says so.
MAX_TOKENS = 2048
MAX_TOP_K = 20

_top_k = {
    "type": "array",
    "items": {
        "type": "array",
        "prefixItems": [{"type": "string"}, {"type": "number"}],
        "minItems": 2,
        "maxItems": 2,
    },
}

_token = {
    "type": "object",
    "required": ["text", "id", "role"],
    "properties": {
        "text": {"type": "string"},
        # The vocabulary entry ("▁" shown as a space); `text` is what the token added to the
        # decoded text, empty while a multi-byte character is incomplete.
        "piece": {"type": "string"},
        "id": {"type": "integer"},
        "role": {"enum": ["prompt", "generated", "scored"]},
        # In a chat transcript: who speaks the token ("markup": turn markers, role names).
        "speaker": {"enum": ["system", "user", "model", "markup"]},
        "prob": {"type": ["number", "null"]},
        "logprob": {"type": ["number", "null"]},
        "rank": {"type": ["integer", "null"]},
        "entropy": {"type": ["number", "null"]},
        "top_k": _top_k,
    },
}

_matrix = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}

JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "gemma_lab result payload v2",
    "type": "object",
    "required": ["version", "kind", "text", "tokens", "metadata"],
    "properties": {
        # older payloads (saved notebooks) still render
        "version": {"enum": [1, 2, SCHEMA_VERSION]},
        "kind": {"enum": ["generation", "score", "trace", "attribution", "finetune", "cache",
                          "patching", "logit_attribution", "comparison", "classification",
                          "features"]},
        "text": {"type": "string"},
        "prompt": {"type": "string"},
        "tokens": {"type": "array", "items": _token},
        "truncated": {"type": "boolean"},
        # Record-level numbers worth a glance: finish_reason, perplexity, total_logprob, ...
        "summary": {
            "type": "object",
            "additionalProperties": {"type": ["number", "string", "boolean", "null"]},
        },
        "attention": {
            "type": "object",
            "required": ["layers", "heads", "data"],
            "properties": {
                "layers": {"type": "array", "items": {"type": "integer"}},
                "heads": {"type": "array", "items": {"type": "integer"}},
                # data[i][j] is the [query, key] matrix of layers[i], heads[j].
                "data": {"type": "array", "items": {"type": "array", "items": _matrix}},
                "truncated": {"type": "boolean"},
            },
        },
        "lens": {
            "type": "object",
            "required": ["layers", "top_tokens", "top_probs", "target_probs"],
            "properties": {
                "layers": {"type": "array", "items": {"type": "integer"}},
                # [layer][position]
                "top_tokens": {
                    "type": "array",
                    "items": {"type": "array", "items": {"type": "string"}},
                },
                "top_probs": _matrix,
                "target_probs": _matrix,
            },
        },
        "attribution": {
            "type": "object",
            "required": ["method", "target", "scores"],
            "properties": {
                "method": {"type": "string"},
                "target": {"type": "string"},
                "scores": {"type": "array", "items": {"type": "number"}},
            },
        },
        # kind "features": an SAE's features over the tokens (<bos> first).
        "features": {
            "type": "object",
            "required": ["hook", "width", "per_token", "top"],
            "properties": {
                "hook": {"type": "string"},
                "width": {"type": "integer"},
                "source": {"type": "string"},
                # per_token[position]: [feature, activation] pairs, strongest first.
                "per_token": {"type": "array", "items": {"type": "array", "items": {
                    "type": "array", "prefixItems": [{"type": "integer"}, {"type": "number"}],
                    "minItems": 2, "maxItems": 2}}},
                # The strongest features over the text, each with its activation everywhere.
                "top": {"type": "array", "items": {
                    "type": "object", "required": ["feature", "acts"],
                    "properties": {"feature": {"type": "integer"}, "max": {"type": "number"},
                                   "acts": {"type": "array", "items": {"type": "number"}}}}},
                # ‖x - x̂‖² / ‖x‖² at each position.
                "relative_error": {"type": "array", "items": {"type": ["number", "null"]}},
                "variance_explained": {"type": ["number", "null"]},
                "loss_added": {"type": ["number", "null"]},
                "l0": {"type": ["number", "null"]},
            },
        },
        # kind "cache": one row per recorded hook point.
        "cache": {
            "type": "object",
            "required": ["points"],
            "properties": {
                "points": {"type": "array", "items": {
                    "type": "object",
                    "required": ["name", "shape"],
                    "properties": {
                        "name": {"type": "string"},
                        "shape": {"type": "array", "items": {"type": "integer"}},
                        "mean_abs": {"type": ["number", "null"]},
                        "max_abs": {"type": ["number", "null"]},
                        # RMS over the last axes at each position (not for attn.pattern).
                        "rms_by_position": {"type": "array",
                                            "items": {"type": ["number", "null"]}},
                    },
                }},
                "truncated": {"type": "boolean"},
            },
        },
        # kind "patching": scores[row][column] = log p(target) with that activation patched.
        "patching": {
            "type": "object",
            "required": ["over", "target", "rows", "columns", "scores", "clean", "corrupted"],
            "properties": {
                "over": {"enum": ["resid_pre", "attn_out", "mlp_out", "heads"]},
                "target": {"type": "string"},
                "clean_prompt": {"type": "string"},
                "corrupted_prompt": {"type": "string"},
                "rows": {"type": "array", "items": {"type": "string"}},  # "L0", "L1", ...
                "columns": {"type": "array", "items": {"type": "string"}},  # tokens or "H0"...
                "scores": _matrix,
                "clean": {"type": ["number", "null"]},
                "corrupted": {"type": ["number", "null"]},
            },
        },
        # kind "logit_attribution": direct contributions to the target's logit.
        "logit_attribution": {
            "type": "object",
            "required": ["target", "labels", "values", "heads", "logit"],
            "properties": {
                "target": {"type": "string"},
                "position": {"type": "integer"},
                "layers": {"type": "array", "items": {"type": "string"}},  # heads' row labels
                "labels": {"type": "array", "items": {"type": "string"}},  # "embed", "L0 attn"
                "values": {"type": "array", "items": {"type": ["number", "null"]}},
                "heads": _matrix,  # [layer][head]
                "logit": {"type": ["number", "null"]},
                "direct_sum": {"type": ["number", "null"]},
            },
        },
        # kind "comparison": `tokens` are run b's (logprob = log p_b); diff[i] = log p_b −
        # log p_a of token i, for the tokens both runs share (up to diverged_at).
        "comparison": {
            "type": "object",
            "required": ["labels", "logprobs_a", "logprobs_b", "diff"],
            "properties": {
                "labels": {"type": "array", "items": {"type": "string"},
                           "minItems": 2, "maxItems": 2},
                "tokens_a": {"type": "array", "items": {"type": "string"}},
                "logprobs_a": {"type": "array", "items": {"type": ["number", "null"]}},
                "logprobs_b": {"type": "array", "items": {"type": ["number", "null"]}},
                "diff": {"type": "array", "items": {"type": ["number", "null"]}},
                "diverged_at": {"type": ["integer", "null"]},
                "adapter_a": {"type": ["string", "null"]},
                "adapter_b": {"type": ["string", "null"]},
            },
        },
        # kind "classification": probabilities[text][policy] = P(violation).
        "classification": {
            "type": "object",
            "required": ["texts", "policies", "probabilities"],
            "properties": {
                "texts": {"type": "array", "items": {"type": "string"}},
                "responses": {"type": ["array", "null"], "items": {"type": "string"}},
                "policies": {"type": "array", "items": {"type": "string"}},
                "policy_texts": {"type": "array", "items": {"type": "string"}},
                "probabilities": _matrix,
            },
        },
        "loss": {
            "type": "object",
            "properties": {
                "train": {"type": "array", "items": {"type": "number"}},
                "validation": {"type": "array", "items": {"type": "number"}},
            },
        },
        "metadata": {
            "type": "object",
            "properties": {
                "model": {"type": "string"},
                "weights_sha256": {"type": ["string", "null"]},
                "backend": {"type": "string"},
                "dtype": {"type": "string"},
                "sampler": {"type": "object"},
                "seed": {"type": ["integer", "null"]},
                "adapter": {"type": ["string", "null"]},
                "mesh": {"type": "string"},
                "timing": {"type": "object"},
            },
        },
    },
}
