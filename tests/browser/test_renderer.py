"""The labextension in a real JupyterLab: highlighting, the token view, and saved outputs.

The quickstart example runs a `%%gemma --probs` cell on the default model; the rendered token
view is checked against the payload the kernel saved in the notebook (texts, probabilities,
alternatives), then the kernel is shut down, the page reloaded, and the saved output must
render the same. Hostile text in a saved payload must show as text, never as elements.
"""

from __future__ import annotations

import json

import jupyterlab_helpers as lab
import nbformat
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

MIME = "application/vnd.gemma-lab.v1+json"
RENDERED = ".jp-OutputArea-output.jp-GemmaLab"  # the renderer's root is the output node
QUICKSTART = "examples/01_quickstart.ipynb"
MODEL_TIMEOUT_MS = 300_000


def cell_index(path, startswith: str) -> int:
    notebook = nbformat.read(path, as_version=4)
    return next(i for i, cell in enumerate(notebook.cells) if cell.source.startswith(startswith))


def saved_payload(server, name: str, index: int) -> dict:
    saved = server.api("GET", f"api/contents/{name}")["content"]
    outputs = saved["cells"][index]["outputs"]
    return next(o["data"][MIME] for o in outputs if MIME in o.get("data", {}))


def check_token_view(page, index: int, payload: dict) -> None:
    """The DOM of cell `index`'s renderer shows exactly `payload`'s tokens and alternatives."""
    view = lab.cell(page, index).locator(RENDERED)
    tokens = view.locator(".jp-GemmaLab-token")
    expect(tokens).to_have_count(len(payload["tokens"]))
    generated = [i for i, t in enumerate(payload["tokens"]) if t["role"] == "generated"]
    assert generated, "the payload has no generated tokens"
    expect(view.locator('.jp-GemmaLab-token[data-role="generated"]')).to_have_count(
        len(generated))
    probs = [float(p) for p in
             view.locator('.jp-GemmaLab-token[data-role="generated"]').evaluate_all(
                 "nodes => nodes.map(n => n.dataset.prob)")]
    assert probs == pytest.approx([payload["tokens"][i]["prob"] for i in generated], rel=1e-6)

    # Click the least likely generated token: the popup lists its top-k with probabilities.
    pick = min(generated, key=lambda i: payload["tokens"][i]["prob"])
    token = payload["tokens"][pick]
    view.locator(f'.jp-GemmaLab-token[data-index="{pick}"]').click()
    popup = view.locator(".jp-GemmaLab-popup")
    expect(popup).to_be_visible()
    rows = popup.locator(".jp-GemmaLab-alternative")
    expect(rows).to_have_count(len(token["top_k"]))
    shown = [float(p) for p in rows.evaluate_all("rows => rows.map(r => r.dataset.prob)")]
    assert shown == pytest.approx([p for _, p in token["top_k"]], rel=1e-6)
    for row, (piece, _) in zip(rows.all(), token["top_k"], strict=True):
        # Shown as a readable label (tokenLabel); the exact text is the cell's title.
        expect(row.locator(".jp-GemmaLab-altText")).to_have_attribute(
            "title", json.dumps(piece, ensure_ascii=False))
    # Hovering a token names its alternatives in the tooltip too.
    title = view.locator(f'.jp-GemmaLab-token[data-index="{pick}"]').get_attribute("title")
    assert token["top_k"][0][0].strip() in title


