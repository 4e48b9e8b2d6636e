/**
 * Colour-scale legends: a gradient bar with its end values, a caption, and optional
 * markers (e.g. the clean and corrupted baselines of a patching run) placed on the bar.
 */

import { h } from './dom';

export const LEGEND_CLASS = 'jp-GemmaLab-scaleLegend';
export const BAR_CLASS = 'jp-GemmaLab-scaleBar';
export const END_CLASS = 'jp-GemmaLab-scaleEnd';
export const MARKER_CLASS = 'jp-GemmaLab-scaleMarker';

export interface IMarker {
  /** Position on the bar, 0 (left end) to 1 (right end). */
  fraction: number;
  label: string;
  /** Whether the label sits above or below the bar, so two close markers don't collide. */
  side: 'above' | 'below';
  title: string;
}

export interface ILegendOptions {
  caption: string;
  /** CSS background of the bar (see `colors.gradient`). */
  background: string;
  low: string;
  high: string;
  markers?: IMarker[];
}

export function scaleLegend(options: ILegendOptions): HTMLElement {
  const legend = h('div', LEGEND_CLASS);
  legend.appendChild(h('span', 'jp-GemmaLab-scaleCaption', options.caption));
  const low = h('span', END_CLASS, options.low);
  low.setAttribute('data-end', 'low');
  legend.appendChild(low);
  const bar = h('span', BAR_CLASS);
  bar.style.background = options.background;
  const markers = options.markers ?? [];
  for (const marker of markers) {
    const fraction = Math.min(1, Math.max(0, Number.isFinite(marker.fraction) ? marker.fraction : 0));
    const node = h('span', `${MARKER_CLASS} jp-mod-${marker.side}`);
    node.style.left = `${(100 * fraction).toFixed(1)}%`;
    node.setAttribute('title', marker.title);
    node.setAttribute('data-label', marker.label);
    const label = h('span', 'jp-GemmaLab-scaleMarkerLabel', marker.label);
    // Near an end the label hangs inwards so it is not clipped.
    label.classList.add(fraction < 0.15 ? 'jp-mod-start' : fraction > 0.85 ? 'jp-mod-end' : 'jp-mod-middle');
    node.appendChild(label);
    bar.appendChild(node);
  }
  legend.classList.toggle('jp-mod-withMarkers', markers.length > 0);
  legend.appendChild(bar);
  const high = h('span', END_CLASS, options.high);
  high.setAttribute('data-end', 'high');
  legend.appendChild(high);
  return legend;
}
