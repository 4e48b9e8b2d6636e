"""The widgets driven programmatically on the tiny model: set values, click, read state."""

from __future__ import annotations

import dataclasses
import html
import json
import re

import numpy as np
import pytest

import gemma_lab.magics
from gemma_lab.errors import InputError
from gemma_lab.models.loading import LoadedModel
from gemma_lab.session import GemmaLab
from gemma_lab.testing import run_magic, tiny_causal_lm
from gemma_lab.widgets import AttentionExplorer, FinetunePanel, InterventionsPanel, Playground
from gemma_lab.widgets._snapshot import LIVE_CLASS, SNAPSHOT_CLASS

WAIT_S = 120


def generated(playground: Playground) -> list[dict]:
    return [t for t in playground.strip.tokens if t["role"] != "prompt"]


def test_playground_streams_tokens_coloured_by_probability_and_ignores_a_second_click(
        tiny_lab):
    playground = Playground(tiny_lab, prompt="hello <b>world</b>", max_new_tokens=6,
                            update_interval=0)
    during_run = []

    def while_streaming(change):
        if len(generated(playground)) == 1:  # on the worker thread, mid-generation
            during_run.append((playground.generate(), playground.generate_button.disabled,
                               playground.stop_button.disabled))

    playground.strip.observe(while_streaming, names="tokens")
    playground.generate_button.click()
    playground.generate_button.click()  # while busy: ignored
    playground.wait(WAIT_S)

    assert playground.error is None
    assert during_run == [(False, True, False)]
    assert len(playground.branches) == 1
    branch = playground.current
    expected = tiny_lab.generate("hello <b>world</b>", max_new_tokens=6)
    assert [s.token_id for s in branch.steps] == expected.token_ids
    tokens = playground.strip.tokens
    prompt = [t for t in tokens if t["role"] == "prompt"]
    assert "".join(t["text"] for t in prompt) == "hello <b>world</b>"  # raw: JS sets textContent
    assert all(t["prob"] is None for t in prompt)
    assert [t["prob"] for t in generated(playground)] == pytest.approx(expected.probs)
    assert playground.generate_button.disabled is False
    assert playground.stop_button.disabled is True
    assert list(playground.figure_box.data[0].y) == pytest.approx(expected.probs)

    # The saved view: the same tokens as static, escaped HTML, with the status line.
    assert LIVE_CLASS in playground._dom_classes
    saved = playground.snapshot.html
    assert "<b>" not in saved and "</b>" not in saved
    spans = re.findall(r'class="gemma-lab-token gemma-lab-token-(\w+)"[^>]*>([^<]*)</span>', saved)
    assert "".join(html.unescape(text) for role, text in spans
                   if role == "prompt") == "hello <b>world</b>"  # text stays text
    assert saved.count("gemma-lab-token-generated") == len(expected.token_ids)
    assert saved.count("<rect") == len(expected.token_ids)  # a probability bar each
    assert html.escape(playground.status.value) in saved and "tokens/s" in saved
    assert playground.snapshot.text == (f"Playground (saved view): {len(expected.token_ids)} "
                                        f"tokens generated ({branch.finish_reason})")


def test_stop_ends_generation_within_one_decode_step(tiny_lab):
    # 24 tokens keep the compiled length bucket of the other tests; it stops after ~2.
    playground = Playground(tiny_lab, prompt="hello", max_new_tokens=24, update_interval=0)
    clicked_at = []

    def stop_after_two(change):
        count = len(generated(playground))
        if count >= 2 and not clicked_at:
            clicked_at.append(count)
            playground.stop_button.click()

    playground.strip.observe(stop_after_two, names="tokens")
    playground.generate_button.click()
    playground.wait(WAIT_S)

    branch = playground.current
    assert branch.finish_reason == "stopped"
    assert clicked_at[0] <= len(branch.steps) <= clicked_at[0] + 1
    assert playground.stop_button.disabled and not playground.generate_button.disabled
    assert playground.generate()  # the model is usable again
    playground.wait(WAIT_S)
    assert len(playground.branches) == 2


