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


# --- the checkpoint's own template --------------------------------------------------------
# A template unlike the built-in one (the system prompt gets its own turn), so a test can tell
# which of the two rendered the ids.
SYSTEM_TURN_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>"
    "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] | trim }}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


def _hf_ids(hf, system, messages, generation_prompt=True):
    hf_messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "assistant" if role == "model" else role, "content": text}
        for role, text in messages]
    want = hf.apply_chat_template(hf_messages, add_generation_prompt=generation_prompt,
                                  tokenize=True)
    return list(want["input_ids"] if hasattr(want, "keys") else want)


@pytest.fixture(scope="module")
def gguf_template_lab(tmp_path_factory):
    """A tiny Gemma 3 GGUF carrying its own tokenizer.chat_template, loaded by gemma_lab, and
    transformers' tokenizer on the same file (which reads the same template)."""
    import_keras()
    from transformers import AutoTokenizer

    import gemma_lab
    from gemma_lab.testing import tiny_gguf

    path = tiny_gguf("gemma3", directory=tmp_path_factory.mktemp("templated"),
                     chat_template=SYSTEM_TURN_TEMPLATE)
    hf = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    assert hf.chat_template == SYSTEM_TURN_TEMPLATE
    return gemma_lab.load(str(path), progress=False), hf


@pytest.mark.parametrize("case", sorted(CONVERSATIONS))
def test_a_ggufs_own_template_gives_transformers_ids(gguf_template_lab, case):
    lab, hf = gguf_template_lab
    assert lab.chat_template.origin == "GGUF tokenizer.chat_template"
    assert "GGUF tokenizer.chat_template" in lab.info().chat_template
    system, messages = CONVERSATIONS[case]
    history, (_, message) = messages[:-1], messages[-1]
    lab.reset_chat()
    lab.conversation.turns = [Turn(role, text) for role, text in history]
    lab.conversation.system = system
    _, ids = lab.conversation.prompt(message, system)
    assert ids == _hf_ids(hf, system, messages)
    if system:  # the built-in template folds the system prompt; this one gives it a turn
        assert ids != encode(lab.tokenizer, render([Turn(r, t) for r, t in messages], system))
    # a transcript: the same template without the generation prompt, speakers by turn
    turns = ([{"role": "system", "content": system}] if system else []) + [
        {"role": role, "content": text} for role, text in messages]
    chat = lab.transcript(turns)
    assert list(chat.token_ids) == _hf_ids(hf, system, messages, generation_prompt=False)

    def said(speaker):
        return lab.tokenizer.decode([i for i, who in zip(chat.token_ids, chat.speakers,
                                                         strict=True) if who == speaker])

    assert said("user") == "".join(text.strip() for role, text in messages if role == "user")
    assert said("model") == "".join(text.strip() for role, text in messages if role == "model")
    assert said("system") == (system or "").strip()
    lab.reset_chat()


def test_a_chat_reply_sees_the_checkpoint_templates_ids(gguf_template_lab):
    lab, hf = gguf_template_lab
    lab.reset_chat()
    first = lab.chat("Hello", system="Be brief.", max_new_tokens=3)
    assert list(first.prompt_token_ids) == _hf_ids(hf, "Be brief.", [("user", "Hello")])
    second = lab.chat("And now?", max_new_tokens=3)
    assert list(second.prompt_token_ids) == _hf_ids(
        hf, "Be brief.", [("user", "Hello"), ("model", first.text), ("user", "And now?")])
    lab.reset_chat()


def test_your_own_template_and_back_to_the_built_in(tiny_lab):
    from gemma_lab.errors import GemmaLabError

    turns = [{"role": "user", "content": "hi"}]
    built_in = tiny_lab.transcript(turns).token_ids
    tiny_lab.chat_template = SYSTEM_TURN_TEMPLATE.replace("<end_of_turn>\n", "<end_of_turn>")
    try:
        assert tiny_lab.chat_template.origin == "lab.chat_template"
        assert tiny_lab.transcript(turns).token_ids == built_in[:-1]  # no "\n" after the turn
        tiny_lab.chat_template = "{{ raise_exception('only user turns, please') }}"
        with pytest.raises(InputError, match="only user turns"):
            tiny_lab.chat("hi", max_new_tokens=1)
        # the sandbox: a template cannot reach Python's internals
        tiny_lab.chat_template = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
        with pytest.raises(InputError, match="refused"):
            tiny_lab.transcript(turns)
        for bad in ("{% for %}", "", 3):
            with pytest.raises(GemmaLabError):
                tiny_lab.chat_template = bad
    finally:
        tiny_lab.chat_template = None
    assert tiny_lab.transcript(turns).token_ids == built_in
    assert tiny_lab.chat_history == []


def test_a_hugging_face_folders_template_is_found(tmp_path):
    import json

    from gemma_lab.chat_template import from_hf_folder

    assert from_hf_folder(tmp_path) is None
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": [
        {"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}))
    assert (from_hf_folder(tmp_path).source, from_hf_folder(tmp_path).origin) == (
        "D", "tokenizer_config.json chat_template")
    (tmp_path / "chat_template.jinja").write_text("J")
    assert from_hf_folder(tmp_path).source == "J"
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    (tmp_path / "chat_template.jinja").unlink()
    assert from_hf_folder(tmp_path) is None
