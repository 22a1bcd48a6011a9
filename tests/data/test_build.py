"""Dataset builder: manifest totals equal an independent count; splits, shards, errors, manifest of downloads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sentencepiece as spm

from pgolf.data.build import build_dataset, manifest_from_shards
from pgolf.data.manifest import check_data_dir, read_manifest
from pgolf.data.loader import load_split
from pgolf.data.shards import shard_paths
from pgolf.errors import PgolfError


@pytest.mark.parametrize("name", ["fineweb_1024_bpe.model", "fineweb_8192_bpe_ternary_record.model",
                                  "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"])
def test_manifest_matches_an_independent_count(shared_data, tmp_path, name):
    docs_path = shared_data / "fineweb" / "challenge_docs_200.jsonl"
    tok = shared_data / "tokenizers" / name
    manifest = build_dataset([docs_path], tmp_path / "out", tokenizer=tok, val_docs=100, workers=2,
                             shard_size=100_000, progress=False)
    sp = spm.SentencePieceProcessor(model_file=str(tok))
    texts = [json.loads(line)["text"] for line in docs_path.read_text(encoding="utf-8").splitlines()]
    for split, part in (("val", texts[:100]), ("train", texts[100:])):
        ids = [sp.encode(t) for t in part]
        expected_tokens = sum(len(i) + 1 for i in ids)
        expected_bytes = sum(len(sp.decode(i).encode("utf-8")) for i in ids)
        got = manifest["splits"][split]
        assert (got["docs"], got["tokens"], got["bytes"]) == (len(part), expected_tokens, expected_bytes)
        assert len(load_split(tmp_path / "out", split)) == expected_tokens
    assert manifest["tokenizer"]["file"] == name and manifest["tokenizer"]["vocab_size"] == sp.get_piece_size()
    again = manifest_from_shards(tmp_path / "out", tmp_path / "out" / name, progress=False)
    assert again["splits"] == {k: {**v} for k, v in manifest["splits"].items()}
    check_data_dir(tmp_path / "out", expected_vocab=sp.get_piece_size())


@pytest.fixture
def docs_file(tmp_path):
    path = tmp_path / "docs.jsonl"
    texts = [f"Document {i}: the cat sat on mat number {i}. " * (3 + i % 5) for i in range(80)]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def test_trains_a_tokenizer_and_splits_in_file_order(docs_file, tmp_path):
    out = tmp_path / "d"
    manifest = build_dataset([docs_file], out, vocab_size=320, val_docs=10, shard_size=1000, progress=False)
    assert (out / "tokenizer.model").is_file() and manifest["tokenizer"]["vocab_size"] == 320
    assert manifest["splits"]["val"]["docs"] == 10 and manifest["splits"]["train"]["docs"] == 70
    assert len(shard_paths(out, "train")) == len(manifest["splits"]["train"]["files"]) > 1
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    val = load_split(out, "val")
    assert int(np.count_nonzero(val == sp.bos_id())) == 10
    assert sp.decode(val[1:val.tolist().index(sp.bos_id(), 1)].tolist()).startswith("Document 0:")
    assert read_manifest(out)["source"]["val_docs"] == 10


def test_builder_errors(docs_file, tmp_path):
    with pytest.raises(PgolfError, match="exactly one"):
        build_dataset([docs_file], tmp_path / "x", progress=False)
    with pytest.raises(PgolfError, match="both splits"):
        build_dataset([docs_file], tmp_path / "x", vocab_size=300, val_docs=80, progress=False)
    with pytest.raises(PgolfError, match="80 documents read; the default of 50,000 val documents .* fewer than 80"):
        build_dataset([docs_file], tmp_path / "x", vocab_size=300, progress=False)
    with pytest.raises(PgolfError, match="missing"):
        build_dataset([tmp_path / "none.jsonl"], tmp_path / "x", vocab_size=300, progress=False)
    assert not (tmp_path / "x" / "manifest.json").exists()


def test_data_dir_checks(docs_file, tmp_path):
    out = tmp_path / "d"
    build_dataset([docs_file], out, vocab_size=320, val_docs=10, progress=False)
    with pytest.raises(PgolfError, match="vocabulary mismatch: model has 1024 tokens but tokenizer tokenizer.model has 320"):
        check_data_dir(out, expected_vocab=1024)
    (out / "tokenizer.model").write_bytes(b"x")
    with pytest.raises(PgolfError, match="sha256"):
        check_data_dir(out)
    (out / "manifest.json").write_text("{")
    with pytest.raises(PgolfError, match="not valid JSON"):
        check_data_dir(out)
    (out / "manifest.json").unlink()
    with pytest.raises(PgolfError, match="missing; build it"):
        check_data_dir(out)
    with pytest.raises(PgolfError, match="is a file, not a data directory"):
        check_data_dir(out / "tokenizer.model")
    with pytest.raises(PgolfError, match="does not exist"):
        check_data_dir(tmp_path / "nowhere")
