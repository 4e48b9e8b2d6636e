import numpy as np
import sentencepiece as spm

from gemma_lab.models.gguf_file import GGUFVocabulary
from gemma_lab.models.gguf_tokenizer import sentencepiece_proto
from gemma_lab.testing import tiny_tokenizer
from gemma_lab.tokenizer import IncrementalDecoder


def test_unknown_marked_control_is_retyped_unknown():
    pieces = ["<pad>", "<eos>", "<bos>", "<unk>", "▁a", "a", "  "]
    types = np.array([3, 3, 3, 3, 1, 1, 4])
    vocab = GGUFVocabulary(pieces, np.zeros(7, "float32"), types, bos_id=2, eos_id=1, unk_id=3,
                           pad_id=0, add_space_prefix=False)
    sp = spm.SentencePieceProcessor(model_proto=sentencepiece_proto(vocab))
    assert sp.unk_id() == 3 and sp.is_unknown(3)
    assert sp.id_to_piece(6) == "▁▁"  # user-defined whitespace run, escaped like SentencePiece
    assert sp.encode("a  a") == [5, 6, 5]


def test_incremental_decoding_holds_back_partial_characters():
    tok = tiny_tokenizer()
    text = "hi 😀 ünï"
    ids = tok.encode(text)
    decoder = IncrementalDecoder(tok)
    increments = [decoder.push(i) for i in ids]
    assert "".join(increments) == text
    assert all("\ufffd" not in piece for piece in increments)
    # The emoji is byte-fallback in the tiny vocabulary: several ids, one visible increment.
    assert sum(1 for piece in increments if piece == "") >= 3


def test_stop_ids_include_end_of_turn():
    tok = tiny_tokenizer()
    assert tok.eos_id in tok.stop_ids and tok.end_of_turn_id in tok.stop_ids
