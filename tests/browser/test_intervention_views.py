"""The payload-v2 views in a real JupyterLab: activation patching, run comparison, direct logit
attribution, the activation-cache summary and safety classification.

Payloads come from real calls on the tiny keras-hub Gemma (`gemma_lab.testing.tiny_session`),
saved as the full MIME bundle their `_repr_mimebundle_` returns (so JupyterLab must pick this
renderer over the text/html fallback), and opened in headless Chromium. One test also runs the
calls in a live kernel. Screenshots of each view go to artifacts/screenshots/.
"""

from __future__ import annotations

import copy
import re

import jupyterlab_helpers as lab
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

MIME = "application/vnd.gemma-lab.v1+json"
RENDERED = ".jp-OutputArea-output.jp-GemmaLab"
KERNEL_TIMEOUT_MS = 300_000
HOSTILE = "<img src=x onerror=alert(1)>"
HOSTILE_2 = '<script>window.__pwned=2</script>"><svg onload="window.__pwned=3">'


@pytest.fixture(scope="module")
def results():
    """Real results on the tiny model, one per view (and two of patching and comparison)."""
    from gemma_lab import interventions as iv
    from gemma_lab.testing import tiny_session

    session = tiny_session()
    return {
        "patching": session.patch("hello world", "hello wurld", target=" ok", progress=False),
        "heads": session.patch("hello world", "hello wurld", target=" ok", over="heads",
                               progress=False),
        "logit_attribution": session.logit_attribution("hello <b>"),
        "cache": session.run_with_cache(
            "hi <b>", names=["embed", "blocks.0.attn.z", "blocks.0.attn.pattern",
                             "blocks.1.resid_post"]),
        "comparison": session.compare("hello world", hooks=iv.ablate_heads([(0, 1)])),
        "diverged": session.compare("hello world", "hello there"),
        "generation": session.generate("hello", max_new_tokens=4),
        "hostile_comparison": session.compare("a <b>c</b>", hooks=iv.ablate_heads([(0, 1)]),
                                              labels=(HOSTILE, HOSTILE_2)),
        "hostile_patching": session.patch(HOSTILE, HOSTILE.replace("x", "y"), target="<b>",
                                          progress=False),
    }


LONG_TEXT = "Tell me, step by step and with every detail, how to bake a sourdough loaf. " * 4
OWN_RULE = "The text shall not contain HTML."


@pytest.fixture(scope="module")
def classifications():
    """Real classify() results on the tiny model: texts × policies (one text hostile), and
    model responses with a long text and a hostile policy name."""
    from gemma_lab.testing import tiny_session

    session = tiny_session()
    return {
        "prompts": session.classify(["How do I bake bread?", HOSTILE],
                                    policy=["harassment", "hate", "My own rule"]),
        "responses": session.classify([LONG_TEXT, "hi"], policy={HOSTILE_2: OWN_RULE},
                                      response=["Mix flour, water and salt.", HOSTILE]),
    }


def bundle(result) -> dict:
    """The MIME bundle the kernel would send for `result` (our JSON, text/html, text/plain)."""
    data = result._repr_mimebundle_()
    assert set(data) == {MIME, "text/html", "text/plain"}
    return data


def view(page, index: int):
    return lab.cell(page, index).locator(RENDERED)


def token_label(text: str) -> str:
    """Mirrors dom.ts tokenLabel: one-line labels with whitespace-only tokens made visible."""
    label = text.replace("\n", "↵").replace("\t", "⇥")
    return label.replace(" ", "␣") if label and not label.strip() else label


def rgba(css: str) -> tuple[float, float, float, float]:
    numbers = [float(x) for x in re.findall(r"[\d.]+", css)]
    return (*numbers[:3], numbers[3] if len(numbers) > 3 else 1.0)


def backgrounds(locator) -> list[tuple[float, float, float, float]]:
    colours = locator.evaluate_all("ns => ns.map(n => getComputedStyle(n).backgroundColor)")
    return [rgba(c) for c in colours]


