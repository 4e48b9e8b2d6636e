/**
 * Syntax highlighting for gemma_lab magics in code cells.
 *
 * In a cell whose first line is `%%gemma ...` the magic name, its flags and their values are
 * marked on that line, and every `{name}` placeholder in the prompt below is marked (`{{` and
 * `}}` are literal braces, as in the magic's own interpolation). A `%gemma ...` line magic
 * anywhere in a cell gets the same treatment for its line. The marks are CodeMirror mark
 * decorations (CSS classes only): the cell text itself is never touched.
 */

import type { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { EditorExtensionRegistry, IEditorExtensionRegistry } from '@jupyterlab/codemirror';
import { RangeSetBuilder } from '@codemirror/state';
import {
  Decoration,
  DecorationSet,
  EditorView,
  ViewPlugin,
  ViewUpdate
} from '@codemirror/view';

/** Class of the `%%gemma` / `%gemma` magic name. */
export const MAGIC_CLASS = 'jp-GemmaLab-magic';
/** Class of a `--flag` / `-o` on a magic line. */
export const FLAG_CLASS = 'jp-GemmaLab-magicFlag';
/** Class of a flag's value or a line magic's sub-command. */
export const VALUE_CLASS = 'jp-GemmaLab-magicValue';
/** Class of a `{name}` placeholder in a `%%gemma` prompt. */
export const PLACEHOLDER_CLASS = 'jp-GemmaLab-placeholder';
/** Class of a `%%gemma` prompt's text: plain prose, not Python (no keyword / string colours). */
export const PROMPT_CLASS = 'jp-GemmaLab-promptText';

/** One highlighted span: [from, to) offsets into the text and its class. */
export interface ISpan {
  from: number;
  to: number;
  className: string;
}

const CELL_MAGIC = /^%%gemma(?=\s|$)/;
const LINE_MAGIC = /^\s*%gemma(?=\s|$)/;
// `{{` / `}}` (literal braces) or a `{expression}` without braces or newlines inside.
const BRACES = /\{\{|\}\}|\{[^{}\n]+\}/g;

/** Spans for one magic line starting at `offset`: the magic name, then flags and values. */
function magicLineSpans(line: string, offset: number): ISpan[] {
  const spans: ISpan[] = [];
  const words = /\S+/g;
  let match: RegExpExecArray | null;
  let first = true;
  while ((match = words.exec(line)) !== null) {
    const from = offset + match.index;
    const to = from + match[0].length;
    let className = VALUE_CLASS;
    if (first) {
      className = MAGIC_CLASS;
    } else if (/^--?[A-Za-z]/.test(match[0])) {
      className = FLAG_CLASS;
    }
    spans.push({ from, to, className });
    first = false;
  }
  return spans;
}

/**
 * The spans to highlight in a cell's text (pure: used by the editor plugin and the tests).
 *
 * Example: `gemmaMagicSpans('%%gemma --seed 1\nHi {name}')` marks `%%gemma`, `--seed`,
 * `1`, `Hi ` as prompt text and `{name}`.
 */
export function gemmaMagicSpans(text: string): ISpan[] {
  const spans: ISpan[] = [];
  const lines = text.split('\n');
  const isCellMagic = CELL_MAGIC.test(lines[0] ?? '');
  let offset = 0;
  lines.forEach((line, index) => {
    if ((index === 0 && isCellMagic) || (!isCellMagic && LINE_MAGIC.test(line))) {
      const indent = line.length - line.trimStart().length;
      spans.push(...magicLineSpans(line.trimStart(), offset + indent));
    } else if (isCellMagic) {
      // The prompt: plain text between the placeholders, each placeholder marked.
      BRACES.lastIndex = 0;
      let match: RegExpExecArray | null;
      let text = 0; // where the plain text since the last placeholder starts
      while ((match = BRACES.exec(line)) !== null) {
        if (match[0] !== '{{' && match[0] !== '}}') {
          if (match.index > text) {
            spans.push({ from: offset + text, to: offset + match.index, className: PROMPT_CLASS });
          }
          const from = offset + match.index;
          spans.push({ from, to: from + match[0].length, className: PLACEHOLDER_CLASS });
          text = match.index + match[0].length;
        }
      }
      if (line.length > text) {
        spans.push({ from: offset + text, to: offset + line.length, className: PROMPT_CLASS });
      }
    }
    offset += line.length + 1;
  });
  return spans;
}

function decorations(view: EditorView): DecorationSet {
  const builder = new RangeSetBuilder<Decoration>();
  for (const span of gemmaMagicSpans(view.state.doc.toString())) {
    builder.add(span.from, span.to, Decoration.mark({ class: span.className }));
  }
  return builder.finish();
}

/** The CodeMirror view plugin: recomputes the marks when the cell text changes. */
export const gemmaMagicHighlighter = ViewPlugin.fromClass(
  class {
    decorations: DecorationSet;

    constructor(view: EditorView) {
      this.decorations = decorations(view);
    }

    update(update: ViewUpdate): void {
      if (update.docChanged) {
        this.decorations = decorations(update.view);
      }
    }
  },
  { decorations: plugin => plugin.decorations }
);

/** Registers the highlighter with every CodeMirror editor JupyterLab creates. */
const plugin: JupyterFrontEndPlugin<void> = {
  id: 'gemma-lab:magic-highlight',
  description: 'Highlights %%gemma magic lines and {name} placeholders in code cells.',
  autoStart: true,
  requires: [IEditorExtensionRegistry],
  activate: (_app: JupyterFrontEnd, registry: IEditorExtensionRegistry): void => {
    registry.addExtension({
      name: 'gemma-lab:magic-highlight',
      factory: () => EditorExtensionRegistry.createImmutableExtension(gemmaMagicHighlighter)
    });
  }
};

export default plugin;