def test_clicking_a_token_shows_alternatives_and_branch_regenerates_from_it(tiny_lab):
    playground = Playground(tiny_lab, prompt="the quick brown", max_new_tokens=5)
    playground.generate_button.click()
    playground.wait(WAIT_S)
    parent = playground.current
    prompt_count = sum(t["role"] == "prompt" for t in playground.strip.tokens)

    playground.strip.selected = prompt_count + 2  # what a click on the third token sets
    chosen = parent.steps[2]
    assert [label for label, _ in playground.alternatives.options] == [
        f"{piece!r}  p {prob:.4f}" for piece, prob in chosen.top_k]
    alternative = playground.alternatives.value
    assert chosen.top_k_ids[alternative] != chosen.token_id
    assert not playground.branch_button.disabled

    playground.branch_button.click()
    playground.branch_button.click()  # a double click makes one branch
    playground.wait(WAIT_S)
    assert len(playground.branches) == 2
    branch = playground.current
    assert branch.parent == 0 and branch.forced == 2
    assert branch.steps[:2] == parent.steps[:2]
    forced = branch.steps[2]
    assert forced.token_id == chosen.top_k_ids[alternative]
    assert forced.rank == alternative + 1
    assert forced.prob == pytest.approx(chosen.top_k[alternative][1])
    assert len(branch.steps) == 3 + 5
    # Greedy continuation of the new prefix: every new token is that position's top choice.
    assert [s.rank for s in branch.steps[3:]] == [1] * 5
    assert [t["role"] for t in playground.strip.tokens[prompt_count:]][2] == "branch"

    playground.history.value = 0  # switch back
    assert [t["text"] for t in generated(playground)] == [s.text or s.piece
                                                           for s in parent.steps]
    assert [label.split(" ")[0] for label, _ in playground.history.options] == ["#0", "#1"]


def test_bad_sampler_values_are_reported_in_the_status_line(tiny_lab):
    playground = Playground(tiny_lab, prompt="hello")
    playground.seed.value = "one"
    assert playground.generate() is False
    assert "seed must be an integer" in playground.status.value
    playground.seed.value = ""
    playground.prompt.value = "x " * 40_000  # longer than the context
    assert playground.generate() is False
    assert "context" in playground.status.value
    assert playground.branches == [] and not playground.busy


@pytest.fixture
def chat_lab(tiny_lab):
    """The shared tiny session with an empty conversation, left empty afterwards."""
    tiny_lab.reset_chat()
    yield tiny_lab
    tiny_lab.reset_chat()


def shown_turns(playground: Playground) -> list[tuple[str, str]]:
    """(role, text) of each turn in the Playground's conversation view."""
    found = re.findall(r'data-role="(\w+)".*?class="gemma-lab-chat-content"[^>]*>(.*?)</div>',
                       playground.conversation.value, flags=re.S)
    return [(role, html.unescape(text)) for role, text in found]


def history_turns(lab) -> list[tuple[str, str]]:
    return [(turn["role"], turn["content"]) for turn in lab.chat_history]


def send(playground: Playground, message: str) -> None:
    playground.prompt.value = message
    playground.generate_button.click()
    playground.wait(WAIT_S)
    assert playground.error is None, playground.error


def test_chat_mode_sends_the_templated_ids_and_shows_the_turns_with_roles(chat_lab):
    playground = Playground(chat_lab, mode="Chat", system="Be brief.", max_new_tokens=5)
    assert playground.generate_button.description == "Send"
    assert playground.conversation.layout.display is None  # shown in chat mode
    _, expected_ids = chat_lab._chat.prompt("Hello", "Be brief.")
    send(playground, "Hello")

    reply = playground.current
    assert reply.prompt_ids == tuple(expected_ids)
    same = chat_lab.stream("", prompt_ids=expected_ids, max_new_tokens=5).run()
    assert [s.token_id for s in reply.steps] == same.token_ids
    # the strip holds the reply only (the conversation is drawn as turns above it)
    assert [t["prob"] for t in playground.strip.tokens] == pytest.approx(same.probs)
    assert chat_lab.chat_history == [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "Hello"},
                                     {"role": "model", "content": same.text}]
    assert playground.prompt.value == ""  # sent
    assert playground.system.disabled  # the conversation's system prompt is set

    _, second_ids = chat_lab._chat.prompt("And now?")
    send(playground, "And now?")
    assert playground.current.prompt_ids == tuple(second_ids)
    assert [role for role, _ in history_turns(chat_lab)] == [
        "system", "user", "model", "user", "model"]
    assert shown_turns(playground) == history_turns(chat_lab)
    assert len(playground.branches) == 2

    playground.new_chat_button.click()
    assert chat_lab.chat_history == [] and shown_turns(playground) == []
    assert not playground.system.disabled
    send(playground, "Fresh start")  # the system field is offered again, and used
    assert history_turns(chat_lab)[:2] == [("system", "Be brief."), ("user", "Fresh start")]