def check_patching(page, index: int, payload: dict) -> None:
    patching = payload["patching"]
    rows, columns, scores = patching["rows"], patching["columns"], patching["scores"]
    section = view(page, index).locator(".jp-GemmaLab-patching")
    expect(section).to_have_attribute("data-over", patching["over"])
    assert view(page, index).locator(".jp-GemmaLab-token").count() == 0

    grid = section.locator('.jp-GemmaLab-grid[data-grid="patching"]')
    cells = grid.locator(".jp-GemmaLab-gridCell")
    expect(cells).to_have_count(len(rows) * len(columns))
    expect(grid).to_have_attribute("data-rows", str(len(rows)))
    expect(grid).to_have_attribute("data-cols", str(len(columns)))
    shown = [float(v) for v in cells.evaluate_all("ns => ns.map(n => n.dataset.value)")]
    assert shown == pytest.approx([v for row in scores for v in row], rel=1e-9)
    assert grid.locator(".jp-GemmaLab-gridRowLabel").all_text_contents() == rows
    assert grid.locator(".jp-GemmaLab-gridColumnLabel").all_text_contents() == [
        token_label(c) for c in columns]

    # Sequential scale: the highest score is the darkest cell, the lowest the lightest.
    flat = [v for row in scores for v in row]
    lightness = [sum(c[:3]) for c in backgrounds(cells)]
    assert lightness[flat.index(max(flat))] == min(lightness)
    assert lightness[flat.index(min(flat))] == max(lightness)

    # The baselines are stated above the heatmap and marked on the legend.
    for key in ("clean", "corrupted"):
        line = section.locator(f'.jp-GemmaLab-baseline[data-baseline="{key}"]')
        expect(line).to_contain_text(f"{patching[key]:.4f}")
        expect(line).to_contain_text(patching[f"{key}_prompt"])
        expect(section.locator(f'.jp-GemmaLab-scaleMarker[data-label="{key}"]')).to_have_count(1)

    # Hovering a cell (the highest score's) shows its layer, column label and value.
    best = flat.index(max(flat))
    row, column = divmod(best, len(columns))
    cell = grid.locator(f'.jp-GemmaLab-gridCell[data-row="{row}"][data-col="{column}"]')
    cell.hover()
    readout = section.locator(".jp-GemmaLab-gridReadout")
    expect(readout).to_contain_text(f"{rows[row]} · ")
    expect(readout).to_contain_text(f"= {scores[row][column]:.4f}")
    if patching["over"] == "heads":
        expect(readout).to_contain_text(columns[column])
    else:
        expect(readout).to_contain_text(f'position {column} "{columns[column]}"')
    expect(cell).to_have_class(re.compile(r"\bjp-mod-hover\b"))
    expect(grid.locator(f'.jp-GemmaLab-gridRowLabel[data-row="{row}"]')).to_have_class(
        re.compile(r"\bjp-mod-hover\b"))


def test_patching_heatmaps_have_a_cell_per_score_and_hover_shows_it(
        jupyter_server, browser_page, results):
    page = browser_page
    payloads = [results["patching"].to_dict(), results["heads"].to_dict()]
    assert payloads[0]["version"] == 3 and payloads[1]["patching"]["over"] == "heads"
    lab.open_saved_outputs(page, jupyter_server, "patching.ipynb",
                 [bundle(results["patching"]), bundle(results["heads"])])
    for index, (payload, name) in enumerate(zip(payloads, ("patching_positions", "patching_heads"),
                                                strict=True)):
        expect(view(page, index)).to_have_attribute("data-kind", "patching")
        check_patching(page, index, payload)
        lab.element_screenshot(view(page, index), name)  # taken while a cell is hovered


