/**
 * The attribution view: input tokens coloured by their attribution score toward the
 * target, blue for negative and red for positive (scaled by the largest |score|).
 */

import { IAttribution, IToken } from './payload';
import { divergingColor } from './colors';
import { formatNumber, h, quoteToken, setData } from './dom';

export const SECTION_CLASS = 'jp-GemmaLab-attribution';
export const TOKEN_CLASS = 'jp-GemmaLab-attrToken';

export function renderAttribution(attribution: IAttribution, tokens: IToken[]): HTMLElement {
  const section = h('section', SECTION_CLASS);
  const toolbar = h('div', 'jp-GemmaLab-toolbar');
  toolbar.appendChild(h('span', 'jp-GemmaLab-title', 'attribution'));
  toolbar.appendChild(
    h(
      'span',
      'jp-GemmaLab-legend',
      `${attribution.method} toward ${quoteToken(attribution.target)}: blue = against, red = for`
    )
  );
  section.appendChild(toolbar);

  const scores = attribution.scores;
  const scale = Math.max(0, ...scores.map(s => (Number.isFinite(s) ? Math.abs(s) : 0)));
  const container = h('div', 'jp-GemmaLab-tokens');
  // Scores cover the leading tokens (the prompt); any later tokens are shown unscored.
  tokens.forEach((token, index) => {
    const span = h('span', TOKEN_CLASS, token.text.replace(/\n/g, '↵\n'));
    span.setAttribute('data-index', String(index));
    span.setAttribute('data-role', token.role);
    const score = scores[index];
    if (typeof score === 'number' && Number.isFinite(score)) {
      setData(span, 'score', score);
      span.style.backgroundColor = divergingColor(scale > 0 ? score / scale : 0);
      span.setAttribute('title', `${quoteToken(token.text)} score ${formatNumber(score, 4)}`);
    } else {
      span.classList.add('jp-mod-unscored');
      span.setAttribute('title', `${quoteToken(token.text)} (no score)`);
    }
    container.appendChild(span);
  });
  section.appendChild(container);
  return section;
}
