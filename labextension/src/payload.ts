/**
 * The gemma_lab result payload, v3 (v1 and v2 payloads, e.g. in saved notebooks, still render).
 *
 * Mirrors `JSON_SCHEMA` in gemma_lab/schema.py field for field; change both together.
 * Position i of `attention`, `lens` and `attribution` arrays is `tokens[i]`.
 * v2 adds the kinds "cache", "patching", "logit_attribution", "comparison" and
 * "classification" and their fields; every v1 payload is a valid v2 payload apart from its version number.
 * v3 adds the kind "features" (SAE feature activations) and its field.
 */

export const SCHEMA_VERSION = 3;

/** Every payload version this labextension renders. */
export const SUPPORTED_VERSIONS: readonly number[] = [1, 2, SCHEMA_VERSION];

export type ResultKind =
  | 'generation'
  | 'score'
  | 'trace'
  | 'attribution'
  | 'finetune'
  | 'cache'
  | 'patching'
  | 'logit_attribution'
  | 'comparison'
  | 'classification'
  | 'features';

export type TokenRole = 'prompt' | 'generated' | 'scored';

/** Who speaks a token of a chat transcript ("markup": turn markers and role names). */
export type Speaker = 'system' | 'user' | 'model' | 'markup';

/** One top-k alternative: `[token text, probability]`. */
export type Alternative = [string, number];

export interface IToken {
  text: string;
  /** The vocabulary entry ("▁" shown as a space); `text` is what it added to the decoded text. */
  piece?: string;
  id: number;
  role: TokenRole;
  /** Set on chat transcripts only. */
  speaker?: Speaker;
  /** Probability the model gave this token at its position; null where unscored (first token). */
  prob?: number | null;
  logprob?: number | null;
  /** 1-based rank of this token in the model's distribution. */
  rank?: number | null;
  /** Entropy of the distribution at this position, in nats. */
  entropy?: number | null;
  top_k?: Alternative[];
}

export interface IAttention {
  layers: number[];
  heads: number[];
  /** `data[i][j]` is the [query][key] matrix of `layers[i]`, `heads[j]`. */
  data: number[][][][];
  truncated?: boolean;
}

export interface ILens {
  layers: number[];
  /** `[layer][position]` */
  top_tokens: string[][];
  top_probs: number[][];
  target_probs: number[][];
}

export interface IAttribution {
  method: string;
  target: string;
  scores: number[];
}

/** kind "cache": one recorded hook point. */
export interface ICachePoint {
  name: string;
  shape: number[];
  mean_abs?: number | null;
  max_abs?: number | null;
  /** RMS over the last axes at each position (absent for attn.pattern). */
  rms_by_position?: (number | null)[];
}

export interface ICache {
  points: ICachePoint[];
  truncated?: boolean;
}

export type PatchingOver = 'resid_pre' | 'attn_out' | 'mlp_out' | 'heads';

/** kind "patching": `scores[row][column]` = log p(target) with that activation patched. */
export interface IPatching {
  over: PatchingOver;
  target: string;
  clean_prompt?: string;
  corrupted_prompt?: string;
  /** "L0", "L1", ... */
  rows: string[];
  /** Token texts (one per position) or "H0", "H1", ... when `over` is "heads". */
  columns: string[];
  scores: (number | null)[][];
  /** Unpatched baselines: log p(target) after the clean / corrupted prompt. */
  clean: number | null;
  corrupted: number | null;
}

/** kind "logit_attribution": direct contributions to the target's logit. */
export interface ILogitAttribution {
  target: string;
  position?: number;
  /** "embed", "L0 attn", "L0 mlp", ... */
  labels: string[];
  values: (number | null)[];
  /** `[layer][head]` */
  heads: (number | null)[][];
  logit: number | null;
  direct_sum?: number | null;
}

/**
 * kind "comparison": the payload's `tokens` are run b's (logprob = log p_b);
 * `diff[i]` = log p_b − log p_a of token i, for the tokens both runs share (up to `diverged_at`).
 */
export interface IComparison {
  /** `[label of run a, label of run b]` */
  labels: string[];
  tokens_a?: string[];
  logprobs_a: (number | null)[];
  logprobs_b: (number | null)[];
  diff: (number | null)[];
  /** First token index where the runs' tokens differ; null when they are the same. */
  diverged_at?: number | null;
  adapter_a?: string | null;
  adapter_b?: string | null;
}

/**
 * kind "classification": `probabilities[text][policy]` = P(violation), the softmax of
 * ShieldGemma's "Yes" / "No" logits. The payload's `tokens` is empty and its `text` is the
 * text (or "N texts").
 */
export interface IClassification {
  texts: string[];
  /** The classified model responses, one per text; null when the texts are prompts. */
  responses?: string[] | null;
  /** Built-in names ("harassment", ...), your own names, or "custom 1", ... */
  policies: string[];
  /** `[text][policy]`, each in 0..1. */
  probabilities: (number | null)[][];
}

/** kind "features" (v3): an SAE's features over the tokens, <bos> first. */
export interface IFeatures {
  hook: string;
  width: number;
  source?: string;
  /** per_token[position]: [feature, activation] pairs, strongest first. */
  per_token: [number, number][][];
  /** The strongest features over the text, each with its activation at every position. */
  top: { feature: number; max?: number; acts: number[] }[];
  relative_error?: (number | null)[];
  variance_explained?: number | null;
  loss_added?: number | null;
  l0?: number | null;
}

export interface ILoss {
  train?: number[];
  validation?: number[];
}

export interface IMetadata {
  model?: string;
  weights_sha256?: string | null;
  backend?: string;
  dtype?: string;
  sampler?: Record<string, unknown>;
  seed?: number | null;
  adapter?: string | null;
  mesh?: string;
  timing?: Record<string, unknown>;
}

export interface IPayload {
  version: 1 | 2 | typeof SCHEMA_VERSION;
  kind: ResultKind;
  text: string;
  prompt?: string;
  tokens: IToken[];
  truncated?: boolean;
  /** Record-level numbers worth a glance: finish_reason, perplexity, total_logprob, ... */
  summary?: Record<string, number | string | boolean | null>;
  attention?: IAttention;
  lens?: ILens;
  attribution?: IAttribution;
  cache?: ICache;
  patching?: IPatching;
  logit_attribution?: ILogitAttribution;
  comparison?: IComparison;
  classification?: IClassification;
  features?: IFeatures;
  loss?: ILoss;
  metadata: IMetadata;
}

/**
 * Return `data` as a payload, or throw an Error whose message says what to do.
 *
 * Checks only what the renderer relies on; the Python side validates the full schema.
 */
export function asPayload(data: unknown): IPayload {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw new Error('gemma_lab: the output is not a JSON object.');
  }
  const record = data as Record<string, unknown>;
  if (typeof record.version !== 'number' || !SUPPORTED_VERSIONS.includes(record.version)) {
    throw new Error(
      `gemma_lab: payload version ${String(record.version)} is not supported by this ` +
        `labextension (expects ${SUPPORTED_VERSIONS.join(' or ')}); install matching gemma_lab ` +
        'and labextension versions.'
    );
  }
  if (!Array.isArray(record.tokens)) {
    throw new Error('gemma_lab: the payload has no "tokens" array.');
  }
  if (typeof record.metadata !== 'object' || record.metadata === null) {
    return { ...(record as unknown as IPayload), metadata: {} };
  }
  return record as unknown as IPayload;
}