def test_comparison_strip_colours_tokens_by_diff(jupyter_server, browser_page, results):
    page = browser_page
    payload = results["comparison"].to_dict()
    diverged = results["diverged"].to_dict()
    comparison = payload["comparison"]
    diffs = comparison["diff"]
    label_a, label_b = comparison["labels"]
    assert comparison["diverged_at"] is None and any(d > 0 for d in diffs) and any(
        d < 0 for d in diffs)
    lab.open_saved_outputs(page, jupyter_server, "comparison.ipynb",
                 [bundle(results["comparison"]), bundle(results["diverged"])])

    strip = view(page, 0).locator(".jp-GemmaLab-comparison")
    expect(view(page, 0)).to_have_attribute("data-kind", "comparison")
    tokens = strip.locator(".jp-GemmaLab-compareToken")
    expect(tokens).to_have_count(len(payload["tokens"]))
    assert tokens.all_text_contents() == [t["text"] for t in payload["tokens"]]
    shown = [float(v) for v in tokens.evaluate_all("ns => ns.map(n => n.dataset.diff)")]
    assert shown == pytest.approx(diffs, rel=1e-9)

    # Blue where run b finds the token likelier, red where run a does; alpha by |diff| / max.
    colours = backgrounds(tokens)
    for diff, (r, _, b, alpha) in zip(diffs, colours, strict=True):
        if diff > 0:
            assert b > r, (diff, r, b)
        elif diff < 0:
            assert r > b, (diff, r, b)
        assert alpha > 0
    strongest = max(range(len(diffs)), key=lambda i: abs(diffs[i]))
    assert colours[strongest][3] == max(c[3] for c in colours)

    legend = strip.locator(".jp-GemmaLab-scaleLegend")
    expect(legend.locator('[data-end="low"]')).to_contain_text(f"{label_a} likelier")
    expect(legend.locator('[data-end="high"]')).to_contain_text(f"{label_b} likelier")
    expect(strip.locator(".jp-GemmaLab-divergence")).to_contain_text("same tokens")

    # Hover shows log p under a and b and the difference.
    positive = max(range(len(diffs)), key=lambda i: diffs[i])
    tokens.nth(positive).hover()
    readout = strip.locator(".jp-GemmaLab-compareReadout")
    expect(readout).to_contain_text(f'log p a ({label_a}) {comparison["logprobs_a"][positive]:.4f}')
    expect(readout).to_contain_text(f'b ({label_b}) {comparison["logprobs_b"][positive]:.4f}')
    expect(readout).to_contain_text(f"diff +{diffs[positive]:.4f}: b ({label_b}) likelier")
    lab.element_screenshot(view(page, 0), "comparison_hooks")

    # Two texts whose tokens differ: later tokens are greyed and the divergence is stated.
    at = diverged["comparison"]["diverged_at"]
    assert at is not None and 0 < at < len(diverged["tokens"])
    strip = view(page, 1).locator(".jp-GemmaLab-comparison")
    tokens = strip.locator(".jp-GemmaLab-compareToken")
    expect(tokens).to_have_count(len(diverged["tokens"]))
    expect(strip.locator(".jp-GemmaLab-compareToken.jp-mod-diverged")).to_have_count(
        len(diverged["tokens"]) - at)
    classes = tokens.evaluate_all("ns => ns.map(n => n.className)")
    assert all(("jp-mod-diverged" in c) == (i >= at) for i, c in enumerate(classes))
    grey = backgrounds(strip.locator(".jp-GemmaLab-compareToken.jp-mod-diverged"))
    assert len(set(grey)) == 1 and max(grey[0][:3]) - min(grey[0][:3]) < 10  # one neutral grey
    divergence = strip.locator(".jp-GemmaLab-divergence")
    expect(divergence).to_have_attribute("data-diverged-at", str(at))
    expect(divergence).to_contain_text(f"differ from token {at}")
    expect(divergence).to_contain_text(diverged["tokens"][at]["text"])
    tokens.nth(at).hover()
    expect(strip.locator(".jp-GemmaLab-compareReadout")).to_contain_text("not compared")
    lab.element_screenshot(view(page, 1), "comparison_diverged")


