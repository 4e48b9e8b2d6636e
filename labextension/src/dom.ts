/**
 * DOM and formatting helpers shared by the views.
 *
 * Model and user text only ever reaches the page through `textContent` or
 * `setAttribute`; nothing here parses HTML.
 */

/** Create an element with an optional class name and text content. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className?: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

/** Set `data-<name>` when the value is a finite number or a string. */
export function setData(node: Element, name: string, value: unknown): void {
  if ((typeof value === 'number' && Number.isFinite(value)) || typeof value === 'string') {
    node.setAttribute(`data-${name}`, String(value));
  }
}

/** A token as a quoted, escaped string, so whitespace and newlines stay visible. */
export function quoteToken(text: string): string {
  return JSON.stringify(text);
}

/** Probability with three decimals, or in exponent form when tiny. */
export function formatProb(prob: number | null | undefined): string {
  if (typeof prob !== 'number' || !Number.isFinite(prob)) {
    return '–';
  }
  return prob !== 0 && prob < 0.001 ? prob.toExponential(1) : prob.toFixed(3);
}

/** Any number with a fixed number of decimals, '–' when missing. */
export function formatNumber(value: number | null | undefined, digits = 3): string {
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    return '–';
  }
  return value.toFixed(digits);
}

/** Natural-log probability, matching the Python `logprob` fields. */
export function logOf(prob: number): number {
  return prob > 0 ? Math.log(prob) : -Infinity;
}

/** A `<select>` whose option values are the indices of `labels`. */
export function indexSelect(className: string, labels: string[], ariaLabel: string): HTMLSelectElement {
  const select = h('select', className);
  select.setAttribute('aria-label', ariaLabel);
  labels.forEach((label, index) => {
    const option = h('option', undefined, label);
    option.value = String(index);
    select.appendChild(option);
  });
  return select;
}

/** A number with an explicit sign ("+0.132", "-0.350"), '–' when missing. */
export function formatSigned(value: number | null | undefined, digits = 3): string {
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    return '–';
  }
  return `${value >= 0 ? '+' : ''}${value.toFixed(digits)}`;
}

/** A number with `digits` significant digits (exponent form when very small or large). */
export function formatSignificant(value: number | null | undefined, digits = 4): string {
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    return '–';
  }
  const magnitude = Math.abs(value);
  if (magnitude !== 0 && (magnitude < 1e-3 || magnitude >= 1e6)) {
    return value.toExponential(digits - 1);
  }
  return String(Number(value.toPrecision(digits)));
}

const BYTE = /<0x([0-9A-Fa-f]{2})>/g;
const BYTES = /(?:<0x[0-9A-Fa-f]{2}>)+/g;
const ONLY_BYTES = /^(?:<0x[0-9A-Fa-f]{2}>)+$/;
const VISIBLE_WHITESPACE: Record<string, string> = { '\n': '↵', '\t': '⇥', '\r': '␍' };
// Control, format, surrogate, private-use and unassigned characters, and separators other
// than the plain space: drawn as nothing or as an empty box, so shown as their code instead.
const INVISIBLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\uFFFD]|(?! )\p{Zs}/u;

function byteValues(piece: string): number[] | null {
  if (!piece || !ONLY_BYTES.test(piece)) {
    return null;
  }
  return (piece.match(BYTE) ?? []).map(m => parseInt(m.slice(3, 5), 16));
}

function hex(value: number, width: number): string {
  return value.toString(16).toUpperCase().padStart(width, '0');
}

/** Bytes as the characters they make, or `\xNN` badges where they make none. */
function decodeBytes(values: number[]): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(new Uint8Array(values));
  } catch {
    return values.map(v => `\\x${hex(v, 2)}`).join('');
  }
}

/**
 * A token as a readable one-line label: newline "↵", tab "⇥", a token of spaces only as "␣"
 * marks, byte-fallback pieces (`<0xE2><0x86><0x92>`) as their character or a `\xNN` badge,
 * invisible characters as `\xNN` / `\uNNNN`, the empty token as "∅". The same rule as
 * gemma_lab/figures/_labels.py `token_display`. Use `quoteToken` where the exact text matters.
 */
export function tokenLabel(text: string): string {
  if (!text) {
    return '∅';
  }
  const decoded = text.replace(BYTES, run => decodeBytes(byteValues(run) ?? []));
  if (decoded.replace(/ /g, '') === '') {
    return '␣'.repeat(decoded.length);
  }
  return Array.from(decoded)
    .map(char => {
      if (char in VISIBLE_WHITESPACE) {
        return VISIBLE_WHITESPACE[char];
      }
      if (INVISIBLE.test(char)) {
        const code = char.codePointAt(0) ?? 0;
        return code < 0x100 ? `\\x${hex(code, 2)}` : `\\u${hex(code, 4)}`;
      }
      return char;
    })
    .join('');
}

/**
 * Labels for a sequence of tokens (their pieces, or texts): a run of single-byte pieces that
 * decodes as UTF-8 is labelled with its character at every position of the run; the rest as
 * `tokenLabel`. The same rule as gemma_lab/figures/_labels.py `token_displays`.
 */
export function tokenLabels(tokens: string[]): string[] {
  const labels = tokens.map(tokenLabel);
  let start = 0;
  while (start < tokens.length) {
    if (byteValues(tokens[start]) === null) {
      start++;
      continue;
    }
    let end = start;
    while (end < tokens.length && byteValues(tokens[end]) !== null) {
      end++;
    }
    let position = start;
    while (position < end) {
      let merged = false;
      for (let stop = Math.min(end, position + 4); stop > position; stop--) {
        const chunk = tokens.slice(position, stop).flatMap(piece => byteValues(piece) ?? []);
        try {
          const shown = new TextDecoder('utf-8', { fatal: true }).decode(new Uint8Array(chunk));
          labels.fill(tokenLabel(shown), position, stop);
          position = stop;
          merged = true;
          break;
        } catch {
          continue;
        }
      }
      if (!merged) {
        position++; // a byte that starts no character keeps its badge
      }
    }
    start = end;
  }
  return labels;
}

/** Labels for payload tokens: by piece where the piece is a byte token, else by text. */
export function payloadTokenLabels(tokens: { text: string; piece?: string }[]): string[] {
  return tokenLabels(
    tokens.map(t => (typeof t.piece === 'string' && byteValues(t.piece) !== null ? t.piece : t.text))
  );
}

/** `value` when it is a finite number, else null. */
export function finiteOrNull(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

/** The finite numbers among `values`. */
export function finite(values: Iterable<number | null | undefined>): number[] {
  const out: number[] = [];
  for (const value of values) {
    if (typeof value === 'number' && Number.isFinite(value)) {
      out.push(value);
    }
  }
  return out;
}