@pytest.mark.real_model
@pytest.mark.jupyter_files("examples/01_quickstart.ipynb")
def test_probs_cell_renders_highlights_and_survives_reload(jupyter_server, browser_page):
    page = browser_page
    name = "01_quickstart.ipynb"
    source = jupyter_server.root_dir / name
    probs_cell = cell_index(source, "%%gemma --probs")
    placeholder_cell = cell_index(source, "%%gemma --max-new-tokens 20 --temperature 0.7")
    lab.open_notebook(page, jupyter_server, name)

    # %%gemma cells are highlighted: the magic, its flags and the {name} placeholders.
    editor = lab.cell(page, probs_cell).locator(".cm-content")
    expect(editor.locator(".jp-GemmaLab-magic")).to_have_text("%%gemma")
    # (Python's own highlighting may split one mark into several spans.)
    flags = editor.locator(".jp-GemmaLab-magicFlag")
    expect(flags.first).to_be_visible()
    assert "".join(flags.all_text_contents()) == "--probs--max-new-tokens-o"
    assert "".join(editor.locator(".jp-GemmaLab-magicValue").all_text_contents()) == "12g"
    expect(lab.cell(page, placeholder_cell).locator(".jp-GemmaLab-placeholder")).to_have_text(
        "{topic}")

    for index in (cell_index(source, "%load_ext"), cell_index(source, "%gemma load"),
                  probs_cell):
        lab.run_cell(page, index, timeout_ms=MODEL_TIMEOUT_MS)
    expect(lab.cell(page, probs_cell).locator(RENDERED)).to_have_count(1)
    # The --probs chart: plotly's own renderer draws it (its root SVG is .main-svg).
    expect(lab.cell(page, probs_cell).locator(".jp-OutputArea-output .main-svg").first
           ).to_be_visible()
    expect(lab.cell(page, probs_cell).locator(".jp-GemmaLab-metaItem[data-key='backend']")
           ).to_contain_text("jax")

    lab.save_notebook(page)
    payload = saved_payload(jupyter_server, name, probs_cell)
    check_token_view(page, probs_cell, payload)
    lab.screenshot(page, "renderer_probs_cell")

    # Kernel gone, page reloaded: the saved output renders from the notebook alone.
    lab.shutdown_kernel(page, jupyter_server)
    page.reload()
    lab.wait_for_notebook(page, name, timeout_ms=MODEL_TIMEOUT_MS)
    check_token_view(page, probs_cell, payload)


HOSTILE = [
    '<img src=x onerror="window.__pwned=1">',
    "<script>window.__pwned=2</script>",
    '"><svg onload="window.__pwned=3">',
]


def test_hostile_text_in_a_saved_payload_renders_as_text(jupyter_server, browser_page):
    page = browser_page
    tokens = [{"text": text, "role": "generated", "prob": 0.5, "logprob": -0.69, "rank": 1,
               "entropy": 1.0, "top_k": [[text, 0.5], ["<b>bold</b>", 0.25]], "id": i}
              for i, text in enumerate(HOSTILE)]
    payload = {"version": 1, "kind": "generation", "text": "".join(HOSTILE), "tokens": tokens,
               "metadata": {"model": "<img src=y onerror=\"window.__pwned=4\">",
                            "backend": "jax", "dtype": "float32", "adapter": "<script>x</script>"},
               "truncated": False}
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("# saved output", outputs=[nbformat.v4.new_output(
            "display_data", data={MIME: payload, "text/plain": "hostile"})])],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}},
    )
    nbformat.write(notebook, jupyter_server.root_dir / "hostile.ipynb")
    lab.open_notebook(page, jupyter_server, "hostile.ipynb")

    view = lab.cell(page, 0).locator(RENDERED)
    expect(view.locator(".jp-GemmaLab-token")).to_have_count(len(HOSTILE))
    for index, text in enumerate(HOSTILE):
        expect(view.locator(f'.jp-GemmaLab-token[data-index="{index}"]')).to_have_text(text)
    view.locator('.jp-GemmaLab-token[data-index="0"]').click()
    expect(view.locator(".jp-GemmaLab-alternative")).to_have_count(2)
    expect(view.locator(".jp-GemmaLab-metaItem[data-key='model']")).to_contain_text("<img src=y")
    assert view.evaluate("root => root.querySelectorAll('img, script, b, svg[onload]').length") == 0
    assert page.evaluate("() => window.__pwned === undefined")
    print(json.dumps({"hostile strings rendered as text": len(HOSTILE)}))
