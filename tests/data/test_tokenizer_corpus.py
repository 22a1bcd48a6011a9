"""Tokenizer training/loading/encoding and document readers."""

from __future__ import annotations

import gzip
import json
import lzma

import pytest

from pgolf.data.corpus import demo_documents, iter_documents
from pgolf.data.tokenizer import (OFFICIAL_TRAINER_SETTINGS, encode_documents, load_tokenizer, train_tokenizer)
from pgolf.errors import PgolfError


def test_official_settings_are_used(tmp_path):
    from sentencepiece import sentencepiece_model_pb2 as pb

    path = train_tokenizer(["Some text 12345 with digits."] * 50 + ["  ", "\x00more\x00 text"], 280, tmp_path / "t.model")
    proto = pb.ModelProto()
    proto.ParseFromString(path.read_bytes())
    t, n = proto.trainer_spec, proto.normalizer_spec
    assert t.model_type == pb.TrainerSpec.BPE and t.byte_fallback and t.split_digits
    assert abs(t.character_coverage - 0.999) < 1e-6 and not n.add_dummy_prefix and n.name == "nmt_nfkc"
    assert (t.pad_id, t.bos_id, t.eos_id, t.unk_id) == (0, 1, 2, 3)
    assert OFFICIAL_TRAINER_SETTINGS["hard_vocab_limit"] is False


def test_training_the_same_texts_twice_gives_identical_bytes(tmp_path):
    """No temporary path (or anything else of the moment) ends up in the model, so rebuilt data keeps its sha256."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    texts = [f"Sentence {i} about tokenizers, built twice." for i in range(40)]
    first = train_tokenizer(texts, 320, tmp_path / "a" / "t.model").read_bytes()
    second = train_tokenizer(iter(texts), 320, tmp_path / "b" / "other.model").read_bytes()
    assert first == second
    proto = pb.ModelProto()
    proto.ParseFromString(first)
    assert list(proto.trainer_spec.input) == []


def test_errors_while_reading_training_texts_keep_their_message(tmp_path):
    def texts():
        yield "fine text"
        raise PgolfError("docs.jsonl:2: invalid JSON")

    with pytest.raises(PgolfError, match="docs.jsonl:2: invalid JSON"):
        train_tokenizer(texts(), 200, tmp_path / "t.model")
    with pytest.raises(PgolfError, match="no non-empty documents"):
        train_tokenizer(["", "  \x00 "], 200, tmp_path / "t.model")
    assert not (tmp_path / "t.model").exists()


def test_encode_prepends_bos_and_parallel_equals_serial(tmp_path):
    docs = demo_documents()[:60]
    sp = load_tokenizer(train_tokenizer(docs, 400, tmp_path / "t.model"))
    serial = encode_documents(sp, docs, workers=1)
    parallel = encode_documents(sp, docs, workers=2)
    assert all((a == b).all() for a, b in zip(serial, parallel)) and len(serial) == 60
    assert all(d[0] == sp.bos_id() and d.dtype.name == "uint16" for d in serial)


def test_bad_tokenizer_files(tmp_path):
    with pytest.raises(PgolfError, match="missing"):
        load_tokenizer(tmp_path / "none.model")
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(PgolfError, match="not a valid SentencePiece model"):
        load_tokenizer(tmp_path / "junk.model")


def test_readers_for_every_format(tmp_path):
    docs = ["first document", "second\nwith a newline", "ünïcödé"]
    lines = "".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs))
    (tmp_path / "a.jsonl").write_text(lines + "\n", encoding="utf-8")
    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(lines)
    with lzma.open(tmp_path / "a.jsonl.xz", "wt", encoding="utf-8") as f:
        f.write(lines)
    (tmp_path / "a.txt").write_text("one whole document\n\nstill the same one", encoding="utf-8")
    for name in ("a.jsonl", "a.jsonl.gz", "a.jsonl.xz"):
        assert list(iter_documents(tmp_path / name)) == docs
    assert list(iter_documents(tmp_path / "a.txt")) == ["one whole document\n\nstill the same one"]
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"text": docs}), tmp_path / "a.parquet")
    assert list(iter_documents(tmp_path / "a.parquet")) == docs


@pytest.mark.parametrize("content, words", [
    (b'{"text": "ok"}\n{"text": "bad \xff"}\n', ":2: invalid UTF-8"),
    (b'{"text": "ok"}\n{not json}\n', ":2: invalid JSON"),
    (b'{"body": "no text"}\n', ":1: expected an object with a string field 'text'"),
    (b'{"text": 5}\n', ":1: expected"),
])
def test_bad_documents_name_file_and_line(tmp_path, content, words):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(PgolfError, match=words) as info:
        list(iter_documents(path))
    assert "bad.jsonl" in str(info.value)


def test_bad_txt_and_unknown_format(tmp_path):
    (tmp_path / "b.txt").write_bytes(b"line one\nline \xc3 two")
    with pytest.raises(PgolfError, match="b.txt:2: invalid UTF-8"):
        list(iter_documents(tmp_path / "b.txt"))
    (tmp_path / "c.csv").write_text("x")
    with pytest.raises(PgolfError, match="unknown document format"):
        list(iter_documents(tmp_path / "c.csv"))


def test_demo_corpus_is_deterministic_english_prose():
    a, b = demo_documents(), demo_documents()
    assert a == b
    assert len(a) >= 300 and 1_000_000 < sum(map(len, a)) < 5_000_000
    assert sum(" the " in d for d in a) > 0.9 * len(a)
