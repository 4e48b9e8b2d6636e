"""Text <-> token ids for a loaded model, on the host with SentencePiece.

Built from the keras-hub tokenizer's own proto, so ids are the model's ids; decoding is
incremental so streamed text never shows half of a multi-byte character.
"""

from __future__ import annotations

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

    def __init__(self, proto: bytes):
        import sentencepiece as spm

        spm.set_min_log_level(2)  # silence "precompiled_charsmap is empty" on every load
        self._sp = spm.SentencePieceProcessor(model_proto=proto)
        self.vocabulary_size = self._sp.get_piece_size()
        self.bos_id = self._sp.bos_id()
        self.eos_id = self._sp.eos_id()
        self.pad_id = max(self._sp.pad_id(), 0)
        self.start_of_turn_id = self._optional_id("<start_of_turn>")
        self.end_of_turn_id = self._optional_id("<end_of_turn>")

    @classmethod
    def from_keras_hub(cls, tokenizer: Any) -> Tokenizer:
        proto = tokenizer.proto
        if isinstance(proto, str):
            with open(proto, "rb") as handle:
                proto = handle.read()
        return cls(proto)

    def piece_id(self, piece: str) -> int | None:
        """The id of vocabulary entry `piece` ("▁" for a leading space), None if absent.

        Example:
            >>> from gemma_lab.testing import tiny_tokenizer
            >>> tiny_tokenizer().piece_id("<no such piece>") is None
            True
        """
        return self._optional_id(piece)

    def _optional_id(self, piece: str) -> int | None:
        index = self._sp.piece_to_id(piece)
        return None if index == self._sp.unk_id() and piece != "<unk>" else index

    @property
    def stop_ids(self) -> frozenset[int]:
        """Ids that end generation: end of sequence and end of turn."""
        return frozenset(i for i in (self.eos_id, self.end_of_turn_id) if i is not None and i >= 0)

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