def test_stop_in_chat_mode_leaves_no_half_written_turn(chat_lab):
    playground = Playground(chat_lab, mode="Chat", max_new_tokens=24, update_interval=0)
    send(playground, "One")
    before = chat_lab.chat_history
    clicked = []

    def stop_after_two(change):
        if len(playground.strip.tokens) >= 2 and not clicked:
            clicked.append(1)
            playground.stop_button.click()

    playground.strip.observe(stop_after_two, names="tokens")
    send(playground, "Two")
    playground.strip.unobserve(stop_after_two, names="tokens")

    assert playground.current.finish_reason == "stopped"
    assert chat_lab.chat_history == before
    assert shown_turns(playground) == history_turns(chat_lab)  # no pending "Two" left
    assert "not added to the conversation" in playground.status.value
    assert playground.prompt.value == "Two"  # kept, to send again
    playground.generate_button.click()
    playground.wait(WAIT_S)
    assert history_turns(chat_lab)[-2][1] == "Two" and len(chat_lab.chat_history) == 4


def test_a_branch_in_chat_mode_replaces_the_last_reply_and_the_chat_follows_it(chat_lab):
    playground = Playground(chat_lab, mode="Chat", max_new_tokens=5)
    send(playground, "hello")
    parent = playground.current

    playground.strip.selected = 1  # the reply's second token (no prompt tokens shown)
    chosen = parent.steps[1]
    alternative = playground.alternatives.value
    assert chosen.top_k_ids[alternative] != chosen.token_id
    playground.branch_button.click()
    playground.wait(WAIT_S)
    assert playground.error is None

    branch = playground.current
    assert len(playground.branches) == 2 and (branch.parent, branch.forced) == (0, 1)
    assert branch.steps[0] == parent.steps[0]
    assert branch.steps[1].token_id == chosen.top_k_ids[alternative]
    assert branch.prompt_ids == parent.prompt_ids  # the same conversation, one reply swapped
    branch_text = chat_lab.tokenizer.decode([s.token_id for s in branch.steps])
    assert chat_lab.chat_history == [{"role": "user", "content": "hello"},
                                     {"role": "model", "content": branch_text}]
    assert shown_turns(playground) == history_turns(chat_lab)

    prompt_text, next_ids = chat_lab._chat.prompt("again")
    assert branch_text.strip() in prompt_text
    send(playground, "again")
    assert playground.current.prompt_ids == tuple(next_ids)
    assert history_turns(chat_lab)[1] == ("model", branch_text)

    playground.history.value = 0  # the first reply is no longer the last one: refused
    playground.strip.selected = 0
    assert playground.branch() is False
    assert "earlier point of the conversation" in playground.status.value
    assert len(playground.branches) == 3


def test_chat_turns_are_escaped_and_follow_lab_chat(chat_lab):
    first = chat_lab.chat("<b>hi</b>", max_new_tokens=3)
    hostile = "<img src=x onerror=alert(1)> & </div>"
    assert chat_lab._chat.replace_last_reply(dataclasses.replace(first, text=hostile))
    playground = Playground(chat_lab)  # complete mode: no conversation shown
    assert playground.conversation.layout.display == "none"
    playground.mode.value = "Chat"
    assert playground.conversation.layout.display is None
    view = playground.conversation.value
    assert "<img" not in view and "<b>" not in view
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; &lt;/div&gt;" in view
    assert shown_turns(playground) == [("user", "<b>hi</b>"), ("model", hostile)]
    playground.prompt.value = "   "
    assert playground.generate() is False
    assert "non-empty message" in playground.status.value
    with pytest.raises(InputError, match="mode must be one of"):
        Playground(chat_lab, mode="chat")


def test_chat_replace_last_reply_takes_a_complete_reply_to_the_last_message(chat_lab):
    chat = chat_lab._chat
    with pytest.raises(InputError, match="no model reply"):
        chat.replace_last_reply(chat_lab.generate("x", max_new_tokens=1))
    first = chat_lab.chat("One", max_new_tokens=2)
    second = chat_lab.chat("Two", max_new_tokens=2)
    with pytest.raises(InputError, match="different point of the conversation"):
        chat.replace_last_reply(first)  # answers "One", not the last message
    before = chat_lab.chat_history
    half = dataclasses.replace(second, text="half", finish_reason="stopped")
    assert chat.replace_last_reply(half) is False and chat_lab.chat_history == before
    assert chat.replace_last_reply(dataclasses.replace(second, text="Another reply"))
    assert chat_lab.chat_history == [*before[:-1], {"role": "model", "content": "Another reply"}]