def test_logit_attribution_bars_and_head_heatmap(jupyter_server, browser_page, results):
    page = browser_page
    payload = results["logit_attribution"].to_dict()
    la = payload["logit_attribution"]
    lab.open_saved_outputs(page, jupyter_server, "dla.ipynb",
                           [bundle(results["logit_attribution"])])
    section = view(page, 0).locator(".jp-GemmaLab-logitAttribution")
    expect(view(page, 0)).to_have_attribute("data-kind", "logit_attribution")
    expect(section.locator(".jp-GemmaLab-toolbar")).to_contain_text(la["target"])
    expect(section.locator(".jp-GemmaLab-dlaTotals")).to_contain_text(f"{la['logit']:.4f}")

    rows = section.locator(".jp-GemmaLab-dlaRow")
    expect(rows).to_have_count(len(la["labels"]))
    assert section.locator(".jp-GemmaLab-dlaLabel").all_text_contents() == la["labels"]
    shown = [float(v) for v in rows.evaluate_all("ns => ns.map(n => n.dataset.value)")]
    assert shown == pytest.approx(la["values"], rel=1e-9)
    assert any(v < 0 for v in la["values"]) and any(v > 0 for v in la["values"])
    bars = section.locator(".jp-GemmaLab-dlaBar")
    widths = bars.evaluate_all("ns => ns.map(n => n.getBoundingClientRect().width)")
    for value, (r, _, b, _a), width in zip(la["values"], backgrounds(bars), widths, strict=True):
        assert (b > r) if value > 0 else (r > b), (value, r, b)
        assert width == pytest.approx(max(widths) * abs(value) / max(map(abs, la["values"])),
                                      abs=1.0)
    # Negative bars grow left from the zero line, positive ones right.
    lefts = bars.evaluate_all("ns => ns.map(n => n.getBoundingClientRect().left)")
    rights = bars.evaluate_all("ns => ns.map(n => n.getBoundingClientRect().right)")
    zero = min(left for left, v in zip(lefts, la["values"], strict=True) if v > 0)
    for value, left, right in zip(la["values"], lefts, rights, strict=True):
        assert (left == pytest.approx(zero, abs=1)) if value > 0 else (
            right == pytest.approx(zero, abs=1))

    heads = la["heads"]
    grid = section.locator('.jp-GemmaLab-grid[data-grid="heads"]')
    cells = grid.locator(".jp-GemmaLab-gridCell")
    expect(cells).to_have_count(len(heads) * len(heads[0]))
    colours = backgrounds(cells)
    for value, (r, _, b, _a) in zip([v for row in heads for v in row], colours, strict=True):
        assert (b > r) if value > 0 else (r > b)
    # Hover the most negative head.
    layer, head = min(((i, j) for i in range(len(heads)) for j in range(len(heads[0]))),
                      key=lambda ij: heads[ij[0]][ij[1]])
    assert heads[layer][head] < 0
    grid.locator(f'.jp-GemmaLab-gridCell[data-row="{layer}"][data-col="{head}"]').hover()
    expect(section.locator(".jp-GemmaLab-gridReadout")).to_have_text(
        f'L{layer} · H{head}: {heads[layer][head]:+.4f} to the logit of "{la["target"]}"')
    lab.element_screenshot(view(page, 0), "logit_attribution")


