"""The browser harness itself: a notebook runs, saves, and its output survives a reload."""

from __future__ import annotations

import jupyterlab_helpers as lab
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_run_save_reload_keeps_output(jupyter_server, browser_page):
    page = browser_page
    lab.write_notebook(
        jupyter_server.root_dir / "harness.ipynb",
        [("code", "print(6*7)"), ("markdown", "# Harness *check*")],
    )

    lab.open_notebook(page, jupyter_server, "harness.ipynb")
    expect(lab.cell_outputs(page, 0)).to_have_count(0)
    lab.run_all_cells(page)

    expect(lab.cell(page, 0).locator(lab.STDOUT_OUTPUT)).to_have_text("42")
    expect(lab.cell(page, 0).locator(lab.INPUT_PROMPT)).to_have_text("[1]:")
    # Rendered headings carry a "¶" anchor link, so match the accessible name instead.
    expect(lab.cell(page, 1).get_by_role("heading", name="Harness check")).to_be_visible()

    lab.save_notebook(page)
    saved = jupyter_server.api("GET", "api/contents/harness.ipynb")["content"]
    assert saved["cells"][0]["outputs"][0]["text"] == "42\n"

    kernel_id = lab.shutdown_kernel(page, jupyter_server)
    page.reload()
    lab.wait_for_notebook(page, "harness.ipynb")
    assert lab.current_kernel_id(page) != kernel_id
    expect(lab.cell(page, 0).locator(lab.STDOUT_OUTPUT)).to_have_text("42")
    expect(lab.cell(page, 0).locator(lab.INPUT_PROMPT)).to_have_text("[1]:")

    # The fresh kernel runs a single cell too; its counter restarts at 1.
    lab.run_cell(page, 0)
    expect(lab.cell(page, 0).locator(lab.STDOUT_OUTPUT)).to_have_text("42")
    expect(lab.cell(page, 0).locator(lab.INPUT_PROMPT)).to_have_text("[1]:")
