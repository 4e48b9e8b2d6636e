/**
 * The attention view: a [query × key] heatmap on a canvas for a chosen layer and head
 * (or the mean over heads), with token labels on both axes and a hover readout.
 */

import { IAttention, IToken } from './payload';
import { sequentialColor } from './colors';
import { formatProb, h, indexSelect, payloadTokenLabels, quoteToken } from './dom';

export const SECTION_CLASS = 'jp-GemmaLab-attention';
export const LAYER_SELECT_CLASS = 'jp-GemmaLab-layerSelect';
export const HEAD_SELECT_CLASS = 'jp-GemmaLab-headSelect';
export const HEATMAP_CLASS = 'jp-GemmaLab-heatmap';
export const CANVAS_CLASS = 'jp-GemmaLab-heatmapCanvas';
export const X_LABELS_CLASS = 'jp-GemmaLab-heatmapXLabels';
export const Y_LABELS_CLASS = 'jp-GemmaLab-heatmapYLabels';
export const LABEL_CLASS = 'jp-GemmaLab-heatmapLabel';
export const READOUT_CLASS = 'jp-GemmaLab-heatmapReadout';
export const HIDDEN_LABELS_CLASS = 'jp-mod-hiddenLabels';

/** Head select value meaning "mean over all heads". */
const MEAN_HEAD = -1;
/** Target side of the heatmap in CSS pixels; cells are clamped to [MIN_CELL, MAX_CELL]. */
const TARGET_SIZE = 480;
const MIN_CELL = 3;
const MAX_CELL = 18;
/** Below this cell size labels would overlap, so they are hidden (the readout remains). */
const MIN_LABELLED_CELL = 8;

function meanOf(matrices: number[][][]): number[][] {
  const n = matrices[0]?.length ?? 0;
  return Array.from({ length: n }, (_, q) =>
    Array.from({ length: matrices[0][q]?.length ?? 0 }, (_, k) => {
      let sum = 0;
      for (const m of matrices) {
        sum += m[q]?.[k] ?? 0;
      }
      return sum / matrices.length;
    })
  );
}

export class AttentionView {
  readonly node: HTMLElement;

  constructor(attention: IAttention, tokens: IToken[]) {
    this._attention = attention;
    this._tokens = tokens;
    this.node = h('section', SECTION_CLASS);

    const toolbar = h('div', 'jp-GemmaLab-toolbar');
    toolbar.appendChild(h('span', 'jp-GemmaLab-title', 'attention'));
    this._layerSelect = indexSelect(
      LAYER_SELECT_CLASS,
      attention.layers.map(layer => `layer ${layer}`),
      'layer'
    );
    this._headSelect = indexSelect(
      HEAD_SELECT_CLASS,
      attention.heads.map(head => `head ${head}`),
      'head'
    );
    const mean = h('option', undefined, 'mean of heads');
    mean.value = String(MEAN_HEAD);
    this._headSelect.appendChild(mean);
    if (attention.heads.length > 1) {
      // Like the widgets and figures: the mean of heads first, each head one pick away.
      this._headSelect.value = String(MEAN_HEAD);
    }
    this._layerSelect.addEventListener('change', () => this.draw());
    this._headSelect.addEventListener('change', () => this.draw());
    toolbar.appendChild(this._layerSelect);
    toolbar.appendChild(this._headSelect);
    if (attention.truncated) {
      toolbar.appendChild(h('span', 'jp-GemmaLab-notice', 'truncated'));
    }
    this.node.appendChild(toolbar);

    this._grid = h('div', HEATMAP_CLASS);
    this._canvas = h('canvas', CANVAS_CLASS);
    this._xLabels = h('div', X_LABELS_CLASS);
    this._yLabels = h('div', Y_LABELS_CLASS);
    this._grid.appendChild(h('div', 'jp-GemmaLab-heatmapCorner', 'query ↓ key →'));
    this._grid.appendChild(this._xLabels);
    this._grid.appendChild(this._yLabels);
    this._grid.appendChild(this._canvas);
    this.node.appendChild(this._grid);

    this._readout = h('div', READOUT_CLASS, 'hover a cell');
    this.node.appendChild(this._readout);

    this._canvas.addEventListener('mousemove', event => this._onHover(event));
    this._canvas.addEventListener('mouseleave', () => {
      this._readout.textContent = 'hover a cell';
    });
    this.draw();
  }

