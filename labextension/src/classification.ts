/**
 * The safety-classification view: per text, one horizontal bar per policy of P(violation)
 * (the softmax of ShieldGemma's "Yes" / "No" logits), on a fixed 0..1 scale with a line at
 * 0.5, coloured from neutral grey (low) to red (high), with the value beside each bar. The text
 * (and the classified response, if any) heads its bars; hovering a bar names the text, the
 * policy and the probability. Texts and policy names are set with `textContent` only.
 */

import { IClassification } from './payload';
import { gradient, violationColor } from './colors';
import { finiteOrNull, formatProb, h, quoteToken, setData, tokenLabel } from './dom';
import { scaleLegend } from './legend';

export const SECTION_CLASS = 'jp-GemmaLab-classification';
export const NOTE_CLASS = 'jp-GemmaLab-classNote';
export const GRID_CLASS = 'jp-GemmaLab-classGrid';
export const AXIS_CLASS = 'jp-GemmaLab-classAxis';
export const ITEM_CLASS = 'jp-GemmaLab-classItem';
export const TEXT_CLASS = 'jp-GemmaLab-classText';
export const RESPONSE_CLASS = 'jp-GemmaLab-classResponse';
export const ROW_CLASS = 'jp-GemmaLab-classRow';
export const POLICY_CLASS = 'jp-GemmaLab-classPolicy';
export const TRACK_CLASS = 'jp-GemmaLab-classTrack';
export const BAR_CLASS = 'jp-GemmaLab-classBar';
export const VALUE_CLASS = 'jp-GemmaLab-classValue';
export const READOUT_CLASS = 'jp-GemmaLab-classReadout';
/** On the hovered bar's row. */
export const HOVER_CLASS = 'jp-mod-hover';
/** On a row whose probability is null. */
export const MISSING_CLASS = 'jp-mod-missing';

/** Texts and responses longer than this (in characters) are cut, the full text on hover. */
export const MAX_TEXT = 160;
/** The length texts are cut to in the hover readout. */
const MAX_READOUT_TEXT = 60;

const IDLE_TEXT = 'hover a bar for its text, policy and P(violation)';

/** `text` on one line (newlines as "↵"), cut to `max` characters with "…". */
function shorten(text: string, max: number): string {
  const characters = Array.from(tokenLabel(text));
  return characters.length > max ? `${characters.slice(0, max - 1).join('')}…` : characters.join('');
}

/** A probability for the readout: four decimals, exponent form when tiny. */
function formatReadout(prob: number): string {
  return prob !== 0 && prob < 1e-4 ? prob.toExponential(2) : prob.toFixed(4);
}

/** A text block: a label ("text 1", "response") and the (shortened) text, full on hover. */
function textLine(className: string, label: string, text: string): HTMLElement {
  const line = h('div', className);
  line.appendChild(h('span', 'jp-GemmaLab-classLabel', label));
  const body = h('span', 'jp-GemmaLab-classBody', text.length > 0 ? shorten(text, MAX_TEXT) : '(empty)');
  body.classList.toggle('jp-mod-empty', text.length === 0);
  body.classList.toggle('jp-mod-cut', Array.from(tokenLabel(text)).length > MAX_TEXT);
  body.setAttribute('title', text);
  line.appendChild(body);
  return line;
}

