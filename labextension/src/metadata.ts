/**
 * The metadata footer: model, backend, dtype, sampler, seed, adapter (and timing),
 * each as a `key: value` item a reader can copy into a methods section.
 */

import { IMetadata } from './payload';
import { h } from './dom';

export const FOOTER_CLASS = 'jp-GemmaLab-metadata';
export const ITEM_CLASS = 'jp-GemmaLab-metaItem';

/** A compact `k=v, k=v` form of an object such as the sampler settings. */
function formatRecord(record: Record<string, unknown>): string {
  return Object.entries(record)
    .map(([key, value]) => `${key}=${typeof value === 'number' ? String(value) : JSON.stringify(value)}`)
    .join(', ');
}

function formatValue(value: unknown): string {
  if (value === null || value === undefined) {
    return 'none';
  }
  if (typeof value === 'object') {
    return formatRecord(value as Record<string, unknown>);
  }
  return String(value);
}

export function renderMetadata(metadata: IMetadata): HTMLElement {
  const footer = h('footer', FOOTER_CLASS);
  const items: [string, unknown][] = [
    ['model', metadata.model],
    ['backend', metadata.backend],
    ['dtype', metadata.dtype],
    ['sampler', metadata.sampler],
    ['seed', metadata.seed],
    ['adapter', metadata.adapter]
  ];
  if (typeof metadata.mesh === 'string' && metadata.mesh) {
    items.push(['mesh', metadata.mesh]);
  }
  if (metadata.timing && Object.keys(metadata.timing).length > 0) {
    items.push(['timing', metadata.timing]);
  }
  for (const [key, value] of items) {
    const item = h('span', ITEM_CLASS);
    item.setAttribute('data-key', key);
    item.appendChild(h('span', 'jp-GemmaLab-metaKey', `${key}: `));
    item.appendChild(h('span', 'jp-GemmaLab-metaValue', formatValue(value)));
    if (key === 'model' && typeof metadata.weights_sha256 === 'string') {
      item.setAttribute('title', `weights sha256 ${metadata.weights_sha256}`);
    }
    footer.appendChild(item);
  }
  return footer;
}
