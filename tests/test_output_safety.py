"""Hostile model or user text never becomes an element or a script: every record's text/html
fallback and every figure's labels and hover text are parsed with html.parser and must only
contain the markup gemma_lab itself writes. (Widgets and the labextension have their own tests.)"""

from __future__ import annotations

import dataclasses
from html.parser import HTMLParser

import pytest

from gemma_lab.sae import SAE
from gemma_lab.token_stats import TokenStats

HOSTILE = "<img src=x onerror=alert(1)><script>alert(2)</script>"
QUOTE_BREAKER = '" onmouseover="alert(3)'
# What gemma_lab writes itself: layout in the HTML fallback, <br>/<b> in plotly hover text.
OWN_HTML_TAGS = {"div", "span", "style", "b", "br", "table", "tr", "td", "th", "small", "code"}
OWN_FIGURE_TAGS = {"b", "br", "i", "sup", "sub", "extra"}
KEEP_AS_IS = {"finish_reason", "method", "kind", "stop_reason"}


class _Elements(HTMLParser):
    def __init__(self, markup: str):
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)


def _hostile_step(step: TokenStats) -> TokenStats:
    return dataclasses.replace(step, text=HOSTILE, piece=QUOTE_BREAKER,
                               top_k=tuple((HOSTILE if i % 2 else QUOTE_BREAKER, p)
                                           for i, (_, p) in enumerate(step.top_k)))


def _hostile(record):
    """The same record with every piece of text in it replaced by markup."""
    changes = {}
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        if field.name in KEEP_AS_IS:
            continue
        if isinstance(value, str):
            changes[field.name] = HOSTILE
        elif isinstance(value, tuple) and value and all(isinstance(v, str) for v in value):
            changes[field.name] = tuple(HOSTILE if i % 2 else QUOTE_BREAKER
                                        for i in range(len(value)))
        elif isinstance(value, tuple) and value and all(isinstance(v, TokenStats) for v in value):
            changes[field.name] = tuple(_hostile_step(v) for v in value)
        elif field.name == "metadata" and isinstance(value, dict):
            changes[field.name] = {**value, "model": HOSTILE, "adapter": QUOTE_BREAKER}
    return dataclasses.replace(record, **changes)


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)
    elif hasattr(value, "tolist"):
        yield from _strings(value.tolist())


@pytest.fixture(scope="module")
def records(tiny_lab):
    prompt = "hello " + HOSTILE
    return {
        "generation": tiny_lab.generate(prompt, max_new_tokens=4, temperature=1.0, seed=3),
        "score": tiny_lab.score(prompt),
        "trace": tiny_lab.trace(prompt),
        "attribution": tiny_lab.attribute(prompt, target=" " + HOSTILE),
        "features": tiny_lab.features(prompt, SAE.identity_like(32, "blocks.0.resid_post")),
    }


FIGURE_KINDS = {
    "generation": ["probs", "top_k", "entropy", "rank"],
    "score": ["probs", "top_k", "entropy", "rank"],
    "trace": ["attention", "heads", "token", "lens"],
    "attribution": ["bar"],
    "features": [None],  # FeatureActivations.figure() has one kind
}


@pytest.mark.parametrize("name", list(FIGURE_KINDS))
@pytest.mark.parametrize("hostile", [False, True], ids=["real", "forged"])
def test_html_fallback_creates_no_element_from_text(records, name, hostile):
    record = _hostile(records[name]) if hostile else records[name]
    bundle = record._repr_mimebundle_()
    parsed = _Elements(bundle["text/html"])
    assert parsed.tags <= OWN_HTML_TAGS, parsed.tags - OWN_HTML_TAGS
    assert parsed.attributes <= {"class", "style", "title"}
    assert "<script" not in bundle["text/html"].lower()


@pytest.mark.parametrize("name", list(FIGURE_KINDS))
@pytest.mark.parametrize("hostile", [False, True], ids=["real", "forged"])
def test_figure_labels_and_hover_text_create_no_element(records, name, hostile):
    record = _hostile(records[name]) if hostile else records[name]
    for kind in FIGURE_KINDS[name]:
        figure = record.figure(kind=kind) if kind else record.figure()
        for text in _strings(figure.to_plotly_json()):
            parsed = _Elements(text)
            assert parsed.tags <= OWN_FIGURE_TAGS, (kind, text[:120])
            assert not any(a.startswith("on") or a == "src" for a in parsed.attributes), text


def test_feature_examples_html_creates_no_element_from_text(tiny_lab):
    texts = ["hello " + HOSTILE, QUOTE_BREAKER + " world"]
    examples = tiny_lab.feature_examples(texts, SAE.identity_like(32, "embed"), [0, 1, 2],
                                         k=2, progress=False)
    assert examples.rows  # something to show
    parsed = _Elements(examples._repr_html_())
    assert parsed.tags <= OWN_HTML_TAGS, parsed.tags - OWN_HTML_TAGS
    assert parsed.attributes <= {"class", "style", "title"}


def test_forged_records_really_carry_markup(records):
    # Guards the two tests above against checking records that hold no hostile text.
    forged = _hostile(records["generation"])
    assert forged.steps[0].text == HOSTILE and forged.prompt == HOSTILE
    assert "&lt;script&gt;" in forged._repr_mimebundle_()["text/html"]
