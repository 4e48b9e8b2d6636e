"""Rebuilding a SentencePiece model proto from a GGUF vocabulary.

GGUF keeps SentencePiece's pieces, scores and piece types (same numbering as
sentencepiece_model.proto), but llama.cpp marks `<unk>` as a control token; SentencePiece
requires exactly one UNKNOWN piece, so the unknown id is retyped here. GGUF also stores
user-defined pieces (Gemma's whitespace runs) with literal spaces, while SentencePiece matches
them after whitespace escaping, so their spaces become "▁" again.
"""

from __future__ import annotations

from typing import Any

from gemma_lab.errors import GGUFError
from gemma_lab.models.gguf_file import GGUFVocabulary

_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
_SPACE = "\u2581"  # SentencePiece's escaped space, "▁"


def sentencepiece_proto(vocabulary: GGUFVocabulary) -> bytes:
    """Serialise a SentencePiece BPE model equivalent to the GGUF tokenizer.

    Example:
        >>> import numpy as np
        >>> from gemma_lab.models.gguf_file import GGUFVocabulary
        >>> pieces = ["<pad>", "<eos>", "<bos>", "<unk>", "▁a", "a"]
        >>> vocab = GGUFVocabulary(pieces, np.zeros(6, "float32"), np.array([3, 3, 3, 3, 1, 1]),
        ...                        bos_id=2, eos_id=1, unk_id=3, pad_id=0, add_space_prefix=False)
        >>> import sentencepiece as spm
        >>> sp = spm.SentencePieceProcessor(model_proto=sentencepiece_proto(vocab))
        >>> sp.unk_id(), sp.bos_id()
        (3, 2)
    """
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    proto = sp_pb2.ModelProto()
    trainer = proto.trainer_spec
    trainer.model_type = sp_pb2.TrainerSpec.BPE
    trainer.vocab_size = len(vocabulary.tokens)
    trainer.byte_fallback = bool((vocabulary.token_types == _BYTE).any())
    trainer.unk_id = vocabulary.unk_id
    trainer.bos_id = vocabulary.bos_id
    trainer.eos_id = vocabulary.eos_id
    trainer.pad_id = vocabulary.pad_id
    trainer.unk_piece = vocabulary.tokens[vocabulary.unk_id]
    trainer.bos_piece = vocabulary.tokens[vocabulary.bos_id]
    trainer.eos_piece = vocabulary.tokens[vocabulary.eos_id]
    trainer.pad_piece = vocabulary.tokens[vocabulary.pad_id]

    for spec in (proto.normalizer_spec, proto.denormalizer_spec):
        spec.name = "identity"
        spec.add_dummy_prefix = vocabulary.add_space_prefix
        spec.remove_extra_whitespaces = False
        spec.escape_whitespaces = True
    proto.denormalizer_spec.add_dummy_prefix = False

    special_ids = {vocabulary.bos_id, vocabulary.eos_id, vocabulary.pad_id}
    for index, (piece_text, score, piece_type) in enumerate(
        zip(vocabulary.tokens, vocabulary.scores.tolist(), vocabulary.token_types.tolist(),
            strict=True)
    ):
        piece = proto.pieces.add()
        piece.piece = piece_text.replace(" ", _SPACE) if piece_type == _USER_DEFINED else piece_text
        piece.score = float(score)
        if index == vocabulary.unk_id:
            piece.type = _UNKNOWN
        elif index in special_ids:
            piece.type = _CONTROL
        elif piece_type == _UNKNOWN:
            # A second "unknown" would make SentencePiece refuse the model.
            piece.type = _CONTROL
        elif piece_type in (_NORMAL, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE):
            piece.type = piece_type
        else:
            raise GGUFError(f"Token {index} ({piece_text!r}) has unknown type {piece_type}.")
    serialized = proto.SerializeToString()
    _check_loads(serialized)
    return serialized


def _check_loads(serialized: bytes) -> None:
    # SentencePiece has rules of its own (e.g. all 256 byte pieces when any is present);
    # break them here, as a GGUFError, rather than later inside keras-hub.
    import sentencepiece as spm

    try:
        spm.SentencePieceProcessor(model_proto=serialized)
    except RuntimeError as err:
        raise GGUFError(
            f"The GGUF vocabulary does not form a valid SentencePiece model ({err}); "
            "the file is corrupt or not a Gemma tokenizer."
        ) from err


# --- writing: a SentencePiece proto as llama.cpp's tokenizer keys ---------------------------
def _proto_vocabulary(proto: bytes) -> tuple[list[str], list[float], list[int], dict[str, int]]:
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    model = sp_pb2.ModelProto()
    model.ParseFromString(proto)
    tokens, scores, types = [], [], []
    for piece in model.pieces:
        text = piece.piece
        piece_type = piece.type
        if piece_type == 4:  # llama.cpp writes user-defined pieces with literal spaces
            text = text.replace("\u2581", " ")
        if piece_type == 2:  # ... and types <unk> as a control token
            piece_type = 3
        tokens.append(text)
        scores.append(piece.score)
        types.append(piece_type)
    spec = model.trainer_spec
    ids = {"bos": spec.bos_id, "eos": spec.eos_id, "unk": spec.unk_id, "pad": max(spec.pad_id, 0)}
    return tokens, scores, types, ids


def write_vocabulary(writer: Any, proto: bytes, model: str = "llama",
                     specials: dict[str, int] | None = None,
                     chat_template: str | None = None) -> None:
    """Write a SentencePiece `proto` as llama.cpp's tokenizer keys (`tokenizer.ggml.*`);
    `model` is the tokenizer type: "llama" (Gemma 1-3) or "gemma4". `specials` ("bos",
    "eos", "pad") override the proto's own ids, which a proto keras-hub rebuilt from a
    tokenizer.json leaves at SentencePiece's defaults (0 / 1 / 2: pad, eos, bos swapped).
    `chat_template`: Jinja source written as `tokenizer.chat_template`."""
    tokens, scores, types, ids = _proto_vocabulary(proto)
    ids.update({k: int(v) for k, v in (specials or {}).items() if v is not None and v >= 0})
    writer.add_tokenizer_model(model)
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(ids["bos"])
    writer.add_eos_token_id(ids["eos"])
    writer.add_unk_token_id(ids["unk"])
    writer.add_pad_token_id(ids["pad"])
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(False)
    if chat_template:
        writer.add_chat_template(chat_template)


def special_ids(keras_hub_tokenizer: Any) -> dict[str, int]:
    """bos / eos / pad ids of a keras-hub tokenizer as the model uses them (its own special
    token ids, or the pieces' names), for `write_vocabulary`."""
    from gemma_lab.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_keras_hub(keras_hub_tokenizer)
    return {"bos": tokenizer.bos_id, "eos": tokenizer.eos_id, "pad": tokenizer.pad_id}
