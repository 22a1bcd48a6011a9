"""Shard format: header, exact sizes, validation errors, writer straddling."""

from __future__ import annotations

import numpy as np
import pytest

from pgolf.data.shards import (HEADER_BYTES, SHARD_MAGIC, ShardWriter, read_header, read_shard, shard_name,
                               shard_paths, write_shard)
from pgolf.errors import PgolfError


def test_roundtrip_and_exact_layout(tmp_path):
    tokens = np.array([1, 5, 65535, 0, 42])
    path = tmp_path / shard_name("train", 3)
    write_shard(path, tokens)
    raw = path.read_bytes()
    header = np.frombuffer(raw[:HEADER_BYTES], dtype="<i4")
    assert path.name == "fineweb_train_000003.bin"
    assert (header[0], header[1], header[2]) == (SHARD_MAGIC, 1, 5) and not header[3:].any()
    assert len(raw) == HEADER_BYTES + 2 * 5
    assert np.frombuffer(raw[HEADER_BYTES:], dtype="<u2").tolist() == tokens.tolist()
    assert read_shard(path).tolist() == tokens.tolist()


def test_refuses_ids_outside_uint16(tmp_path):
    with pytest.raises(PgolfError, match="65535"):
        write_shard(tmp_path / "x.bin", [1, 70000])
    assert not (tmp_path / "x.bin").exists()


@pytest.mark.parametrize("damage, words", [
    (lambda raw: raw[:-2], "truncated shard"),
    (lambda raw: raw + b"\0\0", "oversized shard"),
    (lambda raw: raw[:100], "shorter than"),
    (lambda raw: np.array([7], "<i4").tobytes() + raw[4:], "bad magic 7"),
    (lambda raw: raw[:4] + np.array([2], "<i4").tobytes() + raw[8:], "unsupported shard version 2"),
])
def test_damaged_shards_are_refused(tmp_path, damage, words):
    path = tmp_path / "fineweb_val_000000.bin"
    write_shard(path, np.arange(50))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(PgolfError, match=words) as info:
        read_shard(path)
    assert str(path) in str(info.value)


def test_missing_shard_and_empty_dir(tmp_path):
    with pytest.raises(PgolfError, match="missing"):
        read_header(tmp_path / "nope.bin")
    with pytest.raises(PgolfError, match="no fineweb_val"):
        shard_paths(tmp_path, "val")


def test_writer_straddles_documents_across_shards(tmp_path):
    docs = [np.arange(i, i + n) for i, n in [(0, 7), (100, 5), (200, 9)]]
    with ShardWriter(tmp_path, "train", shard_size=8) as w:
        for d in docs:
            w.add(d)
    files = shard_paths(tmp_path, "train")
    assert [len(read_shard(f)) for f in files] == [8, 8, 5]
    assert np.concatenate([read_shard(f) for f in files]).tolist() == np.concatenate(docs).tolist()
    assert w.num_tokens == 21


def test_sidecars_are_not_val_shards(tmp_path):
    write_shard(tmp_path / "fineweb_val_000000.bin", [1, 2])
    write_shard(tmp_path / "fineweb_val_bytes_000000.bin", [0, 1])
    assert [p.name for p in shard_paths(tmp_path, "val")] == ["fineweb_val_000000.bin"]
