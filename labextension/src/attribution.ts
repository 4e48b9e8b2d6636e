/**
 * The attribution view: input tokens coloured by their attribution score toward the
 * target, blue for (raises log p(target)) and red against (lowers it), scaled by the largest
 * |score| — the convention of every attribution view (the plotly bars, the HTML fallback,
 * the direct-logit-attribution view), with a legend naming both ends.
 */

import { IAttribution, IToken } from './payload';
import { gainColor, gradient } from './colors';
import { formatNumber, formatSigned, h, quoteToken, setData } from './dom';
import { scaleLegend } from './legend';

export const SECTION_CLASS = 'jp-GemmaLab-attribution';
export const TOKEN_CLASS = 'jp-GemmaLab-attrToken';

/** The colour of an attribution score, `score` scaled to [-1, 1]: blue for, red against. */
export function attributionColor(score: number): string {
  return gainColor(score);
}

export function renderAttribution(attribution: IAttribution, tokens: IToken[]): HTMLElement {
  const section = h('section', SECTION_CLASS);
  const toolbar = h('div', 'jp-GemmaLab-toolbar');
  toolbar.appendChild(h('span', 'jp-GemmaLab-title', 'attribution'));
  toolbar.appendChild(
    h(
      'span',
      'jp-GemmaLab-legend',
      `${attribution.method} toward ${quoteToken(attribution.target)}: blue = for, red = against`
    )
  );
  section.appendChild(toolbar);

  const scores = attribution.scores;
  const scale = Math.max(0, ...scores.map(s => (Number.isFinite(s) ? Math.abs(s) : 0)));
  section.appendChild(
    scaleLegend({
      caption: 'contribution to log p(target)',
      background: gradient(attributionColor, -1, 1, 11),
      low: `against ${formatSigned(-scale, 3)}`,
      high: `for ${formatSigned(scale, 3)}`
    })
  );
  const container = h('div', 'jp-GemmaLab-tokens');
  // Scores cover the leading tokens (the prompt); any later tokens are shown unscored.
  tokens.forEach((token, index) => {
    const span = h('span', TOKEN_CLASS, token.text.replace(/\n/g, '↵\n'));
    span.setAttribute('data-index', String(index));
    span.setAttribute('data-role', token.role);
    const score = scores[index];
    if (typeof score === 'number' && Number.isFinite(score)) {
      setData(span, 'score', score);
      span.style.backgroundColor = attributionColor(scale > 0 ? score / scale : 0);
      span.setAttribute(
        'title',
        `${quoteToken(token.text)} score ${formatNumber(score, 4)} (${score >= 0 ? 'for' : 'against'})`
      );
    } else {
      span.classList.add('jp-mod-unscored');
      span.setAttribute('title', `${quoteToken(token.text)} (no score)`);
    }
    container.appendChild(span);
  });
  section.appendChild(container);
  return section;
}
