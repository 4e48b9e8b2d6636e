/**
 * The metadata footer: model, backend, dtype, sampler, seed, adapter (and timing),
 * each as a `key: value` item a reader can copy into a methods section.
 */

import { IMetadata } from './payload';
import { formatSignificant, h } from './dom';

export const FOOTER_CLASS = 'jp-GemmaLab-metadata';
export const ITEM_CLASS = 'jp-GemmaLab-metaItem';

/** A number with 3 significant digits (0.8, 1.23, 12.3), integers as they are. */
function formatMetaNumber(value: number): string {
  return Number.isInteger(value) ? String(value) : formatSignificant(value, 3);
}

/** A compact `k=v, k=v` form of an object such as the sampler settings; `skip` keys (and unset
 * values) are left out. */
function formatRecord(record: Record<string, unknown>, skip: string[] = []): string {
  return Object.entries(record)
    .filter(([key, value]) => !skip.includes(key) && value !== null && value !== undefined)
    .map(([key, value]) => `${key}=${typeof value === 'number' ? formatMetaNumber(value) : JSON.stringify(value)}`)
    .join(', ');
}

function formatValue(value: unknown, skip: string[] = []): string {
  if (value === null || value === undefined) {
    return 'none';
  }
  if (typeof value === 'number') {
    return formatMetaNumber(value);
  }
  if (typeof value === 'object') {
    return formatRecord(value as Record<string, unknown>, skip);
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
    // The seed has its own item: the sampler settings don't repeat it.
    const skip = key === 'sampler' && 'seed' in metadata ? ['seed'] : [];
    item.appendChild(h('span', 'jp-GemmaLab-metaValue', formatValue(value, skip)));
    if (key === 'model' && typeof metadata.weights_sha256 === 'string') {
      item.setAttribute('title', `weights sha256 ${metadata.weights_sha256}`);
    }
    footer.appendChild(item);
  }
  return footer;
}
