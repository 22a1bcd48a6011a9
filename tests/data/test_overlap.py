"""Train/val leak detection (docs/data.md#trainval-overlap): exact counts on crafted shards, collisions that can
never report a false overlap, `data build` refusing a leak and leaving nothing, `data import` reporting one, `data
verify` failing on one, and the official issue #2127 reproduced with pgolf's own builder: a val split of 10
documents built from the same document list as the official-style split of 50 puts 40 official val documents into
train, which only `data verify LEAKY --against OFFICIAL` (or the fingerprint) can see."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from test_import import official_folder, tiny_tokenizer

from pgolf.cli import main
from pgolf.data import manifest as manifest_mod
from pgolf.data import overlap as ov
from pgolf.data.importer import import_data_dir
from pgolf.data.manifest import MANIFEST, OVERLAP, check_data_dir, read_manifest
from pgolf.data.overlap import check_overlap, compare_splits, leak_fingerprint, recorded_overlap
from pgolf.data.shards import read_shard, write_shard
from pgolf.errors import PgolfError

BOS = 1


def _shards(folder: Path, split: str, *streams: list[int]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"fineweb_{split}_{i:06d}.bin" for i in range(len(streams))]
    for path, stream in zip(paths, streams):
        write_shard(path, np.array(stream, dtype=np.uint16))
    return paths


def _compare(tmp_path: Path, train: list[list[int]], val: list[list[int]]) -> ov.Overlap:
    return compare_splits(_shards(tmp_path, "train", *train), [_shards(tmp_path, "val", *val)], BOS)[0]


def _counts(r: ov.Overlap) -> tuple:
    return (r.val_docs, r.train_docs, r.overlapping_docs, r.overlapping_tokens, r.val_docs_in_train,
            r.val_duplicates, r.empty_docs)


# ----------------------------------------------------------------------------------------------- crafted shards
VAL = [[1, 5, 6, 7, 1, 8, 9, 1, 5, 6, 7, 1, 1, 10, 11]]  # docs [5 6 7] [8 9] [5 6 7] (a repeat) [] [10 11]


def test_overlap_inside_one_shard(tmp_path):
    r = _compare(tmp_path, [[1, 2, 3, 1, 8, 9, 1, 4]], VAL)
    assert _counts(r) == (5, 3, 1, 3, 1, 1, 1)
    assert r.examples == [{"train_doc": 1, "val_doc": 1, "tokens": 3}]


def test_overlap_across_shard_boundaries(tmp_path):
    # [5 6 7] is cut after 5 and again after 6; [10 11] ends with the stream; BOS is the last token of shard 2
    r = _compare(tmp_path, [[1, 2, 3, 1, 5], [6], [7, 1, 8, 9, 1], [10, 11]], VAL)
    assert _counts(r) == (5, 4, 3, 10, 4, 1, 1)  # [5 6 7] is two val documents
    assert [(e["train_doc"], e["val_doc"]) for e in r.examples] == [(1, 0), (2, 1), (3, 4)]
    assert r.train_tokens == 13


def test_a_prefix_or_extension_is_not_the_document(tmp_path):
    r = _compare(tmp_path, [[1, 5, 6, 1, 5, 6, 7, 7, 1, 6, 7, 1, 8, 9, 10, 11]], VAL)
    assert r.overlapping_docs == 0 and r.train_docs == 4


def test_duplicates_inside_val_are_reported_apart(tmp_path):
    r = _compare(tmp_path, [[1, 2]], [[1, 4, 1, 4, 1, 4, 1, 3], [1, 4]])  # the last repeat is in the next val shard
    assert (r.val_docs, r.val_duplicates, r.overlapping_docs) == (5, 3, 0)
    assert r.problem("d") is None and "3 val document(s) repeat an earlier val document" in r.summary("d")


def test_streams_that_do_not_start_with_bos(tmp_path):
    # val's first document has no BOS; train's first (headless) fragment has the same tokens: the same document
    r = _compare(tmp_path, [[4, 4], [5, 1, 8, 9]], [[4, 4, 5, 1, 8, 9, 1, 2]])
    assert _counts(r) == (3, 2, 2, 3 + 3, 2, 0, 0)
    assert r.examples[0] == {"train_doc": 0, "val_doc": 0, "tokens": 3}  # no BOS to count
    only = _compare(tmp_path / "b", [[3, 3, 3]], VAL)  # no BOS at all: one document
    assert (only.train_docs, only.overlapping_docs) == (1, 0)


def test_empty_documents_never_overlap(tmp_path):
    r = _compare(tmp_path, [[1, 1, 1, 3], [1]], [[1, 1, 2, 1]])
    assert (r.val_docs, r.train_docs, r.empty_docs, r.overlapping_docs, r.val_duplicates) == (3, 4, 5, 0, 0)


def test_no_train_shards_and_several_val_sets(tmp_path):
    assert compare_splits([], [_shards(tmp_path, "val", *VAL)], BOS)[0].train_docs == 0
    train = _shards(tmp_path, "train", [1, 8, 9, 1, 10, 11])
    own, other = compare_splits(train, [_shards(tmp_path, "val", *VAL), _shards(tmp_path / "o", "val", [1, 8, 9])],
                                BOS, against=[None, "OTHER"])
    assert (own.overlapping_docs, other.overlapping_docs, other.against) == (2, 1, "OTHER")


def test_random_streams_match_a_brute_force_count(tmp_path):
    rng = np.random.default_rng(3)
    pool = [list(rng.integers(2, 6, size=rng.integers(0, 4))) for _ in range(12)]  # short docs: many repeats
    val_docs = [pool[i] for i in rng.integers(0, 12, size=30)]
    train_docs = [pool[i] for i in rng.integers(0, 12, size=200)]
    stream = [t for d in train_docs for t in [BOS, *d]]
    cuts = sorted(rng.choice(np.arange(1, len(stream)), size=6, replace=False).tolist())
    train = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    r = _compare(tmp_path, train, [[t for d in val_docs for t in [BOS, *d]]])
    val_set = {tuple(d) for d in val_docs if d}
    hits = [d for d in train_docs if d and tuple(d) in val_set]
    assert r.overlapping_docs == len(hits) and r.overlapping_tokens == sum(len(d) + 1 for d in hits)
    assert r.val_docs_in_train == sum(1 for d in val_docs if d and any(d == h for h in hits))
    assert r.val_duplicates == sum(1 for d in val_docs if d) - len(val_set)


def test_collisions_never_report_a_false_overlap(tmp_path, monkeypatch):
    """Every document gets the same key and the same digest: only the exact comparison decides, and the counts are
    those without the collisions."""
    train = [[1, 2, 3, 1, 5], [6], [7, 1, 8, 9, 1], [10, 11]]
    honest = _counts(_compare(tmp_path / "a", train, VAL))
    monkeypatch.setattr(ov, "_keys", lambda tokens, starts, ends: np.zeros(len(starts), dtype=np.uint64))
    monkeypatch.setattr(ov, "_digest", lambda doc: b"same")
    assert _counts(_compare(tmp_path / "b", train, VAL)) == honest
    assert _compare(tmp_path / "c", [[1, 2, 3, 1, 4]], VAL).overlapping_docs == 0


# ------------------------------------------------------------------------------------------------ the commands
WORDS = "the cat sat on a mat while NASA and McDonald wrote letters to Paris in April".split()


def _docs(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(8, 30)))) + f" {i}" for i in range(n)]


def _jsonl(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tiny.model"
    path.write_bytes(tiny_tokenizer(False))
    return path


def _build(docs: Path, out: Path, tok: Path, val_docs: int, *extra: str) -> int:
    return main(["data", "build", "--docs", str(docs), "--out", str(out), "--tokenizer", str(tok), "--val-docs",
                 str(val_docs), "--shard-size", "300", "--workers", "1", "--quiet", *extra])


def _one_error(capsys, *words: str) -> str:
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("pgolf: error: ") and "Traceback" not in captured.err, err
    for word in words:
        assert word in err[0], err[0]
    return err[0]


def test_build_refuses_repeated_documents_and_writes_nothing(tmp_path, tok, capsys):
    texts = _docs(40)
    src = _jsonl(tmp_path / "docs.jsonl", [*texts, texts[3], texts[7]])  # two val documents again, in train
    out = tmp_path / "new" / "data"
    assert _build(src, out, tok, 10) == 2
    _one_error(capsys, "2 train document(s)", "input document 40 repeats val document 3", "--allow-overlap", "#2127")
    assert not (tmp_path / "new").exists()
    assert _build(src, out, tok, 10, "--allow-overlap") == 0
    captured = capsys.readouterr()
    assert "2 of 10 val documents (20.0%) are in the train split: 2 train documents" in captured.out
    assert captured.err.count("pgolf: warning: ") == 1 and "2 train document(s) equal val documents" in captured.err
    entry = recorded_overlap(read_manifest(out))
    assert (entry["overlapping_docs"], entry["val_docs"], entry["train_docs"]) == (2, 10, 32)
    assert entry["examples"][0]["train_doc"] == 30 and entry["checked_with"].endswith(ov.METHOD)
    assert main(["data", "verify", str(out), "--quiet"]) == 2  # verify fails on what --allow-overlap let through
    _one_error(capsys, "2 train document(s) equal val documents", "rebuild")


def test_build_refuses_texts_that_tokenize_alike_and_removes_its_output(tmp_path, tok, capsys):
    """Unequal texts, equal tokens (the normalizer collapses the double space): found only after writing, and then
    everything the build wrote goes, the folder it made included."""
    texts = _docs(40)
    src = _jsonl(tmp_path / "docs.jsonl", [*texts, texts[5].replace(" ", "  ", 1)])
    out = tmp_path / "new" / "data"
    assert _build(src, out, tok, 10) == 2
    _one_error(capsys, "1 train document(s) tokenize exactly like val documents", "input document 40",
               "val document 5", "nothing was kept")
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    (existing / "notes.txt").write_text("kept")
    assert _build(src, existing, tok, 10) == 2
    capsys.readouterr()
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]  # its own files stay, the build's do not


def test_a_clean_build_records_no_overlap(tmp_path, tok, capsys):
    out = tmp_path / "d"
    assert _build(_jsonl(tmp_path / "docs.jsonl", _docs(60)), out, tok, 20) == 0
    captured = capsys.readouterr()
    assert "overlap: " in captured.out and "none of 20 val documents is among 40 train documents" in captured.out
    assert captured.err == ""
    assert read_manifest(out)[OVERLAP]["overlapping_docs"] == 0


def test_the_cheap_startup_check_never_scans(tmp_path, tok, monkeypatch):
    out = tmp_path / "d"
    assert _build(_jsonl(tmp_path / "docs.jsonl", _docs(30)), out, tok, 10) == 0
    monkeypatch.setattr(ov, "compare_splits", lambda *a, **k: pytest.fail("check_data_dir scanned the splits"))
    check_data_dir(out)


def test_import_reports_an_overlap_as_a_warning(tmp_path, capsys):
    ds = tmp_path / "official"
    official_folder(ds, n_train=2, n_val=1)
    (ds / "t.model").write_bytes(tiny_tokenizer(False))
    val = read_shard(ds / "fineweb_val_000000.bin")
    second = int(np.flatnonzero(val == BOS)[1])
    train = np.array(read_shard(ds / "fineweb_train_000001.bin"))
    write_shard(ds / "fineweb_train_000001.bin", np.concatenate([train, val[:second]]))  # val doc 0 at the end
    assert main(["data", "import", str(ds), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "1 of 8 val documents (12.5%) are in the train split: 1 train documents" in captured.out
    assert "pgolf: warning: " in captured.err and "error" not in captured.err
    entry = read_manifest(ds)[OVERLAP]
    assert (entry["overlapping_docs"], entry["train_docs"], entry["examples"][0]["train_doc"]) == (1, 17, 16)
    assert import_data_dir(ds, progress=False, reuse=True) == read_manifest(ds)  # kept: it has the entry


def test_manifests_without_the_entry_and_damaged_entries(tmp_path, tok):
    out = tmp_path / "d"
    assert _build(_jsonl(tmp_path / "docs.jsonl", _docs(30)), out, tok, 10) == 0
    m = json.loads((out / MANIFEST).read_text())
    del m[OVERLAP]
    (out / MANIFEST).write_text(json.dumps(m))
    assert recorded_overlap(read_manifest(out)) is None and check_overlap(out).overlapping_docs == 0
    m[OVERLAP] = {"val_docs": -1}
    (out / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(PgolfError, match="damaged manifest: overlap must hold"):
        read_manifest(out)
    assert manifest_mod.OVERLAP == OVERLAP


# ------------------------------------------------------------------------------------------ #2127, reproduced
@pytest.fixture(scope="module")
def issue_2127(tmp_path_factory, tok) -> tuple[Path, Path]:
    """One document list built twice by `pgolf data build`: "the official split" (val = the first 50 documents,
    the official 50,000 scaled down) and "the #2127 split" (val = the first 10, as the CaseOps script's default
    --val-docs 10000 made it), both with the same tokenizer."""
    root = tmp_path_factory.mktemp("issue_2127")
    src = _jsonl(root / "docs.jsonl", _docs(150, seed=1))
    official, leaky = root / "official", root / "leaky"
    assert _build(src, official, tok, 50) == 0
    assert _build(src, leaky, tok, 10) == 0
    return official, leaky


def test_issue_2127_the_leaky_split_passes_on_its_own(issue_2127, capsys):
    _, leaky = issue_2127
    capsys.readouterr()
    assert main(["data", "verify", str(leaky), "--quiet"]) == 0  # its own val documents are not in its train
    captured = capsys.readouterr()
    assert captured.err == "" and "none of 10 val documents is among 140 train documents" in captured.out


def test_issue_2127_verify_against_the_official_split_finds_the_40_documents(issue_2127, capsys):
    official, leaky = issue_2127
    capsys.readouterr()
    assert main(["data", "verify", str(leaky), "--against", str(official), "--quiet"]) == 2
    line = _one_error(capsys, "40 train document(s) equal val documents of", str(official), "40 of 50",
                      "#2127")
    assert "train document 0 = val document 10" in line
    r = check_overlap(leaky, official)
    assert (r.overlapping_docs, r.val_docs_in_train, r.val_docs, r.train_docs) == (40, 40, 50, 140)
    assert [(e["train_doc"], e["val_doc"]) for e in r.examples] == [(i, 10 + i) for i in range(ov.EXAMPLES)]
    assert check_overlap(official, leaky).overlapping_docs == 0  # the official train split holds none of the 10


def test_issue_2127_fingerprint_without_a_reference(issue_2127, monkeypatch, capsys):
    official, leaky = issue_2127
    monkeypatch.setattr(ov, "OFFICIAL_VAL_DOCS", 50)  # the scaled-down official split
    assert leak_fingerprint(read_manifest(leaky), leaky) is None  # a small test build: not of official size
    monkeypatch.setattr(ov, "FULL_TRAIN_TOKENS", 100)
    warning = leak_fingerprint(read_manifest(leaky), leaky)
    assert "10 val documents" in warning and "#2127" in warning and "--against" in warning
    assert leak_fingerprint(read_manifest(official), official) is None
    capsys.readouterr()
    assert main(["data", "verify", str(leaky), "--quiet"]) == 0  # a warning, not an error
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pgolf: warning: ") and "#2127" in err[0]


def test_against_needs_the_same_tokenizer(issue_2127, tmp_path, capsys):
    official, leaky = issue_2127
    other = tmp_path / "other"
    other.mkdir()
    m = read_manifest(official)
    m["tokenizer"]["sha256"] = "0" * 64  # another tokenizer: the same ids would mean other text
    (other / MANIFEST).write_text(json.dumps(m))
    assert main(["data", "verify", str(leaky), "--against", str(other), "--quiet"]) == 2
    _one_error(capsys, f"--against {other}", "is not the tokenizer of", "one tokenization")


@pytest.mark.slow
def test_issue_2127_at_full_document_counts(tmp_path_factory, tok, capsys):
    """The issue's own sizes: 10,000 val documents out of the same list as a 50,000-document split (60,000 short
    documents); the leaky directory's train split holds exactly the official split's other 40,000 val documents."""
    root = tmp_path_factory.mktemp("issue_2127_full")
    src = _jsonl(root / "docs.jsonl", [f"d {i}" for i in range(60_000)])
    official, leaky = root / "official", root / "leaky"
    assert _build(src, official, tok, 50_000, "--shard-size", "200000") == 0
    assert _build(src, leaky, tok, 10_000, "--shard-size", "200000") == 0
    capsys.readouterr()
    assert main(["data", "verify", str(leaky), "--quiet"]) == 0
    assert check_overlap(leaky, official).overlapping_docs == 40_000
    assert main(["data", "verify", str(leaky), "--against", str(official), "--quiet"]) == 2
    _one_error(capsys, "40,000 train document(s) equal val documents of", "40,000 of 50,000", "#2127")
