"""What a researcher sees (issue 20), in a real JupyterLab: the alternatives pop-up of a one-line
output is fully visible, attribution uses one colour convention with a legend, byte / whitespace
tokens are labelled readably in the renderer and on plotly axes, and a `%%gemma` prompt is not
coloured as Python.

Payloads come from real calls on the tiny keras-hub Gemma or from `render.payload` (byte tokens
the tiny vocabulary lacks), saved as full MIME bundles and opened without a kernel. Screenshots
go to artifacts/screenshots/ (suffix from GEMMA_LAB_SHOT_SUFFIX, default "after").
"""

from __future__ import annotations

import os
import re

import jupyterlab_helpers as lab
import numpy as np
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

MIME = "application/vnd.gemma-lab.v1+json"
PLOTLY = "application/vnd.plotly.v1+json"
RENDERED = ".jp-OutputArea-output.jp-GemmaLab"
SUFFIX = os.environ.get("GEMMA_LAB_SHOT_SUFFIX", "after")

# Byte-fallback pieces of "→" (E2 86 92), a lone byte that is no character, an entity-like
# piece and whitespace-only pieces.
PIECES = ["Hi", " ", "<0xE2>", "<0x86>", "<0x92>", "<0xEE>", "&#", "\n", "\t", "&#39;"]
TEXTS = ["Hi", " ", "", "", "→", "", "&#", "\n", "\t", "&#39;"]
LABELS = ["Hi", "␣", "→", "→", "→", "\\xEE", "&#", "↵", "⇥", "&#39;"]


def shot(page_or_locator, name: str) -> None:
    name = f"{name}_{SUFFIX}"
    if hasattr(page_or_locator, "goto"):
        lab.screenshot(page_or_locator, name)
    else:
        lab.element_screenshot(page_or_locator, name)


def figure_bundle(figure) -> dict:
    return {PLOTLY: figure.to_plotly_json(), "text/plain": "figure"}


def rgb(css: str) -> tuple[int, int, int]:
    return tuple(round(float(x)) for x in re.findall(r"[\d.]+", css)[:3])


def hue_family(colour: tuple[int, int, int]) -> str:
    r, _, b = colour
    return "blue" if b > r else "red"


# Whether `node` is drawn: inside the viewport and inside every ancestor that clips overflow,
# and the topmost element at its corners and bottom row belongs to it.
_UNCLIPPED_JS = """
(node) => {
  const box = node.getBoundingClientRect();
  const problems = [];
  if (box.top < 0 || box.left < 0 || box.bottom > innerHeight || box.right > innerWidth) {
    problems.push(`outside the viewport: ${JSON.stringify(box)}`);
  }
  const fixed = getComputedStyle(node).position === 'fixed';
  for (let a = node.parentElement; a; a = a.parentElement) {
    const style = getComputedStyle(a);
    if (fixed && style.transform === 'none' && style.contain === 'none' &&
        style.filter === 'none') { continue; }  // fixed boxes escape non-containing clippers
    if (!/(hidden|auto|scroll|clip)/.test(style.overflow + style.overflowX + style.overflowY)) {
      continue;
    }
    const r = a.getBoundingClientRect();
    if (box.top < r.top - 0.5 || box.bottom > r.bottom + 0.5 || box.left < r.left - 0.5 ||
        box.right > r.right + 0.5) {
      problems.push(`clipped by ${a.className || a.tagName}`);
    }
  }
  const rows = node.querySelectorAll('tr');
  const last = rows[rows.length - 1] || node;
  const lastBox = last.getBoundingClientRect();
  const points = [[box.left + 4, box.top + 4], [box.right - 4, box.bottom - 4],
                  [lastBox.left + lastBox.width / 2, lastBox.top + lastBox.height / 2]];
  for (const [x, y] of points) {
    const hit = document.elementFromPoint(x, y);
    if (!hit || !node.contains(hit)) {
      problems.push(`(${Math.round(x)}, ${Math.round(y)}) shows ${hit && hit.className}`);
    }
  }
  return problems;
}
"""


def one_line_generation() -> dict:
    """A one-line generation bundle: a short prompt and three generated tokens with top-8."""
    from gemma_lab import render

    words = [" quick", " brown", " fox"]
    tokens = [render.token_entry("prompt", "The", 1)]
    for i, word in enumerate(words):
        top = [(word, 0.4)] + [(f" alt{i}{k}", 0.3 / (k + 1)) for k in range(7)]
        tokens.append(render.token_entry("generated", word, 10 + i, piece=word, prob=0.4,
                                         logprob=-0.92, rank=1, entropy=1.5, top_k=top))
    data = render.payload("generation", "".join(words), tokens,
                          {"model": "tiny", "backend": "jax", "dtype": "float32", "seed": 2,
                           "sampler": {"name": "sample", "temperature": 0.800000011920929,
                                       "top_p": 0.949999988079071, "seed": 2},
                           "timing": {"total_s": 1.2451734, "tokens_per_s": 6.927981}})
    return {MIME: data, "text/html": render.to_html(data), "text/plain": data["text"]}


