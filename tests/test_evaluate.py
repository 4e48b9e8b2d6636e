"""`lab.evaluate`: per-example metrics of a dataset, each checked against NumPy's softmax of
keras-hub's own logits of that example alone."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from gemma_lab.backend import to_numpy
from gemma_lab.errors import InputError
from gemma_lab.testing import keras_hub_inputs, numpy_log_softmax

DATA = [
    {"prompt": "Q: the capital of France?\nA:", "response": " Paris"},
    "the quick brown fox jumps over the lazy dog",
    {"prompt": "hello", "response": " world, how are you"},
    "a b c",
]


def _target_logprobs(lab, example):
    """log p of every target token given all before it: NumPy on keras-hub's logits."""
    tokenizer = lab.tokenizer
    prompt, target = ((example["prompt"], example["response"]) if isinstance(example, dict)
                      else ("", example))
    head = [tokenizer.bos_id, *tokenizer.encode(prompt)]
    ids = head + tokenizer.encode(target)
    logits = to_numpy(lab.causal_lm(keras_hub_inputs(lab.causal_lm.backbone, [ids])))[0]
    logp = numpy_log_softmax(logits)
    positions = np.arange(len(head) - 1, len(ids) - 1)
    ranks = [int((logp[p] > logp[p, ids[p + 1]]).sum()) + 1 for p in positions]
    return logp[positions, [ids[p + 1] for p in positions]], np.asarray(ranks)


def test_metrics_equal_numpy_on_keras_hub_logits(tiny_lab_any):
    lab = tiny_lab_any
    ev = lab.evaluate(DATA, metrics=["logprob", "mean_logprob", "perplexity", "accuracy"],
                      progress=False)
    assert list(ev.table.columns) == ["prompt", "target", "target_tokens", "logprob",
                                      "mean_logprob", "perplexity", "accuracy"]
    total, tokens = 0.0, 0
    for row, example in zip(ev.table.itertuples(), DATA, strict=True):
        want, ranks = _target_logprobs(lab, example)
        assert row.target_tokens == len(want)
        assert row.logprob == pytest.approx(want.sum(), abs=1e-3)
        assert row.mean_logprob == pytest.approx(want.mean(), abs=1e-4)
        assert row.perplexity == pytest.approx(math.exp(-want.mean()), rel=1e-4)
        assert row.accuracy == pytest.approx(np.mean(ranks == 1))
        total, tokens = total + want.sum(), tokens + len(want)
    summary = ev.summary()
    assert summary["perplexity"] == pytest.approx(math.exp(-total / tokens), rel=1e-4)
    assert summary["logprob"] == pytest.approx(ev.table["logprob"].mean())


def test_every_data_form_gives_the_same_table(tiny_lab, tmp_path):
    rows = [d if isinstance(d, dict) else {"prompt": "", "response": d} for d in DATA]
    reference = tiny_lab.evaluate(DATA, progress=False).table
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    csv = tmp_path / "data.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    for data in (pd.DataFrame(rows), str(jsonl), csv):
        table = tiny_lab.evaluate(data, progress=False).table
        np.testing.assert_allclose(table["logprob"], reference["logprob"], atol=1e-5)
        assert table["target"].tolist() == reference["target"].tolist()


def test_custom_metrics_worst_examples_and_figure(tiny_lab):
    def last_token_prob(row):
        return math.exp(row.target_logprobs[-1])

    ev = tiny_lab.evaluate(DATA, metrics={"ppl": "perplexity", "last": last_token_prob,
                                          "n": lambda row: len(row.score.steps)},
                           progress=False)
    for row, example in zip(ev.table.itertuples(), DATA, strict=True):
        want, _ = _target_logprobs(tiny_lab, example)
        assert row.last == pytest.approx(math.exp(want[-1]), rel=1e-3)
    perplexities = [math.exp(-_target_logprobs(tiny_lab, e)[0].mean()) for e in DATA]
    worst = ev.worst(2, by="ppl")
    assert list(worst.index) == list(np.argsort(perplexities)[::-1][:2])
    fig = ev.figure("ppl", k=2)
    assert [t.type for t in fig.data] == ["histogram", "bar"]
    np.testing.assert_allclose(sorted(fig.data[0].x), sorted(perplexities), rtol=1e-4)
    np.testing.assert_allclose(fig.data[1].x, sorted(perplexities, reverse=True)[:2],
                               rtol=1e-4)
    html = ev._repr_html_()
    assert "Evaluation of 4 examples" in html and "<script" not in html


@pytest.mark.parametrize("kwargs,message", [
    (dict(data=[]), "empty"),
    (dict(data=["fine", 3]), "row 1"),
    (dict(data=["fine"], metrics=["nope"]), "Unknown metric 'nope'"),
    (dict(data=["fine"], metrics=[]), "metrics is empty"),
    (dict(data=["fine"], metrics=[3]), "a name .* or a callable"),
    (dict(data=["fine", "also"], metrics=[lambda row: 1 / 0]), "failed on example 0"),
    (dict(data=["fine"], metrics=[lambda row: "high"]), "return a number"),
])
def test_bad_evaluation_arguments_are_input_errors(tiny_lab, kwargs, message):
    with pytest.raises(InputError, match=message):
        tiny_lab.evaluate(progress=False, **kwargs)
    assert tiny_lab.score("hello").perplexity > 1
