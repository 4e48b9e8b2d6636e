/**
 * The logit-lens view: a layers × positions table; each cell shows the layer's top
 * token at that position and is coloured by the probability of the actual next token.
 */

import { ILens, IToken } from './payload';
import { needsLightText, sequentialColor } from './colors';
import { formatProb, h, payloadTokenLabels, quoteToken, setData, tokenLabel } from './dom';

export const SECTION_CLASS = 'jp-GemmaLab-lens';
export const GRID_CLASS = 'jp-GemmaLab-lensGrid';
export const CELL_CLASS = 'jp-GemmaLab-lensCell';
export const LIGHT_TEXT_CLASS = 'jp-mod-lightText';

export function renderLens(lens: ILens, tokens: IToken[]): HTMLElement {
  const section = h('section', SECTION_CLASS);
  const toolbar = h('div', 'jp-GemmaLab-toolbar');
  toolbar.appendChild(h('span', 'jp-GemmaLab-title', 'logit lens'));
  toolbar.appendChild(
    h('span', 'jp-GemmaLab-legend', 'cell: top token; colour: probability of the actual next token')
  );
  section.appendChild(toolbar);

  const scroller = h('div', 'jp-GemmaLab-scroll');
  const table = h('table', GRID_CLASS);
  const positions = Math.max(0, ...lens.top_tokens.map(row => row.length));

  const labels = payloadTokenLabels(tokens);
  const head = h('tr');
  head.appendChild(h('th', 'jp-GemmaLab-lensCorner', 'layer \\ token'));
  for (let p = 0; p < positions; p++) {
    const th = h('th', 'jp-GemmaLab-lensPosition', labels[p] ?? String(p));
    th.setAttribute('data-position', String(p));
    th.setAttribute('title', `${p}: ${quoteToken(tokens[p]?.piece ?? tokens[p]?.text ?? '')}`);
    head.appendChild(th);
  }
  table.appendChild(head);

  lens.layers.forEach((layer, i) => {
    const row = h('tr');
    row.appendChild(h('th', 'jp-GemmaLab-lensLayer', String(layer)));
    for (let p = 0; p < positions; p++) {
      const top = lens.top_tokens[i]?.[p] ?? '';
      const topProb = lens.top_probs[i]?.[p];
      const targetProb = lens.target_probs[i]?.[p];
      const cell = h('td', CELL_CLASS, tokenLabel(top));
      cell.setAttribute('data-layer', String(layer));
      cell.setAttribute('data-position', String(p));
      setData(cell, 'top-prob', topProb);
      setData(cell, 'target-prob', targetProb);
      cell.setAttribute(
        'title',
        `layer ${layer}, position ${p} ${quoteToken(tokens[p]?.text ?? '')}\n` +
          `top ${quoteToken(top)} p=${formatProb(topProb)}\n` +
          `actual next token p=${formatProb(targetProb)}`
      );
      if (typeof targetProb === 'number') {
        cell.style.backgroundColor = sequentialColor(targetProb);
        cell.classList.toggle(LIGHT_TEXT_CLASS, needsLightText(targetProb));
      }
      row.appendChild(cell);
    }
    table.appendChild(row);
  });

  scroller.appendChild(table);
  section.appendChild(scroller);
  return section;
}
