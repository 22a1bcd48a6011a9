"""CaseOps: the transform is an exact inverse, the operators are the official tokenizer's, and the val byte sidecar
charges exactly the original UTF-8 bytes of every document (trained and official tokenizers, CLI build, bad files)."""

from __future__ import annotations

import json
import math
import random
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgolf.cli import main
from pgolf.data.build import build_dataset
from pgolf.data.bytes import byte_tables, token_bytes
from pgolf.data.caseops import (ALLCAPS, CAPNEXT, ESC, OPERATORS, TITLE, decode_caseops, encode_caseops,
                                encode_with_sidecars, operator_ids, original_byte_weights)
from pgolf.data.loader import load_split
from pgolf.data.manifest import check_data_dir, load_val_sidecar, read_manifest, val_target_bytes
from pgolf.data.shards import read_shard, write_shard
from pgolf.data.tokenizer import load_tokenizer, train_tokenizer
from pgolf.errors import PgolfError

OFFICIAL = "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"

# Documents that stress the sidecar: normalizer-dropped whitespace, escaped operators, byte fallback, NFKC changes.
AWKWARD_DOCS = [
    "", " ", "  \n\t ", "A", "I", "NASA", "\ue001", " \ue004\ue001 ", "\ue004\ue004x", "Hello  World  ",
    "   leading and trailing   ", "McDonald's iPhone USAToday aBC", "漢字 Hello 😀 Ünïcode ÉCOLE",
    "ﬁne ㎏ ｆｕｌｌｗｉｄｔｈ Ｈｅｌｌｏ", "\x00NUL\x00 inside", "tabs\tand\nnew\r\nlines", "a" + " " * 70_000 + "B",
    "é" * 50, "Ωmega ΑΒΓ",
]

# Operator-heavy alphabets so that hypothesis finds interactions between runs, operators and ESC.
_CASE_ALPHABET = st.sampled_from(["a", "b", "z", "A", "B", "Z", " ", "1", "é", "É", "ß", "\n", "\x00", *OPERATORS])
_TEXTS = st.one_of(st.text(), st.text(alphabet=_CASE_ALPHABET, max_size=40))


_WORDS = ("the of and to in is was for on that with as by at from his an were are which this be or has had first "
          "new one their after its also two other been who not but all they city court year state time law "
          "government people music school world national team series party river university company war").split()


def _synthetic_docs(n: int, seed: int) -> list[str]:
    """English-like documents with every case pattern (Title, ALL CAPS, mixed), digits, punctuation, non-ASCII."""
    rng = random.Random(seed)
    styles = [str.lower] * 6 + [str.title] * 3 + [str.upper, lambda w: w[:-1] + w[-1].upper(),
                                                  lambda w: "Mc" + w.title()]
    extras = ["1999", "3.14", "café", "naïve", "Ünïcode", "漢字", "—", "(", ")", "NASA's", "e.g.", "iPhone"]
    docs = []
    for _ in range(n):
        words = []
        for _ in range(rng.randint(20, 300)):
            words.append(rng.choice(extras) if rng.random() < 0.05 else rng.choice(styles)(rng.choice(_WORDS)))
            if rng.random() < 0.08:
                words[-1] += rng.choice([".", ",", ";", "!\n", ".\n\n"])
        docs.append(" ".join(words))
    return docs


def _jsonl(path: Path, docs: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return path


# ----- the transform ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("hello world", "hello world"),
    ("Hello", TITLE + "hello"),
    ("A I", f"{TITLE}a {TITLE}i"),
    ("NASA rocks", f"{ALLCAPS}nasa rocks"),
    ("McDonald", f"{TITLE}mc{CAPNEXT}donald"),
    ("iPhone", f"i{CAPNEXT}phone"),
    ("USAToday", f"{TITLE}u{CAPNEXT}s{CAPNEXT}a{CAPNEXT}today"),
    ("x1Y2", f"x1{TITLE}y2"),
    ("ÉCOLE", f"É{ALLCAPS}cole"),
    ("Ünïcode", "Ünïcode"),
    (f"{TITLE}x", f"{ESC}{TITLE}x"),
    (ESC, ESC + ESC),
    ("", ""),
])
def test_encode_examples(text, expected):
    assert encode_caseops(text) == expected
    assert decode_caseops(expected) == text


