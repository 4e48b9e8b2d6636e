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

/**
 * A token as a short one-line label: newlines as "↵", tabs as "⇥", and a token made only of
 * spaces as "␣" marks so it stays visible. Use `quoteToken` where the exact text matters.
 */
export function tokenLabel(text: string): string {
  const shown = text.replace(/\n/g, '↵').replace(/\t/g, '⇥');
  return shown.length > 0 && shown.trim() === '' ? shown.replace(/ /g, '␣') : shown;
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
