"""Widgets in a saved notebook, on the tiny model in a real JupyterLab: after a page reload
the live widgets' plots still hold their data, and after the kernel is shut down and the page
reloaded, each widget's saved snapshot (tokens, plots, status) shows instead of "Error
displaying widget: model not found"; a notebook `lab.finetune` leaves a plain progress line
and loss plot, not widgets."""

from __future__ import annotations

import re

import jupyterlab_helpers as lab
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

KERNEL_TIMEOUT_MS = 300_000
SETUP = """\
from gemma_lab.testing import tiny_session
from gemma_lab.widgets import AttentionExplorer, FinetunePanel, Playground
lab = tiny_session()"""
PLAYGROUND = """\
playground = Playground(lab, prompt="hello <b>world</b>", max_new_tokens=6)
playground"""
EXPLORER = """\
explorer = AttentionExplorer(lab, text="the cat sat on the mat")
explorer"""
PANEL = """\
panel = FinetunePanel(lab, data=[{"prompt": f"q{i}:", "response": f" a{i}"} for i in range(8)],
                      held_out=0.25)
panel.batch_size.value = 2
panel"""
FINETUNE = 'ft = lab.finetune(["hello world"] * 4, epochs=2, batch_size=2, seed=0)'
BROKEN = re.compile(r"Error displaying widget|model not found", re.I)


def _visible_broken(page) -> list[str]:
    return page.get_by_text(BROKEN).filter(visible=True).all_inner_texts()


def _plot_has_data(plot) -> None:
    """A plotly plot drew something: a heatmap image, bars or line points."""
    expect(plot.locator(".heatmaplayer image, .bars path, .scatterlayer .point").first
           ).to_be_attached(timeout=KERNEL_TIMEOUT_MS)


def test_widgets_come_back_after_reload_and_as_snapshots_after_shutdown(
        jupyter_server, browser_page, capsys):
    page = browser_page
    lab.write_notebook(jupyter_server.root_dir / "widgets.ipynb",
                       [("code", SETUP), ("code", PLAYGROUND), ("code", EXPLORER),
                        ("code", PANEL), ("code", FINETUNE)])
    lab.open_notebook(page, jupyter_server, "widgets.ipynb")
    for index in range(4):
        lab.run_cell(page, index, timeout_ms=KERNEL_TIMEOUT_MS)

    playground = lab.cell(page, 1).locator(".gemma-lab-playground")
    playground.get_by_role("button", name="Generate").click()
    expect(playground.locator(".widget-label, .widget-html").filter(has_text="tokens/s")
           ).to_be_visible(timeout=KERNEL_TIMEOUT_MS)
    explorer = lab.cell(page, 2).locator(".gemma-lab-attention-explorer")
    explorer.get_by_role("button", name="Trace").click()
    expect(explorer.locator(".widget-label, .widget-html").filter(has_text="heads")
           ).to_be_visible(timeout=KERNEL_TIMEOUT_MS)
    explorer.locator(".gemma-lab-token").nth(3).click()
    panel = lab.cell(page, 3).locator(".gemma-lab-finetune-panel")
    panel.get_by_role("button", name="Start").click()
    expect(panel.locator(".widget-label, .widget-html").filter(has_text="LoRA rank")
           ).to_be_visible(timeout=KERNEL_TIMEOUT_MS)
    lab.run_cell(page, 4, timeout_ms=KERNEL_TIMEOUT_MS)
    # While the widgets are live their snapshots stay out of sight.
    expect(page.locator(".gemma-lab-snapshot").filter(visible=True)).to_have_count(0)
    with capsys.disabled():
        lab.screenshot(page, "saved_widgets_live")
    lab.save_notebook(page)

    # A reload with the kernel alive: the widgets re-render from the kernel, plots included.
    page.reload()
    lab.wait_for_notebook(page, "widgets.ipynb", timeout_ms=KERNEL_TIMEOUT_MS)
    explorer = lab.cell(page, 2).locator(".gemma-lab-attention-explorer")
    expect(explorer).to_be_visible(timeout=KERNEL_TIMEOUT_MS)
    for plot in range(3):  # heatmap, token view, head grid
        _plot_has_data(explorer.locator(".js-plotly-plot").nth(plot))
    panel = lab.cell(page, 3).locator(".gemma-lab-finetune-panel")
    for plot in range(2):  # loss, before / after
        _plot_has_data(panel.locator(".js-plotly-plot").nth(plot))
    with capsys.disabled():
        lab.screenshot(page, "saved_widgets_reloaded")

    # Kernel gone, page reloaded: the saved snapshots, never "model not found".
    lab.shutdown_kernel(page, jupyter_server)
    page.reload()
    lab.wait_for_notebook(page, "widgets.ipynb", timeout_ms=KERNEL_TIMEOUT_MS)
    snapshots = page.locator(".gemma-lab-snapshot")
    expect(snapshots.filter(visible=True)).to_have_count(3, timeout=KERNEL_TIMEOUT_MS)
    assert _visible_broken(page) == []
    played = lab.cell(page, 1).locator(".gemma-lab-snapshot")
    expect(played).to_contain_text("<b>world</b>")  # text stays text
    assert played.locator("b").count() == 0
    generated = played.locator(".gemma-lab-token-generated")
    assert 1 <= generated.count() <= 6
    expect(played.locator("svg rect").first).to_be_visible()
    traced = lab.cell(page, 2).locator(".gemma-lab-snapshot")
    expect(traced).to_contain_text("layer 0")
    expect(traced.locator("svg").first).to_be_visible()
    tuned = lab.cell(page, 3).locator(".gemma-lab-snapshot")
    expect(tuned).to_contain_text("LoRA rank")
    expect(tuned.locator("svg polyline").first).to_be_visible()
    # lab.finetune in a cell: a plain progress line and a plotly loss plot, no widget.
    outputs = lab.cell_outputs(page, 4)
    expect(outputs.filter(has_text=re.compile(r"Fine-tuning.*4/4"))).to_be_visible()
    # One loss plot, redrawn in place (jupyterlab-plotly's output element is the plot).
    figure = outputs.and_(page.locator(".js-plotly-plot"))
    expect(figure).to_have_count(1)
    _plot_has_data(figure)
    assert outputs.locator(".jupyter-widgets").count() == 0
    lab.cell(page, 4).scroll_into_view_if_needed()
    with capsys.disabled():
        lab.element_screenshot(lab.cell(page, 4), "saved_widgets_finetune_cell")
    with capsys.disabled():
        lab.screenshot(page, "saved_widgets_after_shutdown")
