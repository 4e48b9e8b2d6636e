/**
 * The comparison view: run b's tokens, each coloured by diff = log p_b − log p_a (blue where
 * run b finds the token likelier, red where run a does; intensity by |diff| over the largest
 * |diff|). Tokens after `diverged_at` are not compared and are greyed; hovering or focusing a
 * token shows its log p under both runs and the difference.
 */

import { IComparison, IToken } from './payload';
import { gainColor, gradient } from './colors';
import { finite, finiteOrNull, formatNumber, formatSigned, h, quoteToken, setData } from './dom';
import { scaleLegend } from './legend';

export const SECTION_CLASS = 'jp-GemmaLab-comparison';
export const TOKEN_CLASS = 'jp-GemmaLab-compareToken';
export const READOUT_CLASS = 'jp-GemmaLab-compareReadout';
export const SUMMARY_CLASS = 'jp-GemmaLab-compareSummary';
export const DIVERGENCE_CLASS = 'jp-GemmaLab-divergence';
/** On tokens at or after `diverged_at`: the runs' tokens differ there, so no diff. */
export const DIVERGED_CLASS = 'jp-mod-diverged';

const IDLE_TEXT = 'hover a token for its log p under both runs';

export function renderComparison(comparison: IComparison, tokens: IToken[]): HTMLElement {
  const labelA = String(comparison.labels?.[0] ?? 'a');
  const labelB = String(comparison.labels?.[1] ?? 'b');
  const diffs = comparison.diff ?? [];
  const logprobsA = comparison.logprobs_a ?? [];
  const logprobsB = comparison.logprobs_b ?? [];
  const tokensA = comparison.tokens_a ?? [];
  const divergedAt = finiteOrNull(comparison.diverged_at);
  const shared = divergedAt ?? diffs.length;
  const scale = Math.max(0, ...finite(diffs).map(Math.abs));

  const section = h('section', SECTION_CLASS);
  const toolbar = h('div', 'jp-GemmaLab-toolbar');
  toolbar.appendChild(h('span', 'jp-GemmaLab-title', 'comparison'));
  const runs = h('span', 'jp-GemmaLab-legend jp-GemmaLab-compareRuns');
  runs.appendChild(h('span', 'jp-GemmaLab-compareRun', `a: ${labelA}`));
  runs.appendChild(document.createTextNode(' vs '));
  runs.appendChild(h('span', 'jp-GemmaLab-compareRun', `b: ${labelB}`));
  runs.appendChild(document.createTextNode(' (tokens are run b’s)'));
  toolbar.appendChild(runs);
  if (comparison.adapter_a || comparison.adapter_b) {
    toolbar.appendChild(
      h(
        'span',
        'jp-GemmaLab-legend jp-GemmaLab-compareAdapters',
        `adapters: a ${comparison.adapter_a ?? 'none'}, b ${comparison.adapter_b ?? 'none'}`
      )
    );
  }
  section.appendChild(toolbar);

  const legend = scaleLegend({
    caption: 'colour: log p_b − log p_a',
    background: gradient(t => gainColor(t), -1, 1, 11),
    low: `${labelA} likelier (${formatSigned(-scale)})`,
    high: `${labelB} likelier (${formatSigned(scale)})`
  });
  legend.setAttribute('data-scale', String(scale));
  section.appendChild(legend);

  const container = h('div', 'jp-GemmaLab-tokens jp-GemmaLab-compareTokens');
  const readout = h('div', READOUT_CLASS, IDLE_TEXT);
  readout.setAttribute('aria-live', 'polite');
  tokens.forEach((token, index) => {
    const span = h('span', TOKEN_CLASS, token.text.replace(/\n/g, '↵\n'));
    span.setAttribute('data-index', String(index));
    span.setAttribute('tabindex', '0');
    const logA = finiteOrNull(logprobsA[index]);
    const logB = finiteOrNull(logprobsB[index] ?? token.logprob);
    const diff = index < shared ? finiteOrNull(diffs[index]) : null;
    setData(span, 'logprob-a', logA);
    setData(span, 'logprob-b', logB);
    let text: string;
    if (index >= shared) {
      span.classList.add(DIVERGED_CLASS);
      const other = tokensA[index];
      text =
        `token ${index} ${quoteToken(token.text)}: log p b (${labelB}) ${formatNumber(logB, 4)}` +
        ` · not compared: the runs' tokens differ from token ${shared}` +
        (other === undefined ? ' (a has no token here)' : ` (a has ${quoteToken(other)} here)`);
    } else if (diff === null) {
      span.classList.add('jp-mod-unscored');
      text = `token ${index} ${quoteToken(token.text)}: no difference recorded`;
    } else {
      setData(span, 'diff', diff);
      span.style.backgroundColor = gainColor(scale > 0 ? diff / scale : 0);
      const verdict = diff > 0 ? `b (${labelB}) likelier` : diff < 0 ? `a (${labelA}) likelier` : 'equal';
      text =
        `token ${index} ${quoteToken(token.text)}: log p a (${labelA}) ${formatNumber(logA, 4)}` +
        ` · b (${labelB}) ${formatNumber(logB, 4)} · diff ${formatSigned(diff, 4)}: ${verdict}`;
    }
    span.setAttribute('title', text);
    container.appendChild(span);
  });
  const show = (event: Event) => {
    const span = (event.target as Element).closest(`.${TOKEN_CLASS}`);
    if (span) {
      readout.textContent = span.getAttribute('title');
    }
  };
  container.addEventListener('mouseover', show);
  container.addEventListener('focusin', show);
  container.addEventListener('mouseleave', () => {
    readout.textContent = IDLE_TEXT;
  });
  section.appendChild(container);
  section.appendChild(readout);

  const sharedDiffs = finite(diffs.slice(0, shared));
  const total = sharedDiffs.reduce((sum, d) => sum + d, 0);
  const summary = h(
    'div',
    SUMMARY_CLASS,
    `Σ diff = ${formatSigned(total, 3)} over ${sharedDiffs.length} shared tokens ` +
      `(positive: b finds the text likelier) · largest |diff| ${formatNumber(scale, 3)}`
  );
  section.appendChild(summary);

  const divergence = h('div', DIVERGENCE_CLASS);
  if (divergedAt === null) {
    divergence.textContent = 'the runs have the same tokens; every token is compared';
  } else {
    divergence.setAttribute('data-diverged-at', String(divergedAt));
    const tokenB = tokens[divergedAt]?.text;
    const tokenA = tokensA[divergedAt];
    divergence.textContent =
      `the runs' tokens differ from token ${divergedAt}: ` +
      `b has ${tokenB === undefined ? 'no token' : quoteToken(tokenB)}, ` +
      `a has ${tokenA === undefined ? 'no token' : quoteToken(tokenA)}; ` +
      'the greyed tokens from there on are not compared';
  }
  section.appendChild(divergence);
  return section;
}
