import json
import math
from html.parser import HTMLParser

import jsonschema
import pytest

from gemma_lab import render
from gemma_lab.generation import Generation
from gemma_lab.schema import JSON_SCHEMA, MAX_TOKENS, MAX_TOP_K, MIME_TYPE, SCHEMA_VERSION
from gemma_lab.scoring import Score
from gemma_lab.token_stats import TokenStats

HOSTILE = "<img src=x onerror=alert(1)>"
QUOTE_BREAKER = '" onmouseover="alert(2)'
validate = jsonschema.Draft202012Validator(JSON_SCHEMA).validate


@pytest.fixture(scope="module")
def generation(tiny_lab):
    # Sampling, so ranks and probabilities vary from token to token.
    return tiny_lab.generate("the quick brown", max_new_tokens=8, temperature=1.5, seed=5)


@pytest.fixture(scope="module")
def score(tiny_lab):
    return tiny_lab.score("hello world, the fox")


def step(text, top_k=(("a", 0.5),), logprob=-0.7, entropy=1.0, rank=2, token_id=7):
    return TokenStats(token_id, text, text, logprob, rank, entropy, tuple(top_k),
                      tuple(range(len(top_k))))


def hostile_generation():
    steps = (step(HOSTILE, top_k=((HOSTILE, 0.4), (QUOTE_BREAKER, 0.3))),
             step(QUOTE_BREAKER, top_k=(("ok", 0.9),)))
    return Generation(prompt="<script>alert(1)</script>", text=HOSTILE + QUOTE_BREAKER,
                      steps=steps, prompt_token_ids=(2, 5), finish_reason="length",
                      metadata={"model": "<b>model</b>", "backend": "jax", "dtype": "float32",
                                "adapter": "</div><script>x()</script>", "seed": 1,
                                "sampler": {"name": "sample", "temperature": 1.0}})


class _Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attributes = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes.extend(name for name, _ in attrs)


def parse(markup):
    parser = _Elements()
    parser.feed(markup)
    return parser


def assert_close(actual, expected):
    assert actual == pytest.approx(expected, rel=1e-5, abs=1e-12)


def test_generation_payload_validates_and_carries_the_record(generation):
    data = generation.to_dict()
    validate(data)
    assert (data["version"], data["kind"]) == (SCHEMA_VERSION, "generation") == (3, "generation")
    assert data["text"] == generation.text and data["prompt"] == "the quick brown"
    prompt = [t for t in data["tokens"] if t["role"] == "prompt"]
    generated = [t for t in data["tokens"] if t["role"] == "generated"]
    assert data["tokens"] == prompt + generated
    assert [t["id"] for t in prompt] == list(generation.prompt_token_ids)
    assert "".join(t["text"] for t in prompt) == generation.prompt
    assert [t["id"] for t in generated] == generation.token_ids
    assert [t["rank"] for t in generated] == generation.ranks
    assert max(generation.ranks) > 1  # the comparison covers non-top tokens too
    for token, stats in zip(generated, generation.steps, strict=True):
        assert token["text"] == stats.text and token["piece"] == stats.piece
        assert_close(token["prob"], stats.prob)
        assert_close(token["logprob"], stats.logprob)
        assert_close(token["entropy"], stats.entropy)
        assert [piece for piece, _ in token["top_k"]] == [piece for piece, _ in stats.top_k]
        assert_close([p for _, p in token["top_k"]], [p for _, p in stats.top_k])
    meta = data["metadata"]
    assert (meta["model"], meta["backend"], meta["dtype"]) == ("tiny-gemma3", "jax", "float32")
    assert meta["seed"] == 5 and meta["sampler"]["temperature"] == 1.5
    assert set(meta["timing"]) >= {"prefill_s", "decode_s", "tokens_per_s"}
    assert data["summary"]["finish_reason"] == generation.finish_reason
    assert data["truncated"] is False


