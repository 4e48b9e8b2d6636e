/**
 * The direct-logit-attribution view: one bar per component (embed, each layer's attention and
 * MLP) of its direct contribution to the target's logit, blue for raising it and red for
 * lowering it, drawn from a shared zero line; then a [layer × head] diverging heatmap of the
 * heads' contributions with a hover readout.
 */

import { ILogitAttribution, IToken } from './payload';
import { gainBarColor, gainColor, gradient } from './colors';
import { finite, finiteOrNull, formatNumber, formatSigned, h, quoteToken, setData } from './dom';
import { renderGrid } from './grid';
import { scaleLegend } from './legend';

export const SECTION_CLASS = 'jp-GemmaLab-logitAttribution';
export const BARS_CLASS = 'jp-GemmaLab-dlaBars';
export const BAR_ROW_CLASS = 'jp-GemmaLab-dlaRow';
export const BAR_CLASS = 'jp-GemmaLab-dlaBar';
export const TOTALS_CLASS = 'jp-GemmaLab-dlaTotals';

export function renderLogitAttribution(
  attribution: ILogitAttribution,
  tokens: IToken[]
): HTMLElement {
  const section = h('section', SECTION_CLASS);
  const target = quoteToken(attribution.target ?? '');
  const position = attribution.position;
  const after = typeof position === 'number' ? tokens[position] : undefined;
  const at =
    typeof position === 'number'
      ? ` at position ${position}` + (after ? ` (after ${quoteToken(after.text)})` : '')
      : '';

  const toolbar = h('div', 'jp-GemmaLab-toolbar');
  toolbar.appendChild(h('span', 'jp-GemmaLab-title', 'direct logit attribution'));
  toolbar.appendChild(
    h(
      'span',
      'jp-GemmaLab-legend',
      `contributions to the logit of ${target}${at}: blue raises it, red lowers it`
    )
  );
  section.appendChild(toolbar);

  const totals = h('div', TOTALS_CLASS);
  setData(totals, 'logit', attribution.logit);
  setData(totals, 'direct-sum', attribution.direct_sum);
  const parts = [`logit ${formatNumber(attribution.logit, 4)}`];
  if (attribution.direct_sum !== undefined) {
    parts.push(`sum of the components ${formatNumber(attribution.direct_sum, 4)}`);
  }
  totals.textContent = parts.join(' · ');
  section.appendChild(totals);

  // Bars from a zero line in the middle of the track, scaled by the largest |value|.
  const labels = attribution.labels ?? [];
  const values = attribution.values ?? [];
  const scale = Math.max(0, ...finite(values).map(Math.abs));
  const bars = h('div', BARS_CLASS);
  bars.setAttribute('role', 'list');
  labels.forEach((label, index) => {
    const value = finiteOrNull(values[index]);
    const row = h('div', BAR_ROW_CLASS);
    row.setAttribute('role', 'listitem');
    row.setAttribute('data-index', String(index));
    row.setAttribute('data-label', label);
    setData(row, 'value', value);
    row.appendChild(h('span', 'jp-GemmaLab-dlaLabel', label));
    const track = h('span', 'jp-GemmaLab-dlaTrack');
    if (value !== null) {
      const bar = h('span', BAR_CLASS);
      const half = scale > 0 ? (50 * Math.abs(value)) / scale : 0;
      bar.style.width = `${half.toFixed(2)}%`;
      bar.style.left = value >= 0 ? '50%' : `${(50 - half).toFixed(2)}%`;
      bar.style.backgroundColor = gainBarColor(value);
      bar.classList.add(value >= 0 ? 'jp-mod-positive' : 'jp-mod-negative');
      track.appendChild(bar);
    }
    row.appendChild(track);
    row.appendChild(h('span', 'jp-GemmaLab-dlaValue', formatSigned(value, 3)));
    row.setAttribute(
      'title',
      value === null ? `${label}: no value` : `${label}: ${formatSigned(value, 4)} to the logit of ${target}`
    );
    bars.appendChild(row);
  });
  section.appendChild(bars);

  const heads = attribution.heads ?? [];
  const headCount = Math.max(0, ...heads.map(row => row.length));
  if (heads.length > 0 && headCount > 0) {
    const headScale = Math.max(0, ...finite(heads.flat()).map(Math.abs));
    const rows = heads.map((_, layer) => `L${layer}`);
    const columns = Array.from({ length: headCount }, (_, head) => `H${head}`);
    const grid = renderGrid({
      rows,
      columns,
      values: heads,
      color: value => gainColor(headScale > 0 ? value / headScale : 0),
      describe: (row, column, value) =>
        value === null
          ? `${rows[row]} · ${columns[column]}: no value`
          : `${rows[row]} · ${columns[column]}: ${formatSigned(value, 4)} to the logit of ${target}`,
      corner: 'layer ↓ head →',
      rotateColumns: false,
      ariaLabel: `per-head logit attribution, ${rows.length} layers × ${headCount} heads`,
      name: 'heads'
    });
    const heading = h('div', 'jp-GemmaLab-subtitle', 'per head (attention output of each head)');
    section.appendChild(heading);
    section.appendChild(
      scaleLegend({
        caption: 'blue raises, red lowers the logit',
        background: gradient(t => gainColor(t), -1, 1, 11),
        low: formatSigned(-headScale, 3),
        high: formatSigned(headScale, 3)
      })
    );
    section.appendChild(grid.node);
  }
  return section;
}
