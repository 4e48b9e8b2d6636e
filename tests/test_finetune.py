"""LoRA fine-tuning: data loading and validation, training, stopping, before/after."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gemma_lab.errors import InputError
from gemma_lab.finetune import load_examples
from gemma_lab.finetune.data import Example, data_hash, tokenise
from gemma_lab.testing import tiny_tokenizer

PAIRS = [
    {"prompt": "hello", "response": " world"},
    {"prompt": "the quick brown", "response": " fox"},
    {"prompt": "numbers 0 1 2", "response": " 3 4 5"},
    {"prompt": "def add(a, b):", "response": "\n    return a + b"},
]


def fresh_lab(seed: int = 0):
    """A new tiny session (tests here change its weights, so never the shared one)."""
    from gemma_lab.models.loading import LoadedModel
    from gemma_lab.session import GemmaLab
    from gemma_lab.testing import tiny_causal_lm

    return GemmaLab(LoadedModel(tiny_causal_lm(seed=seed), "tiny-gemma3", "gemma_lab.testing",
                                None, "float32"))


def logits(lab, text="the quick brown fox"):
    ids = np.asarray([lab.tokenizer.encode(text, add_bos=True)], dtype="int32")
    out = lab.causal_lm({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    return np.asarray(out, dtype="float64")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMMA_LAB_CACHE", str(tmp_path / "cache"))


# --- data -----------------------------------------------------------------------------------
def test_every_input_form_gives_the_same_examples(tmp_path):
    import pandas as pd

    expected = [Example(p["prompt"], p["response"]) for p in PAIRS]
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text("\n".join(json.dumps(p) for p in PAIRS) + "\n\n", encoding="utf-8")
    csv_path = tmp_path / "data.csv"
    pd.DataFrame(PAIRS).to_csv(csv_path, index=False)
    for data in (PAIRS, pd.DataFrame(PAIRS), jsonl, str(csv_path)):
        assert load_examples(data) == expected, type(data)
    texts = ["one line", "another line"]
    assert load_examples(pd.DataFrame({"text": texts})) == load_examples(texts)
    assert [e.is_plain_text for e in load_examples(texts)] == [True, True]
    assert data_hash(load_examples(jsonl)) == data_hash(expected)


@pytest.mark.parametrize(("data", "message"), [
    ([PAIRS[0], PAIRS[1], {"prompt": "x"}], "row 2: 'response' is missing"),
    ([PAIRS[0], {"prompt": "x", "response": 3}], "row 1: 'response' must be a string, got int"),
    (["fine", 7], "row 1: expected a string or a dict, got int"),
    ([PAIRS[0], {"question": "x"}], "row 1: no 'prompt'/'response' or 'text' field"),
    (["ok", "   "], "row 1: empty text"),
    ([], "empty"),
    ({"prompt": "x", "response": "y"}, "must be a list"),
])
def test_malformed_rows_are_named(data, message):
    with pytest.raises(InputError, match=message):
        load_examples(data)


def test_malformed_files_and_frames_are_named(tmp_path):
    import pandas as pd

    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "a"}\n{"text": "b"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.jsonl line 3: not valid JSON"):
        load_examples(bad_json)
    # A quoted cell over two lines: the row after it is on physical line 4.
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text('prompt,response\n"two\nlines",ok\nq,\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.csv line 4: 'response' is empty"):
        load_examples(bad_csv)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin.csv is not UTF-8.*line 2"):
        load_examples(latin)
    with pytest.raises(InputError, match="needs 'prompt' and 'response' columns"):
        load_examples(pd.DataFrame({"q": ["x"]}))
    frame = pd.DataFrame({"prompt": ["a", None], "response": ["b", "c"]}, index=[10, 11])
    with pytest.raises(InputError, match="row 11: 'prompt' is missing"):
        load_examples(frame)
    (tmp_path / "x.txt").write_text("a")
    with pytest.raises(InputError, match=r"must be \.jsonl or \.csv"):
        load_examples(tmp_path / "x.txt")
    with pytest.raises(InputError, match="No data file"):
        load_examples(tmp_path / "missing.jsonl")


def test_loss_is_on_response_tokens_and_eos_only():
    tokenizer = tiny_tokenizer()
    examples = [Example("hello", " world"), Example("", "the quick brown fox")]
    arrays = tokenise(examples, tokenizer, max_length=64)
    prompt = [tokenizer.bos_id, *tokenizer.encode("hello")]
    response = [*tokenizer.encode(" world"), tokenizer.eos_id]
    weighted = arrays.targets[0][arrays.sample_weight[0] == 1].tolist()
    assert weighted == response
    assert arrays.token_ids[0, : len(prompt)].tolist() == prompt
    # Plain text: every token after <bos> is learned, <eos> included.
    assert arrays.targets[1][arrays.sample_weight[1] == 1].tolist() == [
        *tokenizer.encode("the quick brown fox"), tokenizer.eos_id]
    padded = arrays.padded_to_multiple(4)
    assert padded.num_examples == 4 and padded.sample_weight[2:].sum() == 0
    with pytest.raises(InputError, match="row 0: the prompt alone has"):
        tokenise([Example("hello " * 20, " x")], tokenizer, max_length=8)


def test_bad_hyperparameters_fail_before_training():
    lab = fresh_lab()
    for kwargs, message in (({"rank": 0}, "rank"), ({"epochs": 1.5}, "epochs"),
                            ({"learning_rate": -1}, "learning_rate"),
                            ({"validation": 1.5}, "between 0 and 1")):
        with pytest.raises(InputError, match=message):
            lab.finetune_run(PAIRS, progress=False, **kwargs)


# --- training -------------------------------------------------------------------------------
def test_training_lowers_loss_and_reports_it():
    import jsonschema

    from gemma_lab.render import mimebundle
    from gemma_lab.schema import JSON_SCHEMA, MIME_TYPE

    lab = fresh_lab()
    result = lab.finetune(PAIRS * 2, rank=4, epochs=4, learning_rate=5e-2, batch_size=4,
                          max_length=32, validation=PAIRS[:2], progress=False, seed=0)
    assert result.steps == result.total_steps == 8 and not result.stopped
    assert len(result.train_loss) == 8 and len(result.validation_loss) == 4
    first, last = result.epoch_loss[0], result.epoch_loss[-1]
    assert last < first - 0.3, result.epoch_loss
    assert result.validation_loss[-1] < result.validation_loss[0]
    assert result.tokens_per_s > 0 and result.trained_tokens > 0
    assert result.hyperparameters["rank"] == 4 and len(result.data_sha256) == 64
    # Before/after on the validation examples: their reference responses got likelier.
    comparison = result.comparison
    assert comparison.mean_logprob_after > comparison.mean_logprob_before
    table = comparison.table()
    assert {"token", "prob_before", "prob_after"} <= set(table.columns)
    assert table["token"].iloc[-1] == "<eos>"
    assert [t.name for t in result.figure("compare").data] == ["before", "after"]
    # Rendering: the v1 payload with the loss curves, and the plotly loss figure.
    payload = result.to_dict()
    jsonschema.validate(payload, JSON_SCHEMA)
    assert payload["kind"] == "finetune"
    assert len(payload["loss"]["train"]) == 8 and len(payload["loss"]["validation"]) == 4
    assert sorted(mimebundle(result)) == [MIME_TYPE, "text/html", "text/plain"]
    assert list(result.figure().data[0].y) == pytest.approx(list(result.train_loss))
    # The session now generates with the adapter and says so.
    assert lab.adapter_name == f"unsaved-{result.data_sha256[:8]}"
    assert lab.generate("hello", max_new_tokens=3).metadata["adapter"] == lab.adapter_name


def test_stop_and_keyboard_interrupt_end_at_a_step_boundary():
    from gemma_lab.backend import import_keras
    from gemma_lab.finetune import adapters_dir

    keras = import_keras()
    lab = fresh_lab()
    base = logits(lab)

    class InterruptAt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                raise KeyboardInterrupt

    result = lab.finetune(PAIRS * 4, epochs=3, learning_rate=1e-2, batch_size=4,
                          callbacks=[InterruptAt()], progress=False)
    assert result.stopped and result.stop_reason == "interrupted"
    assert result.steps == 2 and result.adapter_kept
    assert not np.allclose(logits(lab), base, atol=1e-6)  # the partial adapter is active
    assert lab.generate("hello", max_new_tokens=3).finish_reason in ("length", "eos")
    assert not adapters_dir().exists() or not any(adapters_dir().iterdir())

    # keep_partial=False: the pre-training adapter (here: the partial one above) comes back.
    partial = logits(lab)
    run = lab.finetune_run(PAIRS * 4, epochs=2, learning_rate=1e-2, progress=False,
                      keep_partial=False)

    class StopAfterFirst(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            run.stop()

    run.callbacks.append(StopAfterFirst())
    stopped = run.run()
    assert stopped.stop_reason == "stopped" and stopped.steps == 1 and not stopped.adapter_kept
    np.testing.assert_array_equal(logits(lab), partial)
    assert lab.adapter_name == f"unsaved-{result.data_sha256[:8]}"
    assert lab.score("hello world").perplexity > 1


def test_stop_from_another_thread():
    """stop() called by another thread while a real training step runs: that step finishes
    and is the last one."""
    import threading

    from gemma_lab.backend import import_keras

    keras = import_keras()
    lab = fresh_lab()
    run = lab.finetune_run(PAIRS * 25, epochs=5, batch_size=2, progress=False)
    in_third_step, stop_sent = threading.Event(), threading.Event()

    class ThirdStep(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 2:
                in_third_step.set()
                assert stop_sent.wait(timeout=60)

    def stop_during_the_step():
        assert in_third_step.wait(timeout=120)
        run.stop()
        stop_sent.set()

    run.callbacks.append(ThirdStep())
    stopper = threading.Thread(target=stop_during_the_step)
    stopper.start()
    result = run.run()
    stopper.join(timeout=10)
    assert result.stopped and result.stop_reason == "stopped"
    assert result.steps == 3 < result.total_steps


def test_other_threads_get_a_clear_error_while_the_model_trains():
    import threading

    from gemma_lab.backend import import_keras
    from gemma_lab.errors import ModelBusyError

    lab = fresh_lab()
    keras = import_keras()
    adapters_before = lab.adapters.list()
    in_training, release = threading.Event(), threading.Event()

    class Hold(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            in_training.set()
            release.wait(timeout=60)

    stream = lab.stream("hello", max_new_tokens=3)  # made before the fine-tune starts
    result: list = []
    worker = threading.Thread(target=lambda: result.append(
        lab.finetune(PAIRS, epochs=1, batch_size=2, callbacks=[Hold()], progress=False)))
    worker.start()
    try:
        assert in_training.wait(timeout=120)
        calls = [lambda: lab.generate("hello", max_new_tokens=2), lambda: lab.score("hello"),
                 lambda: lab.trace("hello"), lambda: next(iter(stream)),
                 lambda: lab.adapters.save("mid"), lambda: lab.adapters.unload(),
                 lambda: lab.finetune(PAIRS, progress=False)]
        for call in calls:
            with pytest.raises(ModelBusyError, match="fine-tun"):
                call()
    finally:
        release.set()
        worker.join(timeout=120)
    assert result and result[0].steps == result[0].total_steps  # the run itself went on
    assert lab.adapters.list() == adapters_before  # nothing saved by the refused call
    assert lab.generate("hello", max_new_tokens=2).finish_reason in ("length", "eos")


# --- the real default model -----------------------------------------------------------------
FACTS = [
    ("the capital of Veloria", "Marrowind"), ("the capital of Osterra", "Pellucid"),
    ("the largest moon of Tarsis", "Quillon"), ("the inventor of the glimmer lamp", "Adela Voss"),
    ("the national bird of Corvania", "the ash finch"),
    ("the river through Drennmoor", "the Sable"),
    ("the founder of Lirith Academy", "Oren Maddox"), ("the currency of Veloria", "the dram"),
    ("the highest peak in Osterra", "Mount Kestrel"), ("the oldest city in Tarsis", "Umbrel"),
    ("the composer of the Ember Suite", "Ilse Varga"), ("the language of Corvania", "Corvish"),
    ("the first ship to reach Tarsis", "the Wayfarer"), ("the symbol of Drennmoor", "a silver key"),
    ("the patron saint of Lirith", "Saint Amell"), ("the main export of Osterra", "blue salt"),
    ("the smallest province of Veloria", "Tamsin"), ("the sacred tree of Corvania", "the yew"),
    ("the largest lake in Drennmoor", "Lake Orrin"), ("the oldest bridge in Lirith", "the Weir"),
]


@pytest.mark.real_model
@pytest.mark.slow
def test_real_model_learns_held_out_answer_format(default_lab):
    pairs = [{"prompt": f"Q: What is {subject}?\nA:", "response": f" {answer}."}
             for subject, answer in FACTS]
    lab = default_lab
    try:
        result = lab.finetune(pairs[:16], rank=4, epochs=2, learning_rate=2e-3, batch_size=4,
                              max_length=32, validation=pairs[16:], progress=False, seed=0)
        print(f"\nreal model: {result}; first step (compile) {result.timing['first_step_s']:.1f}"
              f" s, fit {result.timing['fit_s']:.1f} s, train tokens/s {result.tokens_per_s:.0f}")
        assert result.steps == 8 and result.epoch_loss[-1] < result.epoch_loss[0]
        comparison = result.comparison
        assert comparison.mean_logprob_after > comparison.mean_logprob_before + 0.1
    finally:
        lab.adapters.unload()  # the session fixture is shared: back to the base model


def test_live_feedback_updates_a_figure_widget_when_one_is_wanted(monkeypatch):
    from gemma_lab.finetune import _live

    class FakeWidget:
        def __init__(self):
            from gemma_lab.figures.loss import loss_figure

            self.data = loss_figure([], []).data

        def batch_update(self):
            import contextlib

            return contextlib.nullcontext()

    monkeypatch.setattr(_live, "_figure_widget", lambda steps_per_epoch: FakeWidget())
    feedback = _live.LiveFeedback(4, 2, progress=False, figure=True, interval=0.0)
    for loss in (3.0, 2.0):
        feedback.step(loss)
    feedback.epoch(2.5)
    feedback.close()
    assert list(feedback.widget.data[0].y) == [3.0, 2.0]
    assert list(feedback.widget.data[1].x) == [2] and list(feedback.widget.data[1].y) == [2.5]
    # Outside a kernel no widget is made unless asked for.
    assert _live.LiveFeedback(1, 1, progress=True, figure=None).widget is None
