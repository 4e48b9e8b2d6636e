/**
 * The gemma_lab result payload, v1.
 *
 * Mirrors `JSON_SCHEMA` in gemma_lab/schema.py field for field; change both together.
 * Position i of `attention`, `lens` and `attribution` arrays is `tokens[i]`.
 */

export const SCHEMA_VERSION = 1;

export type ResultKind = 'generation' | 'score' | 'trace' | 'attribution' | 'finetune';

export type TokenRole = 'prompt' | 'generated' | 'scored';

/** One top-k alternative: `[token text, probability]`. */
export type Alternative = [string, number];

export interface IToken {
  text: string;
  id: number;
  role: TokenRole;
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
  timing?: Record<string, unknown>;
}

export interface IPayload {
  version: typeof SCHEMA_VERSION;
  kind: ResultKind;
  text: string;
  prompt?: string;
  tokens: IToken[];
  truncated?: boolean;
  attention?: IAttention;
  lens?: ILens;
  attribution?: IAttribution;
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
  if (record.version !== SCHEMA_VERSION) {
    throw new Error(
      `gemma_lab: payload version ${String(record.version)} is not supported by this ` +
        `labextension (expects ${SCHEMA_VERSION}); install matching gemma_lab and labextension versions.`
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