def test_operators_are_the_official_tokenizers_user_defined_pieces(shared_data):
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    proto.ParseFromString((shared_data / "tokenizers" / OFFICIAL).read_bytes())
    user_defined = [(i, p.piece) for i, p in enumerate(proto.pieces)
                    if p.type == model_pb2.ModelProto.SentencePiece.USER_DEFINED]
    assert user_defined == [(4 + k, op) for k, op in enumerate(OPERATORS)]
    assert operator_ids(load_tokenizer(shared_data / "tokenizers" / OFFICIAL)).tolist() == [4, 5, 6, 7]


@settings(max_examples=600, deadline=None)
@given(st.one_of(_TEXTS, st.text(alphabet=st.characters(blacklist_categories=()))))  # lone surrogates too
def test_round_trip_random_text(text):
    encoded = encode_caseops(text)
    assert decode_caseops(encoded) == text
    assert not any("A" <= ch <= "Z" for ch in encoded)


@settings(max_examples=300, deadline=None)
@given(_TEXTS)
def test_byte_weights_sum_to_the_original_bytes(text):
    weights = original_byte_weights(encode_caseops(text))
    assert int(weights.sum()) == len(text.encode("utf-8"))
    assert set(np.unique(weights).tolist()) <= {0, 1}


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Lu", "Lt", "Cs"),
                                      blacklist_characters="".join(OPERATORS))))
def test_text_without_capitals_or_operators_is_unchanged(text):
    assert encode_caseops(text) == text


def test_round_trip_every_shared_document(shared_data):
    files = sorted(shared_data.rglob("*.jsonl"))
    assert files
    count = 0
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                text = json.loads(line)["text"]
                assert decode_caseops(encode_caseops(text)) == text, f"{path.name}: document {count}"
                count += 1
    assert count > 0


# ----- the sidecar --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_caseops_sp(caseops_data):
    """The vocab-400 CaseOps tokenizer that `pgolf data build --caseops` trained for the `caseops_data` fixture."""
    return load_tokenizer(caseops_data / read_manifest(caseops_data)["tokenizer"]["file"])


def _check_sidecars(sp, docs: list[str]) -> None:
    """Per document: tokens equal plain encoding, totals equal original bytes, BOS/inserted operators charge 0."""
    transformed = [encode_caseops(d) for d in docs]
    results = encode_with_sidecars(sp, transformed, workers=2)
    ops = set(operator_ids(sp).tolist())
    for doc, text, (tokens, counts) in zip(docs, transformed, results):
        assert tokens.dtype == np.uint16 and counts.dtype == np.uint16 and len(tokens) == len(counts)
        assert tokens[0] == sp.bos_id() and tokens[1:].tolist() == sp.encode(text)
        assert int(counts.sum(dtype=np.int64)) == len(doc.encode("utf-8")), repr(doc[:60])
        if len(tokens) > 1:
            assert counts[0] == 0, repr(doc[:60])
        inserted_ops = sum(text.count(op) for op in OPERATORS) - sum(doc.count(op) for op in OPERATORS)
        op_positions = [i for i, t in enumerate(tokens) if int(t) in ops]
        zero_ops = sum(1 for i in op_positions if counts[i] == 0)
        assert zero_ops >= inserted_ops, repr(doc[:60])


def test_trained_tokenizer_reserves_operators_as_ids_4_to_7(tiny_caseops_sp):
    assert operator_ids(tiny_caseops_sp).tolist() == [4, 5, 6, 7]
    assert all(tiny_caseops_sp.encode(op) == [i] for i, op in zip(range(4, 8), OPERATORS))


def test_sidecar_totals_trained_tokenizer(tiny_caseops_sp):
    docs = _synthetic_docs(60, seed=1) + AWKWARD_DOCS
    _check_sidecars(tiny_caseops_sp, docs)


def test_sidecar_totals_official_tokenizer(shared_data):
    sp = load_tokenizer(shared_data / "tokenizers" / OFFICIAL)
    lines = (shared_data / "fineweb" / "challenge_docs_200.jsonl").read_text(encoding="utf-8").splitlines()
    docs = [json.loads(line)["text"] for line in lines[::4]]
    _check_sidecars(sp, docs + AWKWARD_DOCS)


def test_byte_fallback_pieces_share_their_character(tiny_caseops_sp):
    sp = tiny_caseops_sp
    (tokens, counts), = encode_with_sidecars(sp, [encode_caseops("😀Ж")])
    assert all(sp.is_byte(int(t)) for t in tokens[1:]) and len(tokens) == 7
    assert counts.tolist() == [0, 1, 1, 1, 1, 1, 1]


def test_whitespace_only_document_charges_its_bos(tiny_caseops_sp):
    (tokens, counts), = encode_with_sidecars(tiny_caseops_sp, [encode_caseops(" \n ")])
    assert tokens.tolist() == [tiny_caseops_sp.bos_id()] and counts.tolist() == [3]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_TEXTS, min_size=1, max_size=4))
