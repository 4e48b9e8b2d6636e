/**
 * A labelled heatmap of DOM cells, rows down and columns across, with a hover readout.
 *
 * Shared by the patching and logit-attribution views. Every cell is one element that carries
 * its row, column and value, so its colour, tooltip and readout can be read back from the
 * DOM; labels are set with `textContent` only.
 */

import { finiteOrNull, h, setData } from './dom';

export const GRID_CLASS = 'jp-GemmaLab-grid';
export const CORNER_CLASS = 'jp-GemmaLab-gridCorner';
export const CELL_CLASS = 'jp-GemmaLab-gridCell';
export const ROW_LABEL_CLASS = 'jp-GemmaLab-gridRowLabel';
export const COLUMN_LABEL_CLASS = 'jp-GemmaLab-gridColumnLabel';
export const READOUT_CLASS = 'jp-GemmaLab-gridReadout';
/** On the grid when column labels are written vertically (token columns). */
export const ROTATED_CLASS = 'jp-mod-rotated';
/** On the hovered cell and on its row and column labels. */
export const HOVER_CLASS = 'jp-mod-hover';
/** On a cell whose value is null. */
export const MISSING_CLASS = 'jp-mod-missing';

/** Total width the cells aim for, and the bounds of one cell, in CSS pixels. */
const TARGET_WIDTH = 720;
const MIN_CELL = 14;
const MAX_ROTATED_CELL = 24;
const MAX_CELL = 48;
const CELL_HEIGHT = 20;

export interface IGridOptions {
  /** Row labels, top to bottom. */
  rows: string[];
  /** Column labels, left to right (already made one-line, e.g. with `tokenLabel`). */
  columns: string[];
  /** `values[row][column]`; null or missing cells are drawn empty. */
  values: (number | null)[][];
  /** CSS colour of a cell with this value. */
  color: (value: number) => string;
  /** The readout / tooltip text of a cell. */
  describe: (row: number, column: number, value: number | null) => string;
  /** Tooltip of a column label (default: the label). */
  columnTitle?: (column: number) => string;
  /** Text of the top-left corner ("layer ↓ position →"). */
  corner: string;
  /** Write column labels vertically (for token labels). */
  rotateColumns: boolean;
  /** Accessible name of the grid. */
  ariaLabel: string;
  /** `data-grid` on the grid, so views with two grids can be told apart. */
  name: string;
}

export interface IGrid {
  /** The grid and its readout, to append to a section. */
  node: HTMLElement;
  grid: HTMLElement;
  readout: HTMLElement;
}

const IDLE_TEXT = 'hover a cell for its value';

export function renderGrid(options: IGridOptions): IGrid {
  const { rows, columns, values } = options;
  const node = h('div', 'jp-GemmaLab-gridWrap');
  const scroller = h('div', 'jp-GemmaLab-scroll');
  const grid = h('div', GRID_CLASS);
  grid.setAttribute('data-grid', options.name);
  grid.setAttribute('data-rows', String(rows.length));
  grid.setAttribute('data-cols', String(columns.length));
  grid.setAttribute('role', 'group');
  grid.setAttribute('aria-label', options.ariaLabel);
  grid.classList.toggle(ROTATED_CLASS, options.rotateColumns);

  const maxCell = options.rotateColumns ? MAX_ROTATED_CELL : MAX_CELL;
  const width = Math.max(
    MIN_CELL,
    Math.min(maxCell, Math.floor(TARGET_WIDTH / Math.max(1, columns.length)))
  );
  grid.style.setProperty('--jp-GemmaLab-cellWidth', `${width}px`);
  grid.style.setProperty('--jp-GemmaLab-cellHeight', `${CELL_HEIGHT}px`);
  grid.style.gridTemplateColumns = `max-content repeat(${columns.length}, ${width}px)`;

  grid.appendChild(h('div', CORNER_CLASS, options.corner));
  const columnLabels = columns.map((label, column) => {
    const node = h('div', COLUMN_LABEL_CLASS, label);
    node.setAttribute('data-col', String(column));
    node.setAttribute('title', options.columnTitle ? options.columnTitle(column) : label);
    grid.appendChild(node);
    return node;
  });
  const rowLabels: HTMLElement[] = [];
  rows.forEach((label, row) => {
    const rowLabel = h('div', ROW_LABEL_CLASS, label);
    rowLabel.setAttribute('data-row', String(row));
    rowLabels.push(rowLabel);
    grid.appendChild(rowLabel);
    columns.forEach((columnLabel, column) => {
      const value = finiteOrNull(values[row]?.[column]);
      const cell = h('div', CELL_CLASS);
      cell.setAttribute('data-row', String(row));
      cell.setAttribute('data-col', String(column));
      cell.setAttribute('data-row-label', label);
      cell.setAttribute('data-col-label', columnLabel);
      setData(cell, 'value', value);
      if (value === null) {
        cell.classList.add(MISSING_CLASS);
      } else {
        cell.style.backgroundColor = options.color(value);
      }
      cell.setAttribute('title', options.describe(row, column, value));
      grid.appendChild(cell);
    });
  });
  scroller.appendChild(grid);
  node.appendChild(scroller);

  const readout = h('div', READOUT_CLASS, IDLE_TEXT);
  readout.setAttribute('aria-live', 'polite');
  node.appendChild(readout);

  let hovered: HTMLElement | null = null;
  const clear = () => {
    if (hovered) {
      hovered.classList.remove(HOVER_CLASS);
      rowLabels[Number(hovered.getAttribute('data-row'))]?.classList.remove(HOVER_CLASS);
      columnLabels[Number(hovered.getAttribute('data-col'))]?.classList.remove(HOVER_CLASS);
    }
    hovered = null;
  };
  grid.addEventListener('mouseover', event => {
    const cell = (event.target as Element).closest(`.${CELL_CLASS}`) as HTMLElement | null;
    if (!cell || cell === hovered) {
      return;
    }
    clear();
    hovered = cell;
    const row = Number(cell.getAttribute('data-row'));
    const column = Number(cell.getAttribute('data-col'));
    cell.classList.add(HOVER_CLASS);
    rowLabels[row]?.classList.add(HOVER_CLASS);
    columnLabels[column]?.classList.add(HOVER_CLASS);
    readout.textContent = cell.getAttribute('title');
  });
  grid.addEventListener('mouseleave', () => {
    clear();
    readout.textContent = IDLE_TEXT;
  });
  return { node, grid, readout };
}