  /** Select a layer and head by index into `layers` / `heads` (head -1: mean) and redraw. */
  select(layerIndex: number, headIndex: number): void {
    this._layerSelect.value = String(layerIndex);
    this._headSelect.value = String(headIndex);
    this.draw();
  }

  /** Redraw the heatmap and labels for the selected layer and head. */
  draw(): void {
    const layerIndex = Number(this._layerSelect.value);
    const headIndex = Number(this._headSelect.value);
    const heads = this._attention.data[layerIndex] ?? [];
    const matrix = headIndex === MEAN_HEAD ? meanOf(heads) : heads[headIndex] ?? [];
    this._matrix = matrix;

    const rows = matrix.length;
    const cols = Math.max(0, ...matrix.map(row => row.length));
    const cell = Math.max(
      MIN_CELL,
      Math.min(MAX_CELL, Math.floor(TARGET_SIZE / Math.max(rows, cols, 1)))
    );
    this._cell = cell;
    let max = 0;
    for (const row of matrix) {
      for (const value of row) {
        max = Math.max(max, Number.isFinite(value) ? value : 0);
      }
    }
    this._max = max;

    const canvas = this._canvas;
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.max(1, Math.round(cols * cell * ratio));
    canvas.height = Math.max(1, Math.round(rows * cell * ratio));
    canvas.style.width = `${cols * cell}px`;
    canvas.style.height = `${rows * cell}px`;
    canvas.setAttribute('data-layer', String(this._attention.layers[layerIndex] ?? ''));
    canvas.setAttribute(
      'data-head',
      headIndex === MEAN_HEAD ? 'mean' : String(this._attention.heads[headIndex] ?? '')
    );
    canvas.setAttribute('data-rows', String(rows));
    canvas.setAttribute('data-cols', String(cols));
    canvas.setAttribute('data-max', String(max));
    canvas.setAttribute('role', 'img');
    canvas.setAttribute('aria-label', `attention, ${rows} queries × ${cols} keys, max ${formatProb(max)}`);
    const context = canvas.getContext('2d');
    if (context) {
      context.setTransform(ratio, 0, 0, ratio, 0, 0);
      context.clearRect(0, 0, cols * cell, rows * cell);
      matrix.forEach((row, q) =>
        row.forEach((value, k) => {
          // Normalised by the matrix maximum so weak heads stay legible.
          context.fillStyle = sequentialColor(max > 0 ? value / max : 0);
          context.fillRect(k * cell, q * cell, cell, cell);
        })
      );
    }

    this._grid.classList.toggle(HIDDEN_LABELS_CLASS, cell < MIN_LABELLED_CELL);
    this._grid.style.setProperty('--jp-GemmaLab-cell', `${cell}px`);
    this._fillLabels(this._xLabels, cols);
    this._fillLabels(this._yLabels, rows);
  }

  private _fillLabels(container: HTMLElement, count: number): void {
    container.replaceChildren();
    for (let i = 0; i < count; i++) {
      const label = h('div', LABEL_CLASS, this._label(i));
      label.setAttribute('data-position', String(i));
      label.setAttribute('title', `${i}: ${quoteToken(this._tokens[i]?.text ?? '')}`);
      container.appendChild(label);
    }
  }

  private _label(position: number): string {
    this._labels = this._labels ?? payloadTokenLabels(this._tokens);
    return this._labels[position] ?? String(position);
  }

  private _onHover(event: MouseEvent): void {
    const box = this._canvas.getBoundingClientRect();
    const q = Math.floor((event.clientY - box.top) / this._cell);
    const k = Math.floor((event.clientX - box.left) / this._cell);
    const value = this._matrix[q]?.[k];
    if (value === undefined) {
      return;
    }
    const text =
      `query ${q} ${quoteToken(this._label(q))} → key ${k} ${quoteToken(this._label(k))}: ` +
      `${formatProb(value)} (max ${formatProb(this._max)})`;
    this._readout.textContent = text;
    this._canvas.setAttribute('title', text);
  }

  private _attention: IAttention;
  private _tokens: IToken[];
  private _layerSelect: HTMLSelectElement;
  private _headSelect: HTMLSelectElement;
  private _grid: HTMLElement;
  private _canvas: HTMLCanvasElement;
  private _xLabels: HTMLElement;
  private _yLabels: HTMLElement;
  private _readout: HTMLElement;
  private _matrix: number[][] = [];
  private _cell = MAX_CELL;
  private _max = 0;
  private _labels: string[] | null = null;
}