export function renderClassification(classification: IClassification, model?: string): HTMLElement {
  const section = h('section', SECTION_CLASS);
  const texts = classification.texts ?? [];
  const policies = classification.policies ?? [];
  const responses = Array.isArray(classification.responses) ? classification.responses : null;
  const probabilities = classification.probabilities ?? [];
  section.setAttribute('data-texts', String(texts.length));
  section.setAttribute('data-policies', String(policies.length));
  section.toggleAttribute('data-responses', responses !== null);

  const toolbar = h('div', 'jp-GemmaLab-toolbar');
  toolbar.appendChild(
    h(
      'span',
      'jp-GemmaLab-title',
      `safety classification · ${texts.length} ${texts.length === 1 ? 'text' : 'texts'} × ` +
        `${policies.length} ${policies.length === 1 ? 'policy' : 'policies'}`
    )
  );
  toolbar.appendChild(
    h(
      'span',
      'jp-GemmaLab-legend',
      `each bar: P(violation) of the ${responses ? 'response' : 'text'} under that policy, the ` +
        'softmax of ShieldGemma\'s "Yes" / "No" logits after its prompt; 0.5 = even odds. ' +
        'Meaningful with a shieldgemma model.'
    )
  );
  section.appendChild(toolbar);
  if (typeof model === 'string' && model.length > 0 && !/shield/i.test(model)) {
    section.appendChild(
      h(
        'div',
        NOTE_CLASS,
        `${model} is not a ShieldGemma model: it was not trained on this prompt, so these ` +
          'numbers say little about the texts.'
      )
    );
  }
  section.appendChild(
    scaleLegend({
      caption: 'P(violation), red = higher',
      background: gradient(violationColor),
      low: '0',
      high: '1',
      markers: [{ fraction: 0.5, label: '0.5', side: 'above', title: 'even odds (0.5)' }]
    })
  );

  const grid = h('div', GRID_CLASS);
  grid.setAttribute('role', 'list');
  grid.setAttribute('aria-label', `P(violation), ${texts.length} texts × ${policies.length} policies`);
  // The 0..1 axis over the bars' column.
  const axis = h('div', AXIS_CLASS);
  axis.setAttribute('aria-hidden', 'true');
  for (const [tick, where] of [
    ['0', 'start'],
    ['0.5', 'middle'],
    ['1', 'end']
  ]) {
    const node = h('span', `jp-GemmaLab-classTick jp-mod-${where}`, tick);
    axis.appendChild(node);
  }
  grid.appendChild(h('span', 'jp-GemmaLab-classAxisCorner', 'policy'));
  grid.appendChild(axis);
  grid.appendChild(h('span', 'jp-GemmaLab-classAxisCorner', ''));

  const readout = h('div', READOUT_CLASS, IDLE_TEXT);
  readout.setAttribute('aria-live', 'polite');

  texts.forEach((text, textIndex) => {
    const item = h('div', ITEM_CLASS);
    item.setAttribute('data-index', String(textIndex));
    item.setAttribute('role', 'listitem');
    item.classList.toggle('jp-mod-first', textIndex === 0);
    const label = texts.length === 1 ? 'text' : `text ${textIndex + 1}`;
    item.appendChild(textLine(TEXT_CLASS, label, text));
    if (responses) {
      item.appendChild(textLine(RESPONSE_CLASS, 'response', responses[textIndex] ?? ''));
    }
    const quoted = quoteToken(shorten(text, MAX_READOUT_TEXT));
    policies.forEach((policy, policyIndex) => {
      const value = finiteOrNull(probabilities[textIndex]?.[policyIndex]);
      const row = h('div', ROW_CLASS);
      row.setAttribute('data-text', String(textIndex));
      row.setAttribute('data-policy-index', String(policyIndex));
      row.setAttribute('data-policy', policy);
      setData(row, 'value', value);
      const name = h('span', POLICY_CLASS, policy);
      name.setAttribute('title', policy);
      row.appendChild(name);
      const track = h('span', TRACK_CLASS);
      if (value === null) {
        row.classList.add(MISSING_CLASS);
      } else {
        const bar = h('span', BAR_CLASS);
        const share = Math.min(1, Math.max(0, value));
        bar.style.width = `${(100 * share).toFixed(3)}%`;
        bar.style.backgroundColor = violationColor(share);
        track.appendChild(bar);
      }
      row.appendChild(track);
      row.appendChild(h('span', VALUE_CLASS, formatProb(value)));
      const describe =
        `${label} ${quoted} · policy ${quoteToken(policy)}: ` +
        (value === null
          ? 'no value'
          : `P(violation) = ${formatReadout(value)} (${value >= 0.5 ? 'at or above' : 'below'} 0.5)`);
      row.setAttribute('title', describe);
      track.setAttribute('title', describe);
      item.appendChild(row);
    });
    grid.appendChild(item);
  });
  section.appendChild(grid);
  section.appendChild(readout);

  let hovered: HTMLElement | null = null;
  grid.addEventListener('mouseover', event => {
    const row = (event.target as Element).closest(`.${ROW_CLASS}`) as HTMLElement | null;
    if (row === hovered) {
      return;
    }
    hovered?.classList.remove(HOVER_CLASS);
    hovered = row;
    if (row) {
      row.classList.add(HOVER_CLASS);
      readout.textContent = row.getAttribute('title');
    } else {
      readout.textContent = IDLE_TEXT;
    }
  });
  grid.addEventListener('mouseleave', () => {
    hovered?.classList.remove(HOVER_CLASS);
    hovered = null;
    readout.textContent = IDLE_TEXT;
  });
  return section;
}
