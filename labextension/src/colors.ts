/**
 * Colour scales: one function per kind of quantity, each returning a CSS colour.
 *
 * Backgrounds are translucent so token text stays readable in light and dark themes.
 */

function clamp01(value: number): number {
  return Math.min(1, Math.max(0, Number.isFinite(value) ? value : 0));
}

/** Red (unlikely) → yellow → green (likely). */
export function probabilityColor(prob: number): string {
  const hue = Math.round(120 * clamp01(prob));
  return `hsla(${hue}, 80%, 45%, 0.35)`;
}

/** Transparent (certain) → purple (uncertain); `maxEntropy` is the top of the scale. */
export function entropyColor(entropy: number, maxEntropy: number): string {
  const t = maxEntropy > 0 ? clamp01(entropy / maxEntropy) : 0;
  return `hsla(275, 70%, 50%, ${(0.05 + 0.55 * t).toFixed(3)})`;
}

/** Diverging: blue (negative) ↔ transparent (zero) ↔ red (positive), for `score` in [-1, 1]. */
export function divergingColor(score: number): string {
  const magnitude = clamp01(Math.abs(score));
  const rgb = score >= 0 ? '214, 39, 40' : '31, 119, 180';
  return `rgba(${rgb}, ${(0.7 * magnitude).toFixed(3)})`;
}

const LOW: [number, number, number] = [247, 251, 255];
const MID: [number, number, number] = [107, 174, 214];
const HIGH: [number, number, number] = [8, 48, 107];

/** White → light blue → dark blue, opaque, for heatmap cells with `t` in [0, 1]. */
export function sequentialColor(t: number): string {
  const x = clamp01(t);
  const [from, to, f] = x < 0.5 ? [LOW, MID, x * 2] : [MID, HIGH, (x - 0.5) * 2];
  const channel = (i: number) => Math.round(from[i] + (to[i] - from[i]) * f);
  return `rgb(${channel(0)}, ${channel(1)}, ${channel(2)})`;
}

/** Whether text drawn on `sequentialColor(t)` should be light. */
export function needsLightText(t: number): boolean {
  return clamp01(t) > 0.6;
}
