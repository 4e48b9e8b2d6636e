"""The Playground widget in a real JupyterLab: Generate on the default model streams coloured
tokens and draws a plot; clicking a token lists its alternatives; model text stays text."""

from __future__ import annotations

import json

import jupyterlab_helpers as lab
import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.real_model]

MODEL_TIMEOUT_MS = 300_000
PLAYGROUND = ".gemma-lab-playground"
PROMPT = "The capital of <b>France</b> is"
SETUP = f"""\
import gemma_lab
from gemma_lab.widgets import Playground
lab = gemma_lab.load(progress=False)
playground = Playground(lab, prompt={PROMPT!r}, max_new_tokens=8)
playground"""
# The same greedy generation, from the session itself: what the strip must show.
CHECK = f"""\
import json
print("PROBS", json.dumps(lab.generate({PROMPT!r}, max_new_tokens=8).probs))"""


def _hsl_rgb(hue: float, saturation: float, lightness: float) -> tuple[int, int, int]:
    """CSS hsl() as the rgb() getComputedStyle reports (CSS Color 4's conversion)."""
    def channel(n: int) -> float:
        k = (n + hue / 30) % 12
        a = saturation * min(lightness, 1 - lightness)
        return lightness - a * max(-1, min(k - 3, 9 - k, 1))

    return tuple(round(255 * channel(n)) for n in (0, 8, 4))


def _rgb(css: str) -> tuple[int, ...]:
    return tuple(int(float(v)) for v in css[css.index("(") + 1:css.index(")")].split(",")[:3])


def test_playground_generates_coloured_tokens_and_a_plot(jupyter_server, browser_page, capsys):
    page = browser_page
    lab.write_notebook(jupyter_server.root_dir / "playground.ipynb",
                       [("code", SETUP), ("code", CHECK)])
    lab.open_notebook(page, jupyter_server, "playground.ipynb")
    lab.run_cell(page, 0, timeout_ms=MODEL_TIMEOUT_MS)

    widget = lab.cell(page, 0).locator(PLAYGROUND)
    expect(widget).to_be_visible(timeout=MODEL_TIMEOUT_MS)
    widget.get_by_role("button", name="Generate").click()
    # The status line reports the finished run ("8 tokens, length, ...").
    expect(widget.locator(".widget-label").filter(has_text="tokens/s")).to_be_visible(
        timeout=MODEL_TIMEOUT_MS)

    strip = widget.locator(".gemma-lab-token-strip")
    generated = strip.locator(".gemma-lab-token-generated")
    expect(generated.first).to_be_visible()
    count = generated.count()
    assert 1 <= count <= 8
    probs = [float(p) for p in generated.evaluate_all("ns => ns.map(n => n.dataset.prob)")]
    colours = generated.evaluate_all("ns => ns.map(n => getComputedStyle(n).backgroundColor)")
    # Each token's probability is the session's own for that token, and its colour is the
    # probability palette's (hue 0 = red at p 0 ... 120 = green at p 1) at that probability.
    lab.run_cell(page, 1, timeout_ms=MODEL_TIMEOUT_MS)
    printed = lab.cell(page, 1).locator(lab.STDOUT_OUTPUT).inner_text()
    want = json.loads(printed.split("PROBS", 1)[1])
    assert len(probs) == len(want) == count, (probs, want)
    assert max(abs(a - b) for a, b in zip(probs, want, strict=True)) <= 1e-4, (probs, want)
    for p, colour in zip(want, colours, strict=True):
        expected = _hsl_rgb(round(120 * p), 0.75, 0.82)
        assert max(abs(a - b) for a, b in zip(_rgb(colour), expected, strict=True)) <= 1, (
            p, colour, expected)
    assert len({round(120 * p) for p in want}) == 1 or len(set(colours)) > 1
    # The prompt's markup is shown as text, not parsed into elements.
    assert strip.locator("b").count() == 0
    expect(strip).to_contain_text("<b>France</b>")

    expect(widget.locator(".js-plotly-plot")).to_be_visible(timeout=MODEL_TIMEOUT_MS)
    expect(widget.locator(".js-plotly-plot .bars path, .js-plotly-plot .point").first
           ).to_be_attached()

    generated.nth(0).click()
    expect(strip.locator(".gemma-lab-token-selected")).to_have_count(1)
    options = widget.locator(".widget-select select option")
    expect(options).to_have_count(5)
    with capsys.disabled():  # the screenshot's path goes to the test log, not the capture
        lab.screenshot(page, "playground")
