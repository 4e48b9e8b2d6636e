"""The versioned JSON payload every gemma_lab result renders as.

One place defines it: `MIME_TYPE`, `SCHEMA_VERSION` and `JSON_SCHEMA`. The JupyterLab
extension (labextension/src/payload.ts) mirrors it field for field.
"""

from __future__ import annotations

from typing import Any

MIME_TYPE = "application/vnd.gemma-lab.v1+json"
SCHEMA_VERSION = 1

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
    "title": "gemma_lab result payload v1",
    "type": "object",
    "required": ["version", "kind", "text", "tokens", "metadata"],
    "properties": {
        "version": {"const": SCHEMA_VERSION},
        "kind": {"enum": ["generation", "score", "trace", "attribution", "finetune"]},
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
                "timing": {"type": "object"},
            },
        },
    },
}