def test_prompt_tokens_come_first_with_text_and_id_only(tiny_lab, generation):
    prompt = render.prompt_entries(tiny_lab.tokenizer, generation.prompt_token_ids)
    data = generation.to_dict(prompt_tokens=prompt)
    validate(data)
    roles = [t["role"] for t in data["tokens"]]
    n_prompt = len(generation.prompt_token_ids)
    assert roles == ["prompt"] * n_prompt + ["generated"] * len(generation.steps)
    prompt_part = data["tokens"][:n_prompt]
    assert [t["id"] for t in prompt_part] == list(generation.prompt_token_ids)
    assert "".join(t["text"] for t in prompt_part) == generation.prompt
    assert all(set(t) == {"text", "piece", "id", "role"} for t in prompt_part)
    markup = render.to_html(data)
    assert markup.count("gemma-lab-token gemma-lab-prompt") == n_prompt


def test_score_payload_validates_and_carries_the_record(score):
    data = score.to_dict()
    validate(data)
    assert data["kind"] == "score" and data["text"] == score.text
    assert {t["role"] for t in data["tokens"]} == {"scored"}
    assert [t["id"] for t in data["tokens"]] == score.token_ids
    assert [t["rank"] for t in data["tokens"]] == score.ranks
    assert_close([t["prob"] for t in data["tokens"]], score.probs)
    assert_close(data["summary"]["perplexity"], score.perplexity)
    assert "".join(t["text"] for t in data["tokens"]) == score.text


def test_mimebundle_has_three_entries_and_honours_include_exclude(generation, score):
    for record in (generation, score):
        bundle = record._repr_mimebundle_()
        assert set(bundle) == {MIME_TYPE, "text/html", "text/plain"}
        assert bundle["text/plain"] == record.text
        assert bundle[MIME_TYPE] == record.to_dict()
    assert set(render.mimebundle(score, include={"text/plain"})) == {"text/plain"}
    assert set(render.mimebundle(score, exclude={"text/html"})) == {MIME_TYPE, "text/plain"}


def test_ipython_formats_results_through_the_bundle(generation):
    from IPython.core.formatters import DisplayFormatter

    data, _ = DisplayFormatter().format(generation)
    generated = [t for t in data[MIME_TYPE]["tokens"] if t["role"] == "generated"]
    assert generated[0]["id"] == generation.token_ids[0]
    assert data["text/plain"] == generation.text
    assert "gemma-lab-token" in data["text/html"]


def test_floats_are_json_safe_and_rounded():
    record = Score(text="ab", steps=(step("a", logprob=-math.inf, entropy=math.nan,
                                          top_k=(("a", math.nan), ("b", 1 / 3))),
                                     step("b", logprob=-1 / 3)), metadata={"x": math.inf})
    data = record.to_dict()
    validate(data)
    json.dumps(data, allow_nan=False)  # raises on NaN / inf
    first, second = data["tokens"]
    assert first["logprob"] is None and first["entropy"] is None and first["prob"] == 0.0
    assert first["top_k"] == [["a", 0.0], ["b", 0.333333]]
    assert second["logprob"] == -0.333333 and data["metadata"]["x"] is None
    assert render.to_html(data)  # the fallback copes with missing statistics


def test_html_fallback_escapes_hostile_prompt_tokens_alternatives_and_metadata():
    markup = hostile_generation()._repr_mimebundle_()["text/html"]
    assert "<script" not in markup.lower()
    assert HOSTILE not in markup and "<b>model</b>" not in markup
    assert "&lt;img src=x onerror=alert(1)&gt;" in markup  # the token, shown as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markup  # the prompt
    assert "&quot;&lt;img src=x onerror=alert(1)&gt;&quot;  0.4" in markup  # an alternative
    parsed = parse(markup)
    assert set(parsed.tags) <= {"div", "span", "style", "table", "tr", "th", "td", "code"}
    assert set(parsed.attributes) <= {"class", "style", "title"}  # no onmouseover, no src


def test_html_fallback_is_self_contained_and_colours_by_probability(score):
    markup = score._repr_mimebundle_()["text/html"]
    assert "<script" not in markup and "http" not in markup
    assert markup.count('class="gemma-lab-token"') == len(score.steps)
    assert "hsl(" in markup and "top-k:" in markup and "rank " in markup
    assert "model tiny-gemma3" in markup and "backend jax" in markup