def test_attention_explorer_selectors_heatmap_grid_and_clicked_token(tiny_lab):
    explorer = AttentionExplorer(tiny_lab, text="hello world again")
    explorer.trace_button.click()
    explorer.wait(WAIT_S)
    trace = explorer.trace
    assert explorer.error is None
    assert list(explorer.layer.options) == list(trace.layers)
    assert [value for _, value in explorer.head.options][1:] == list(trace.heads)
    np.testing.assert_allclose(explorer.heatmap.data[0].z, trace.attention_matrix(0),
                               rtol=1e-6)
    assert len(explorer.head_grid.data) == len(trace.heads)

    explorer.head.value = 1
    np.testing.assert_allclose(explorer.heatmap.data[0].z, trace.attention_matrix(0, 1),
                               rtol=1e-6)
    explorer.layer.value = 1
    assert explorer.head_grid.figure_layout.title.text.startswith("Attention heads of layer 1")

    explorer.strip.selected = 3  # click the fourth token
    row = trace.attention_matrix(1, 1)[3]
    np.testing.assert_allclose(explorer.token_view.data[0].y, row, rtol=1e-6)
    shown = [t["prob"] for t in explorer.strip.tokens]
    assert shown[:4] == pytest.approx(row[:4].tolist())
    assert shown[4:] == [None] * (len(trace.tokens) - 4)  # causal: no later keys


@pytest.fixture
def fresh_lab(tmp_path, monkeypatch):
    """A tiny session of its own (fine-tuning changes the model) and a temporary cache."""
    monkeypatch.setenv("GEMMA_LAB_CACHE", str(tmp_path / "cache"))
    return GemmaLab(LoadedModel(tiny_causal_lm(), "tiny", "test", None, "float32"))


def test_finetune_panel_start_stop_keep_save_then_discard(fresh_lab, tmp_path):
    data = [{"prompt": f"question {i}:", "response": f" answer {i}"} for i in range(16)]
    data[1]["prompt"] = "<img src=x onerror=alert(1)> question 1:"
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in data))
    panel = FinetunePanel(fresh_lab)
    assert panel.start() is False and "Load data first" in panel.status.text
    panel.data_source.value = str(path)
    panel.load_button.click()
    assert "16 examples" in panel.preview.value and "question 0:" in panel.preview.value
    assert "&lt;img src=x" in panel.preview.value and "<img" not in panel.preview.value
    panel.batch_size.value, panel.held_out.value, panel.rank.value = 2, 0.25, 2

    def stop_after_first_step(change):
        if change["new"] == 1:
            panel.stop_button.click()

    panel.progress.observe(stop_after_first_step, names="value")
    panel.start_button.click()
    panel.start_button.click()  # while busy: ignored
    panel.wait(WAIT_S)

    result = panel.result
    assert panel.error is None
    assert result.stopped and result.steps in (1, 2) and result.total_steps == 6
    assert panel.progress.value == result.steps and panel.progress.max == 6
    assert list(panel.loss.data[0].y) == pytest.approx(result.train_loss)
    assert result.adapter_kept and fresh_lab.adapters.active.startswith("unsaved-")
    assert len(result.comparison.before) == 4
    assert [trace.name for trace in panel.comparison.data] == ["before", "after"]
    assert "p before" in panel.comparison_table.value
    assert not panel.save_button.disabled
    # The saved view: status, escaped data preview, loss curve and before / after.
    assert LIVE_CLASS in panel._dom_classes
    saved = panel.snapshot.html
    assert html.escape(panel.status.text) in saved and "LoRA rank" in saved
    assert "&lt;img src=x" in saved and "<img" not in saved
    assert saved.count("<polyline") == 1 + bool(result.validation_loss)  # train, validation
    assert saved.count("<circle") == result.steps + len(result.validation_loss)
    assert "p before" in saved
    assert panel.snapshot.text == (f"Fine-tune panel (saved view): {result.steps}/6 steps, "
                                   f"{result.stop_reason}")

    # LoRA is on: its rank is fixed for the session. Starting afresh from the base model
    # would drop the unsaved adapter: refused, with what to do.
    assert panel.rank.disabled and panel.rank.value == 2
    assert panel.start_from.value == "base"
    assert panel.start() is False and "is not saved" in panel.status.text
    assert fresh_lab.adapters.active.startswith("unsaved-")

    panel.adapter_name.value = "panel-test"
    saved = panel.save()
    assert saved.exists() and fresh_lab.adapters.active == "panel-test"
    assert "Saved adapter &#x27;panel-test&#x27;" in panel.snapshot.html
    assert "panel-test" in fresh_lab.adapters.names()

    panel.on_stop.value = False  # discard a stopped run's partial adapter
    panel.held_out.value = 0.0  # (no held-out scoring: keeps the test short)
    panel.start_from.value = "adapter"  # continue training "panel-test"
    panel.start_button.click()
    panel.wait(WAIT_S)
    assert panel.result.stopped and not panel.result.adapter_kept
    assert fresh_lab.adapters.active == "panel-test"  # back to the adapter before the run
    assert "from adapter 'panel-test'" in panel.status.text

    panel.start_from.value = "base"  # saved now: set aside, the run starts from the base
    base = fresh_lab.adapters.using(None)
    with base:
        expected = fresh_lab.score("question 0: answer 0").total_logprob
    panel.start_button.click()
    panel.wait(WAIT_S)
    assert "from the base model (adapter 'panel-test' set aside" in panel.status.text
    fresh_lab.adapters.unload()
    assert fresh_lab.score("question 0: answer 0").total_logprob == pytest.approx(expected)
    assert "panel-test" in fresh_lab.adapters.names()  # still saved


