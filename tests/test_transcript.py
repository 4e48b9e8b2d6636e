"""Chat transcripts as input to scoring, tracing and caching: exactly the ids a chat reply
was generated from, the same numbers as plain ids, speakers per token, and rendering that
labels turns (escaped). The ids against Google's official template are in test_chat.py."""

from __future__ import annotations

import jsonschema
import numpy as np
import pytest

from gemma_lab.errors import InputError
from gemma_lab.inspect.activations import record_token_ids
from gemma_lab.render import to_html
from gemma_lab.schema import JSON_SCHEMA
from gemma_lab.testing import numpy_log_softmax, tiny_session


@pytest.fixture(params=["gemma3", "gemma4"])
def lab(request):
    return tiny_session(request.param)


def test_the_history_of_a_chat_starts_with_the_ids_of_its_last_reply(lab):
    lab.reset_chat()
    lab.chat("hello", system="Be brief.", max_new_tokens=4)
    reply = lab.chat("and then?", max_new_tokens=4)
    chat = lab.transcript(lab.chat_history)
    n = len(reply.prompt_token_ids)
    assert list(chat.token_ids[:n]) == list(reply.prompt_token_ids)
    # what follows the prompt is the reply's own text, then the end-of-turn marker and "\n"
    assert set(chat.speakers[n:-2]) <= {"model"} and chat.speakers[-2:] == ("markup", "markup")
    assert lab.tokenizer.decode(list(chat.token_ids[n:-2])) == reply.text.strip()
    lab.reset_chat()


def test_score_and_trace_of_a_transcript_equal_the_same_ids_run_directly(lab):
    turns = [{"role": "user", "content": "hi there"}, {"role": "model", "content": "hello"}]
    chat = lab.transcript(turns)
    score = lab.score(turns)
    logits = record_token_ids(lab.runtime, list(chat.token_ids), ["logits"])["logits"]
    logprobs = numpy_log_softmax(logits[:len(chat.token_ids)])
    ids = chat.token_ids
    np.testing.assert_allclose(score.logprobs,
                               logprobs[np.arange(len(ids) - 1), list(ids[1:])], atol=1e-4)
    assert score.token_ids == list(ids[1:]) and score.speakers == chat.speakers[1:]
    trace = lab.trace(turns)
    assert trace.token_ids == ids and trace.speakers == chat.speakers
    cache = lab.run_with_cache(turns, names=["final_norm"])
    assert cache.token_ids == ids
    for payload in (score.to_dict(), trace.to_dict()):
        jsonschema.validate(payload, JSON_SCHEMA)
        assert {t["speaker"] for t in payload["tokens"]} >= {"user", "model", "markup"}


def test_turns_are_labelled_and_escaped_in_html(lab):
    turns = [{"role": "user", "content": "<script>alert(1)</script>"},
             {"role": "model", "content": "no <b>way</b>"}]
    html = to_html(lab.score(turns).to_dict())
    assert "<script>" not in html and "<b>" not in html
    assert html.count('class="gemma-lab-speaker ') == 2  # a label where each turn starts
    assert "gemma-lab-markup" in html


@pytest.mark.parametrize("turns, message", [
    ([{"role": "model", "content": "hi"}], "should be 'user'"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], "first turn"),
    ([{"role": "user", "content": "  "}], "no text"),
    ([{"role": "robot", "content": "x"}], "roles are"),
])
def test_bad_transcripts_are_one_clear_error(turns, message):
    with pytest.raises(InputError, match=message):
        tiny_session().score(turns)