def test_generation_footer_shows_sampler_seed_and_adapter():
    markup = hostile_generation()._repr_mimebundle_()["text/html"]
    assert "sampler sample (temperature=1.0)" in markup and "seed 1" in markup
    assert "adapter &lt;/div&gt;&lt;script&gt;x()&lt;/script&gt;" in markup


def test_too_many_tokens_or_alternatives_set_truncated():
    many = tuple(step("x") for _ in range(MAX_TOKENS + 3))
    record = Generation(prompt="p", text="x" * len(many), steps=many, prompt_token_ids=(2,),
                        finish_reason="length")
    data = record.to_dict()
    validate(data)
    assert len(data["tokens"]) == MAX_TOKENS and data["truncated"] is True
    assert "truncated to" in render.to_html(data)

    wide = Score(text="x", steps=(step("x", top_k=[(str(i), 0.01) for i in range(50)]),))
    data = wide.to_dict()
    assert len(data["tokens"][0]["top_k"]) == MAX_TOP_K and data["truncated"] is True


def test_long_prompts_lose_their_earliest_tokens_first():
    steps = tuple(step("g") for _ in range(10))
    record = Generation(prompt="p", text="g" * 10, steps=steps,
                        prompt_token_ids=tuple(range(MAX_TOKENS)), finish_reason="length")
    prompt = [render.token_entry("prompt", str(i), i) for i in range(MAX_TOKENS)]
    data = record.to_dict(prompt_tokens=prompt)
    assert len(data["tokens"]) == MAX_TOKENS and data["truncated"] is True
    assert data["tokens"][0]["id"] == 10 and data["tokens"][-1]["role"] == "generated"


def test_a_new_record_kind_plugs_in_through_payload():
    tokens = [render.token_entry("prompt", t, i) for i, t in enumerate(["a", HOSTILE])]
    data = render.payload("attribution", "a" + HOSTILE, tokens, {"model": "m"},
                          attribution={"method": "grad_x_input", "target": " b",
                                       "scores": [0.5, -1.0]})
    validate(data)
    markup = render.to_html(data)
    # positive blue ("for"), negative red ("against"), the legend naming both
    assert f"rgba({render.ATTRIBUTION_FOR_RGB},0.415)" in markup
    assert f"rgba({render.ATTRIBUTION_AGAINST_RGB},0.750)" in markup
    assert "attribution: against" in markup and "swatch-attribution" in markup
    assert "<img" not in markup
    with pytest.raises(TypeError, match="unknown fields"):
        render.payload("trace", "", [], {}, attentions={})


def test_html_popup_lists_the_alternatives_readably_and_reserves_room():
    steps = (step(" fox", top_k=((" fox", 0.5), ("<0xE2><0x86><0x92>", 0.2), (" ", 0.1),
                                 (HOSTILE, 0.05))),)
    record = Generation(prompt="The", text=" fox", steps=steps, prompt_token_ids=(2,),
                        finish_reason="length")
    markup = render.to_html(record.to_dict())
    assert markup.count('class="gemma-lab-pop"') == 1
    assert "--gemma-lab-pop-room:9.1em" in markup  # (4 alternatives + 3) rows
    pop = markup[markup.index('class="gemma-lab-pop"'):]
    assert "<code>→</code>" in pop and "<code>␣</code>" in pop
    assert "&lt;img src=x onerror=alert(1)&gt;" in pop and "<img" not in markup
    assert 'class="gemma-lab-actual"' in pop  # the chosen token's row
    assert ":hover + .gemma-lab-pop" in markup and ":has(" in markup


def test_footer_rounds_floats_and_shows_the_seed_once():
    metadata = {"model": "m", "seed": 3, "sampler": {"name": "sample", "seed": 3,
                                                     "temperature": 0.800000011920929,
                                                     "top_p": 0.949999988079071}}
    data = render.payload("generation", "x", [], metadata, summary={"loss": 1.23456789})
    footer = render.to_html(data).split('class="gemma-lab-meta">')[1]
    assert "sampler sample (temperature=0.8, top_p=0.95)" in footer
    assert footer.count("seed") == 1 and "seed 3" in footer
    assert "loss 1.23" in footer and "1.2345" not in footer