@pytest.fixture(scope="module")
def session():
    from gemma_lab.testing import tiny_session

    return tiny_session()


def test_popup_of_a_one_line_output_is_fully_visible(jupyter_server, browser_page):
    page = browser_page
    data = one_line_generation()
    # Two one-line outputs, so the first one's pop-up would have to cover the second.
    lab.open_saved_outputs(page, jupyter_server, "one_line.ipynb", [data, data])
    view = lab.cell(page, 0).locator(RENDERED)
    payload = data[MIME]
    generated = [i for i, t in enumerate(payload["tokens"]) if t["role"] == "generated"]
    index = generated[-1]
    view.locator(f'.jp-GemmaLab-token[data-index="{index}"]').click()
    popup = view.locator(".jp-GemmaLab-popup")
    expect(popup).to_be_visible()
    rows = popup.locator(".jp-GemmaLab-alternative")
    expect(rows).to_have_count(len(payload["tokens"][index]["top_k"]))
    shot(page, "popup_one_line")
    assert popup.evaluate(_UNCLIPPED_JS) == []
    # The last row really is hit-testable: clicking it does not close the pop-up.
    rows.last.click()
    expect(popup).to_be_visible()
    page.keyboard.press("Escape")
    expect(popup).to_be_hidden()
    # The footer: 3 significant digits, the seed once.
    sampler = view.locator(".jp-GemmaLab-metaItem[data-key='sampler']")
    expect(sampler).to_have_text('sampler: name="sample", temperature=0.8, top_p=0.95')
    expect(view.locator(".jp-GemmaLab-metaItem[data-key='seed']")).to_have_text("seed: 2")
    timing = view.locator(".jp-GemmaLab-metaItem[data-key='timing']")
    expect(timing).to_contain_text("total_s=1.25")
    expect(timing).to_contain_text("tokens_per_s=6.93")


def test_html_fallback_popup_of_a_one_line_output_is_fully_visible(browser_page):
    """The text/html fallback (classic Notebook, nbviewer, demo.html) shows the alternatives of
    a hovered token in room it reserves, so an overflow-clipping output area never hides it."""
    page = browser_page
    markup = one_line_generation()["text/html"]
    # The output area of classic Notebook / JupyterLab clips overflow.
    page.set_content("<div style='overflow-x:auto;border:1px solid #ccc' id=out>"
                     f"{markup}</div><p>next cell</p>")
    page.locator(".gemma-lab-token").last.hover()
    popup = page.locator(".gemma-lab-pop:visible")
    expect(popup).to_have_count(1)
    expect(popup.locator("tr")).to_have_count(9)  # header + 8 alternatives
    shot(page, "html_popup_one_line")
    assert popup.evaluate(_UNCLIPPED_JS) == []
    assert popup.locator("tr").count() >= 2


def test_attribution_legend_matches_the_colours_of_tokens_and_bars(jupyter_server, browser_page,
                                                                    session):
    page = browser_page
    attribution = session.attribute("hello world, the fox", target=" jumps")
    lab.open_saved_outputs(page, jupyter_server, "attribution.ipynb",
                 [attribution._repr_mimebundle_(), figure_bundle(attribution.figure())])
    section = lab.cell(page, 0).locator(f"{RENDERED} .jp-GemmaLab-attribution")
    expect(section).to_be_visible()
    scores = attribution.to_dict()["attribution"]["scores"]
    legend = section.locator(".jp-GemmaLab-scaleLegend")
    expect(legend).to_contain_text("for")
    expect(legend).to_contain_text("against")
    bar = legend.locator(".jp-GemmaLab-scaleBar").evaluate(
        "n => getComputedStyle(n).backgroundImage")
    stops = [rgb(c) for c in re.findall(r"rgba?\([^)]*\)", bar)]
    high_end = legend.locator('[data-end="high"]').text_content()
    low_end = legend.locator('[data-end="low"]').text_content()
    assert "for" in high_end and "against" in low_end
    positive = max(range(len(scores)), key=lambda i: scores[i])
    negative = min(range(len(scores)), key=lambda i: scores[i])
    colour = rgb(section.locator(f'.jp-GemmaLab-attrToken[data-index="{positive}"]').evaluate(
        "n => getComputedStyle(n).backgroundColor"))
    assert colour == stops[-1], (colour, stops)  # "for" end = a positive token's hue
    if scores[negative] < 0:
        against = rgb(section.locator(f'.jp-GemmaLab-attrToken[data-index="{negative}"]')
                      .evaluate("n => getComputedStyle(n).backgroundColor"))
        assert against == stops[0]
    # The plotly figure: positive bars in the "for" colour of the renderer's legend family,
    # and a colour bar that names both ends.
    plot = lab.cell(page, 1).locator(".jp-OutputArea-output .main-svg").first
    expect(plot).to_be_visible()
    fills = lab.cell(page, 1).locator(".bars .point path").evaluate_all(
        "ps => ps.map(p => getComputedStyle(p).fill)")
    assert fills, "no bars drawn"
    for score, fill in zip(scores, fills, strict=True):
        if score > 0:
            assert hue_family(rgb(fill)) == hue_family(stops[-1]) == "blue"
        elif score < 0:
            assert hue_family(rgb(fill)) == hue_family(stops[0]) == "red"
    ticks = lab.cell(page, 1).locator(".colorbar .cbaxis text, .colorbar text").all_text_contents()
    assert any("for" in t for t in ticks) and any("against" in t for t in ticks), ticks
    shot(lab.cell(page, 0).locator(RENDERED), "attribution_renderer")
    shot(lab.cell(page, 1).locator(".jp-OutputArea-output").first, "attribution_plotly")


