/**
 * The token view: tokens coloured by probability or entropy, and a popup with the
 * top-k alternatives of a clicked token. The popup is `position: fixed` in viewport
 * coordinates (below the token, or above when there is no room), so the output area's
 * overflow never clips it; it follows the token on scroll and closes on Escape, on a press
 * outside, or when its token scrolls out of view.
 */

import { IToken } from './payload';
import { entropyColor, probabilityColor } from './colors';
import { formatNumber, formatProb, h, logOf, quoteToken, setData, tokenLabel } from './dom';

export const SECTION_CLASS = 'jp-GemmaLab-tokenSection';
export const TOOLBAR_CLASS = 'jp-GemmaLab-toolbar';
export const MODE_TOGGLE_CLASS = 'jp-GemmaLab-modeToggle';
export const MODE_BUTTON_CLASS = 'jp-GemmaLab-modeButton';
export const LEGEND_CLASS = 'jp-GemmaLab-legend';
export const TOKENS_CLASS = 'jp-GemmaLab-tokens';
export const TOKEN_CLASS = 'jp-GemmaLab-token';
export const PROMPT_TOKEN_CLASS = 'jp-GemmaLab-token-prompt';
/** A chat transcript's turn markers and role names (`speaker: "markup"`). */
export const MARKUP_TOKEN_CLASS = 'jp-GemmaLab-token-markup';
/** The label at the start of each chat turn ("user", "model", "system"). */
export const SPEAKER_CLASS = 'jp-GemmaLab-speaker';
export const POPUP_CLASS = 'jp-GemmaLab-popup';
export const POPUP_HEADER_CLASS = 'jp-GemmaLab-popupHeader';
export const ALTERNATIVES_CLASS = 'jp-GemmaLab-alternatives';
export const ALTERNATIVE_CLASS = 'jp-GemmaLab-alternative';
export const ACTUAL_CLASS = 'jp-mod-actual';
export const ACTIVE_CLASS = 'jp-mod-active';
export const SELECTED_CLASS = 'jp-mod-selected';
export const UNSCORED_CLASS = 'jp-mod-unscored';

export type ColorMode = 'prob' | 'entropy';

const MODE_LABELS: Record<ColorMode, string> = { prob: 'probability', entropy: 'entropy' };

/** Text shown for a token: newlines get a visible mark before the line break. */
function displayText(text: string): string {
  return text.replace(/\n/g, '↵\n');
}

/** One-line summary of a token's own statistics. */
function summary(token: IToken): string {
  const parts = [quoteToken(token.text), `p=${formatProb(token.prob)}`];
  if (typeof token.rank === 'number') {
    parts.push(`rank ${token.rank}`);
  }
  if (typeof token.logprob === 'number') {
    parts.push(`logprob ${formatNumber(token.logprob)}`);
  }
  if (typeof token.entropy === 'number') {
    parts.push(`entropy ${formatNumber(token.entropy)} nats`);
  }
  parts.push(token.role);
  return parts.join(' · ');
}

/** Tooltip: the summary line, then one line per alternative. */
function tooltip(token: IToken): string {
  const lines = [summary(token)];
  (token.top_k ?? []).forEach(([text, prob], i) => {
    lines.push(`${i + 1}. ${quoteToken(text)}  ${formatProb(prob)}`);
  });
  return lines.join('\n');
}

/** The viewport, cut to the nearest ancestor that makes a fixed element's containing block. */
function fixedBounds(node: HTMLElement): { left: number; top: number; right: number; bottom: number } {
  const width = document.documentElement.clientWidth || window.innerWidth;
  const height = document.documentElement.clientHeight || window.innerHeight;
  const bounds = { left: 0, top: 0, right: width, bottom: height };
  for (let a = node.parentElement; a && a !== document.body; a = a.parentElement) {
    const style = getComputedStyle(a);
    const contain = style.contain || '';
    if (
      style.transform !== 'none' ||
      style.filter !== 'none' ||
      /paint|layout|strict|content/.test(contain) ||
      /transform|filter/.test(style.willChange || '')
    ) {
      const box = a.getBoundingClientRect();
      bounds.left = Math.max(bounds.left, box.left);
      bounds.top = Math.max(bounds.top, box.top);
      bounds.right = Math.min(bounds.right, box.right);
      bounds.bottom = Math.min(bounds.bottom, box.bottom);
      break;
    }
  }
  return bounds;
}

export class TokenView {
  readonly node: HTMLElement;

