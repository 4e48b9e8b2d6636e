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