def test_magics_open_the_widgets(tiny_lab):
    gemma_lab.magics.use(tiny_lab)
    for command, kind, title in (("playground", Playground, "Playground"),
                                 ("attention", AttentionExplorer, "Attention explorer"),
                                 ("finetune-panel", FinetunePanel, "Fine-tune panel"),
                                 ("interventions", InterventionsPanel, None)):
        run = run_magic(f"%gemma {command}")
        assert run.error is None, run.stderr
        assert len(run.outputs) == (1 if title is None else 2)
        assert "application/vnd.jupyter.widget-view+json" in run.outputs[0].data
        assert kind.__name__ in run.outputs[0].data["text/plain"]
        if title is not None:  # the saved view, right after the widget
            snapshot = run.outputs[1].data
            assert snapshot["text/plain"].startswith(f"{title} (saved view)")
            assert f'class="{SNAPSHOT_CLASS}"' in snapshot["text/html"]


def test_interventions_panel_rescores_on_toggle_and_slider_release(tiny_lab):
    from gemma_lab import interventions as iv

    vector = tiny_lab.steering_vector("good fine", "bad awful", layer=1)
    panel = InterventionsPanel(tiny_lab, text="hello <b>", vector=vector, layer=1)
    assert panel.scale.continuous_update is False  # re-scored on release, not per pixel
    panel.head_buttons[(0, 2)].value = True
    panel.wait(WAIT_S)
    assert panel.error is None
    expected = tiny_lab.compare("hello <b>", hooks=iv.ablate_heads([(0, 2)]))
    np.testing.assert_allclose(panel.comparison.logprobs_b, expected.logprobs_b, atol=1e-6)
    assert [t["text"] for t in panel.strip.tokens] == list(expected.tokens_b)
    for token, diff in zip(panel.strip.tokens, expected.diff, strict=True):
        hue = "hsla(210" if diff >= 0 else "hsla(0"
        assert token["colour"].startswith(hue) and f"{diff:+.3f}" in token["title"]
    panel.scale.value = 3.0
    panel.wait(WAIT_S)
    both = tiny_lab.compare("hello <b>", hooks=iv.ablate_heads([(0, 2)])
                            | iv.add(vector, layer=1, scale=3.0))
    np.testing.assert_allclose(panel.comparison.logprobs_b, both.logprobs_b, atol=1e-6)
    assert "2 heads off" not in panel.status.value and "1 heads off" in panel.status.value
    panel.head_buttons[(0, 2)].value = False
    panel.scale.value = 0.0
    panel.wait(WAIT_S)
    np.testing.assert_allclose(panel.comparison.diff, 0.0)
