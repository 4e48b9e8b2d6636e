/**
 * JupyterLab MIME renderer for gemma_lab results (`application/vnd.gemma-lab.v1+json`).
 *
 * The payload (see payload.ts) carries tokens with probabilities and top-k alternatives,
 * and optionally attention, logit-lens, attribution and loss arrays; each present part
 * gets its own view, followed by a metadata footer. The v2 kinds "patching", "comparison",
 * "logit_attribution", "cache" and "classification" show their own view in place of the
 * token view.
 */

import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';

import { AttentionView } from './attention';
import { h } from './dom';
import { renderAttribution } from './attribution';
import { renderCache } from './cache';
import { renderClassification } from './classification';
import { renderComparison } from './comparison';
import { renderFeatures } from './features';
import { renderLens } from './lens';
import { renderLogitAttribution } from './logitAttribution';
import { renderLoss } from './loss';
import { renderMetadata } from './metadata';
import { asPayload, IPayload } from './payload';
import { renderPatching } from './patching';
import { TokenView } from './tokens';

/** The MIME type gemma_lab results render as; mirrors gemma_lab.schema.MIME_TYPE. */
export const MIME_TYPE = 'application/vnd.gemma-lab.v1+json';

/** Class on the renderer's root node. */
export const CLASS_NAME = 'jp-GemmaLab';
/** Class of the one-line message shown instead of a payload this version can't render. */
export const ERROR_CLASS = 'jp-GemmaLab-error';
/** Class of the note shown when the payload's arrays were capped. */
export const NOTICE_CLASS = 'jp-GemmaLab-notice';
/** Class of the plain text shown when a payload has text but no tokens. */
export const TEXT_CLASS = 'jp-GemmaLab-text';

/**
 * A widget that renders one gemma_lab result.
 */
export class GemmaLabRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(options: IRenderMime.IRendererOptions) {
    super();
    this._mimeType = options.mimeType;
    this.addClass(CLASS_NAME);
  }

  /** The token view of the current payload, if it has tokens. */
  get tokenView(): TokenView | null {
    return this._tokenView;
  }

  /** The attention view of the current payload, if it has attention. */
  get attentionView(): AttentionView | null {
    return this._attentionView;
  }

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    this.node.replaceChildren();
    this._tokenView = null;
    this._attentionView = null;
    let payload: IPayload;
    try {
      payload = asPayload(model.data[this._mimeType]);
    } catch (error) {
      this.node.appendChild(h('div', ERROR_CLASS, (error as Error).message));
      return Promise.resolve();
    }
    this._render(payload);
    return Promise.resolve();
  }

  private _render(payload: IPayload): void {
    this.node.setAttribute('data-kind', String(payload.kind));
    if (payload.truncated) {
      this.node.appendChild(
        h('div', NOTICE_CLASS, 'Output truncated: arrays were capped to keep the notebook small.')
      );
    }
    const kindView = this._kindView(payload);
    if (kindView) {
      this.node.appendChild(kindView);
    } else if (payload.tokens.length > 0) {
      this._tokenView = new TokenView(payload.tokens);
      this.node.appendChild(this._tokenView.node);
    } else if (payload.text) {
      this.node.appendChild(h('pre', TEXT_CLASS, payload.text));
    }
    if (payload.attention && payload.attention.data.length > 0) {
      this._attentionView = new AttentionView(payload.attention, payload.tokens);
      this.node.appendChild(this._attentionView.node);
    }
    if (payload.lens && payload.lens.layers.length > 0) {
      this.node.appendChild(renderLens(payload.lens, payload.tokens));
    }
    if (payload.attribution) {
      this.node.appendChild(renderAttribution(payload.attribution, payload.tokens));
    }
    if (payload.loss) {
      const loss = renderLoss(payload.loss);
      if (loss) {
        this.node.appendChild(loss);
      }
    }
    this.node.appendChild(renderMetadata(payload.metadata));
  }

  /**
   * The view of a v2 kind ("patching", "comparison", "logit_attribution", "cache",
   * "classification"), or null for the other kinds and for a payload that lacks its kind's
   * field (then the token view shows its tokens, or the plain text when it has none).
   */
  private _kindView(payload: IPayload): HTMLElement | null {
    switch (payload.kind) {
      case 'patching':
        return payload.patching ? renderPatching(payload.patching) : null;
      case 'comparison':
        return payload.comparison ? renderComparison(payload.comparison, payload.tokens) : null;
      case 'logit_attribution':
        return payload.logit_attribution
          ? renderLogitAttribution(payload.logit_attribution, payload.tokens)
          : null;
      case 'cache':
        return payload.cache ? renderCache(payload.cache, payload.tokens, payload.text) : null;
      case 'features':
        return payload.features ? renderFeatures(payload.features, payload.tokens) : null;
      case 'classification':
        return payload.classification
          ? renderClassification(payload.classification, payload.metadata.model)
          : null;
      default:
        return null;
    }
  }

  private _mimeType: string;
  private _tokenView: TokenView | null = null;
  private _attentionView: AttentionView | null = null;
}

/**
 * Creates renderers for gemma_lab results. `safe`: it never runs payload content as
 * code or HTML, so results render in untrusted (e.g. freshly opened) notebooks too.
 */
export const rendererFactory: IRenderMime.IRendererFactory = {
  safe: true,
  mimeTypes: [MIME_TYPE],
  // Below text/html's 50, so Lab prefers this over the HTML fallback in the same bundle.
  defaultRank: 0,
  createRenderer: options => new GemmaLabRenderer(options)
};

const extension: IRenderMime.IExtension = {
  id: 'gemma-lab:renderer',
  description:
    'Renders gemma_lab results: token probabilities, attention, logit lens, attribution, ' +
    'activation patching, logit attribution, run comparisons, activation caches and ' +
    'safety classifications.',
  rendererFactory,
  rank: 0,
  dataType: 'json'
};

export default extension;
