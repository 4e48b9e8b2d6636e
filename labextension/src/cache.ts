/**
 * The activation-cache summary: one table row per recorded hook point with its shape,
 * mean |x|, max |x| and a strip of bars of its RMS at each position (each row scaled to its
 * own largest RMS); hovering a bar names the position, its token and the value.
 */

import { ICache, IToken } from './payload';
import { finite, formatSignificant, h, quoteToken, setData } from './dom';

export const SECTION_CLASS = 'jp-GemmaLab-cache';
export const TABLE_CLASS = 'jp-GemmaLab-cacheTable';
export const ROW_CLASS = 'jp-GemmaLab-cacheRow';
export const SPARKLINE_CLASS = 'jp-GemmaLab-sparkline';
export const SPARK_BAR_CLASS = 'jp-GemmaLab-sparkBar';
export const READOUT_CLASS = 'jp-GemmaLab-cacheReadout';

/** Height of the tallest bar and width of one bar, in CSS pixels. */
const BAR_HEIGHT = 22;
const MIN_BAR_WIDTH = 2;
const MAX_BAR_WIDTH = 10;
const STRIP_WIDTH = 240;

const IDLE_TEXT = 'hover a bar for the RMS at that position';

export function renderCache(cache: ICache, tokens: IToken[], text: string): HTMLElement {
  const section = h('section', SECTION_CLASS);
  const points = cache.points ?? [];
  const positions = Math.max(tokens.length, ...points.map(p => p.rms_by_position?.length ?? 0));

  const toolbar = h('div', 'jp-GemmaLab-toolbar');
  toolbar.appendChild(h('span', 'jp-GemmaLab-title', 'activation cache'));
  toolbar.appendChild(
    h(
      'span',
      'jp-GemmaLab-legend',
      `${points.length} hook point${points.length === 1 ? '' : 's'} of ${quoteToken(text)} over ` +
        `${positions} positions (<bos> first)`
    )
  );
  if (cache.truncated) {
    toolbar.appendChild(h('span', 'jp-GemmaLab-notice', 'truncated'));
  }
  section.appendChild(toolbar);

  const scroller = h('div', 'jp-GemmaLab-scroll');
  const table = h('table', TABLE_CLASS);
  const head = h('tr');
  for (const label of ['point', 'shape', 'mean |x|', 'max |x|', 'RMS by position']) {
    head.appendChild(h('th', undefined, label));
  }
  table.appendChild(head);

  const readout = h('div', READOUT_CLASS, IDLE_TEXT);
  readout.setAttribute('aria-live', 'polite');
  points.forEach((point, index) => {
    const row = h('tr', ROW_CLASS);
    row.setAttribute('data-index', String(index));
    row.setAttribute('data-name', point.name);
    row.appendChild(h('td', 'jp-GemmaLab-cacheName', point.name));
    const shape = (point.shape ?? []).join(' × ');
    const shapeCell = h('td', 'jp-GemmaLab-cacheShape', shape === '' ? 'scalar' : shape);
    row.appendChild(shapeCell);
    const mean = h('td', 'jp-GemmaLab-cacheNumber', formatSignificant(point.mean_abs));
    setData(mean, 'value', point.mean_abs);
    mean.setAttribute('data-stat', 'mean_abs');
    row.appendChild(mean);
    const max = h('td', 'jp-GemmaLab-cacheNumber', formatSignificant(point.max_abs));
    setData(max, 'value', point.max_abs);
    max.setAttribute('data-stat', 'max_abs');
    row.appendChild(max);

    const stripCell = h('td', 'jp-GemmaLab-cacheStrip');
    const rms = point.rms_by_position;
    if (!rms || rms.length === 0) {
      stripCell.appendChild(h('span', 'jp-GemmaLab-empty', 'not recorded for this point'));
    } else {
      const top = Math.max(0, ...finite(rms));
      const fit = Math.floor(STRIP_WIDTH / rms.length) - 1;
      const width = Math.max(MIN_BAR_WIDTH, Math.min(MAX_BAR_WIDTH, fit));
      const strip = h('span', SPARKLINE_CLASS);
      strip.setAttribute('role', 'img');
      strip.setAttribute(
        'aria-label',
        `RMS of ${point.name} at ${rms.length} positions, max ${formatSignificant(top)}`
      );
      setData(strip, 'max', top);
      rms.forEach((value, position) => {
        // The bar is a full-height slot (easy to hover) holding the coloured fill.
        const bar = h('span', SPARK_BAR_CLASS);
        bar.setAttribute('data-position', String(position));
        bar.style.width = `${width}px`;
        bar.style.height = `${BAR_HEIGHT}px`;
        const label = `${point.name} · position ${position} ${quoteToken(tokens[position]?.text ?? '')}`;
        if (typeof value === 'number' && Number.isFinite(value)) {
          setData(bar, 'value', value);
          const fill = h('span', 'jp-GemmaLab-sparkFill');
          fill.style.height = `${Math.max(1, (BAR_HEIGHT * value) / (top || 1)).toFixed(2)}px`;
          bar.appendChild(fill);
          bar.setAttribute('title', `${label}: RMS ${formatSignificant(value)}`);
        } else {
          bar.classList.add('jp-mod-missing');
          bar.setAttribute('title', `${label}: no value`);
        }
        strip.appendChild(bar);
      });
      stripCell.appendChild(strip);
      stripCell.appendChild(h('span', 'jp-GemmaLab-sparkMax', `max ${formatSignificant(top, 3)}`));
    }
    row.appendChild(stripCell);
    table.appendChild(row);
  });
  table.addEventListener('mouseover', event => {
    const bar = (event.target as Element).closest(`.${SPARK_BAR_CLASS}`);
    if (bar) {
      readout.textContent = bar.getAttribute('title');
    }
  });
  table.addEventListener('mouseleave', () => {
    readout.textContent = IDLE_TEXT;
  });
  scroller.appendChild(table);
  section.appendChild(scroller);
  section.appendChild(readout);
  return section;
}
