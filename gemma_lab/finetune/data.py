"""Fine-tuning data: load and validate examples, then tokenise them into training arrays.

Accepted data: a list of strings, a list of {"prompt", "response"} dicts, a pandas DataFrame
with those columns (or a "text" column), or a path to a .jsonl / .csv file. Every problem is an
`InputError` naming the row and what is wrong with it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gemma_lab import validate
from gemma_lab.errors import InputError

_FORMAT_HINT = ('Each example is a string, or a {"prompt": ..., "response": ...} mapping '
                '(or {"text": ...}).')


@dataclass(frozen=True)
class Example:
    """One training example: `prompt` + `response` (loss on the response only), or plain
    `text` (loss on every token; stored as an empty prompt and the text as the response).

    Example:
        >>> Example("2+2=", " 4").is_plain_text
        False
    """

    prompt: str
    response: str

    @property
    def is_plain_text(self) -> bool:
        return self.prompt == ""

    def to_dict(self) -> dict[str, str]:
        if self.is_plain_text:
            return {"text": self.response}
        return {"prompt": self.prompt, "response": self.response}


@dataclass(frozen=True)
class TokenisedData:
    """Fixed-shape training arrays: position t of `token_ids` predicts `targets[t]`, which
    counts in the loss with `sample_weight[t]` (1 on response tokens and their <eos>).

    Attributes:
        token_ids, padding_mask, targets, sample_weight: [examples, sequence_length] arrays.
    """

    token_ids: np.ndarray
    padding_mask: np.ndarray
    targets: np.ndarray
    sample_weight: np.ndarray

    @property
    def num_examples(self) -> int:
        return int(self.token_ids.shape[0])

    @property
    def sequence_length(self) -> int:
        return int(self.token_ids.shape[1])

    @property
    def real_tokens(self) -> int:
        """Tokens the model reads, padding excluded."""
        return int(self.padding_mask.sum())

    def padded_to_multiple(self, batch_size: int) -> TokenisedData:
        """Rows appended (copies of the first rows, weight 0) so every batch has
        `batch_size` rows: one compiled train step shape, and no padding in the loss."""
        missing = -self.num_examples % batch_size
        if missing == 0:
            return self
        take = np.arange(missing) % self.num_examples
        weight = np.zeros_like(self.sample_weight[take])
        return TokenisedData(
            token_ids=np.concatenate([self.token_ids, self.token_ids[take]]),
            padding_mask=np.concatenate([self.padding_mask, self.padding_mask[take]]),
            targets=np.concatenate([self.targets, self.targets[take]]),
            sample_weight=np.concatenate([self.sample_weight, weight]),
        )

    def inputs(self, positions: bool = False) -> dict[str, np.ndarray]:
        """The model inputs; with `positions`, also `position_ids` 0..n-1 (Gemma 4)."""
        feed = {"token_ids": self.token_ids, "padding_mask": self.padding_mask}
        if positions:
            feed["position_ids"] = np.broadcast_to(
                np.arange(self.token_ids.shape[1], dtype="int32"), self.token_ids.shape).copy()
        return feed


# --- loading ---------------------------------------------------------------------------------
def load_examples(data: Any, *, what: str = "data") -> list[Example]:
    """Examples from any accepted form of `data`, validated row by row.

    Example:
        >>> load_examples([{"prompt": "Q: 1+1?", "response": " 2"}, "plain text"])
        [Example(prompt='Q: 1+1?', response=' 2'), Example(prompt='', response='plain text')]
    """
    if isinstance(data, (str, os.PathLike)):
        return _from_file(Path(validate.text(os.fspath(data), f"The {what} path")), what)
    if _is_dataframe(data):
        records = _dataframe_records(data, what)
        if not records:
            raise InputError(f"The fine-tuning {what} DataFrame is empty.")
        # Rows are named by their index label, as researchers see them in the frame.
        return [_example(record, f"{what} row {label!r}")
                for label, record in zip(data.index, records, strict=True)]
    if isinstance(data, Example):
        return [data]
    if isinstance(data, dict) or not hasattr(data, "__iter__"):
        raise InputError(
            f"Fine-tuning {what} must be a list of strings or of prompt/response dicts, a "
            f"pandas DataFrame, or a path to a .jsonl / .csv file; got {type(data).__name__}."
        )
    return _from_records(list(data), what)


def _is_dataframe(data: Any) -> bool:
    return type(data).__name__ == "DataFrame" and hasattr(data, "to_dict")


def _dataframe_records(frame: Any, what: str) -> list[dict[str, Any]]:
    columns = [str(c) for c in frame.columns]
    if not ({"prompt", "response"} <= set(columns) or "text" in columns):
        raise InputError(
            f"The {what} DataFrame needs 'prompt' and 'response' columns, or a 'text' column; "
            f"it has {columns}."
        )
    return frame.to_dict(orient="records")


def _from_file(path: Path, what: str) -> list[Example]:
    if not path.is_file():
        raise InputError(f"No {what} file at {path}. Check the path (.jsonl or .csv).")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise InputError(f"{path.name}: fine-tuning files must be .jsonl or .csv, not "
                         f"{suffix or 'a file without extension'}.")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise InputError(
            f"{path.name} is not UTF-8 text (undecodable byte 0x{raw[err.start]:02x} on line "
            f"{line}). Re-save it as UTF-8."
        ) from None
    if suffix == ".jsonl":
        return _from_jsonl(text, path.name)
    return _from_csv(text, path.name)


def _from_jsonl(text: str, name: str) -> list[Example]:
    examples = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{name} line {line_number}: not valid JSON ({err.msg}).") from None
        examples.append(_example(record, f"{name} line {line_number}"))
    if not examples:
        raise InputError(f"{name} holds no examples.")
    return examples


def _from_csv(text: str, name: str) -> list[Example]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = reader.fieldnames or []
    if not ({"prompt", "response"} <= set(columns) or "text" in columns):
        raise InputError(f"{name} needs a header with 'prompt' and 'response' columns, or a "
                         f"'text' column; its header is {columns}.")
    examples = []
    for record in reader:
        # reader.line_num counts physical lines, so quoted multi-line cells keep numbers right.
        where = f"{name} line {reader.line_num}"
        if None in record:
            raise InputError(f"{where}: more cells than header columns.")
        examples.append(_example(record, where))
    if not examples:
        raise InputError(f"{name} holds no examples.")
    return examples


def _from_records(records: list[Any], what: str) -> list[Example]:
    if not records:
        raise InputError(f"The fine-tuning {what} is empty; give at least one example.")
    return [_example(record, f"{what} row {index}") for index, record in enumerate(records)]


def _example(record: Any, where: str) -> Example:
    if isinstance(record, Example):
        return record
    if isinstance(record, str):
        if not record.strip():
            raise InputError(f"{where}: empty text.")
        return Example("", validate.text(record, where))
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected a string or a dict, got "
                         f"{type(record).__name__}. {_FORMAT_HINT}")
    keys = set(record)
    if "prompt" in keys or "response" in keys:
        for key in ("prompt", "response"):
            value = record.get(key)
            if not isinstance(value, str) or _is_missing(value):
                problem = "is missing" if _is_missing(value) else (
                    f"must be a string, got {type(value).__name__}")
                raise InputError(f"{where}: '{key}' {problem}. {_FORMAT_HINT}")
        if not record["response"]:
            raise InputError(f"{where}: 'response' is empty; there is nothing to learn.")
        return Example(validate.text(record["prompt"], f"{where}: 'prompt'"),
                       validate.text(record["response"], f"{where}: 'response'"))
    if "text" in keys:
        value = record["text"]
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"{where}: 'text' must be a non-empty string.")
        return Example("", validate.text(value, f"{where}: 'text'"))
    raise InputError(f"{where}: no 'prompt'/'response' or 'text' field (has {sorted(keys)}). "
                     f"{_FORMAT_HINT}")


def _is_missing(value: Any) -> bool:
    # None, or pandas' NaN for an empty cell.
    return value is None or (isinstance(value, float) and value != value)


def data_hash(examples: Sequence[Example]) -> str:
    """sha256 of the examples' canonical JSON: names the data an adapter was trained on.

    Example:
        >>> data_hash([Example("", "a")]) == data_hash(load_examples(["a"]))
        True
    """
    canonical = json.dumps([e.to_dict() for e in examples], ensure_ascii=False,
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --- tokenising --------------------------------------------------------------------------
def example_ids(tokenizer: Any, example: Example) -> tuple[list[int], int]:
    """(<bos> prompt response <eos> ids, index where the response starts)."""
    prompt = [tokenizer.bos_id, *tokenizer.encode(example.prompt)] if example.prompt else [
        tokenizer.bos_id]
    response = [*tokenizer.encode(example.response), tokenizer.eos_id]
    return prompt + response, len(prompt)


def tokenise(examples: Sequence[Example], tokenizer: Any, max_length: int,
             *, what: str = "data") -> TokenisedData:
    """Training arrays padded to the longest example (at most `max_length` positions).

    Longer examples are cut at `max_length`; one whose prompt leaves no response token
    within it is an error naming the row.

    Example:
        >>> from gemma_lab.testing import tiny_tokenizer
        >>> arrays = tokenise([Example("hello", " world")], tiny_tokenizer(), 16)
        >>> int(arrays.sample_weight.sum()) == len(tiny_tokenizer().encode(" world")) + 1
        True
    """
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
        raise InputError(f"max_length must be an integer ≥ 2, got {max_length!r}.")
    rows = []
    for index, example in enumerate(examples):
        ids, response_start = example_ids(tokenizer, example)
        if response_start > max_length:
            raise InputError(
                f"{what} row {index}: the prompt alone has {response_start} tokens, leaving no "
                f"response token within max_length={max_length}. Raise max_length or shorten "
                "the prompt."
            )
        rows.append((ids[: max_length + 1], response_start))
    length = max(len(ids) for ids, _ in rows) - 1
    count = len(rows)
    token_ids = np.full((count, length), tokenizer.pad_id, dtype="int32")
    padding_mask = np.zeros((count, length), dtype="int32")
    targets = np.full((count, length), tokenizer.pad_id, dtype="int32")
    sample_weight = np.zeros((count, length), dtype="float32")
    for row, (ids, response_start) in enumerate(rows):
        n = len(ids) - 1
        token_ids[row, :n] = ids[:-1]
        padding_mask[row, :n] = 1
        targets[row, :n] = ids[1:]
        # Target t is token t + 1: response tokens are targets response_start - 1 onwards.
        sample_weight[row, response_start - 1: n] = 1.0
    return TokenisedData(token_ids, padding_mask, targets, sample_weight)


__all__ = ["Example", "TokenisedData", "data_hash", "example_ids", "load_examples", "tokenise"]