def test_sidecar_totals_random_text(tiny_caseops_sp, docs):
    _check_sidecars(tiny_caseops_sp, docs)


# "Ж" and "😀" are not in the tiny tokenizer's training text: they are spelled with byte-fallback pieces
_PLAIN_WORD = st.text(alphabet=st.sampled_from(list("abcxyzABCXYZ019.,;é漢Ж😀")), min_size=1, max_size=9)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_PLAIN_WORD, min_size=1, max_size=12))
def test_sidecar_equals_piece_rule_on_normalization_free_text(tiny_caseops_sp, words):
    """Where normalization changes nothing (single spaces, NFKC-stable characters), each token's sidecar count must be
    the piece-length rule of `pgolf.data.bytes`, with the inserted operators charged 0 instead of 3."""
    doc = " ".join(words)
    assert unicodedata.normalize("NFKC", doc) == doc
    sp = tiny_caseops_sp
    (tokens, counts), = encode_with_sidecars(sp, [encode_caseops(doc)])
    rule = token_bytes(tokens, byte_tables(sp))
    rule[np.isin(tokens[1:], operator_ids(sp))] = 0
    assert counts[1:].tolist() == rule.tolist()
    assert counts[0] == 0


# ----- build, CLI, loading ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def caseops_corpus(tmp_path_factory) -> tuple[Path, list[str]]:
    docs = [AWKWARD_DOCS[11], *_synthetic_docs(150, seed=0), *AWKWARD_DOCS]  # val starts with capitals
    return _jsonl(tmp_path_factory.mktemp("caseops_docs") / "docs.jsonl", docs), docs


@pytest.fixture(scope="module")
def caseops_data(caseops_corpus, tmp_path_factory) -> Path:
    """`pgolf data build --caseops --vocab-size 400` on the synthetic corpus, val = its first 30 documents."""
    src, _ = caseops_corpus
    out = tmp_path_factory.mktemp("caseops_build") / "data"
    code = main(["data", "build", "--docs", str(src), "--out", str(out), "--vocab-size", "400", "--val-docs", "30",
                 "--shard-size", "2000", "--workers", "1", "--caseops", "--quiet",
                 "--allow-overlap"])  # AWKWARD_DOCS[11] is in both splits on purpose (val starts with capitals)
    assert code == 0
    return out


def test_cli_build_caseops(caseops_data, caseops_corpus):
    _, docs = caseops_corpus
    manifest = read_manifest(caseops_data)
    assert manifest["caseops"] is True
    val, train = manifest["splits"]["val"], manifest["splits"]["train"]
    assert val["bytes"] == sum(len(d.encode("utf-8")) for d in docs[:30])
    assert train["bytes"] == sum(len(d.encode("utf-8")) for d in docs[30:])
    assert len(val["byte_files"]) == len(val["files"]) > 1  # several shards: the sidecar is split alongside
    for shard, side in zip(val["files"], val["byte_files"]):
        assert side.startswith("fineweb_val_bytes_") and len(read_shard(caseops_data / side)) == len(
            read_shard(caseops_data / shard))
    check_data_dir(caseops_data)
    sp = load_tokenizer(caseops_data / manifest["tokenizer"]["file"])
    assert operator_ids(sp).tolist() == [4, 5, 6, 7]
    tokens = load_split(caseops_data, "val")
    assert len(tokens) == val["tokens"]
    expected = [t for d in docs[:30] for t in [sp.bos_id(), *sp.encode(encode_caseops(d))]]
    assert tokens.tolist() == expected
    train_tokens = load_split(caseops_data, "train")
    assert train_tokens.tolist() == [t for d in docs[30:] for t in [sp.bos_id(), *sp.encode(encode_caseops(d))]]
    sidecar = load_val_sidecar(caseops_data)
    bos = np.flatnonzero(tokens == sp.bos_id()).tolist() + [len(tokens)]
    per_doc = [int(sidecar[a:b].sum()) for a, b in zip(bos[:-1], bos[1:])]
    assert per_doc == [len(d.encode("utf-8")) for d in docs[:30]]