def lens_payload() -> dict:
    from gemma_lab import render

    tokens = [render.token_entry("prompt", text, i, piece=piece)
              for i, (text, piece) in enumerate(zip(TEXTS, PIECES, strict=True))]
    depths = 3
    top = [[PIECES[(p + d) % len(PIECES)] for p in range(len(PIECES))] for d in range(depths)]
    lens = {"layers": list(range(depths)), "top_tokens": top,
            "top_probs": [[0.5] * len(PIECES) for _ in range(depths)],
            "target_probs": [[0.1 * d] * (len(PIECES) - 1) for d in range(depths)]}
    return render.payload("trace", "".join(TEXTS), tokens, {"model": "m"}, lens=lens)


def test_byte_and_whitespace_tokens_are_labelled_readably(jupyter_server, browser_page):
    from gemma_lab import render
    from gemma_lab.figures.lens import lens_heatmap

    page = browser_page
    payload = lens_payload()
    depths = 6
    top = np.array([[[PIECES[(p + d) % len(PIECES)]] for p in range(len(PIECES))]
                    for d in range(depths)])
    target = np.full((depths, len(PIECES)), 0.3)
    target[:, -1] = np.nan
    figure = lens_heatmap(target, top,
                          np.full((depths, len(PIECES), 1), 0.5), PIECES)
    lab.open_saved_outputs(page, jupyter_server, "lens.ipynb",
                 [{MIME: payload, "text/html": render.to_html(payload), "text/plain": "t"},
                  figure_bundle(figure)])
    section = lab.cell(page, 0).locator(f"{RENDERED} .jp-GemmaLab-lens")
    expect(section).to_be_visible()
    headers = section.locator(".jp-GemmaLab-lensPosition").all_text_contents()
    assert headers == LABELS
    cells = section.locator('.jp-GemmaLab-lensCell[data-layer="0"]').all_text_contents()
    assert cells[2] == "\\xE2" and cells[5] == "\\xEE"  # a lone byte of a cell: a badge
    assert all(c.strip() for c in headers + cells)  # never an empty box
    shot(section, "lens_renderer_bytes")

    plot = lab.cell(page, 1).locator(".jp-OutputArea-output").first
    expect(plot.locator(".main-svg").first).to_be_visible()
    ticks = plot.locator(".xtick text").all_text_contents()
    assert ticks == LABELS, ticks
    sizes = plot.locator(".xtick text, .ytick text, .heatmaplayer text").evaluate_all(
        "ts => ts.map(t => parseFloat(getComputedStyle(t).fontSize))")
    assert sizes and min(sizes) >= 11, sizes
    cell_text = plot.locator(".heatmaplayer text").all_text_contents()
    assert "\\xEE" in cell_text and not any("&#" in t and "&#39;" not in t and t != "&#"
                                           for t in cell_text)
    shot(plot, "lens_plotly_bytes")


def test_a_gemma_prompt_is_not_coloured_as_python(jupyter_server, browser_page):
    page = browser_page
    prompt = "def if return 'quoted' 42 # not a comment {topic}"
    lab.write_notebook(jupyter_server.root_dir / "prompt.ipynb", [
        ("code", f"%%gemma --max-new-tokens 4\n{prompt}"),
        ("code", "def f(x):\n    return 'quoted' # comment 42")])
    lab.open_notebook(page, jupyter_server, "prompt.ipynb")
    colours = """el => [...el.querySelectorAll(
        '.jp-GemmaLab-promptText, .jp-GemmaLab-promptText *')]
        .map(e => getComputedStyle(e).color)"""
    magic = lab.cell(page, 0).locator(".cm-content")
    expect(magic.locator(".jp-GemmaLab-placeholder")).to_have_text("{topic}")
    expect(magic.locator(".jp-GemmaLab-promptText").first).to_be_visible()
    shown = "".join(magic.locator(".jp-GemmaLab-promptText").all_text_contents())
    assert shown == prompt.replace("{topic}", "")
    prompt_colours = set(magic.evaluate(colours))
    assert len(prompt_colours) == 1, prompt_colours  # one plain text colour
    # The same words in a Python cell do get Python's colours (this test can tell).
    python = lab.cell(page, 1).locator(".cm-content")
    python_colours = set(python.evaluate("el => [...el.querySelectorAll('.cm-line *')]"
                                         ".map(e => getComputedStyle(e).color)"))
    assert python_colours - prompt_colours, python_colours
    shot(lab.cell(page, 0), "gemma_prompt_plain_text")
