"""`pgolf data import DIR`: an official data folder (shards, optional val byte sidecar, tokenizer beside it or in
`../../tokenizers/`) is checked and gets pgolf's manifest.json; any damage gives one line, exit 2 and no manifest.

The helpers here (a tiny SentencePiece tokenizer, an official folder of random documents) also build the fake Hub
repositories of test_hub.py.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from pgolf.cli import main
from pgolf.data.build import manifest_from_shards
from pgolf.data.caseops import encode_caseops
from pgolf.data.importer import import_data_dir, official_tokenizer_name
from pgolf.data.manifest import MANIFEST, check_data_dir, load_val_sidecar
from pgolf.data.shards import read_shard, write_shard
from pgolf.data.tokenizer import load_tokenizer, train_tokenizer
from pgolf.errors import PgolfError

TOKEN_IDS = (4, 260)  # drawn ids: the CaseOps operators (4..7) and plenty of pieces, all below any tiny vocabulary
CASEOPS_FOLDER = "fineweb10B_sp320_lossless_caps_caseops_v1_reserved"


@functools.cache
def tiny_tokenizer(caseops: bool = False) -> bytes:
    """A vocab-320 BPE model with the official settings (CaseOps: the four operators reserved as ids 4..7)."""
    words = "the cat sat on a mat while NASA and McDonald wrote 1234 letters to Paris in April".split()
    rng = np.random.default_rng(7)
    texts = [" ".join(rng.choice(words, size=12)) for _ in range(400)]
    if caseops:
        texts = [encode_caseops(t) for t in texts]
    with tempfile.TemporaryDirectory() as d:
        return train_tokenizer(texts, 320, Path(d) / "t.model", caseops=caseops).read_bytes()


def official_folder(folder: Path, n_train: int = 2, n_val: int = 1, sidecar: bool = False, seed: int = 0) -> dict:
    """Shards of random BOS-started documents in `folder` (and a val byte sidecar per val shard); returns the
    sidecar arrays by file name."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sidecars = {}
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            docs = [np.concatenate([[1], rng.integers(*TOKEN_IDS, size=rng.integers(5, 60))]) for _ in range(8)]
            tokens = np.concatenate(docs)
            write_shard(folder / f"fineweb_{split}_{i:06d}.bin", tokens)
            if split == "val" and sidecar:
                counts = np.where(tokens == 1, 0, rng.integers(0, 6, size=len(tokens)))
                write_shard(folder / f"fineweb_val_bytes_{i:06d}.bin", counts)
                sidecars[f"fineweb_val_bytes_{i:06d}.bin"] = counts
    return sidecars


def official_data(root: Path, folder: str = "fineweb10B_sp320", caseops: bool = False, **kw) -> tuple[Path, dict]:
    """The official layout: `root/datasets/<folder>/` and the tokenizer in `root/tokenizers/` under its official
    name; returns (dataset folder, sidecar arrays)."""
    ds = root / "datasets" / folder
    sidecars = official_folder(ds, sidecar=caseops, **kw)
    (root / "tokenizers").mkdir(parents=True, exist_ok=True)
    (root / "tokenizers" / official_tokenizer_name(folder)).write_bytes(tiny_tokenizer(caseops))
    return ds, sidecars


def _one_error_line(capsys, argv: list[str], *words: str) -> None:
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("pgolf: error: "), err
    for word in words:
        assert word in err[0], err[0]


def test_official_layout_gets_a_manifest_that_matches_an_independent_count(tmp_path, capsys):
    ds, _ = official_data(tmp_path / "data", n_train=3, n_val=2)
    (tmp_path / "data" / "tokenizers" / "fineweb_999_bpe.model").write_bytes(b"another tokenizer, never chosen")
    assert main(["data", "import", str(ds), "--quiet"]) == 0
    assert "fineweb_320_bpe.model" in capsys.readouterr().out
    manifest, tok = check_data_dir(ds)
    assert tok == ds / "fineweb_320_bpe.model" and tok.read_bytes() == tiny_tokenizer(False)  # copied beside
    assert "caseops" not in manifest and "byte_files" not in manifest["splits"]["val"]
    assert manifest["splits"] == manifest_from_shards(ds, tok, progress=False)["splits"]
    assert manifest["splits"]["train"]["files"] == [f"fineweb_train_{i:06d}.bin" for i in range(3)]
    assert manifest["splits"]["val"]["docs"] == 16  # 8 BOS-started documents per shard
    assert not list(ds.glob(".*"))  # no temporary files left


