/**
 * SAE features over a text (kind "features"): the text as tokens, a row of chips for the
 * strongest features, and a readout. Hovering a token lists its strongest features;
 * clicking a feature (a chip, or a feature in the readout) colours every token by that
 * feature's activation, so you see where it fires. Activations are non-negative: one
 * sequential palette (white → purple), with its scale in the legend.
 */

import { IFeatures, IToken } from './payload';
import { formatSignificant, h, quoteToken, setData, tokenLabels } from './dom';

export const SECTION_CLASS = 'jp-GemmaLab-features';
export const TOKEN_CLASS = 'jp-GemmaLab-featureToken';
export const CHIP_CLASS = 'jp-GemmaLab-featureChip';
export const READOUT_CLASS = 'jp-GemmaLab-featureReadout';
export const SELECTED_CLASS = 'jp-GemmaLab-selected';

const IDLE_TEXT = 'hover a token for its strongest features; click a feature to see where it fires';

/** Purple at `share` (0..1) of the selected feature's peak; mirrors figures/sae.py's Purples. */
export function featureColour(share: number): string {
  const s = Math.min(Math.max(share, 0), 1);
  return `rgba(106, 81, 163, ${s.toFixed(3)})`;
}

export function renderFeatures(features: IFeatures, tokens: IToken[]): HTMLElement {
  const section = h('section', SECTION_CLASS);
  const toolbar = h('div', 'jp-GemmaLab-toolbar');
  toolbar.appendChild(h('span', 'jp-GemmaLab-title', `SAE features at ${features.hook}`));
  const stats = [
    `${features.width.toLocaleString()} features`,
    `variance explained ${percent(features.variance_explained)}`,
    `L0 ${formatSignificant(features.l0 ?? null, 3)}`,
    `loss added by splicing ${formatSignificant(features.loss_added ?? null, 3)} nats`
  ];
  toolbar.appendChild(h('span', 'jp-GemmaLab-legend', stats.join(' · ')));
  section.appendChild(toolbar);

  const readout = h('div', READOUT_CLASS, IDLE_TEXT);
  readout.setAttribute('aria-live', 'polite');
  const legend = h('div', 'jp-GemmaLab-legend', '');

  // Full activation rows for the strongest features; the per-token lists fill in the rest.
  const full = new Map<number, number[]>();
  for (const row of features.top ?? []) {
    full.set(row.feature, row.acts);
  }
  const perToken = features.per_token ?? [];
  const activationsOf = (feature: number): number[] =>
    full.get(feature) ??
    tokens.map((_, p) => {
      const hit = (perToken[p] ?? []).find(pair => pair[0] === feature);
      return hit ? hit[1] : 0;
    });

  const strip = h('div', 'jp-GemmaLab-text');
  const labels = tokenLabels(tokens.map(token => token.piece ?? token.text));
  const spans: HTMLSpanElement[] = tokens.map((token, position) => {
    const span = h('span', TOKEN_CLASS, labels[position]);
    setData(span, 'position', position);
    span.addEventListener('mouseenter', () => showToken(position));
    span.addEventListener('focus', () => showToken(position));
    span.tabIndex = 0;
    strip.appendChild(span);
    return span;
  });

  const chips = h('div', 'jp-GemmaLab-featureChips');
  const chipNodes = new Map<number, HTMLButtonElement>();
  for (const row of features.top ?? []) {
    const chip = h('button', CHIP_CLASS, `f${row.feature}`);
    chip.type = 'button';
    chip.title = `feature ${row.feature}: peak ${formatSignificant(row.max ?? null, 4)}`;
    setData(chip, 'feature', row.feature);
    chip.addEventListener('click', () => select(row.feature));
    chipNodes.set(row.feature, chip);
    chips.appendChild(chip);
  }

  let selected: number | null = null;

  function select(feature: number): void {
    selected = feature;
    const acts = activationsOf(feature);
    // <bos> (position 0) carries outsized activations in Gemma: scale by the peak after it,
    // so the text's own tokens stay readable (<bos> saturates).
    const peak = Math.max(0, ...(acts.length > 1 ? acts.slice(1) : acts));
    spans.forEach((span, position) => {
      const value = acts[position] ?? 0;
      span.style.background = featureColour(peak > 0 ? value / peak : 0);
      span.title = `${quoteToken(tokens[position].piece ?? tokens[position].text)} · f${feature} = ${formatSignificant(value, 4)}`;
      setData(span, 'activation', value);
    });
    chipNodes.forEach((chip, id) => chip.classList.toggle(SELECTED_CLASS, id === feature));
    section.setAttribute('data-selected', String(feature));
    legend.textContent =
      `colour: activation of feature ${feature}, white 0 → purple ${formatSignificant(peak, 4)} ` +
      '(its peak in this text after <bos>; <bos> saturates)';
  }

  function showToken(position: number): void {
    readout.replaceChildren();
    const token = tokens[position];
    readout.appendChild(
      h('span', undefined, `position ${position} ${quoteToken(token.piece ?? token.text)}: `)
    );
    const pairs = perToken[position] ?? [];
    if (pairs.length === 0) {
      readout.appendChild(h('span', undefined, 'no active feature'));
    }
    for (const [feature, value] of pairs) {
      const link = h('button', CHIP_CLASS, `f${feature} ${formatSignificant(value, 3)}`);
      link.type = 'button';
      setData(link, 'feature', feature);
      link.addEventListener('click', () => select(feature));
      readout.appendChild(link);
    }
    if (selected !== null) {
      readout.appendChild(
        h('span', 'jp-GemmaLab-legend', ` · selected f${selected}: ${formatSignificant(activationsOf(selected)[position] ?? 0, 4)}`)
      );
    }
  }

  section.appendChild(strip);
  section.appendChild(h('div', 'jp-GemmaLab-legend', 'strongest features in this text (click one):'));
  section.appendChild(chips);
  section.appendChild(readout);
  section.appendChild(legend);
  const first = (features.top ?? [])[0];
  if (first) {
    select(first.feature);
  }
  return section;
}

function percent(value: number | null | undefined): string {
  return typeof value === 'number' && Number.isFinite(value) ? `${(100 * value).toFixed(1)}%` : '–';
}