def test_val_target_bytes(caseops_data, tmp_path):
    tokens = load_split(caseops_data, "val")
    target = val_target_bytes(caseops_data, tokens)
    sidecar = load_val_sidecar(caseops_data)
    assert target.dtype == np.int64 and len(target) == len(tokens) - 1
    assert int(target.sum()) == read_manifest(caseops_data)["splits"]["val"]["bytes"]
    assert target.tolist() == sidecar[1:].tolist()
    assert val_target_bytes(caseops_data, tokens[:100]).tolist() == sidecar[1:100].tolist()
    plain = _copy_data(caseops_data, tmp_path / "plain")
    manifest = json.loads((plain / "manifest.json").read_text())
    del manifest["caseops"]
    (plain / "manifest.json").write_text(json.dumps(manifest))
    assert val_target_bytes(plain, tokens) is None


def test_caseops_build_refuses_tokenizer_without_operators(caseops_corpus, tmp_path, capsys):
    src, docs = caseops_corpus
    plain = train_tokenizer(docs, 400, tmp_path / "plain.model")
    code = main(["data", "build", "--docs", str(src), "--out", str(tmp_path / "out"), "--tokenizer", str(plain),
                 "--val-docs", "5", "--caseops", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "CaseOps operator U+E001" in err[0]
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_caseops_build_with_official_tokenizer(shared_data, tmp_path):
    lines = (shared_data / "fineweb" / "challenge_docs_200.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    docs = [json.loads(line)["text"] for line in lines]
    src = _jsonl(tmp_path / "docs.jsonl", docs)
    manifest = build_dataset([src], tmp_path / "out", tokenizer=shared_data / "tokenizers" / OFFICIAL, val_docs=20,
                             workers=2, progress=False, caseops=True)
    assert manifest["splits"]["val"]["bytes"] == sum(len(d.encode("utf-8")) for d in docs[:20])
    tokens = load_split(tmp_path / "out", "val")
    assert int(val_target_bytes(tmp_path / "out", tokens).sum()) == manifest["splits"]["val"]["bytes"]


def _copy_data(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _one_line_error(fn, *args) -> str:
    with pytest.raises(PgolfError) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_truncated_sidecar_is_refused(caseops_data, tmp_path):
    data = _copy_data(caseops_data, tmp_path / "data")
    side = data / read_manifest(data)["splits"]["val"]["byte_files"][0]
    raw = side.read_bytes()
    side.write_bytes(raw[:-7])
    for fn in (check_data_dir, load_val_sidecar):
        assert "truncated" in _one_line_error(fn, data)
    assert "truncated" in _one_line_error(val_target_bytes, data, load_split(data, "val"))


def test_sidecar_of_wrong_length_is_refused(caseops_data, tmp_path):
    data = _copy_data(caseops_data, tmp_path / "data")
    side = data / read_manifest(data)["splits"]["val"]["byte_files"][-1]
    write_shard(side, np.asarray(read_shard(side))[:-1])
    assert "entries but the val split has" in _one_line_error(check_data_dir, data)
    assert "entries but the val split has" in _one_line_error(val_target_bytes, data, load_split(data, "val"))


def test_sidecar_with_wrong_total_is_refused(caseops_data, tmp_path):
    data = _copy_data(caseops_data, tmp_path / "data")
    side = data / read_manifest(data)["splits"]["val"]["byte_files"][0]
    counts = np.array(read_shard(side))
    counts[5] += 1
    write_shard(side, counts)
    assert "sums to" in _one_line_error(check_data_dir, data)


def test_missing_sidecar_is_refused(caseops_data, tmp_path):
    data = _copy_data(caseops_data, tmp_path / "data")
    (data / read_manifest(data)["splits"]["val"]["byte_files"][0]).unlink()
    assert "missing" in _one_line_error(check_data_dir, data)
    manifest = json.loads((data / "manifest.json").read_text())
    del manifest["splits"]["val"]["byte_files"]
    (data / "manifest.json").write_text(json.dumps(manifest))
    assert "byte_files" in _one_line_error(val_target_bytes, data, np.zeros(3, dtype=np.uint16))


def test_training_on_caseops_data_charges_original_bytes(caseops_data, caseops_corpus, tmp_path, tiny_config):
    """End to end: the score's byte denominator is the original UTF-8 text, not the transformed text."""
    from pgolf.eval.evaluate import ValidationData
    from pgolf.train.trainer import train

    _, docs = caseops_corpus
    original = sum(len(d.encode("utf-8")) for d in docs[:30])
    val = ValidationData(caseops_data, expected_vocab=400)
    assert int(val.target_bytes.sum()) == original
    result = train(tiny_config("model.vocab_size=400", "train.val_max_tokens=0", "eval.mode=doc"), caseops_data,
                   tmp_path / "run", echo=None)
    assert result["val_bytes"] == original and math.isfinite(result["val_bpb"])