def test_caseops_folder_charges_the_sidecar(tmp_path):
    ds, sidecars = official_data(tmp_path / "data", folder=CASEOPS_FOLDER, caseops=True, n_val=2)
    manifest = import_data_dir(ds, progress=False)
    assert manifest["caseops"] is True
    assert manifest["splits"]["val"]["byte_files"] == ["fineweb_val_bytes_000000.bin", "fineweb_val_bytes_000001.bin"]
    expected = np.concatenate([sidecars[name] for name in sorted(sidecars)])
    assert manifest["splits"]["val"]["bytes"] == int(expected.sum())
    check_data_dir(ds)
    assert np.array_equal(load_val_sidecar(ds), expected)
    # train has no sidecar: the byte rule with each operator (3 UTF-8 bytes as a piece) charged 0 instead
    rule = manifest_from_shards(ds, ds / official_tokenizer_name(CASEOPS_FOLDER), progress=False)["splits"]["train"]
    stream = np.concatenate([read_shard(ds / name) for name in rule["files"]])
    operators = int(np.count_nonzero((stream[1:] >= 4) & (stream[1:] <= 7)))
    assert operators > 0 and manifest["splits"]["train"]["bytes"] == rule["bytes"] - 3 * operators


def test_tokenizer_beside_or_given(tmp_path):
    ds = tmp_path / "plain"
    official_folder(ds)
    (ds / "mine.model").write_bytes(tiny_tokenizer(False))
    assert import_data_dir(ds, progress=False)["tokenizer"]["file"] == "mine.model"
    other = tmp_path / "other"
    official_folder(other)
    given = tmp_path / "elsewhere" / "tok.model"
    given.parent.mkdir()
    given.write_bytes(tiny_tokenizer(False))
    manifest = import_data_dir(other, given, progress=False)
    assert manifest["tokenizer"]["file"] == "tok.model" and (other / "tok.model").read_bytes() == given.read_bytes()
    check_data_dir(other)


def _truncate(ds: Path) -> None:
    f = ds / "fineweb_train_000001.bin"
    f.write_bytes(f.read_bytes()[:-2])


def _bad_magic(ds: Path) -> None:
    f = ds / "fineweb_val_000000.bin"
    f.write_bytes(b"\0\0\0\0" + f.read_bytes()[4:])


def _short_sidecar(ds: Path) -> None:
    write_shard(ds / "fineweb_val_bytes_000000.bin", read_shard(ds / "fineweb_val_bytes_000000.bin")[:-1])


def _no_tokenizer(ds: Path) -> None:
    shutil.rmtree(ds.parent.parent / "tokenizers")


def _big_id(ds: Path) -> None:
    write_shard(ds / "fineweb_val_000000.bin", [1, 5, 40000])


def _id_equal_to_vocab(ds: Path) -> None:
    vocab = load_tokenizer(ds.parent.parent / "tokenizers" / "fineweb_320_bpe.model").get_piece_size()
    write_shard(ds / "fineweb_val_000000.bin", [1, 5, vocab])


def _gap(ds: Path) -> None:
    (ds / "fineweb_train_000001.bin").rename(ds / "fineweb_train_000002.bin")


def _two_tokenizers(ds: Path) -> None:
    (ds / "a.model").write_bytes(tiny_tokenizer(False))
    (ds / "b.model").write_bytes(tiny_tokenizer(False))


def _garbage_tokenizer(ds: Path) -> None:
    (ds.parent.parent / "tokenizers" / "fineweb_320_bpe.model").write_bytes(b"not a model")


def _no_val(ds: Path) -> None:
    (ds / "fineweb_val_000000.bin").unlink()


def _sidecar_with_plain_tokenizer(ds: Path) -> None:
    write_shard(ds / "fineweb_val_bytes_000000.bin", np.ones(len(read_shard(ds / "fineweb_val_000000.bin"))))


@pytest.mark.parametrize("caseops, damage, words", [
    (False, _truncate, ("fineweb_train_000001.bin", "truncated shard")),
    (False, _bad_magic, ("fineweb_val_000000.bin", "bad magic")),
    (True, _short_sidecar, ("fineweb_val_bytes_000000.bin", "sidecar has")),
    (False, _no_tokenizer, ("no tokenizer", "--tokenizer")),
    (True, _no_tokenizer, ("no tokenizer", "--tokenizer")),
    (False, _big_id, ("fineweb_val_000000.bin", "token id 40000")),
    (False, _id_equal_to_vocab, ("fineweb_val_000000.bin", "outside the tokenizer's")),
    (False, _gap, ("fineweb_train_000001.bin is missing",)),
    (False, _two_tokenizers, ("several tokenizers", "--tokenizer")),
    (False, _garbage_tokenizer, ("not a valid SentencePiece model",)),
    (False, _no_val, ("no fineweb_val_NNNNNN.bin shards",)),
    (False, _sidecar_with_plain_tokenizer, ("does not reserve the CaseOps operator",)),
])
def test_damaged_folder_is_one_line_and_no_manifest(tmp_path, capsys, caseops, damage, words):
    ds, _ = official_data(tmp_path / "data", folder=CASEOPS_FOLDER if caseops else "fineweb10B_sp320",
                          caseops=caseops)
    damage(ds)
    before = sorted(p.name for p in ds.iterdir())
    quiet = ["--quiet"] if damage in (_big_id, _id_equal_to_vocab) else []  # found while counting, after the progress bar started
    _one_error_line(capsys, ["data", "import", str(ds), *quiet], *words)
    assert sorted(p.name for p in ds.iterdir()) == before  # no manifest, no tokenizer copy, no temporary file


