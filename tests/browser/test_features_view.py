"""The SAE features view (payload v3, kind "features") in a real JupyterLab, opened from a
saved notebook without a kernel: tokens coloured by the selected feature's activation,
feature chips that change the selection, a readout of each token's strongest features, and
hostile text that stays text. The payload comes from a real `lab.features` call on the tiny
keras-hub Gemma."""

from __future__ import annotations

import re

import jupyterlab_helpers as lab
import nbformat
import numpy as np
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

MIME = "application/vnd.gemma-lab.v1+json"
RENDERED = ".jp-OutputArea-output.jp-GemmaLab"
HOSTILE = 'hello <img src=x onerror="window.__pwned=1"> world'


@pytest.fixture(scope="module")
def payload():
    from gemma_lab.sae import SAE
    from gemma_lab.testing import tiny_session

    session = tiny_session()
    hook = "blocks.1.resid_post"
    x = session.run_with_cache(HOSTILE, names=[hook])[hook]
    rng = np.random.default_rng(0)
    w_enc = rng.normal(size=(32, 48)).astype("float32") / np.sqrt(32)
    threshold = (np.percentile(x @ w_enc, 75, axis=0) + 1e-3).astype("float32")
    sae = SAE(W_enc=w_enc, W_dec=rng.normal(size=(48, 32)).astype("float32") / 7,
              b_enc=np.zeros(48, "float32"), b_dec=np.zeros(32, "float32"),
              threshold=np.maximum(threshold, 0), hook=hook)
    data = session.features(HOSTILE, sae)._repr_mimebundle_()
    assert set(data) == {MIME, "text/html", "text/plain"}
    return data


def alpha(css: str) -> float:
    numbers = [float(v) for v in re.findall(r"[\d.]+", css)]
    return numbers[3] if len(numbers) > 3 else (0.0 if css == "rgba(0, 0, 0, 0)" else 1.0)


def test_features_view_selects_colours_and_lists_features(jupyter_server, browser_page,
                                                          payload):
    page = browser_page
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "fa", outputs=[nbformat.v4.new_output("display_data", data=payload)])],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}})
    nbformat.write(notebook, jupyter_server.root_dir / "features.ipynb")
    lab.open_notebook(page, jupyter_server, "features.ipynb")
    data = payload[MIME]["features"]
    tokens = payload[MIME]["tokens"]
    section = lab.cell(page, 0).locator(f"{RENDERED} .jp-GemmaLab-features")
    expect(section).to_be_visible()
    spans = section.locator(".jp-GemmaLab-featureToken")
    expect(spans).to_have_count(len(tokens))
    chips = section.locator(".jp-GemmaLab-featureChips .jp-GemmaLab-featureChip")
    expect(chips).to_have_count(len(data["top"]))
    assert len(data["top"]) >= 3

    def check_selected(row: dict) -> None:
        expect(section).to_have_attribute("data-selected", str(row["feature"]))
        peak = max(row["acts"][1:])  # scaled after <bos>, which saturates
        shown = spans.evaluate_all(
            "ns => ns.map(n => [n.dataset.activation, getComputedStyle(n).backgroundColor])")
        for (value, colour), want in zip(shown, row["acts"], strict=True):
            assert float(value) == pytest.approx(want, rel=1e-5, abs=1e-6)
            assert alpha(colour) == pytest.approx(min(want / peak, 1.0), abs=0.01)

    check_selected(data["top"][0])  # the strongest feature is selected on open
    expect(chips.nth(0)).to_have_class(re.compile("jp-GemmaLab-selected"))
    chips.nth(2).click()
    check_selected(data["top"][2])
    expect(chips.nth(2)).to_have_class(re.compile("jp-GemmaLab-selected"))

    # Hover: the readout lists that token's strongest features, strongest first.
    position = max(range(1, len(tokens)), key=lambda p: len(data["per_token"][p]))
    spans.nth(position).hover()
    readout = section.locator(".jp-GemmaLab-featureReadout")
    listed = readout.locator(".jp-GemmaLab-featureChip")
    pairs = data["per_token"][position]
    expect(listed).to_have_count(len(pairs))
    for chip, (feature, _) in zip(listed.all(), pairs, strict=True):
        assert chip.get_attribute("data-feature") == str(feature)
    # A feature clicked in the readout becomes the selection (partial row if not in top).
    listed.nth(0).click()
    expect(section).to_have_attribute("data-selected", str(pairs[0][0]))

    legend = section.text_content()
    assert "variance explained" in legend and "loss added" in legend
    assert page.evaluate("() => window.__pwned") is None
    assert section.locator("img").count() == 0
    assert "<img" in spans.evaluate_all("ns => ns.map(n => n.textContent).join('')")
    lab.element_screenshot(lab.cell(page, 0), "features_view")
