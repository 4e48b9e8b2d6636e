"""Property-based fuzz of the public API on the tiny model: odd but plausible arguments (lone
surrogates, negative or huge numbers, numbers as strings, booleans where integers go, NaN,
None, nested lists, out-of-range token ids) must give a `GemmaLabError` or a valid result,
and the session must still answer exactly as before.

One hypothesis test draws the method and its arguments (1,100 calls); any other exception
fails it, and a probe score is compared with the first one every 100 calls and at the end.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gemma_lab import interventions as iv
from gemma_lab.errors import GemmaLabError
from gemma_lab.testing import tiny_session

CALLS = 1100
PROBE = "the quick brown fox"

# Values a careless or hostile caller passes where a number, a text or a list goes. Valid
# ones are small, so that a call that succeeds stays fast.
NUMBERS = st.sampled_from([
    -(2 ** 63), -1, 0, 1, 2, 3, 7, 8193, 2 ** 31, 2 ** 64, True, False, None, "2", "x", 1.5,
    -0.0, float("nan"), float("inf"), float("-inf"), 1e300, [1], (2,), {"a": 1}, b"3",
    np.int64(2), np.float32(0.5), np.array([1, 2]),
])
TEXT = st.one_of(
    st.text(max_size=16),
    st.sampled_from(["", " ", "\ud800", "a\udfffb", "\x00", "<bos>", "<start_of_turn>",
                     "\u202e rtl", "💥" * 3, "\n\n", "hello world"]),
)
ODD = st.one_of(NUMBERS, TEXT, st.lists(st.one_of(TEXT, NUMBERS), max_size=3))
TEXT_OR_ODD = st.one_of(TEXT, TEXT, ODD)


def _mostly(valid, odd=ODD):
    """Mostly a valid value, else an odd one: so that some calls succeed and every argument
    is the only odd one in some calls."""
    return st.integers(0, 5).flatmap(lambda pick: odd if pick == 5 else valid)


def _temperature():
    return _mostly(st.sampled_from([0.0, 0.7, 1.0]), NUMBERS)


PLAIN_TEXT = st.text(alphabet="abcdefgh ", min_size=1, max_size=12)


@st.composite
def calls(draw):
    """(name, callable on a session) of one public call with drawn arguments."""
    kind = draw(st.sampled_from([
        "generate", "stream", "score", "trace", "attribute", "hooks", "run_with_cache",
        "classify", "logit_attribution", "generate_batch", "stream_ids", "top_k"]))
    text = draw(_mostly(PLAIN_TEXT, TEXT_OR_ODD))
    if kind == "generate":
        kwargs = dict(max_new_tokens=draw(_mostly(st.sampled_from([1, 2, 3]), NUMBERS)),
                      temperature=draw(_temperature()),
                      top_k=draw(_mostly(st.sampled_from([None, 5]), NUMBERS)),
                      top_p=draw(_mostly(st.sampled_from([None, 0.5, 1.0]), NUMBERS)),
                      seed=draw(_mostly(st.sampled_from([None, 0, 3]), NUMBERS)),
                      stop=draw(_mostly(st.sampled_from([None, "a", ["b", "c"]]))))
        return kind, lambda lab: lab.generate(text, **kwargs)
    if kind == "generate_batch":
        prompts = draw(st.lists(_mostly(PLAIN_TEXT, TEXT_OR_ODD), max_size=3))
        n = draw(_mostly(st.sampled_from([1, 2]), NUMBERS))
        temperature = draw(_temperature())
        return kind, lambda lab: lab.generate(prompts, max_new_tokens=2, n=n,
                                              temperature=temperature, seed=1, progress=False)
    if kind == "stream":
        kwargs = dict(max_new_tokens=draw(_mostly(st.sampled_from([1, 2]), NUMBERS)),
                      seed=draw(_mostly(st.sampled_from([None, 1]), NUMBERS)),
                      stop=draw(_mostly(st.none())))
        return kind, lambda lab: list(lab.stream(text, **kwargs))
    if kind == "stream_ids":
        ids = draw(_mostly(st.lists(st.integers(-5, 2 ** 20), min_size=0, max_size=4)))
        return kind, lambda lab: list(lab.stream("x", max_new_tokens=1, prompt_ids=ids))
    if kind == "score":
        batch = draw(st.booleans())
        target = [text, draw(_mostly(PLAIN_TEXT, TEXT_OR_ODD))] if batch else text
        return kind, lambda lab: lab.score(target)
    if kind == "trace":
        layers = draw(_mostly(st.sampled_from([None, [0], [1, 0]])))
        heads = draw(_mostly(st.sampled_from([None, [0], [3, 1]])))
        return kind, lambda lab: lab.trace(text, layers=layers, heads=heads)
    if kind == "attribute":
        target = draw(_mostly(PLAIN_TEXT, TEXT_OR_ODD))
        method = draw(_mostly(st.sampled_from(["saliency", "integrated_gradients"])))
        steps = draw(_mostly(st.sampled_from([2, 3]), NUMBERS))
        return kind, lambda lab: lab.attribute(text, target, method=method, steps=steps)
    if kind == "hooks":
        which = draw(st.sampled_from(["ablate", "add", "raw"]))
        a = draw(_mostly(st.sampled_from([[(0, 1)], [(1, 0), (0, 3)], "VECTOR"])))
        b = draw(_mostly(st.sampled_from([0, 1]), NUMBERS))
        c = draw(_mostly(st.sampled_from([1.0, -2.0]), NUMBERS))

        def run(lab):
            vector = (np.ones(lab.info().hidden_dim, "float32") if isinstance(a, str)
                      and a == "VECTOR" else a)
            hooks = {"ablate": lambda: iv.ablate_heads(vector),
                     "add": lambda: iv.add(vector, b, c),
                     "raw": lambda: vector}[which]()
            with lab.hooks(hooks):
                return lab.score("hello world")
        return kind, run
    if kind == "run_with_cache":
        names = draw(_mostly(st.sampled_from([None, ["blocks.0.resid_post"]])))
        return kind, lambda lab: lab.run_with_cache(text, names=names)
    if kind == "classify":
        policy = draw(_mostly(st.none()))
        return kind, lambda lab: lab.classify(text, policy=policy)
    if kind == "logit_attribution":
        target = draw(_mostly(st.one_of(st.none(), PLAIN_TEXT), TEXT_OR_ODD))
        return kind, lambda lab: lab.logit_attribution(text, target)
    value = draw(_mostly(st.sampled_from([5, 20]), NUMBERS))

    def set_top_k(lab):
        before = lab.top_k
        try:
            lab.top_k = value
        finally:
            if lab.top_k != before:
                lab.top_k = before
    return kind, set_top_k


@pytest.fixture(scope="module")
def fuzzed():
    lab = tiny_session("gemma3")
    reference = np.asarray(lab.score(PROBE).logprobs)
    return {"lab": lab, "reference": reference, "outcomes": Counter(), "calls": 0}


def _still_answers(state) -> None:
    lab = state["lab"]
    assert not lab.hook_points() == []  # the session is there
    got = np.asarray(lab.score(PROBE).logprobs)
    np.testing.assert_allclose(got, state["reference"], rtol=0, atol=1e-6)


@settings(max_examples=CALLS, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(call=calls())
def test_odd_arguments_give_gemma_lab_errors_or_results(fuzzed, call):
    kind, run = call
    lab = fuzzed["lab"]
    try:
        result = run(lab)
    except GemmaLabError as err:
        assert str(err).strip(), f"{kind}: an empty error message"
        fuzzed["outcomes"][(kind, type(err).__name__)] += 1
    else:
        fuzzed["outcomes"][(kind, "ok")] += 1
        for stat in _finite_statistics(result):
            assert not math.isnan(stat), f"{kind} gave NaN statistics"
    fuzzed["calls"] += 1
    if fuzzed["calls"] % 100 == 0:
        _still_answers(fuzzed)


def _finite_statistics(result):
    """The log-probabilities of a Generation / Score result (or of a list of them)."""
    results = result if isinstance(result, list) else [result]
    for item in results:
        for value in getattr(item, "logprobs", None) or []:
            if isinstance(value, (int, float)):
                yield float(value)


def test_the_session_still_answers_after_the_fuzz(fuzzed):
    assert fuzzed["calls"] >= 1000, fuzzed["calls"]
    _still_answers(fuzzed)
    outcomes = fuzzed["outcomes"]
    # The fuzz reached both sides on the main calls: valid results and refused arguments.
    for kind in ("generate", "generate_batch", "stream", "score", "trace", "attribute",
                 "hooks", "run_with_cache", "classify", "logit_attribution"):
        assert outcomes[(kind, "ok")] > 0, outcomes
        assert sum(n for (k, what), n in outcomes.items() if k == kind and what != "ok"), \
            outcomes
    lab = fuzzed["lab"]
    assert lab.generate(PROBE, max_new_tokens=3).token_ids == \
        tiny_session("gemma3").generate(PROBE, max_new_tokens=3).token_ids
    print(sorted(outcomes.items()))