def test_caseops_tokenizer_without_sidecar_is_refused(tmp_path, capsys):
    ds, sidecars = official_data(tmp_path / "data", folder=CASEOPS_FOLDER, caseops=True)
    for name in sidecars:
        (ds / name).unlink()
    _one_error_line(capsys, ["data", "import", str(ds)], "no val byte sidecar", "U+E001")
    assert not (ds / MANIFEST).exists()


def test_sidecar_count_and_missing_dir(tmp_path, capsys):
    ds, _ = official_data(tmp_path / "data", folder=CASEOPS_FOLDER, caseops=True, n_val=2)
    (ds / "fineweb_val_bytes_000001.bin").unlink()
    _one_error_line(capsys, ["data", "import", str(ds)], "1 val byte sidecar file(s) for 2 val shard(s)")
    _one_error_line(capsys, ["data", "import", str(tmp_path / "nowhere")], "does not exist")
    with pytest.raises(PgolfError, match="is a file"):
        import_data_dir(ds / "fineweb_val_000000.bin")
    assert not (ds / MANIFEST).exists()


def test_a_failed_import_leaves_an_earlier_manifest_alone(tmp_path):
    ds, _ = official_data(tmp_path / "data")
    first = import_data_dir(ds, progress=False)
    text = (ds / MANIFEST).read_text()
    _truncate(ds)
    with pytest.raises(PgolfError, match="truncated"):
        import_data_dir(ds, progress=False)
    assert (ds / MANIFEST).read_text() == text and first["format"] == "pgolf-data-v1"


def test_importing_what_data_build_caseops_wrote_gives_its_val_split(shared_data, tmp_path):
    """The official CaseOps tokenizer on 60 challenge documents: the import of the shards and sidecar that
    `data build --caseops` wrote has the builder's val split exactly, and train bytes within 0.1% of the original."""
    from pgolf.data.build import build_dataset

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join((shared_data / "fineweb" / "challenge_docs_200.jsonl").read_text().splitlines(True)[:60]))
    tok = shared_data / "tokenizers" / "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"
    built = build_dataset([docs], tmp_path / "built", tokenizer=tok, val_docs=20, progress=False, caseops=True)
    ds = tmp_path / "data" / "datasets" / "fineweb10B_sp8192_lossless_caps_caseops_v1_reserved"
    ds.mkdir(parents=True)
    for f in (tmp_path / "built").glob("fineweb_*.bin"):
        shutil.copyfile(f, ds / f.name)
    (tmp_path / "data" / "tokenizers").mkdir()
    shutil.copyfile(tok, tmp_path / "data" / "tokenizers" / tok.name)
    manifest = import_data_dir(ds, progress=False)
    assert manifest["splits"]["val"] == built["splits"]["val"] and manifest["tokenizer"] == built["tokenizer"]
    train, expected = manifest["splits"]["train"], built["splits"]["train"]
    assert (train["docs"], train["tokens"]) == (expected["docs"], expected["tokens"])
    assert abs(train["bytes"] - expected["bytes"]) <= expected["bytes"] / 1000


def test_the_official_flow_adopts_a_folder_without_the_leak_scan(tmp_path, monkeypatch):
    """A bundle run the official way adopts its data folder with `overlap=False` (the scan is `data verify`'s); its
    manifest is reused by later runs, and `data import` still adds the overlap entry."""
    import pgolf.data.importer as importer

    ds, _ = official_data(tmp_path / "data")
    calls = []
    real = importer.compare_splits
    monkeypatch.setattr(importer, "compare_splits", lambda *a, **k: calls.append(1) or real(*a, **k))
    manifest = import_data_dir(ds, progress=False, reuse=True, overlap=False)
    assert "overlap" not in manifest and not calls
    assert import_data_dir(ds, progress=False, reuse=True, overlap=False) == manifest and not calls
    assert "overlap" in import_data_dir(ds, progress=False, reuse=True) and calls == [1]