def test_cache_summary_lists_points_with_rms_strips(jupyter_server, browser_page, results):
    page = browser_page
    payload = results["cache"].to_dict()
    points = payload["cache"]["points"]
    lab.open_saved_outputs(page, jupyter_server, "cache.ipynb", [bundle(results["cache"])])
    section = view(page, 0).locator(".jp-GemmaLab-cache")
    expect(view(page, 0)).to_have_attribute("data-kind", "cache")
    expect(section.locator(".jp-GemmaLab-cacheTable th")).to_have_text(
        ["point", "shape", "mean |x|", "max |x|", "RMS by position"])
    rows = section.locator(".jp-GemmaLab-cacheRow")
    expect(rows).to_have_count(len(points))
    for index, point in enumerate(points):
        row = rows.nth(index)
        expect(row.locator(".jp-GemmaLab-cacheName")).to_have_text(point["name"])
        expect(row.locator(".jp-GemmaLab-cacheShape")).to_have_text(
            " × ".join(str(d) for d in point["shape"]))
        for stat in ("mean_abs", "max_abs"):
            value = float(row.locator(f'[data-stat="{stat}"]').get_attribute("data-value"))
            assert value == pytest.approx(point[stat], rel=1e-9)
        bars = row.locator(".jp-GemmaLab-sparkBar")
        rms = point.get("rms_by_position")
        if rms is None:  # attn.pattern has no per-position RMS
            expect(bars).to_have_count(0)
            expect(row).to_contain_text("not recorded")
            continue
        expect(bars).to_have_count(len(rms))
        # Bar heights are proportional to the RMS, the tallest at the row's largest RMS.
        heights = row.locator(".jp-GemmaLab-sparkFill").evaluate_all(
            "ns => ns.map(n => n.getBoundingClientRect().height)")
        assert heights == pytest.approx([max(heights) * v / max(rms) for v in rms], abs=0.5)
        assert heights.index(max(heights)) == rms.index(max(rms))
    assert any("rms_by_position" not in p for p in points)

    first = points[0]
    peak = first["rms_by_position"].index(max(first["rms_by_position"]))
    rows.nth(0).locator(f'.jp-GemmaLab-sparkBar[data-position="{peak}"]').hover()
    expect(section.locator(".jp-GemmaLab-cacheReadout")).to_contain_text(
        f'{first["name"]} · position {peak} "{payload["tokens"][peak]["text"]}": RMS')
    lab.element_screenshot(view(page, 0), "cache_summary")


def test_hostile_text_in_the_new_views_renders_as_text(jupyter_server, browser_page, results):
    page = browser_page
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    comparison = results["hostile_comparison"].to_dict()
    assert comparison["comparison"]["labels"] == [HOSTILE, HOSTILE_2]
    patching = results["hostile_patching"].to_dict()
    assert patching["patching"]["clean_prompt"] == HOSTILE
    # Real payloads, with whole hostile strings put where tokens and names go.
    comparison["tokens"][1]["text"] = HOSTILE
    patching["patching"]["columns"][1] = HOSTILE
    dla = copy.deepcopy(results["logit_attribution"].to_dict())
    dla["logit_attribution"]["labels"][0] = HOSTILE
    dla["logit_attribution"]["target"] = HOSTILE_2
    cache = copy.deepcopy(results["cache"].to_dict())
    cache["cache"]["points"][0]["name"] = HOSTILE
    cache["text"] = HOSTILE_2
    lab.open_saved_outputs(page, jupyter_server, "hostile_v2.ipynb",
                 [{MIME: p, "text/plain": "hostile"} for p in (comparison, patching, dla, cache)])

    expect(view(page, 0).locator('.jp-GemmaLab-compareToken[data-index="1"]')).to_have_text(
        HOSTILE)
    expect(view(page, 0).locator('.jp-GemmaLab-scaleEnd[data-end="low"]')).to_contain_text(
        HOSTILE)
    expect(view(page, 0).locator('.jp-GemmaLab-scaleEnd[data-end="high"]')).to_contain_text(
        HOSTILE_2)
    expect(view(page, 1).locator('.jp-GemmaLab-gridColumnLabel[data-col="1"]')).to_have_text(
        HOSTILE)
    expect(view(page, 1).locator('.jp-GemmaLab-baseline[data-baseline="clean"]')
           ).to_contain_text(HOSTILE)
    expect(view(page, 1).locator(".jp-GemmaLab-toolbar")).to_contain_text('"<b>"')
    view(page, 1).locator('.jp-GemmaLab-gridCell[data-row="0"][data-col="1"]').hover()
    expect(view(page, 1).locator(".jp-GemmaLab-gridReadout")).to_contain_text(HOSTILE)
    expect(view(page, 2).locator(".jp-GemmaLab-dlaLabel").first).to_have_text(HOSTILE)
    expect(view(page, 2).locator(".jp-GemmaLab-toolbar")).to_contain_text(
        HOSTILE_2.replace('"', '\\"'))  # quoted as JSON
    expect(view(page, 3).locator(".jp-GemmaLab-cacheName").first).to_have_text(HOSTILE)

    for index in range(4):
        assert view(page, index).evaluate(
            "root => root.querySelectorAll('img, script, svg[onload]').length") == 0
    lab.element_screenshot(view(page, 0), "hostile_comparison")
    assert page.evaluate("() => window.__pwned === undefined")
    assert dialogs == []


