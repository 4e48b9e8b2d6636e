"""A chat transcript's score and trace in a real JupyterLab: a label where each turn starts
(user / model / system), turn markers dimmed, model text escaped. Screenshots go to
artifacts/screenshots/."""

from __future__ import annotations

import jupyterlab_helpers as lab
import nbformat
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

MIME = "application/vnd.gemma-lab.v1+json"
RENDERED = ".jp-OutputArea-output.jp-GemmaLab"
TURNS = [{"role": "system", "content": "Be brief."},
         {"role": "user", "content": "hello <img src=x onerror=alert(1)>"},
         {"role": "model", "content": "hi there"},
         {"role": "user", "content": "and then?"}]


def test_transcript_turns_are_labelled_by_speaker(jupyter_server, browser_page):
    from gemma_lab.testing import tiny_session

    session = tiny_session()
    results = [session.score(TURNS), session.trace(TURNS)]
    cells = [nbformat.v4.new_code_cell(f"# output {i}", outputs=[
        nbformat.v4.new_output("display_data", data=r._repr_mimebundle_())])
        for i, r in enumerate(results)]
    notebook = nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(notebook, jupyter_server.root_dir / "transcript.ipynb")
    page = browser_page
    lab.open_notebook(page, jupyter_server, "transcript.ipynb")
    for index, result in enumerate(results):
        rendered = lab.cell(page, index).locator(RENDERED)
        labels = rendered.locator(".jp-GemmaLab-speaker")
        # Gemma 1-3 fold the system prompt into the first user turn: system, user, model, user
        expect(labels).to_have_text(["system", "user", "model", "user"])
        speakers = [t.get("speaker") for t in result.to_dict()["tokens"]]
        markup = rendered.locator(".jp-GemmaLab-token.jp-GemmaLab-token-markup")
        expect(markup).to_have_count(speakers.count("markup"))
        assert page.evaluate("() => document.querySelectorAll('img[src=x]').length") == 0
        lab.element_screenshot(rendered, f"transcript_{'score' if index == 0 else 'trace'}")
