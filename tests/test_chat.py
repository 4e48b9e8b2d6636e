"""Chat: the Gemma template's ids against transformers' tokenizer with the official template,
history kept only for complete turns, end-of-turn stops, and the reply's prompt ids."""

from __future__ import annotations

import numpy as np
import pytest

from gemma_lab.backend import import_keras
from gemma_lab.chat import Turn, encode, render, template_for
from gemma_lab.errors import InputError


@pytest.fixture(params=["gemma3", "gemma4"])
def chat_lab(request):
    """A tiny Gemma 3 (Gemma 1-3 template) and a tiny Gemma 4 (its own turn tokens)."""
    from gemma_lab.testing import tiny_session

    return tiny_session(request.param)

# Gemma 3's chat template as published in google/gemma-3-*-it tokenizer_config.json (its image
# branch left out): the reference our template is checked against.
OFFICIAL_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate "
    "user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\\n'}}\n"
    "{%- endif -%}\n"
)

CONVERSATIONS = {
    "single": (None, [("user", "What is the capital of France?")]),
    "system": (" You are a terse geography tutor.\n", [("user", "  Capital of Peru?\n")]),
    "multi": ("Answer in one word.", [
        ("user", "Capital of Japan?"), ("model", "Tokyo."),
        ("user", "And of Italy? Give café, naïve and 日本語 back too."), ("model", "Rome."),
        ("user", "def f(x):\n    return {'a': [1, 2]}  # explain")]),
}


@pytest.mark.real_model
@pytest.mark.parametrize("case", sorted(CONVERSATIONS))
def test_template_ids_equal_transformers_with_the_official_template(default_lab, case):
    from transformers import AutoTokenizer

    from gemma_lab.models.default_model import default_gguf_path

    gguf = default_gguf_path()
    hf = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    system, messages = CONVERSATIONS[case]
    hf_messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "assistant" if role == "model" else role, "content": text}
        for role, text in messages]
    want = hf.apply_chat_template(hf_messages, chat_template=OFFICIAL_TEMPLATE,
                                  add_generation_prompt=True, tokenize=True)
    want = list(want["input_ids"] if isinstance(want, dict) or hasattr(want, "keys") else want)
    ours = encode(default_lab.tokenizer, render([Turn(r, t) for r, t in messages], system))
    assert ours == want, (default_lab.tokenizer.pieces(ours), hf.convert_ids_to_tokens(want))


@pytest.mark.real_model
def test_a_transcript_is_the_official_template_without_a_generation_prompt(default_lab):
    """A conversation ending with a model turn, as lab.score(transcript) reads it: the ids of
    Google's template with add_generation_prompt=False; speakers follow the turns."""
    from transformers import AutoTokenizer

    from gemma_lab.models.default_model import default_gguf_path

    gguf = default_gguf_path()
    hf = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    system, messages = CONVERSATIONS["multi"]
    turns = [{"role": "system", "content": system}] + [
        {"role": role, "content": text} for role, text in messages[:-1]]  # ends with "Rome."
    hf_turns = [{**t, "role": "assistant" if t["role"] == "model" else t["role"]}
                for t in turns]
    want = hf.apply_chat_template(hf_turns, chat_template=OFFICIAL_TEMPLATE,
                                  add_generation_prompt=False, tokenize=True)
    want = list(want["input_ids"] if hasattr(want, "keys") else want)
    chat = default_lab.transcript(turns)
    assert list(chat.token_ids) == want
    pieces = default_lab.tokenizer.pieces(list(chat.token_ids))
    spoken = "".join(p for p, who in zip(pieces, chat.speakers, strict=True) if who == "model")
    assert spoken.replace("▁", " ") == "Tokyo.Rome."
    assert {who for who in chat.speakers} == {"markup", "system", "user", "model"}
    score = default_lab.score(turns)
    assert score.token_ids == want[1:] and score.speakers == chat.speakers[1:]


def test_a_reply_sees_exactly_the_templated_ids_and_joins_the_history(chat_lab):
    lab = chat_lab
    template = template_for(lab.info().family)
    lab.reset_chat()
    first = lab.chat("Hello", system="Be brief.", max_new_tokens=3)
    tokenizer = lab.tokenizer
    assert list(first.prompt_token_ids) == encode(
        tokenizer, render([Turn("user", "Hello")], "Be brief.", template), template)
    # the turn markers are single special-token ids, as the template's text says
    assert first.prompt_token_ids.count(tokenizer.piece_id(template.start)) == (
        3 if template.system_turn else 2)
    second = lab.chat("And now?", max_new_tokens=3)
    turns = [Turn("user", "Hello"), Turn("model", first.text), Turn("user", "And now?")]
    assert list(second.prompt_token_ids) == encode(tokenizer, render(turns, "Be brief.",
                                                                     template), template)
    assert lab.chat_history == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"},
        {"role": "model", "content": first.text}, {"role": "user", "content": "And now?"},
        {"role": "model", "content": second.text}]
    with pytest.raises(InputError, match="reset_chat"):
        lab.chat("x", system="Another system prompt")
    lab.reset_chat()
    assert lab.chat_history == []


def test_generation_stops_at_end_of_turn_and_keeps_it_out_of_the_text(chat_lab):
    lab = chat_lab
    ops = import_keras().ops
    template = template_for(lab.info().family)
    end = lab.tokenizer.piece_id(template.end)

    def end_turn_at_third_token(logits, ctx):
        boost = ops.cast(ops.where(ops.arange(ops.shape(logits)[-1]) == end, 1e4, 0.0),
                         logits.dtype)
        third = ops.cast(ctx.positions[-1] >= start + 2, logits.dtype)
        return logits + third * boost

    lab.reset_chat()
    start = len(encode(lab.tokenizer, render([Turn("user", "Hi")], template=template),
                       template)) - 1
    with lab.hooks({"logits": end_turn_at_third_token}):
        reply = lab.chat("Hi", max_new_tokens=10)
    # two tokens, then the end-of-turn token ends the turn (and is not part of the reply)
    assert reply.finish_reason == "eos" and len(reply.steps) == 2
    assert end not in reply.token_ids and template.end not in reply.text
    assert lab.chat_history[-1] == {"role": "model", "content": reply.text}
    lab.reset_chat()


def test_an_interrupted_turn_leaves_no_half_written_turn(tiny_lab, monkeypatch):
    tiny_lab.reset_chat()
    tiny_lab.chat("One", max_new_tokens=2)
    before = tiny_lab.chat_history
    real_step = tiny_lab.compiled.step
    calls = []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(tiny_lab.compiled, "step", step)
    with pytest.raises(KeyboardInterrupt):
        tiny_lab.chat("Two", max_new_tokens=6)
    monkeypatch.undo()
    assert tiny_lab.chat_history == before
    again = tiny_lab.chat("Two", max_new_tokens=2)
    assert tiny_lab.chat_history[-2:] == [{"role": "user", "content": "Two"},
                                         {"role": "model", "content": again.text}]
    tiny_lab.reset_chat()


def test_bad_chat_input_is_one_clear_error(tiny_lab):
    for message in ("", "   ", None, 3):
        with pytest.raises(InputError, match="non-empty message"):
            tiny_lab.chat(message)
    with pytest.raises(InputError, match="system must be a string"):
        tiny_lab.chat("hi", system=3)
    assert np.isfinite(tiny_lab.chat("hi", max_new_tokens=1).steps[0].logprob)
    tiny_lab.reset_chat()
