"""The artifact container: exact roundtrip, determinism, every damaged byte refused, no pickle, the cap."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf.artifact.codecs import CODECS, compress, decompress
from pgolf.artifact.format import (CAP_BYTES, check_cap, describe_artifact, encode_artifact, format_inspect_table,
                                   load_artifact, save_artifact)
from pgolf.errors import PgolfError
from pgolf.quant.schemes import dequantize_state_dict, quantize_state_dict

CONFIG = {"model": {"vocab_size": 8}}
TOKENIZER = {"file": "t.model", "vocab_size": 8, "sha256": "ab" * 32}


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"emb.weight": torch.randn(300, 256, generator=gen), "blocks.0.attn_scale": torch.randn(16, generator=gen),
            "small": torch.randn(4, 4, generator=gen), "count": torch.tensor([3, 4])}


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_roundtrip_is_exact(tmp_path, codec):
    qm = quantize_state_dict(_state())
    path = tmp_path / "a.pgolf"
    size = save_artifact(path, qm, config=CONFIG, tokenizer=TOKENIZER, codec=codec, meta={"code_bytes": 5})
    assert size == path.stat().st_size
    art = load_artifact(path)
    assert art.config == CONFIG and art.tokenizer == TOKENIZER and art.header["meta"]["code_bytes"] == 5
    want = dequantize_state_dict(qm)
    got = art.state_dict()
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and torch.equal(got[name], want[name])


def test_encoding_is_deterministic():
    qm = quantize_state_dict(_state())
    assert encode_artifact(qm, config=CONFIG, tokenizer=TOKENIZER) == encode_artifact(quantize_state_dict(_state()),
                                                                                      config=CONFIG,
                                                                                      tokenizer=TOKENIZER)


def test_every_flipped_byte_and_every_truncation_is_refused(tmp_path):
    data = encode_artifact(quantize_state_dict({"w": torch.randn(3, 5), "v": torch.arange(3)}), config=CONFIG,
                           tokenizer=TOKENIZER)
    path = tmp_path / "x.pgolf"
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 0x5A
        path.write_bytes(bytes(damaged))
        with pytest.raises(PgolfError, match="x.pgolf"):
            load_artifact(path)
    for n in range(len(data)):
        path.write_bytes(data[:n])
        with pytest.raises(PgolfError, match="x.pgolf"):
            load_artifact(path)


def test_bad_magic_and_version(tmp_path):
    data = encode_artifact(quantize_state_dict({"w": torch.randn(3)}), config=CONFIG, tokenizer=TOKENIZER)
    path = tmp_path / "m.pgolf"
    path.write_bytes(b"NOPE" + data[4:])
    with pytest.raises(PgolfError, match="bad magic"):
        load_artifact(path)
    body = data[:4] + bytes([9]) + data[5:-4]
    import zlib
    path.write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    with pytest.raises(PgolfError, match="version 9"):
        load_artifact(path)
    with pytest.raises(PgolfError, match="missing"):
        load_artifact(tmp_path / "none.pgolf")


def test_loading_never_unpickles(tmp_path, monkeypatch):
    path = tmp_path / "a.pgolf"
    save_artifact(path, quantize_state_dict(_state()), config=CONFIG, tokenizer=TOKENIZER)

    def boom(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(torch, "load", boom)
    load_artifact(path).state_dict()


def test_cap_is_decimal_16_million():
    assert CAP_BYTES == 16_000_000
    assert check_cap(15_999_000, 1_000, "a") == 16_000_000
    with pytest.raises(PgolfError, match="over the cap: 15,999,000 \\+ code 1,001 = 16,000,001"):
        check_cap(15_999_000, 1_001, "a")


def test_inspect_rows(tmp_path):
    path = tmp_path / "a.pgolf"
    save_artifact(path, quantize_state_dict(_state()), config=CONFIG, tokenizer=TOKENIZER)
    rows = describe_artifact(path)
    by_name = {r["name"]: r for r in rows}
    assert by_name["emb.weight"]["scheme"] == "int8_row" and by_name["emb.weight"]["bits"] == 8
    assert by_name["emb.weight"]["stored_bytes"] == 300 * 256 + 300 * 2
    assert by_name["TOTAL"]["file_bytes"] == path.stat().st_size
    assert "emb.weight" in format_inspect_table(rows)


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=5000), st.sampled_from(sorted(CODECS)), st.integers(0, 9))
def test_codecs_roundtrip(data, codec, level):
    assert decompress(codec, compress(codec, data, level)) == data


@settings(max_examples=20, deadline=None)
@given(shapes=st.lists(st.tuples(st.integers(1, 20), st.integers(1, 20)), min_size=1, max_size=5),
       seed=st.integers(0, 1000))
def test_random_state_dicts_roundtrip(shapes, seed):
    gen = torch.Generator().manual_seed(seed)
    sd = {f"t{i}": torch.randn(*s, generator=gen) for i, s in enumerate(shapes)}
    qm = quantize_state_dict(sd)
    art_bytes = encode_artifact(qm, config=CONFIG, tokenizer=TOKENIZER)
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "r.pgolf"
        p.write_bytes(art_bytes)
        got = load_artifact(p)
    for qt_a, qt_b in zip(qm.tensors, got.quantized.tensors):
        for key in qt_a.arrays:
            assert np.array_equal(qt_a.arrays[key], qt_b.arrays[key])