def format_prob(prob: float) -> str:
    """Mirrors dom.ts formatProb (JS toExponential writes e-4, not e-04)."""
    if prob != 0 and prob < 0.001:
        return re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{prob:.1e}")
    return f"{prob:.3f}"


def check_classification(page, index: int, payload: dict) -> None:
    """The classification view of `payload` in output `index`: one bar per text × policy on a
    fixed 0..1 scale, width ∝ P(violation), the value beside it, texts and responses shown."""
    c = payload["classification"]
    texts, policies, probs = c["texts"], c["policies"], c["probabilities"]
    rendered = view(page, index)
    expect(rendered).to_have_attribute("data-kind", "classification")
    assert rendered.locator(".jp-GemmaLab-token, .jp-GemmaLab-text").count() == 0
    section = rendered.locator(".jp-GemmaLab-classification")
    expect(section).to_have_attribute("data-texts", str(len(texts)))
    expect(section).to_have_attribute("data-policies", str(len(policies)))
    caption = section.locator(".jp-GemmaLab-toolbar")
    for words in ("P(violation)", "ShieldGemma", '"Yes" / "No" logits', "shieldgemma model"):
        expect(caption).to_contain_text(words)

    items = section.locator(".jp-GemmaLab-classItem")
    expect(items).to_have_count(len(texts))
    rows = section.locator(".jp-GemmaLab-classRow")
    expect(rows).to_have_count(len(texts) * len(policies))
    flat = [p for row in probs for p in row]
    shown = [float(v) for v in rows.evaluate_all("ns => ns.map(n => n.dataset.value)")]
    assert shown == pytest.approx(flat, rel=1e-12)
    where = rows.evaluate_all("ns => ns.map(n => [+n.dataset.text, +n.dataset.policyIndex])")
    assert where == [[t, p] for t in range(len(texts)) for p in range(len(policies))]
    assert section.locator(".jp-GemmaLab-classPolicy").all_text_contents() == policies * len(
        texts)
    assert section.locator(".jp-GemmaLab-classValue").all_text_contents() == [
        format_prob(p) for p in flat]

    # Fixed 0..1 scale: every track is as wide, a bar is P × the track, starting at its left.
    tracks = section.locator(".jp-GemmaLab-classTrack")
    boxes = tracks.evaluate_all("ns => ns.map(n => n.getBoundingClientRect().toJSON())")
    width = boxes[0]["width"]
    assert width > 100 and all(b["width"] == pytest.approx(width, abs=0.01) for b in boxes)
    bars = section.locator(".jp-GemmaLab-classBar")
    expect(bars).to_have_count(len(flat))
    bar_boxes = bars.evaluate_all("ns => ns.map(n => n.getBoundingClientRect().toJSON())")
    for p, bar, track in zip(flat, bar_boxes, boxes, strict=True):
        assert bar["width"] == pytest.approx(p * width, abs=0.5), (p, bar["width"], width)
        assert bar["left"] == pytest.approx(track["left"], abs=0.5)
    # The 0.5 line sits in the middle of each track, and the legend marks 0.5 too.
    middle = tracks.first.evaluate("n => parseFloat(getComputedStyle(n, '::after').left)")
    assert middle == pytest.approx(width / 2, abs=0.5)
    expect(section.locator('.jp-GemmaLab-scaleMarker[data-label="0.5"]')).to_have_count(1)
    expect(section.locator('.jp-GemmaLab-scaleEnd[data-end="low"]')).to_have_text("0")
    expect(section.locator('.jp-GemmaLab-scaleEnd[data-end="high"]')).to_have_text("1")

    # Each text (and response) heads its bars as text; long ones are cut, full text on hover.
    for i, text in enumerate(texts):
        body = items.nth(i).locator(".jp-GemmaLab-classText .jp-GemmaLab-classBody")
        expect(body).to_have_attribute("title", text)
        expect(body).to_have_text(text if len(text) <= 160 else text[:159] + "…")
        responses = items.nth(i).locator(".jp-GemmaLab-classResponse .jp-GemmaLab-classBody")
        if c["responses"] is None:
            expect(responses).to_have_count(0)
        else:
            expect(responses).to_have_text(c["responses"][i])
            expect(responses).to_have_attribute("title", c["responses"][i])


