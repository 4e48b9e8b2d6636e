"""Text <-> token ids for a loaded model, on the host with SentencePiece.

Built from the keras-hub tokenizer's own proto, so ids are the model's ids; decoding is
incremental so streamed text never shows half of a multi-byte character.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

_SPACE = "\u2581"


class Tokenizer:
    """Encode, decode and name tokens of a Gemma vocabulary.

    Example:
        >>> from gemma_lab.testing import tiny_causal_lm
        >>> tok = Tokenizer.from_keras_hub(tiny_causal_lm("gemma3").preprocessor.tokenizer)
        >>> tok.decode(tok.encode("hello world"))
        'hello world'
    """

    def __init__(self, proto: bytes, bos_id: int | None = None, eos_id: int | None = None,
                 pad_id: int | None = None):
        import sentencepiece as spm

        spm.set_min_log_level(2)  # silence "precompiled_charsmap is empty" on every load
        self._sp = spm.SentencePieceProcessor(model_proto=proto)
        self.vocabulary_size = self._sp.get_piece_size()
        # A proto keras-hub rebuilt from a tokenizer.json may mark no bos / eos (-1): the
        # keras-hub tokenizer's own special ids (or the pieces' names) say which they are.
        self.bos_id = _first_id(bos_id, self._sp.bos_id(), self._optional_id("<bos>"))
        self.eos_id = _first_id(eos_id, self._sp.eos_id(), self._optional_id("<eos>"))
        self.pad_id = max(_first_id(pad_id, self._sp.pad_id(), self._optional_id("<pad>")), 0)
        self.start_of_turn_id = self._optional_id("<start_of_turn>")
        self.end_of_turn_id = self._optional_id("<end_of_turn>")
        self.gemma4_end_of_turn_id = self._optional_id("<turn|>")  # Gemma 4's turn end

    @classmethod
    def from_keras_hub(cls, tokenizer: Any) -> Tokenizer:
        proto = tokenizer.proto
        if isinstance(proto, str):
            with open(proto, "rb") as handle:
                proto = handle.read()
        return cls(proto, bos_id=getattr(tokenizer, "start_token_id", None),
                   eos_id=getattr(tokenizer, "end_token_id", None),
                   pad_id=getattr(tokenizer, "pad_token_id", None))

    def piece_id(self, piece: str) -> int | None:
        """The id of vocabulary entry `piece` ("▁" for a leading space), None if absent.

        Example:
            >>> from gemma_lab.testing import tiny_tokenizer
            >>> tiny_tokenizer().piece_id("<no such piece>") is None
            True
        """
        return self._optional_id(piece)

    def is_control(self, token_id: int) -> bool:
        """Whether `token_id` is a control token (`<bos>`, turn markers: no text of its own).

        Example:
            >>> from gemma_lab.testing import tiny_tokenizer
            >>> tok = tiny_tokenizer()
            >>> tok.is_control(tok.end_of_turn_id), tok.is_control(tok.encode("a")[0])
            (True, False)
        """
        return bool(self._sp.is_control(int(token_id)))

    @cached_property
    def control_ids(self) -> dict[str, int]:
        """Every control piece of the vocabulary (`<bos>`, turn markers, ...) and its id."""
        return {self._sp.id_to_piece(i): i for i in range(self.vocabulary_size)
                if self._sp.is_control(i)}

    def encode_with_controls(self, text: str) -> list[int]:
        """Ids of `text` in which control pieces written out (`<bos>`, `<start_of_turn>`,
        ...) stand for their own ids, as transformers tokenizes a rendered chat template:
        the text between them is encoded as plain text.

        Example:
            >>> from gemma_lab.testing import tiny_tokenizer
            >>> tok = tiny_tokenizer()
            >>> ids = tok.encode_with_controls("<bos><start_of_turn>user\\nhi")
            >>> ids[:2] == [tok.bos_id, tok.start_of_turn_id], tok.decode(ids[2:])
            (True, 'user\\nhi')
        """
        ids: list[int] = []
        for index, part in enumerate(self._control_pattern.split(text)):
            if index % 2:
                ids.append(self.control_ids[part])
            elif part:
                ids += self.encode(part)
        return ids

    @cached_property
    def _control_pattern(self) -> Any:
        from gemma_lab.chat_template import control_pattern

        return control_pattern(list(self.control_ids))

    def _optional_id(self, piece: str) -> int | None:
        index = self._sp.piece_to_id(piece)
        return None if index == self._sp.unk_id() and piece != "<unk>" else index

    @property
    def stop_ids(self) -> frozenset[int]:
        """Ids that end generation: end of sequence and end of turn (Gemma 1-3's
        `<end_of_turn>`, Gemma 4's `<turn|>`)."""
        ends = (self.eos_id, self.end_of_turn_id, self.gemma4_end_of_turn_id)
        return frozenset(i for i in ends if i is not None and i >= 0)

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids = self._sp.encode(text)
        return [self.bos_id, *ids] if add_bos else list(ids)

    def decode(self, ids: list[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def piece(self, token_id: int) -> str:
        """A token as readable text: "▁" shown as a space, byte tokens as <0xNN>."""
        return self._sp.id_to_piece(int(token_id)).replace(_SPACE, " ")

    def pieces(self, ids: list[int]) -> list[str]:
        return [self.piece(i) for i in ids]


class IncrementalDecoder:
    """Turns a growing list of ids into text increments, holding back incomplete characters.

    Example:
        >>> from gemma_lab.testing import tiny_tokenizer
        >>> tok = tiny_tokenizer()
        >>> decoder = IncrementalDecoder(tok)
        >>> "".join(decoder.push(i) for i in tok.encode("hello world"))
        'hello world'
    """

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._emitted = ""

    def push(self, token_id: int) -> str:
        self._ids.append(int(token_id))
        text = self._tokenizer.decode(self._ids)
        if text.endswith("\ufffd"):
            return ""  # a multi-byte character is still incomplete
        increment = text[len(self._emitted):] if text.startswith(self._emitted) else text
        self._emitted = text
        return increment

    @property
    def text(self) -> str:
        return self._tokenizer.decode(self._ids)


def _first_id(*candidates: int | None) -> int:
    """The first candidate that is a real id (not None, not negative), else -1."""
    return next((int(c) for c in candidates if c is not None and int(c) >= 0), -1)
