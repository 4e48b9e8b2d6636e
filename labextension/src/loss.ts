/**
 * The fine-tuning loss view: train and validation curves as a small SVG line chart.
 */

import { ILoss } from './payload';
import { formatNumber, h } from './dom';

export const SECTION_CLASS = 'jp-GemmaLab-loss';
export const CURVE_CLASS = 'jp-GemmaLab-lossCurve';

const SVG_NS = 'http://www.w3.org/2000/svg';
const WIDTH = 360;
const HEIGHT = 120;
const PAD = 4;

function svg<K extends keyof SVGElementTagNameMap>(tag: K): SVGElementTagNameMap[K] {
  return document.createElementNS(SVG_NS, tag);
}

export function renderLoss(loss: ILoss): HTMLElement | null {
  const curves = (['train', 'validation'] as const)
    .map(name => ({ name, values: (loss[name] ?? []).filter(v => Number.isFinite(v)) }))
    .filter(curve => curve.values.length > 0);
  if (curves.length === 0) {
    return null;
  }
  const all = curves.flatMap(curve => curve.values);
  const low = Math.min(...all);
  const high = Math.max(...all);
  const span = high - low || 1;
  const steps = Math.max(...curves.map(curve => curve.values.length)) - 1 || 1;

  const section = h('section', SECTION_CLASS);
  const toolbar = h('div', 'jp-GemmaLab-toolbar');
  toolbar.appendChild(h('span', 'jp-GemmaLab-title', 'loss'));
  toolbar.appendChild(
    h('span', 'jp-GemmaLab-legend', `min ${formatNumber(low)} · max ${formatNumber(high)}`)
  );
  section.appendChild(toolbar);

  const chart = svg('svg');
  chart.setAttribute('viewBox', `0 0 ${WIDTH} ${HEIGHT}`);
  chart.setAttribute('width', String(WIDTH));
  chart.setAttribute('height', String(HEIGHT));
  chart.setAttribute('role', 'img');
  for (const curve of curves) {
    const points = curve.values
      .map((value, i) => {
        const x = PAD + ((WIDTH - 2 * PAD) * i) / steps;
        const y = PAD + ((HEIGHT - 2 * PAD) * (high - value)) / span;
        return `${x.toFixed(1)},${y.toFixed(1)}`;
      })
      .join(' ');
    const line = svg('polyline');
    line.setAttribute('class', `${CURVE_CLASS} jp-mod-${curve.name}`);
    line.setAttribute('data-curve', curve.name);
    line.setAttribute('points', points);
    const title = svg('title');
    title.textContent = `${curve.name}: last ${formatNumber(curve.values[curve.values.length - 1])}`;
    line.appendChild(title);
    chart.appendChild(line);
  }
  section.appendChild(chart);
  const legend = h('div', 'jp-GemmaLab-lossLegend');
  for (const curve of curves) {
    legend.appendChild(h('span', `jp-GemmaLab-lossKey jp-mod-${curve.name}`, curve.name));
  }
  section.appendChild(legend);
  return section;
}