  constructor(tokens: IToken[]) {
    this._tokens = tokens;
    this._maxEntropy = Math.max(0, ...tokens.map(t => (typeof t.entropy === 'number' ? t.entropy : 0)));

    this.node = h('section', SECTION_CLASS);
    const toolbar = h('div', TOOLBAR_CLASS);
    toolbar.appendChild(h('span', 'jp-GemmaLab-label', 'colour by'));
    const toggle = h('div', MODE_TOGGLE_CLASS);
    toggle.setAttribute('role', 'group');
    toggle.setAttribute('aria-label', 'colour tokens by');
    for (const mode of Object.keys(MODE_LABELS) as ColorMode[]) {
      const button = h('button', MODE_BUTTON_CLASS, MODE_LABELS[mode]);
      button.type = 'button';
      button.setAttribute('data-mode', mode);
      button.addEventListener('click', () => this.setMode(mode));
      this._buttons.push(button);
      toggle.appendChild(button);
    }
    toolbar.appendChild(toggle);
    this._legend = h('span', LEGEND_CLASS);
    toolbar.appendChild(this._legend);
    this.node.appendChild(toolbar);

    this._container = h('div', TOKENS_CLASS);
    let speaker: string | undefined;
    tokens.forEach((token, index) => {
      if (token.speaker && token.speaker !== 'markup' && token.speaker !== speaker) {
        speaker = token.speaker; // a new turn: say whose
        const label = h('span', SPEAKER_CLASS, speaker);
        label.setAttribute('data-speaker', speaker);
        this._container.appendChild(label);
      }
      this._container.appendChild(this._tokenNode(token, index));
    });
    this.node.appendChild(this._container);

    this._popup = h('div', POPUP_CLASS);
    this._popup.hidden = true;
    this._popup.setAttribute('role', 'dialog');
    this.node.appendChild(this._popup);

    this._container.addEventListener('click', event => this._onClick(event));
    this._container.addEventListener('keydown', event => this._onKeyDown(event));
    this._popup.addEventListener('keydown', event => this._onKeyDown(event));
    this.setMode('prob');
  }

  /** Recolour every token by `mode` and update the toggle and legend. */
  setMode(mode: ColorMode): void {
    this._container.setAttribute('data-mode', mode);
    for (const button of this._buttons) {
      const active = button.getAttribute('data-mode') === mode;
      button.classList.toggle(ACTIVE_CLASS, active);
      button.setAttribute('aria-pressed', String(active));
    }
    this._spans.forEach((span, index) => {
      const token = this._tokens[index];
      const value = mode === 'prob' ? token.prob : token.entropy;
      const scored = typeof value === 'number' && Number.isFinite(value);
      span.classList.toggle(UNSCORED_CLASS, !scored);
      span.style.backgroundColor = !scored
        ? ''
        : mode === 'prob'
          ? probabilityColor(value)
          : entropyColor(value, this._maxEntropy);
    });
    this._legend.textContent =
      mode === 'prob'
        ? 'red = unlikely, green = likely'
        : `clear = certain, purple = uncertain (max ${formatNumber(this._maxEntropy, 2)} nats)`;
  }

  /** Close the alternatives popup, if open. */
  closePopup(): void {
    window.removeEventListener('scroll', this._onScroll, true);
    window.removeEventListener('resize', this._onScroll);
    document.removeEventListener('mousedown', this._onOutside, true);
    document.removeEventListener('keydown', this._onEscape, true);
    this._popup.hidden = true;
    this._popup.removeAttribute('data-index');
    this._selected?.classList.remove(SELECTED_CLASS);
    this._selected = null;
  }

  private _tokenNode(token: IToken, index: number): HTMLSpanElement {
    const span = h('span', TOKEN_CLASS, displayText(token.text));
    if (token.role === 'prompt') {
      span.classList.add(PROMPT_TOKEN_CLASS);
    }
    if (token.speaker === 'markup') {
      span.classList.add(MARKUP_TOKEN_CLASS);
    }
    span.setAttribute('data-index', String(index));
    span.setAttribute('data-role', token.role);
    setData(span, 'id', token.id);
    setData(span, 'prob', token.prob);
    setData(span, 'logprob', token.logprob);
    setData(span, 'rank', token.rank);
    setData(span, 'entropy', token.entropy);
    span.setAttribute('title', tooltip(token));
    span.setAttribute('tabindex', '0');
    span.setAttribute('role', 'button');
    this._spans.push(span);
    return span;
  }

  private _onClick(event: MouseEvent): void {
    const span = (event.target as Element).closest(`.${TOKEN_CLASS}`) as HTMLElement | null;
    if (!span) {
      this.closePopup();
      return;
    }
    if (span === this._selected) {
      this.closePopup();
    } else {
      this._openPopup(span);
    }
  }

  private _onKeyDown(event: KeyboardEvent): void {
    if (event.key === 'Escape') {
      this.closePopup();
      return;
    }
    const span = (event.target as Element).closest(`.${TOKEN_CLASS}`) as HTMLElement | null;
    if (span && (event.key === 'Enter' || event.key === ' ')) {
      event.preventDefault();
      this._openPopup(span);
    }
  }