def test_classification_bars_show_p_violation_per_text_and_policy(
        jupyter_server, browser_page, classifications):
    page = browser_page
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    prompts = classifications["prompts"].to_dict()
    responses = classifications["responses"].to_dict()
    c = prompts["classification"]
    assert prompts["kind"] == "classification" and prompts["tokens"] == []
    assert prompts["text"] == "2 texts" and c["texts"][1] == HOSTILE and c["responses"] is None
    assert len(c["probabilities"]) == 2 and all(len(row) == 3 for row in c["probabilities"])
    assert responses["classification"]["policies"] == [HOSTILE_2]
    assert len(LONG_TEXT) > 160
    # The tiny model's P(violation) are all near 0.53; a copy of the real payload with spread
    # values checks the widths and the neutral → red colour scale over the whole range.
    spread = copy.deepcopy(prompts)
    spread["classification"]["probabilities"] = [[0.0, 0.27, 0.52], [0.75, 0.98, 1.0]]
    lab.open_saved_outputs(page, jupyter_server, "classification.ipynb",
                 [bundle(classifications["prompts"]), {MIME: spread, "text/plain": "spread"},
                  bundle(classifications["responses"])])

    for index, payload in enumerate((prompts, spread, responses)):
        check_classification(page, index, payload)
    # Not a ShieldGemma: the view says the numbers mean little.
    expect(view(page, 0).locator(".jp-GemmaLab-classNote")).to_contain_text(
        f"{prompts['metadata']['model']} is not a ShieldGemma model")

    # Colour: neutral grey at 0, redder (and less grey) as P(violation) rises.
    colours = backgrounds(view(page, 1).locator(".jp-GemmaLab-classBar"))
    redness = [r - (g + b) / 2 for r, g, b, _ in colours]
    assert redness == sorted(redness) and redness[0] < 5 and redness[-1] > 100
    assert max(colours[0][:3]) - min(colours[0][:3]) < 10
    assert colours[-1][0] > 150 and colours[-1][1] < 60
    lab.element_screenshot(view(page, 1), "classification_scale")

    # Hover the highest bar of the real payload: the readout names text, policy, probability.
    flat = [p for row in c["probabilities"] for p in row]
    best = flat.index(max(flat))
    text_index, policy_index = divmod(best, len(c["policies"]))
    section = view(page, 0).locator(".jp-GemmaLab-classification")
    row = section.locator(f'.jp-GemmaLab-classRow[data-text="{text_index}"]'
                          f'[data-policy-index="{policy_index}"]')
    row.locator(".jp-GemmaLab-classTrack").hover()
    readout = section.locator(".jp-GemmaLab-classReadout")
    expect(readout).to_contain_text(f'text {text_index + 1} "{c["texts"][text_index]}"')
    expect(readout).to_contain_text(f'policy "{c["policies"][policy_index]}"')
    expect(readout).to_contain_text(f"P(violation) = {max(flat):.4f}")
    expect(row).to_have_class(re.compile(r"\bjp-mod-hover\b"))
    expect(row.locator(".jp-GemmaLab-classTrack")).to_have_attribute(
        "title", readout.inner_text())
    lab.element_screenshot(view(page, 0), "classification")  # taken while a bar is hovered

    # Responses, a long text and a hostile policy name: shown as text, readout JSON-quoted.
    section = view(page, 2).locator(".jp-GemmaLab-classification")
    expect(section.locator(".jp-GemmaLab-classPolicy").first).to_have_text(HOSTILE_2)
    section.locator('.jp-GemmaLab-classRow[data-text="1"] .jp-GemmaLab-classTrack').hover()
    readout = section.locator(".jp-GemmaLab-classReadout")
    expect(readout).to_contain_text('text 2 "hi" · policy "' + HOSTILE_2.replace('"', '\\"'))
    lab.element_screenshot(view(page, 2), "classification_responses")

    for index in range(3):
        assert view(page, index).evaluate(
            "root => root.querySelectorAll('img, script, svg[onload]').length") == 0
    assert page.evaluate("() => window.__pwned === undefined")
    assert dialogs == []


