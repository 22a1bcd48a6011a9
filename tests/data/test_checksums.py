"""Shard checksums (docs/data.md#checksums): every manifest pgolf writes holds the SHA-256 of each shard and sidecar;
`pgolf data verify DIR` compares them and reports one line per bad file; training's cheap checks stay cheap; a
manifest from before checksums keeps working, with one note."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from test_import import official_data

from pgolf.cli import main
from pgolf.data import manifest as manifest_mod
from pgolf.data.build import build_dataset
from pgolf.data.importer import import_data_dir
from pgolf.data.manifest import CHECKSUMS, MANIFEST, check_data_dir, read_manifest, verify_data_dir
from pgolf.data.shards import HEADER_BYTES, shard_sha256, write_shard
from pgolf.errors import PgolfError


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _flip_token_byte(path: Path) -> None:
    """One bit of a token in the middle of the file: same size, valid header."""
    raw = bytearray(path.read_bytes())
    at = HEADER_BYTES + (len(raw) - HEADER_BYTES) // 2
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))


def _drop_checksums(data: Path) -> None:
    m = json.loads((data / MANIFEST).read_text())
    del m[CHECKSUMS]
    (data / MANIFEST).write_text(json.dumps(m))


@pytest.fixture(autouse=True)
def _fresh_notes(monkeypatch):
    """Each test sees the once-per-process note afresh, on rank 0."""
    monkeypatch.setattr(manifest_mod, "_noted", set())
    monkeypatch.delenv("RANK", raising=False)


def test_write_shard_returns_the_files_sha256(tmp_path):
    path = tmp_path / "fineweb_train_000000.bin"
    digest = write_shard(path, np.arange(1000) % 700)
    assert digest == _sha(path) == shard_sha256(path)


def test_build_records_the_sha256_of_every_shard(tiny_data):
    m = read_manifest(tiny_data)
    files = m["splits"]["train"]["files"] + m["splits"]["val"]["files"]
    assert len(m["splits"]["train"]["files"]) > 1  # several shards, each with its own entry
    assert sorted(m[CHECKSUMS]) == sorted(files)
    for name in files:
        assert m[CHECKSUMS][name] == _sha(tiny_data / name), name  # an independent hash of the file on disk


def test_caseops_build_records_the_sidecar_too(tmp_path):
    docs = tmp_path / "d.jsonl"
    words = "The cat sat on NASA mats while McDonald wrote to Paris".split()
    rng = np.random.default_rng(0)
    docs.write_text("".join(json.dumps({"text": " ".join(rng.choice(words, 10))}) + "\n" for _ in range(60)))
    out = tmp_path / "out"
    m = build_dataset([docs], out, vocab_size=300, val_docs=10, workers=1, progress=False, caseops=True)
    names = m["splits"]["val"]["byte_files"] + m["splits"]["val"]["files"] + m["splits"]["train"]["files"]
    assert sorted(m[CHECKSUMS]) == sorted(names) and m["splits"]["val"]["byte_files"]
    assert all(m[CHECKSUMS][n] == _sha(out / n) for n in names)


def test_import_records_checksums_and_upgrades_an_old_manifest(tmp_path):
    ds, _ = official_data(tmp_path / "data", n_train=2, n_val=1, caseops=True, folder=
                          "fineweb10B_sp320_lossless_caps_caseops_v1_reserved")
    m = import_data_dir(ds, progress=False)
    names = sorted(p.name for p in ds.glob("fineweb_*.bin"))
    assert sorted(m[CHECKSUMS]) == names and len(names) == 4  # 2 train, 1 val, 1 val byte sidecar
    assert all(m[CHECKSUMS][n] == _sha(ds / n) for n in names)
    _drop_checksums(ds)
    again = import_data_dir(ds, progress=False, reuse=True)  # an old manifest is not reused: it gets checksums
    assert again[CHECKSUMS] == m[CHECKSUMS] and CHECKSUMS in read_manifest(ds)


def test_a_flipped_token_passes_the_cheap_checks_but_not_verify(tiny_data, tmp_path, capsys):
    data = _copy(tiny_data, tmp_path / "d")
    shard = data / read_manifest(data)["splits"]["train"]["files"][1]
    _flip_token_byte(shard)
    check_data_dir(data)  # headers, sizes, counts: all still fine (what training checks at startup)
    assert capsys.readouterr().err == ""
    assert main(["data", "verify", str(data), "--quiet"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pgolf: error: ") and "Traceback" not in captured.err, err
    assert shard.name in err[0] and "SHA-256 mismatch" in err[0]
    assert "1 problem(s)" in captured.out


def test_verify_reports_every_bad_file_one_line_each(tiny_data, tmp_path, capsys):
    data = _copy(tiny_data, tmp_path / "d")
    m = read_manifest(data)
    train = [data / n for n in m["splits"]["train"]["files"]]
    _flip_token_byte(train[0])
    train[1].write_bytes(train[1].read_bytes()[:-10])  # truncated
    (data / m["splits"]["val"]["files"][0]).unlink()  # missing
    assert main(["data", "verify", str(data), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("pgolf: error: ") for line in err), err
    assert any(train[0].name in line and "SHA-256 mismatch" in line for line in err)
    assert any(train[1].name in line and "truncated" in line for line in err)
    assert any(m["splits"]["val"]["files"][0] in line and "missing" in line for line in err)


def test_verify_of_a_whole_directory(tiny_data, capsys):
    assert main(["data", "verify", str(tiny_data), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "match the manifest's SHA-256" in captured.out


def test_verify_checks_the_tokenizer_and_the_counts(tiny_data, tmp_path, capsys):
    data = _copy(tiny_data, tmp_path / "d")
    m = read_manifest(data)
    m["splits"]["train"]["tokens"] += 1
    (data / MANIFEST).write_text(json.dumps(m))
    with open(data / m["tokenizer"]["file"], "ab") as f:
        f.write(b"x")
    report = verify_data_dir(data)
    assert len(report.problems) == 2
    assert "tokenizer does not match" in report.problems[0] and "train shards hold" in report.problems[1]


def test_an_old_manifest_still_trains_with_one_note(tiny_data, tmp_path, capsys, monkeypatch):
    data = _copy(tiny_data, tmp_path / "d")
    _drop_checksums(data)
    check_data_dir(data)
    check_data_dir(data)  # said once per process, not at every check
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pgolf: note: ") and "--add-checksums" in err[0], err
    monkeypatch.setattr(manifest_mod, "_noted", set())
    monkeypatch.setenv("RANK", "3")  # under torchrun only rank 0 says it
    check_data_dir(data)
    assert capsys.readouterr().err == ""


def test_verify_an_old_manifest_then_add_checksums(tiny_data, tmp_path, capsys):
    data = _copy(tiny_data, tmp_path / "d")
    before = read_manifest(data)
    _drop_checksums(data)
    assert main(["data", "verify", str(data), "--quiet"]) == 0  # not an error: nothing to compare
    captured = capsys.readouterr()
    assert "no checksums to compare" in captured.out
    assert captured.err.count("pgolf: note: ") == 1 and "error" not in captured.err
    assert main(["data", "verify", str(data), "--add-checksums", "--quiet"]) == 0
    capsys.readouterr()
    after = read_manifest(data)
    assert after == before  # the same checksums the build recorded, every other field unchanged
    _flip_token_byte(data / after["splits"]["val"]["files"][0])
    assert main(["data", "verify", str(data), "--quiet"]) == 2


def test_add_checksums_refuses_a_directory_that_fails_the_cheap_checks(tiny_data, tmp_path, capsys):
    data = _copy(tiny_data, tmp_path / "d")
    _drop_checksums(data)
    shard = data / read_manifest(data)["splits"]["train"]["files"][0]
    shard.write_bytes(shard.read_bytes()[:-2])
    assert main(["data", "verify", str(data), "--add-checksums", "--quiet"]) == 2
    assert "truncated" in capsys.readouterr().err
    assert CHECKSUMS not in read_manifest(data)


@pytest.mark.parametrize("damage, words", [
    (lambda m: m[CHECKSUMS].update({next(iter(m[CHECKSUMS])): "not hex"}), "SHA-256 hex"),
    (lambda m: m[CHECKSUMS].pop(m["splits"]["val"]["files"][0]), "no entry for fineweb_val_000000.bin"),
    (lambda m: m.update({CHECKSUMS: ["a list"]}), "SHA-256 hex"),
])
def test_a_damaged_checksum_table_is_refused(tiny_data, tmp_path, capsys, damage, words):
    data = _copy(tiny_data, tmp_path / "d")
    m = read_manifest(data)
    damage(m)
    (data / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(PgolfError, match="damaged manifest") as info:
        check_data_dir(data)
    assert words in str(info.value)
    assert main(["data", "verify", str(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]


def test_verify_of_a_missing_directory_is_one_line(tmp_path, capsys):
    assert main(["data", "verify", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]


def test_shard_sha256_of_a_missing_file_is_one_error(tmp_path):
    with pytest.raises(PgolfError, match="shard file is missing"):
        shard_sha256(tmp_path / "fineweb_train_000000.bin")


def test_fineweb_download_records_checksums_and_verifies(tmp_path, capsys):
    """`data fineweb` (here from a local mirror of the Hub repository) writes its manifest through `data import`:
    with checksums of the files as downloaded, which `data verify` then compares."""
    from test_hub import _make_repo

    mirror = _make_repo(tmp_path / "mirror", {"sp1024": (2, 1)})
    out = tmp_path / "out"
    assert main(["data", "fineweb", "--hub-dir", str(mirror), "--train-shards", "2", "--out", str(out),
                 "--quiet"]) == 0
    data = out / "datasets" / "fineweb10B_sp1024"
    m = read_manifest(data)
    assert sorted(m[CHECKSUMS]) == ["fineweb_train_000000.bin", "fineweb_train_000001.bin", "fineweb_val_000000.bin"]
    assert all(m[CHECKSUMS][n] == _sha(mirror / "datasets" / "datasets" / "fineweb10B_sp1024" / n)
               for n in m[CHECKSUMS])
    capsys.readouterr()
    assert main(["data", "verify", str(data), "--quiet"]) == 0
    _flip_token_byte(data / "fineweb_train_000001.bin")
    assert main(["data", "verify", str(data), "--quiet"]) == 2
    assert "fineweb_train_000001.bin: SHA-256 mismatch" in capsys.readouterr().err
