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

const BLUE = '31, 119, 180';
const RED = '214, 39, 40';

/**
 * Diverging for gains and losses: blue (positive) ↔ transparent (zero) ↔ red (negative), for
 * `score` in [-1, 1]: the one palette for signed effects on the target (attribution: blue for,
 * red against; comparison strip; logit attribution).
 */
export function gainColor(score: number): string {
  const value = Number.isFinite(score) ? score : 0;
  const magnitude = clamp01(Math.abs(value));
  // A small floor keeps the sign visible for tiny non-zero values; exactly zero is clear.
  const alpha = magnitude === 0 ? 0 : 0.08 + 0.67 * magnitude;
  return `rgba(${value >= 0 ? BLUE : RED}, ${alpha.toFixed(3)})`;
}

/** Opaque blue or red for a bar of positive / negative value. */
export function gainBarColor(value: number): string {
  return `rgb(${value >= 0 ? BLUE : RED})`;
}

/** A CSS linear-gradient (left → right) sampling `color` at `steps` points of [from, to]. */
export function gradient(color: (t: number) => string, from = 0, to = 1, steps = 9): string {
  const stops = Array.from({ length: steps }, (_, i) => {
    const t = from + ((to - from) * i) / (steps - 1);
    return `${color(t)} ${((100 * i) / (steps - 1)).toFixed(1)}%`;
  });
  return `linear-gradient(to right, ${stops.join(', ')})`;
}

const NEUTRAL: [number, number, number] = [190, 190, 190];
const SALMON: [number, number, number] = [239, 138, 98];
const DEEP_RED: [number, number, number] = [190, 20, 35];

/** Neutral grey (0) → salmon (0.5) → deep red (1), opaque, for a probability of violation. */
export function violationColor(prob: number): string {
  const x = clamp01(prob);
  const [from, to, f] = x < 0.5 ? [NEUTRAL, SALMON, x * 2] : [SALMON, DEEP_RED, (x - 0.5) * 2];
  const channel = (i: number) => Math.round(from[i] + (to[i] - from[i]) * f);
  return `rgb(${channel(0)}, ${channel(1)}, ${channel(2)})`;
}