  private _openPopup(span: HTMLElement): void {
    const index = Number(span.getAttribute('data-index'));
    const token = this._tokens[index];
    this._selected?.classList.remove(SELECTED_CLASS);
    this._selected = span;
    span.classList.add(SELECTED_CLASS);

    const popup = this._popup;
    popup.replaceChildren();
    popup.setAttribute('data-index', String(index));
    popup.appendChild(h('div', POPUP_HEADER_CLASS, summary(token)));
    const alternatives = token.top_k ?? [];
    if (alternatives.length === 0) {
      popup.appendChild(h('div', 'jp-GemmaLab-empty', 'no alternatives recorded for this token'));
    } else {
      const table = h('table', ALTERNATIVES_CLASS);
      const head = h('tr');
      for (const label of ['rank', 'token', 'prob', 'logprob', '']) {
        head.appendChild(h('th', undefined, label));
      }
      table.appendChild(head);
      alternatives.forEach(([text, prob], i) => {
        const row = h('tr', ALTERNATIVE_CLASS);
        if (text === token.text) {
          row.classList.add(ACTUAL_CLASS);
        }
        row.setAttribute('data-rank', String(i + 1));
        setData(row, 'prob', prob);
        row.appendChild(h('td', undefined, String(i + 1)));
        const cell = h('td', 'jp-GemmaLab-altText', tokenLabel(text));
        cell.setAttribute('title', quoteToken(text));
        row.appendChild(cell);
        row.appendChild(h('td', undefined, formatProb(prob)));
        row.appendChild(h('td', undefined, formatNumber(logOf(prob))));
        const barCell = h('td');
        const bar = h('span', 'jp-GemmaLab-bar');
        bar.style.width = `${Math.round(100 * Math.min(1, Math.max(0, prob)))}%`;
        barCell.appendChild(bar);
        row.appendChild(barCell);
        table.appendChild(row);
      });
      popup.appendChild(table);
    }
    popup.hidden = false;
    this._place();
    // A fixed pop-up does not move with the page: follow the token while it scrolls.
    window.addEventListener('scroll', this._onScroll, true);
    window.addEventListener('resize', this._onScroll);
    document.addEventListener('mousedown', this._onOutside, true);
    document.addEventListener('keydown', this._onEscape, true);
  }

  /** Escape closes the pop-up wherever the focus is. */
  private _onEscape = (event: KeyboardEvent): void => {
    if (event.key === 'Escape') {
      this.closePopup();
    }
  };

  /** A press anywhere but the pop-up and the tokens closes it (it may cover other cells). */
  private _onOutside = (event: MouseEvent): void => {
    const target = event.target as Node | null;
    if (target && !this._popup.contains(target) && !this._container.contains(target)) {
      this.closePopup();
    }
  };

  /**
   * Place the pop-up in viewport coordinates (`position: fixed`), so the output area's
   * overflow never clips it: under the token when it fits there, else above it, else on the
   * side with more room with its own scroll bar; kept inside the viewport horizontally.
   */
  private _place(): void {
    const span = this._selected;
    const popup = this._popup;
    if (!span || popup.hidden) {
      return;
    }
    if (!span.isConnected) {
      this.closePopup();
      return;
    }
    const margin = 4;
    // The box a fixed element is drawn in: the viewport, or the nearest ancestor with a
    // transform / containment (JupyterLab's panels), which is also where it would be clipped.
    const bounds = fixedBounds(popup);
    const token = span.getBoundingClientRect();
    popup.style.maxHeight = '';
    popup.style.left = '0px';
    popup.style.top = '0px';
    const origin = popup.getBoundingClientRect();
    const natural = popup.scrollHeight;
    const below = bounds.bottom - token.bottom - 2 * margin;
    const above = token.top - bounds.top - 2 * margin;
    let top: number;
    if (natural <= below || below >= above) {
      top = token.bottom + margin;
      if (natural > below) {
        popup.style.maxHeight = `${Math.max(60, below)}px`;
      }
    } else {
      const height = Math.min(natural, above);
      popup.style.maxHeight = natural > above ? `${Math.max(60, above)}px` : '';
      top = token.top - margin - height;
    }
    const width = popup.offsetWidth;
    const left = Math.min(
      Math.max(bounds.left + margin, token.left),
      Math.max(bounds.left + margin, bounds.right - width - margin)
    );
    popup.style.left = `${Math.round(left - origin.left)}px`;
    popup.style.top = `${Math.round(Math.max(bounds.top + margin, top) - origin.top)}px`;
    popup.setAttribute('data-placement', top >= token.bottom ? 'below' : 'above');
  }

  private _onScroll = (): void => {
    const span = this._selected;
    if (!span) {
      return;
    }
    const box = span.getBoundingClientRect();
    const height = document.documentElement.clientHeight || window.innerHeight;
    const bounds = fixedBounds(this._popup);
    if (box.bottom < Math.max(0, bounds.top) || box.top > Math.min(height, bounds.bottom)) {
      this.closePopup(); // its token scrolled out of view
    } else {
      this._place();
    }
  };

  private _tokens: IToken[];
  private _maxEntropy: number;
  private _buttons: HTMLButtonElement[] = [];
  private _spans: HTMLSpanElement[] = [];
  private _legend: HTMLElement;
  private _container: HTMLElement;
  private _popup: HTMLElement;
  private _selected: HTMLElement | null = null;
}
