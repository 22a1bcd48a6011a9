"""The byte rule: accounted bytes of every shared document equal the UTF-8 length of its decoded text, for every
shipped tokenizer; byte-fallback, control tokens, and the refusal of tokenizers without a standalone '▁'."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sentencepiece as spm

from pgolf.data.bytes import byte_tables, stream_bytes, token_bytes
from pgolf.data.tokenizer import train_tokenizer
from pgolf.errors import PgolfError

TOKENIZERS = ["fineweb_1024_bpe.model", "fineweb_8192_bpe_ternary_record.model",
              "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"]


@pytest.mark.parametrize("name", TOKENIZERS)
def test_every_shared_document_counts_its_decoded_bytes(shared_data, name):
    sp = spm.SentencePieceProcessor(model_file=str(shared_data / "tokenizers" / name))
    tables = byte_tables(sp)
    texts = []
    for path in sorted((shared_data / "fineweb").glob("*.jsonl")):
        texts += [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(texts) == 3150
    encoded = sp.encode(texts, num_threads=2)
    decoded = sp.decode(encoded)
    stream, expected_total = [], 0
    for ids, text in zip(encoded, decoded):
        doc = np.array([sp.bos_id(), *ids], dtype=np.uint16)
        expected = len(text.encode("utf-8"))
        assert int(token_bytes(doc, tables).sum()) == expected
        stream.append(doc)
        expected_total += expected
    assert stream_bytes(np.concatenate(stream), tables) == expected_total


@pytest.fixture(scope="module")
def tiny_sp(tmp_path_factory):
    text = ["the quick brown fox jumps over the lazy dog " * 3, "hello world, hello there", "numbers 12345 67890"]
    path = train_tokenizer(text * 20, 400, tmp_path_factory.mktemp("tok") / "tiny.model")
    return spm.SentencePieceProcessor(model_file=str(path))


def test_byte_fallback_pieces_count_one_byte_each(tiny_sp):
    tables = byte_tables(tiny_sp)
    for text in ["日本語 and 😀 emoji", "naïve café", "x ☃ y"]:
        ids = tiny_sp.encode(text)
        assert any(tiny_sp.is_byte(i) for i in ids)
        doc = np.array([tiny_sp.bos_id(), *ids])
        assert int(token_bytes(doc, tables).sum()) == len(tiny_sp.decode(ids).encode("utf-8"))


def test_space_after_a_control_token_is_free(tiny_sp):
    tables = byte_tables(tiny_sp)
    word = next(i for i in range(tiny_sp.get_piece_size())
                if tiny_sp.id_to_piece(i).startswith("\u2581") and len(tiny_sp.id_to_piece(i)) >= 3)
    n = len(tiny_sp.id_to_piece(word)[1:].encode("utf-8"))
    bos = tiny_sp.bos_id()
    after_word, after_bos = token_bytes(np.array([word, word, bos, word]), tables)[[0, 2]]
    assert after_word == n + 1 and after_bos == n   # "▁ab" costs " ab" mid-text, "ab" after BOS
    assert tables.is_boundary[bos] and tables.base_bytes[bos] == 0


def test_ids_beyond_the_tokenizer_are_zero_byte_boundaries(tiny_sp):
    tables = byte_tables(tiny_sp, vocab_size=tiny_sp.get_piece_size() + 10)
    assert tables.vocab_size == tiny_sp.get_piece_size() + 10
    assert tables.is_boundary[-1] and tables.base_bytes[-1] == 0
    with pytest.raises(PgolfError, match="outside"):
        token_bytes(np.array([1, tables.vocab_size]), tables)


def test_tokenizer_without_standalone_space_piece_is_refused(tmp_path):
    """Issue #897: with no '▁' piece a lone space becomes byte-fallback tokens and BPB undercounts."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    text = ["the quick brown fox jumps over the lazy dog " * 3, "hello world"] * 20
    path = train_tokenizer(text, 300, tmp_path / "t.model")
    proto = pb.ModelProto()
    proto.ParseFromString(path.read_bytes())
    for piece in proto.pieces:
        if piece.piece == "\u2581":
            piece.piece = "\u2581\u2581zz"  # remove the standalone piece
    broken = tmp_path / "broken.model"
    broken.write_bytes(proto.SerializeToString())
    sp = spm.SentencePieceProcessor(model_file=str(broken))
    with pytest.raises(PgolfError, match="#897"):
        byte_tables(sp)
