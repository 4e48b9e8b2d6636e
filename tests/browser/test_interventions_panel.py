"""The Interventions panel in a real JupyterLab, on the tiny model: switching a head off
re-scores the text into a strip coloured blue/red by the sign of Δ log p (text stays text),
and moving the steering slider re-scores with the new scale shown on the status line."""

from __future__ import annotations

import colorsys
import re

import jupyterlab_helpers as lab
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

KERNEL_TIMEOUT_MS = 300_000
PANEL = ".gemma-lab-interventions"
TEXT = "hello <b>world</b>"
SETUP = f"""\
from gemma_lab.testing import tiny_session
from gemma_lab.widgets import InterventionsPanel
import numpy as np
lab = tiny_session()
v = lab.steering_vector("good fine", "bad awful", layer=1)
panel = InterventionsPanel(lab, text={TEXT!r}, vector=v, layer=1)
panel"""



def _rgb(hue: int) -> tuple[int, int, int]:
    """The sRGB of hsl(hue, 80%, 55%): Chromium stores diverging_colour's hsla() as rgba()."""
    r, g, b = colorsys.hls_to_rgb(hue / 360, 0.55, 0.80)
    return round(r * 255), round(g * 255), round(b * 255)


# Blue hsla(210,80%,55%,a): likelier with interventions; red hsla(0,80%,55%,a): less likely.
HUE_OF_RGB = {_rgb(210): 210, _rgb(0): 0}
BACKGROUND = re.compile(r"background(?:-color)?:\s*(?:hsla\((\d+),[^)]*,\s*([0-9.]+)\)"
                        r"|rgba?\((\d+),\s*(\d+),\s*(\d+)(?:,\s*([0-9.]+))?\))")


def _hue_and_alpha(style: str) -> tuple[int | None, float]:
    match = BACKGROUND.search(style)
    assert match, f"no background colour in {style!r}"
    if match.group(1) is not None:
        return int(match.group(1)), float(match.group(2))
    rgb = tuple(int(match.group(i)) for i in (3, 4, 5))
    return HUE_OF_RGB.get(rgb), float(match.group(6) or 1.0)

TITLE = re.compile(r"^log p -?\d+\.\d{3} → -?\d+\.\d{3} \(Δ [+-]\d+\.\d{3}\)$")


def test_interventions_panel_ablates_a_head_and_steers(jupyter_server, browser_page, capsys):
    page = browser_page
    lab.write_notebook(jupyter_server.root_dir / "interventions.ipynb", [("code", SETUP)])
    lab.open_notebook(page, jupyter_server, "interventions.ipynb")
    lab.run_cell(page, 0, timeout_ms=KERNEL_TIMEOUT_MS)

    panel = lab.cell(page, 0).locator(PANEL)
    expect(panel).to_be_visible(timeout=KERNEL_TIMEOUT_MS)
    status = panel.locator(".widget-label").filter(has_text=re.compile(r"Toggle heads|Σ Δ"))
    expect(status).to_have_text(re.compile("Toggle heads off"))

    # Layer 0, head 2: the third toggle of the row labelled L0.
    row0 = panel.locator(".widget-hbox").filter(
        has=page.locator(".widget-label", has_text=re.compile(r"^L0$")))
    head = row0.locator(".widget-toggle-button").nth(2)
    expect(head).to_have_text("2")
    expect(head).to_have_attribute("title", re.compile(r"^layer 0 head 2"))
    head.click()
    expect(head).to_have_class(re.compile(r"mod-active"))

    status = panel.locator(".widget-label").filter(has_text="Σ Δ log p")
    expect(status).to_contain_text("1 heads off", timeout=KERNEL_TIMEOUT_MS)
    expect(status).to_contain_text("steering +0 at layer 1")

    strip = panel.locator(".gemma-lab-token-strip")
    tokens = strip.locator(".gemma-lab-token")
    expect(tokens.first).to_be_visible()
    count = tokens.count()
    assert count >= 2
    styles = tokens.evaluate_all("ns => ns.map(n => n.getAttribute('style') || '')")
    titles = tokens.evaluate_all("ns => ns.map(n => n.title)")
    assert all(TITLE.match(title) for title in titles), titles
    deltas = [float(re.search(r"Δ ([+-]\d+\.\d{3})", t).group(1)) for t in titles]
    biggest = max(abs(d) for d in deltas)
    for style, title, delta in zip(styles, titles, deltas, strict=True):
        hue, alpha = _hue_and_alpha(style)
        assert hue in (210, 0), f"background is neither blue nor red: {style!r}"
        # Blue for Δ >= 0, red for Δ < 0; opacity |Δ| / max |Δ| (titles round Δ to 3 places).
        if abs(delta) >= 0.0005:
            assert hue == (210 if delta > 0 else 0), (style, title)
        assert abs(alpha - abs(delta) / biggest) <= 0.01 + 0.001 / biggest, (style, title)
    computed = tokens.evaluate_all("ns => ns.map(n => getComputedStyle(n).backgroundColor)")
    assert "rgba(0, 0, 0, 0)" not in computed
    # Ablating a head changes something: not every token is at Δ 0.
    assert any(not t.endswith("(Δ +0.000)") and not t.endswith("(Δ -0.000)") for t in titles)
    # The text's markup is shown as text, not parsed into elements.
    assert strip.locator("b").count() == 0
    expect(strip).to_contain_text("<b>world</b>")
    first_status = status.inner_text()

    # Steering slider: focus its handle and step it once to the right (step 0.5).
    slider = panel.locator(".widget-slider").filter(has_text="scale")
    handle = slider.locator(".noUi-handle")
    handle.focus()
    handle.press("ArrowRight")
    expect(slider.locator(".widget-readout")).to_have_text(re.compile(r"^0\.50?$"))
    expect(status).to_contain_text("steering +0.5 at layer 1", timeout=KERNEL_TIMEOUT_MS)
    expect(status).to_contain_text("1 heads off")
    assert status.inner_text() != first_status
    expect(tokens).to_have_count(count)

    with capsys.disabled():  # the screenshot's path goes to the test log, not the capture
        lab.element_screenshot(panel, "interventions_panel")
