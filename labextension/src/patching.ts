/**
 * The activation-patching view: a layers × positions (or layers × heads) heatmap of
 * log p(target) after the corrupted prompt with one activation taken from the clean run,
 * on a sequential scale whose legend marks the clean and corrupted baselines, which are also
 * stated above the heatmap. Hovering a cell names its layer, column and value.
 */

import { IPatching, PatchingOver } from './payload';
import { gradient, sequentialColor } from './colors';
import {
  finite,
  finiteOrNull,
  formatNumber,
  formatSigned,
  h,
  quoteToken,
  setData,
  tokenLabel
} from './dom';
import { renderGrid } from './grid';
import { scaleLegend } from './legend';

export const SECTION_CLASS = 'jp-GemmaLab-patching';
export const BASELINES_CLASS = 'jp-GemmaLab-baselines';
export const BASELINE_CLASS = 'jp-GemmaLab-baseline';

/** What one cell patches, per `over`. */
const PATCHED: Record<PatchingOver, string> = {
  resid_pre: "the residual stream entering that layer at that position",
  attn_out: "that layer's attention output at that position",
  mlp_out: "that layer's MLP output at that position",
  heads: "that head's output (attn.z) at every position"
};

export function renderPatching(patching: IPatching): HTMLElement {
  const section = h('section', SECTION_CLASS);
  section.setAttribute('data-over', String(patching.over));
  const byHead = patching.over === 'heads';
  const target = quoteToken(patching.target ?? '');
  const metric = `log p(${target})`;
  const rows = patching.rows ?? [];
  const columns = patching.columns ?? [];
  const scores = patching.scores ?? [];

  const toolbar = h('div', 'jp-GemmaLab-toolbar');
  toolbar.appendChild(h('span', 'jp-GemmaLab-title', `activation patching · ${patching.over}`));
  toolbar.appendChild(
    h(
      'span',
      'jp-GemmaLab-legend',
      `each cell: ${metric} after the corrupted prompt with ` +
        `${PATCHED[patching.over] ?? 'one activation'} taken from the clean run`
    )
  );
  section.appendChild(toolbar);

  const clean = finiteOrNull(patching.clean);
  const corrupted = finiteOrNull(patching.corrupted);
  const all = finite([...scores.flat(), clean, corrupted]);
  const low = all.length > 0 ? Math.min(...all) : 0;
  const high = all.length > 0 ? Math.max(...all) : 1;
  const share = (value: number) => (high > low ? (value - low) / (high - low) : 0.5);
  const color = (value: number) => sequentialColor(share(value));

  // The baselines, each with a swatch on the same scale as the cells.
  const baselines = h('div', BASELINES_CLASS);
  const baselineRows: [string, string, string | undefined, number | null][] = [
    ['clean', 'clean', patching.clean_prompt, clean],
    ['corrupted', 'corrupted', patching.corrupted_prompt, corrupted]
  ];
  for (const [key, name, prompt, value] of baselineRows) {
    const line = h('div', BASELINE_CLASS);
    line.setAttribute('data-baseline', key);
    setData(line, 'value', value);
    const swatch = h('span', 'jp-GemmaLab-swatch');
    if (value !== null) {
      swatch.style.backgroundColor = color(value);
    }
    line.appendChild(swatch);
    line.appendChild(h('span', 'jp-GemmaLab-baselineName', name));
    line.appendChild(h('span', 'jp-GemmaLab-baselinePrompt', quoteToken(prompt ?? '')));
    line.appendChild(h('span', 'jp-GemmaLab-baselineValue', `${metric} = ${formatNumber(value, 4)}`));
    baselines.appendChild(line);
  }
  if (clean !== null && corrupted !== null) {
    baselines.appendChild(
      h('div', 'jp-GemmaLab-baselineGap', `clean − corrupted = ${formatSigned(clean - corrupted, 4)}`)
    );
  }
  section.appendChild(baselines);

  const columnName = (column: number) =>
    byHead ? String(columns[column] ?? column) : `position ${column} ${quoteToken(columns[column] ?? '')}`;
  const describe = (row: number, column: number, value: number | null): string => {
    const where = `${rows[row] ?? `row ${row}`} · ${columnName(column)}`;
    if (value === null) {
      return `${where}: no value`;
    }
    const parts = [`${where}: ${metric} = ${formatNumber(value, 4)}`];
    if (corrupted !== null) {
      parts.push(`${formatSigned(value - corrupted, 4)} vs corrupted`);
    }
    if (clean !== null && corrupted !== null && Math.abs(clean - corrupted) > 1e-9) {
      parts.push(`recovers ${Math.round((100 * (value - corrupted)) / (clean - corrupted))}% of the gap`);
    }
    return parts.join(' · ');
  };
  const grid = renderGrid({
    rows,
    columns: columns.map(tokenLabel),
    values: scores,
    color,
    describe,
    columnTitle: columnName,
    corner: byHead ? 'layer ↓ head →' : 'layer ↓ position →',
    rotateColumns: !byHead,
    ariaLabel:
      `patching heatmap, ${rows.length} layers × ${columns.length} ` + (byHead ? 'heads' : 'positions'),
    name: 'patching'
  });
  setData(grid.grid, 'min', low);
  setData(grid.grid, 'max', high);

  const markers = [];
  if (clean !== null) {
    markers.push({
      fraction: share(clean),
      label: 'clean',
      side: 'above' as const,
      title: `clean baseline ${formatNumber(clean, 4)}`
    });
  }
  if (corrupted !== null) {
    markers.push({
      fraction: share(corrupted),
      label: 'corrupted',
      side: 'below' as const,
      title: `corrupted baseline ${formatNumber(corrupted, 4)}`
    });
  }
  section.appendChild(
    scaleLegend({
      caption: `${metric}, darker = higher`,
      background: gradient(sequentialColor),
      low: formatNumber(low, 3),
      high: formatNumber(high, 3),
      markers
    })
  );
  section.appendChild(grid.node);
  return section;
}
