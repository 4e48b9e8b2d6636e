"""The Playground's chat mode in a real JupyterLab: switch to Chat, send a message on the
default model, see the conversation as role-labelled turns (text kept as text) that agree
with `lab.chat_history`, and the reply's tokens coloured in the strip."""

from __future__ import annotations

import jupyterlab_helpers as lab
import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.real_model]

MODEL_TIMEOUT_MS = 300_000
PLAYGROUND = ".gemma-lab-playground"
SCREENSHOT = "/tmp/playground_chat.png"
MESSAGE = "What is the capital of <b>France</b>?"
SETUP = """\
import gemma_lab
from gemma_lab.widgets import Playground
lab = gemma_lab.load(progress=False)
playground = Playground(lab, max_new_tokens=16, system="Answer in one short sentence.")
playground"""
HISTORY = "print([turn['role'] for turn in lab.chat_history])"


def test_chat_mode_shows_role_labelled_turns(jupyter_server, browser_page, capsys):
    page = browser_page
    lab.write_notebook(jupyter_server.root_dir / "playground_chat.ipynb",
                       [("code", SETUP), ("code", HISTORY)])
    lab.open_notebook(page, jupyter_server, "playground_chat.ipynb")
    lab.run_cell(page, 0, timeout_ms=MODEL_TIMEOUT_MS)

    widget = lab.cell(page, 0).locator(PLAYGROUND)
    expect(widget).to_be_visible(timeout=MODEL_TIMEOUT_MS)
    system = widget.get_by_placeholder("optional, set when a chat starts")
    expect(system).to_be_hidden()  # complete mode: no chat controls
    widget.get_by_role("button", name="Chat", exact=True).click()
    expect(system).to_have_value("Answer in one short sentence.")
    expect(widget.get_by_role("button", name="New chat")).to_be_visible()
    widget.locator("textarea").fill(MESSAGE)
    lab.wait_for_kernel_idle(page)  # the message has reached the kernel's widget
    widget.get_by_role("button", name="Send").click()

    turns = widget.locator(".gemma-lab-chat-turn")
    # the model turn joins the conversation when the reply is complete
    expect(widget.locator('.gemma-lab-chat-turn[data-role="model"]')).to_be_visible(
        timeout=MODEL_TIMEOUT_MS)
    roles = turns.evaluate_all("ns => ns.map(n => n.dataset.role)")
    assert roles == ["system", "user", "model"]
    labels = widget.locator(".gemma-lab-chat-role").all_inner_texts()
    assert [label.lower() for label in labels] == roles
    expect(turns.nth(1).locator(".gemma-lab-chat-content")).to_have_text(MESSAGE)
    assert widget.locator(".gemma-lab-chat b").count() == 0  # markup stays text
    expect(widget.locator(".widget-label").filter(has_text="tokens/s")).to_be_visible()

    generated = widget.locator(".gemma-lab-token-strip .gemma-lab-token-generated")
    expect(generated.first).to_be_visible()
    assert widget.locator(".gemma-lab-token-strip .gemma-lab-token-prompt").count() == 0
    probs = [float(p) for p in generated.evaluate_all("ns => ns.map(n => n.dataset.prob)")]
    assert 1 <= len(probs) <= 16 and all(0.0 < p <= 1.0 for p in probs)

    lab.run_cell(page, 1, timeout_ms=MODEL_TIMEOUT_MS)  # the kernel's lab.chat_history agrees
    expect(lab.cell(page, 1).locator(lab.STDOUT_OUTPUT)).to_contain_text(
        "['system', 'user', 'model']")

    # Tall enough for the whole widget, so JupyterLab's toolbar covers none of it.
    page.set_viewport_size({"width": 1400, "height": 2200})
    widget.scroll_into_view_if_needed()
    widget.screenshot(path=SCREENSHOT)
    with capsys.disabled():  # the screenshot's path goes to the test log, not the capture
        print(f"SCREENSHOT: {SCREENSHOT}")
        lab.screenshot(page, "playground_chat")