def test_version_1_payload_still_renders(jupyter_server, browser_page, results):
    page = browser_page
    current = results["generation"].to_dict()
    assert current["version"] == 3
    old = {**copy.deepcopy(current), "version": 1}  # as a notebook saved by gemma_lab 0.2
    future = {**copy.deepcopy(current), "version": 4}
    missing = {**copy.deepcopy(results["patching"].to_dict())}
    del missing["patching"]  # a v2 kind without its field falls back to the token view
    lab.open_saved_outputs(page, jupyter_server, "versions.ipynb",
                 [{MIME: p, "text/plain": "text"} for p in (old, current, future, missing)])

    for index, payload in ((0, old), (1, current)):
        rendered = view(page, index)
        expect(rendered).to_have_attribute("data-kind", "generation")
        expect(rendered.locator(".jp-GemmaLab-error")).to_have_count(0)
        tokens = rendered.locator(".jp-GemmaLab-token")
        expect(tokens).to_have_count(len(payload["tokens"]))
        probs = [float(p) for p in rendered.locator(
            '.jp-GemmaLab-token[data-role="generated"]').evaluate_all(
            "ns => ns.map(n => n.dataset.prob)")]
        assert probs == pytest.approx(
            [t["prob"] for t in payload["tokens"] if t["role"] == "generated"], rel=1e-9)
        expect(rendered.locator(".jp-GemmaLab-metaItem[data-key='model']")).to_contain_text(
            payload["metadata"]["model"])
    lab.element_screenshot(view(page, 0), "version_1_generation")

    expect(view(page, 2).locator(".jp-GemmaLab-error")).to_contain_text(
        "payload version 4 is not supported")
    expect(view(page, 2).locator(".jp-GemmaLab-error")).to_contain_text("expects 1 or 2 or 3")
    expect(view(page, 3).locator(".jp-GemmaLab-token")).to_have_count(len(missing["tokens"]))


KERNEL_CELLS = [
    "from gemma_lab import interventions as iv\n"
    "from gemma_lab.testing import tiny_session\n"
    "session = tiny_session()",
    "session.patch('hello world', 'hello wurld', target=' ok', progress=False)",
    "session.compare('hello world', hooks=iv.ablate_heads([(0, 1)]))",
]


def test_kernel_results_render_with_the_new_views(jupyter_server, browser_page):
    page = browser_page
    lab.write_notebook(jupyter_server.root_dir / "live.ipynb",
                       [("code", source) for source in KERNEL_CELLS])
    lab.open_notebook(page, jupyter_server, "live.ipynb")
    lab.run_all_cells(page, timeout_ms=KERNEL_TIMEOUT_MS)

    lab.save_notebook(page)
    saved = jupyter_server.api("GET", "api/contents/live.ipynb")["content"]
    payloads = [next(o["data"][MIME] for o in saved["cells"][i]["outputs"]
                     if MIME in o.get("data", {})) for i in (1, 2)]
    assert [p["version"] for p in payloads] == [3, 3]
    check_patching(page, 1, payloads[0])
    tokens = view(page, 2).locator(".jp-GemmaLab-compareToken")
    expect(tokens).to_have_count(len(payloads[1]["tokens"]))
    # Only this renderer's output is shown, not the text/html fallback next to it.
    expect(lab.cell(page, 1).locator(".jp-OutputArea-output")).to_have_count(1)
    expect(lab.cell(page, 1).locator(".gemma-lab-result")).to_have_count(0)
