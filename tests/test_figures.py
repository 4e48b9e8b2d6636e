import numpy as np
import plotly.graph_objects as go
import pytest

from gemma_lab import render
from gemma_lab.errors import InputError
from gemma_lab.figures import (
    TOKEN_FIGURE_KINDS,
    entropy_figure,
    rank_figure,
    steps_figure,
    token_probability_figure,
    top_k_heatmap,
)
from gemma_lab.figures._labels import token_display, token_displays, token_label, token_labels
from gemma_lab.figures.attribution import attribution_bars
from gemma_lab.figures.lens import lens_heatmap
from gemma_lab.figures.logit_attribution import layer_bars

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def generation(tiny_lab):
    return tiny_lab.generate("the quick brown", max_new_tokens=6, temperature=1.5, seed=5)


def test_probability_figure_has_a_bar_per_token_and_alternatives_on_hover(generation):
    fig = generation.figure()
    assert isinstance(fig, go.Figure) and len(fig.data) == 1
    bars = fig.data[0]
    assert list(bars.x) == list(range(len(generation.steps)))
    assert list(bars.y) == pytest.approx(generation.probs)
    for hover, stats in zip(bars.hovertext, generation.steps, strict=True):
        assert f"rank {stats.rank}" in hover
        for piece, prob in stats.top_k:
            assert f"{token_label(piece)}  {prob:.4g}" in hover
    assert list(fig.layout.xaxis.ticktext) == [token_label(s.text or s.piece)
                                               for s in generation.steps]


def test_top_k_heatmap_is_positions_by_alternatives(generation):
    fig = generation.figure("top_k")
    heat = fig.data[0]
    k = len(generation.steps[0].top_k)
    assert len(heat.z) == k and all(len(row) == len(generation.steps) for row in heat.z)
    for position, stats in enumerate(generation.steps):
        for rank, (piece, prob) in enumerate(stats.top_k):
            assert heat.z[rank][position] == pytest.approx(prob)
            assert token_label(piece) in heat.text[rank][position]


def test_entropy_and_rank_figures(generation):
    fig = generation.figure("entropy")
    assert [t.name for t in fig.data] == ["entropy", "surprisal −log p"]
    assert list(fig.data[0].y) == pytest.approx(generation.entropy)
    assert list(fig.data[1].y) == pytest.approx([-lp for lp in generation.logprobs])
    fig = generation.figure("rank")
    assert list(fig.data[0].y) == generation.ranks and fig.layout.yaxis.type == "log"


def test_score_figures_cover_every_kind(tiny_lab):
    score = tiny_lab.score("hello world")
    for kind in TOKEN_FIGURE_KINDS:
        fig = score.figure(kind)
        assert isinstance(fig, go.Figure)
        assert len(fig.data[0].x) == len(score.steps)


def test_unknown_kind_names_the_valid_ones(generation):
    with pytest.raises(InputError, match="probs, top_k, entropy, rank"):
        generation.figure("attention")


def test_labels_and_hover_are_escaped_for_plotly():
    tokens = [HOSTILE, "a&b", "\n", "", " "]
    top_k = [[(HOSTILE, 0.5)]] * len(tokens)
    fig = token_probability_figure(tokens, [0.5] * len(tokens), top_k)
    ticks = list(fig.layout.xaxis.ticktext)
    assert ticks == ["&lt;img src=x onerror=alert(1)&gt;", "a&amp;b", "↵", "∅", "␣"]
    assert all("<img" not in hover for hover in fig.data[0].hovertext)
    heat = top_k_heatmap(tokens, top_k).data[0]
    assert all("<img" not in text for row in heat.text for text in row)


def test_repeated_tokens_keep_their_own_positions():
    fig = rank_figure(["a", "a", "a"], [1, 2, 3])
    assert list(fig.data[0].x) == [0, 1, 2] and list(fig.layout.xaxis.ticktext) == ["a"] * 3


def test_builders_return_figures_without_displaying(monkeypatch, generation):
    def refuse(*args, **kwargs):
        raise AssertionError("a figure builder tried to display")

    monkeypatch.setattr(go.Figure, "show", refuse)
    monkeypatch.setattr("IPython.display.display", refuse)
    figures = [steps_figure(generation.steps, kind) for kind in TOKEN_FIGURE_KINDS]
    figures.append(entropy_figure(["a"], [1.0]))
    assert all(isinstance(fig, go.Figure) for fig in figures)
    assert len(figures[-1].data) == 1  # no surprisal trace without logprobs


# --- readable token labels (issue 20) -------------------------------------------------------


@pytest.mark.parametrize(("text", "shown"), [
    ("<0xE2><0x86><0x92>", "→"), ("<0xEE>", "\\xEE"), ("<0x0A>", "↵"), ("&#", "&#"),
    ("&#39;", "&#39;"), (" ", "␣"), ("\n", "↵"), ("\t", "⇥"), ("a b\n", "a b↵"),
    ("\x00", "\\x00"), ("\u200b", "\\u200B"), ("\ue000", "\\uE000"), ("\ufffd", "\\uFFFD"),
    ("", "∅"), (" Paris", " Paris"),
])
def test_token_display_makes_every_token_visible(text, shown):
    assert token_display(text) == shown


def test_consecutive_byte_tokens_are_labelled_with_their_character():
    pieces = ["Hi", "<0xE2>", "<0x86>", "<0x92>", "<0xEE>", "<0xF0>", "<0x9F>", "<0x98>",
              "<0x80>", "<0x41>"]
    assert token_displays(pieces) == ["Hi", "→", "→", "→", "\\xEE", "😀", "😀", "😀", "😀", "A"]
    assert token_labels(["<0x3C>", "<b>"]) == ["&lt;", "&lt;b&gt;"]  # still escaped


def test_lens_figure_is_readable_and_grows_with_its_rows():
    pieces = ["a", "<0xE2>", "<0x86>", "<0x92>", "<0xEE>"]
    top = np.array([[[p] for p in pieces]] * 20)
    probs = np.full((20, 5), 0.5)
    probs[:, -1] = np.nan  # the last position has no next token
    fig = lens_heatmap(probs, top, np.full((20, 5, 1), 0.5), pieces)
    assert list(fig.layout.xaxis.ticktext) == ["a", "→", "→", "→", "\\xEE"]
    assert fig.data[0].text[0][4] == "\\xEE" and fig.data[0].textfont.size >= 11
    assert fig.layout.xaxis.tickfont.size >= 11 and fig.layout.yaxis.tickfont.size >= 11
    assert fig.layout.xaxis.automargin and fig.layout.yaxis.automargin
    small = lens_heatmap(probs[:2], top[:2], np.full((2, 5, 1), 0.5), pieces)
    assert fig.layout.height > small.layout.height >= 320


def test_attribution_bars_use_blue_for_and_red_against_with_a_colour_bar():
    fig = attribution_bars(np.array([0.5, -0.2]), ["a", "b"], " c", "grad_x_input")
    marker = fig.data[0].marker
    low, high = marker.colorscale[0][1], marker.colorscale[-1][1]
    assert high == render.ATTRIBUTION_FOR and low == render.ATTRIBUTION_AGAINST
    assert list(marker.color) == [1.0, -1.0] and marker.showscale
    assert [t.split()[0] for t in marker.colorbar.ticktext] == ["against", "for"]
    dla = layer_bars(["embed", "L0 attn"], np.array([1.0, -1.0]), "x").data[0].marker
    assert dla.colorscale == marker.colorscale and dla.showscale

