"""Fuzzed readers (issue 15): every damaged or crafted input is either read correctly or refused with one PgolfError.

Each reader gets random corruption (bit flips, truncation at any byte, appended garbage, overwritten bytes) of a valid
file, and crafted inputs with absurd declared sizes, shapes and negative offsets. The property is the same for all:
the outcome is a correct load or a `PgolfError`, never another exception type, and sizes are checked before anything
is allocated (the crafted-size cases run under `tracemalloc` with a small ceiling). Containers with a checksum (the
artifact's CRC32, the checkpoint's SHA-256) must refuse every raw mutation; their inner parsers are fuzzed too, by
mutating the body and recomputing the checksum (what a crafted file can do).

The outcome counts of a run are printed at the end of the module (`pytest -s`), for docs/RELIABILITY.md.
"""

from __future__ import annotations

import collections
import hashlib
import json
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pgolf.artifact.codecs import CODECS, Segment, compress, decompress
from pgolf.artifact.format import MAGIC, decode_artifact, encode_artifact, load_artifact, payload_layout
from pgolf.artifact.rans import write_varint
from pgolf.data.manifest import FORMAT, MANIFEST, check_data_dir, read_manifest
from pgolf.data.shards import HEADER_BYTES, SHARD_MAGIC, read_header, read_shard, write_shard
from pgolf.data.tokenizer import file_sha256, load_tokenizer
from pgolf.errors import PgolfError
from pgolf.quant.schemes import quantize_state_dict

OUTCOMES: collections.Counter = collections.Counter()
FUZZ = dict(deadline=None, derandomize=False, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                   HealthCheck.data_too_large])
# Bytes any crafted-size case may allocate (Python, numpy and liblzma allocations, seen by tracemalloc): the LZMA
# decoder's 64 MiB window is allocated up front for any lzma artifact, everything else stays far below.
MEMORY_CEILING = 96 << 20


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print("\nfuzz outcomes (reader, fault: ok / refused):")
    for key in sorted({k[:2] for k in OUTCOMES}):
        print(f"  {key[0]:<12} {key[1]:<28} ok={OUTCOMES[key + ('ok',)]:>5}  refused={OUTCOMES[key + ('refused',)]:>5}")


def outcome(reader: str, fault: str, fn):
    """Run `fn`; 'ok' with its result, or 'refused' on PgolfError (one line). Any other exception fails the test."""
    try:
        result = fn()
    except PgolfError as exc:
        assert "\n" not in str(exc) and str(exc), f"{reader}: error message is not one line: {exc!r}"
        OUTCOMES[(reader, fault, "refused")] += 1
        return "refused", exc
    OUTCOMES[(reader, fault, "ok")] += 1
    return "ok", result


def bounded(fn, ceiling: int = MEMORY_CEILING):
    """Run `fn` under tracemalloc and fail if it allocated more than `ceiling` bytes at any moment."""
    tracemalloc.start()
    try:
        return fn()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < ceiling, f"allocated {peak:,} bytes (ceiling {ceiling:,})"


# ------------------------------------------------------------------------------------------------------ mutations

@st.composite
def mutations(draw, data: bytes, start: int = 0):
    """A damaged copy of `data` (bytes before `start` untouched) and the name of the damage."""
    kind = draw(st.sampled_from(["flip", "truncate", "append", "overwrite", "flips"]))
    out = bytearray(data)
    n = len(out)
    if kind == "flip":
        i = draw(st.integers(start, n - 1))
        out[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "flips":
        for _ in range(draw(st.integers(2, 8))):
            out[draw(st.integers(start, n - 1))] ^= draw(st.integers(1, 255))
    elif kind == "truncate":
        out = out[:draw(st.integers(start, n - 1))]
    elif kind == "append":
        out += draw(st.binary(min_size=1, max_size=64))
    else:
        i = draw(st.integers(start, n - 1))
        chunk = draw(st.binary(min_size=1, max_size=16))
        out[i:i + len(chunk)] = chunk
    assume(bytes(out) != data)
    return kind, Blob(out)


class Blob(bytes):
    """Bytes with a short repr (a failing example's report names fixtures; a 300 kB model would flood it)."""

    def __repr__(self) -> str:
        return f"<{len(self):,} bytes>"


# --------------------------------------------------------------------------------------------------------- shards

TOKENS = np.arange(300, dtype=np.uint16) * 7 % 1024


@pytest.fixture(scope="module")
def shard_bytes(tmp_path_factory) -> Blob:
    path = tmp_path_factory.mktemp("shard") / "fineweb_train_000000.bin"
    write_shard(path, TOKENS)
    return Blob(path.read_bytes())


def _check_shard(path: Path, data: bytes):
    tokens = np.asarray(read_shard(path))
    assert len(data) == HEADER_BYTES + 2 * len(tokens)
    assert np.frombuffer(data[:12], "<i4").tolist() == [SHARD_MAGIC, 1, len(tokens)]
    assert tokens.tobytes() == data[HEADER_BYTES:]
    return tokens


@settings(max_examples=400, **FUZZ)
@given(data=st.data())
def test_shard_mutations(tmp_path_factory, shard_bytes, data):
    kind, damaged = data.draw(mutations(shard_bytes))
    path = tmp_path_factory.mktemp("s", numbered=True) / "fineweb_train_000000.bin"
    path.write_bytes(damaged)
    result, _ = outcome("shard", f"mutation:{kind}", lambda: _check_shard(path, damaged))
    if kind in ("truncate", "append"):
        assert result == "refused"  # a size change can never match the header's count


@settings(max_examples=400, **FUZZ)
@given(count=st.integers(-2 ** 31, 2 ** 31 - 1), version=st.sampled_from([1, 1, 1, 0, 2, -1]),
       body=st.integers(0, 600))
def test_shard_declared_sizes(tmp_path_factory, count, version, body):
    header = np.zeros(256, dtype="<i4")
    header[:3] = SHARD_MAGIC, version, count
    path = tmp_path_factory.mktemp("s", numbered=True) / "fineweb_val_000000.bin"
    path.write_bytes(header.tobytes() + b"\x01" * body)
    result, _ = bounded(lambda: outcome("shard", "declared count", lambda: _check_shard(path, path.read_bytes())))
    assert result == ("ok" if version == 1 and count >= 0 and body == 2 * count else "refused")


def test_shard_is_a_directory_or_unreadable(tmp_path):
    (tmp_path / "fineweb_val_000000.bin").mkdir()
    with pytest.raises(PgolfError, match="cannot read shard"):
        read_header(tmp_path / "fineweb_val_000000.bin")


# ------------------------------------------------------------------------------------------------------- manifest

def _data_dir(root: Path) -> dict:
    """A minimal data directory (two shards, a stand-in tokenizer file) and its manifest."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "tok.model").write_bytes(b"not really a model, only hashed")
    write_shard(root / "fineweb_train_000000.bin", TOKENS)
    write_shard(root / "fineweb_val_000000.bin", TOKENS[:100])
    manifest = {"format": FORMAT,
                "tokenizer": {"file": "tok.model", "vocab_size": 1024, "sha256": file_sha256(root / "tok.model")},
                "splits": {"train": {"docs": 3, "tokens": 300, "bytes": 900, "files": ["fineweb_train_000000.bin"]},
                           "val": {"docs": 1, "tokens": 100, "bytes": 300, "files": ["fineweb_val_000000.bin"]}}}
    (root / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    return manifest


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("data") / "d"
    manifest = _data_dir(root)
    check_data_dir(root, 1024)  # the untouched directory is valid
    return root, manifest


def _with_manifest(data_dir: Path, text: bytes):
    (data_dir / MANIFEST).write_bytes(text)
    return lambda: check_data_dir(data_dir, 1024)


@settings(max_examples=300, **FUZZ)
@given(data=st.data())
def test_manifest_mutations(data_dir, data):
    root, manifest = data_dir
    original = json.dumps(manifest).encode()
    kind, damaged = data.draw(mutations(original))
    outcome("manifest", f"mutation:{kind}", _with_manifest(root, damaged))


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                 max_size=3), max_leaves=6)
ODD_VALUES = JSON | st.sampled_from([-1, 10 ** 12, "../../../etc/passwd", "/etc/hostname", "", ".", "tok.model\0x",
                                     ["fineweb_train_000000.bin"] * 3, "fineweb_train_000000.bin", 300.0, True])
FIELD_PATHS = [("format",), ("tokenizer",), ("tokenizer", "file"), ("tokenizer", "vocab_size"),
               ("tokenizer", "sha256"), ("splits",), ("splits", "train"), ("splits", "val", "files"),
               ("splits", "train", "files"), ("splits", "train", "tokens"), ("splits", "val", "tokens"),
               ("splits", "val", "bytes"), ("splits", "val", "docs"), ("caseops",), ("splits", "val", "byte_files")]


@settings(max_examples=400, **FUZZ)
@given(where=st.sampled_from(FIELD_PATHS), value=ODD_VALUES, drop=st.booleans())
def test_manifest_odd_fields(data_dir, where, value, drop):
    root, manifest = data_dir
    m = json.loads(json.dumps(manifest))
    node = m
    for key in where[:-1]:
        node = node[key]
    if drop and where[-1] in node:
        del node[where[-1]]
    else:
        node[where[-1]] = value
    result, _ = outcome("manifest", "odd field value", _with_manifest(root, json.dumps(m).encode()))
    if where == ("splits", "train", "tokens") and value != 300 and not drop:
        assert result == "refused"


@pytest.mark.parametrize("text", [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
                                  b"\xff\xfe{}", b"", b"null", b"[]", b'"manifest"', b"1e999999"])
def test_manifest_pathological_json(data_dir, text):
    root, _ = data_dir
    result, _ = outcome("manifest", "pathological JSON", _with_manifest(root, text))
    assert result == "refused"


def test_manifest_tokenizer_is_a_directory(tmp_path):
    manifest = _data_dir(tmp_path / "d")
    manifest["tokenizer"]["file"] = "."
    (tmp_path / "d" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PgolfError):
        check_data_dir(tmp_path / "d")


# ------------------------------------------------------------------------------------------------------ tokenizer

@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> tuple[Path, Blob]:
    """A data directory whose manifest names a real SentencePiece model (the official settings, byte fallback
    included, trained on a few synthetic lines in well under a second), and that model's bytes."""
    from pgolf.data.tokenizer import train_tokenizer

    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda", "sigma", "tau"]
    texts = [" ".join(words[(i * 7 + j * 3) % 11] + "s" * ((i + j) % 5 == 0) for j in range(30)) for i in range(200)]
    root = tmp_path_factory.mktemp("tok") / "d"
    manifest = _data_dir(root)
    train_tokenizer(texts, 320, root / "tok.model")
    manifest["tokenizer"]["sha256"] = file_sha256(root / "tok.model")
    (root / MANIFEST).write_text(json.dumps(manifest))
    check_data_dir(root, 1024)
    return root, Blob((root / "tok.model").read_bytes())


@settings(max_examples=200, **FUZZ)
@given(data=st.data())
def test_tokenizer_mutations(tokenizer_dir, data):
    root, model = tokenizer_dir
    kind, damaged = data.draw(mutations(model))
    (root / "tok.model").write_bytes(damaged)
    try:
        result, exc = outcome("tokenizer", f"manifest check, {kind}", lambda: check_data_dir(root, 1024))
        assert result == "refused" and "sha256" in str(exc)

        def load():
            sp = load_tokenizer(root / "tok.model")
            sp.encode("alpha beta gamma")  # a loaded model must also work
            return sp

        outcome("tokenizer", f"load .model, {kind}", load)
    finally:
        (root / "tok.model").write_bytes(model)


def test_tokenizer_piece_that_is_not_utf8(tokenizer_dir):
    """A damaged piece (its first byte made 0x80) made SentencePiece raise UnicodeDecodeError through load_tokenizer."""
    root, model = tokenizer_dir
    assert b"\n\x06<0x19>" in model
    (root / "tok.model").write_bytes(model.replace(b"\n\x06<0x19>", b"\n\x06\x800x19>", 1))
    try:
        with pytest.raises(PgolfError, match="not a valid SentencePiece model"):
            load_tokenizer(root / "tok.model")
    finally:
        (root / "tok.model").write_bytes(model)


def test_manifest_names_outside_the_directory(data_dir):
    root, manifest = data_dir
    for field, value in ((("tokenizer", "file"), "/etc/hostname"), (("tokenizer", "file"), "../d/tok.model"),
                         (("tokenizer", "file"), 7), (("splits", "val", "files"), ["../d/fineweb_val_000000.bin"]),
                         (("splits", "train", "tokens"), True)):
        m = json.loads(json.dumps(manifest))
        node = m
        for key in field[:-1]:
            node = node[key]
        node[field[-1]] = value
        with pytest.raises(PgolfError, match="damaged manifest"):
            _with_manifest(root, json.dumps(m).encode())()
    _with_manifest(root, json.dumps(manifest).encode())()


# ------------------------------------------------------------------------------------------------------- artifact

CONFIG = {"model": {"vocab_size": 8}}
TOKENIZER = {"file": "t.model", "vocab_size": 8, "sha256": "ab" * 32}
ARTIFACT_CODECS = sorted(CODECS)


def _small_model():
    gen = torch.Generator().manual_seed(0)
    return quantize_state_dict({"blocks.0.mlp.fc.weight": torch.randn(24, 16, generator=gen),
                                "blocks.1.mlp.fc.weight": torch.randn(24, 16, generator=gen),
                                "tok_emb.weight": torch.randint(-3, 4, (8, 16), generator=gen).float(),
                                "blocks.0.attn_scale": torch.randn(16, generator=gen), "count": torch.tensor([3, 4])},
                               keep_float_max_numel=20)


@pytest.fixture(scope="module")
def artifacts() -> dict[str, bytes]:
    qm = _small_model()
    out = {c: Blob(encode_artifact(qm, config=CONFIG, tokenizer=TOKENIZER, codec=c, level=5)) for c in ARTIFACT_CODECS}
    for data in out.values():
        decode_artifact(data).state_dict()
    return out


def _load_and_use(data: bytes):
    art = decode_artifact(data, "fuzz.pgolf")
    return art.state_dict()


@settings(max_examples=800, **FUZZ)
@given(codec=st.sampled_from(ARTIFACT_CODECS), data=st.data())
def test_artifact_raw_mutations_are_always_refused(artifacts, codec, data):
    """The CRC catches every raw mutation: a damaged artifact never loads, so it never scores."""
    kind, damaged = data.draw(mutations(artifacts[codec]))
    result, _ = outcome("artifact", f"raw {kind}", lambda: _load_and_use(damaged))
    assert result == "refused"


def _recrc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@settings(max_examples=800, **FUZZ)
@given(codec=st.sampled_from(ARTIFACT_CODECS), data=st.data())
def test_artifact_mutations_behind_the_crc(artifacts, codec, data):
    """A crafted file can carry a valid CRC: the header and payload parsers behind it still never crash."""
    body = artifacts[codec][:-4]
    kind, damaged = data.draw(mutations(body, start=4))
    outcome("artifact", f"behind CRC {kind}", lambda: _load_and_use(_recrc(damaged)))


@settings(max_examples=700, **FUZZ)
@given(codec=st.sampled_from([c for c in ARTIFACT_CODECS if c != "none"]), data=st.data())
def test_codec_payload_mutations(artifacts, codec, data):
    """Each codec's decoder on a damaged payload, with the layout the container would give it."""
    art = decode_artifact(artifacts[codec])
    header_len = art.header_bytes
    blob = artifacts[codec][9 + header_len:-4]
    layout = payload_layout(art.header["tensors"])
    kind, damaged = data.draw(mutations(blob))
    result, out = outcome(codec, f"payload {kind}", lambda: decompress(codec, damaged, layout))
    if result == "ok":
        assert isinstance(out, bytes)


def _frame(header: dict, payload: bytes, codec_blob: bytes | None = None) -> bytes:
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    hb = zlib.compress(text, 9)
    return _recrc(MAGIC + bytes([1]) + struct.pack("<I", len(hb)) + hb + (payload if codec_blob is None else
                                                                           codec_blob))


def _header(codec="none", tensors=None, payload_bytes=0, **extra):
    h = {"format_version": 1, "codec": codec, "level": 5, "config": {}, "tokenizer": {}, "tensors": tensors or [],
         "payload_bytes": payload_bytes, "meta": {}}
    h.update(extra)
    return h


SIZES = st.sampled_from([0, 1, 2, 3, 7, 16, 255, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 40, 10 ** 12, 2 ** 63, 2 ** 64,
                         -1, -(2 ** 40)]) | st.integers(-5, 600)
SHAPES = st.lists(SIZES, max_size=4) | st.sampled_from([[10 ** 12], [10 ** 6, 10 ** 6], [2 ** 63, 2], [-1, -1],
                                                        [True, 2], [1.5], ["3"], None, "12"])


@settings(max_examples=700, **FUZZ)
@given(codec=st.sampled_from(ARTIFACT_CODECS), shape=SHAPES, a_shape=SHAPES, offset=SIZES, nbytes=SIZES,
       payload_bytes=SIZES, dtype=st.sampled_from(["int8", "float16", "float32", "bool", "object", "V8", "<i8"]),
       scheme=st.sampled_from(["raw", "fp16", "int8_row", "int8_tensor", "nope"]), body=st.binary(max_size=64))
def test_artifact_absurd_declared_sizes(codec, shape, a_shape, offset, nbytes, payload_bytes, dtype, scheme, body):
    """Tables declaring 10^12 elements, negative offsets and sizes, odd types: refused before any allocation."""
    tensors = [{"name": "w", "shape": shape, "dtype": "float32", "scheme": scheme,
                "arrays": [{"key": "q", "dtype": dtype, "shape": a_shape, "offset": offset, "nbytes": nbytes}]}]
    data = _frame(_header(codec, tensors, payload_bytes), body)
    bounded(lambda: outcome("artifact", "absurd declared sizes", lambda: _load_and_use(data)))


@pytest.mark.parametrize("codec", [c for c in ARTIFACT_CODECS if c != "none"])
@pytest.mark.parametrize("declared", [16, 10 ** 12])
def test_artifact_decompression_bomb_is_bounded(codec, declared):
    """A payload that inflates far beyond what the header declares is refused without inflating it all."""
    big = 256 << 20
    layout = [Segment("w", "raw", "raw", "other", "uint8", (big,), 0, big)]
    if codec in ("ans", "ans2"):
        blob = compress(codec, bytes(1 << 16), 1, [layout[0]._replace(shape=(1 << 16,), nbytes=1 << 16)])
        blob = blob[:4] + _varint(big) + blob[4 + len(_varint(1 << 16)):]  # the blob claims 256 MiB
    else:
        blob = compress(codec, bytes(big), 1 if codec != "lzma" else 0)
    tensors = [{"name": "w", "shape": [declared], "dtype": "uint8", "scheme": "raw",
                "arrays": [{"key": "raw", "dtype": "uint8", "shape": [declared], "offset": 0, "nbytes": declared}]}]
    data = _frame(_header(codec, tensors, declared), b"", blob)
    result, _ = bounded(lambda: outcome("artifact", "decompression bomb", lambda: _load_and_use(data)))  # 256 MiB
    assert result == "refused"


def _varint(n: int) -> bytes:
    out = bytearray()
    write_varint(out, n)
    return bytes(out)


@pytest.mark.parametrize("text", [b"[" * 100_000, b"{}" * 3, b"\xff" * 8, b"1e99999", b'{"format_version":1}'])
def test_artifact_pathological_header(text):
    hb = zlib.compress(text)
    data = _recrc(MAGIC + bytes([1]) + struct.pack("<I", len(hb)) + hb)
    result, _ = outcome("artifact", "pathological header", lambda: _load_and_use(data))
    assert result == "refused"


def test_artifact_header_length_beyond_file(artifacts):
    data = bytearray(artifacts["zlib"][:-4])
    data[5:9] = struct.pack("<I", 2 ** 32 - 1)
    with pytest.raises(PgolfError, match="runs past the end"):
        decode_artifact(_recrc(bytes(data)))


def test_load_artifact_of_a_directory(tmp_path):
    with pytest.raises(PgolfError, match="directory"):
        load_artifact(tmp_path)


# ----------------------------------------------------------------------------------------------------- checkpoint

def _checkpoint_module():
    try:
        from pgolf.train import checkpoint
    except ImportError:  # pragma: no cover - the module exists since 6b73725
        pytest.fail("pgolf.train.checkpoint is missing")
    return checkpoint


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> bytes:
    ck = _checkpoint_module()
    path = tmp_path_factory.mktemp("ck") / "c.pgck"
    state = {"model": {"w": torch.randn(4, 3), "b": torch.arange(5)}, "opt": [{"step": 3, "m": torch.zeros(2)}],
             "rng": np.arange(4, dtype=np.uint32), "pos": (1, 2), "keyed": {1: "a"}}
    ck.write_state(path, state, {"step": 3})
    return Blob(path.read_bytes())


@settings(max_examples=300, **FUZZ)
@given(data=st.data())
def test_checkpoint_raw_mutations_are_always_refused(tmp_path_factory, checkpoint_bytes, data):
    ck = _checkpoint_module()
    kind, damaged = data.draw(mutations(checkpoint_bytes))
    path = tmp_path_factory.mktemp("c", numbered=True) / "c.pgck"
    path.write_bytes(damaged)
    result, _ = outcome("checkpoint", f"raw {kind}", lambda: ck.read_state(path))
    assert result == "refused"


def _resha(body: bytes) -> bytes:
    return body + hashlib.sha256(body).digest()


def _checkpoint(header: dict, payload: bytes = b"") -> bytes:
    ck = _checkpoint_module()
    text = json.dumps(header, separators=(",", ":")).encode()
    return _resha(ck.MAGIC + struct.pack("<Q", len(text)) + text + payload)


def _read_checkpoint(tmp_path_factory, data: bytes):
    ck = _checkpoint_module()
    path = tmp_path_factory.mktemp("c", numbered=True) / "c.pgck"
    path.write_bytes(data)
    return ck.read_state(path)


@settings(max_examples=400, **FUZZ)
@given(data=st.data())
def test_checkpoint_mutations_behind_the_digest(tmp_path_factory, checkpoint_bytes, data):
    """A crafted checkpoint carries a valid SHA-256: its JSON and tensor parsers behind it never crash."""
    kind, damaged = data.draw(mutations(checkpoint_bytes[:-32], start=8))
    outcome("checkpoint", f"behind SHA-256 {kind}",
            lambda: _read_checkpoint(tmp_path_factory, _resha(damaged)))


CK_VALUES = st.sampled_from([None, -1, 10 ** 12, 2 ** 63, 1.5, "x", [], {}, [0, 10 ** 12], [-64, 8], [0], True,
                             float("inf"), float("nan"), [[0, 4]], {"a": 1}])


@settings(max_examples=500, **FUZZ)
@given(tensor=CK_VALUES | st.integers(-2, 3), dtype=CK_VALUES | st.sampled_from(["float32", "int8", "bool", "obj"]),
       shape=CK_VALUES | st.lists(st.integers(-2, 10 ** 12), max_size=3), kind=st.sampled_from(["__tensor__",
                                                                                             "__ndarray__"]),
       blobs=CK_VALUES | st.lists(st.lists(st.integers(-100, 100), min_size=2, max_size=2), max_size=2),
       payload_bytes=st.integers(0, 16), fmt=st.sampled_from([1, 1, 1, 2, "1", None]))
def test_checkpoint_crafted_headers(tmp_path_factory, tensor, dtype, shape, kind, blobs, payload_bytes, fmt):
    header = {"format": fmt, "meta": {}, "blobs": blobs, "payload_bytes": payload_bytes,
              "state": {"t": {kind: tensor, "dtype": dtype, "shape": shape}}}
    data = _checkpoint(header, bytes(range(payload_bytes)))
    result, out = outcome("checkpoint", "crafted header", lambda: _read_checkpoint(tmp_path_factory, data))
    if result == "ok":  # a tensor or array that loads holds exactly its blob's bytes
        value = out[0]["t"]
        start, size = blobs[tensor]
        nbytes = value.numel() * value.element_size() if isinstance(value, torch.Tensor) else value.nbytes
        assert nbytes == size


@pytest.mark.parametrize("shape", [[], [3], [1 << 20]])
def test_checkpoint_empty_blob_with_a_shape_is_refused(tmp_path_factory, shape):
    """An empty blob for a non-empty shape is refused (it used to load torch.empty(shape): uninitialised memory)."""
    header = {"format": 1, "meta": {}, "blobs": [[0, 0]], "payload_bytes": 0,
              "state": {"t": {"__tensor__": 0, "dtype": "float32", "shape": shape}}}
    result, _ = outcome("checkpoint", "crafted: empty blob, shape", lambda: _read_checkpoint(
        tmp_path_factory, _checkpoint(header)))
    assert result == "refused"


@pytest.mark.parametrize("text", [b"[1, 2]", b'"x"', b"3"])
def test_checkpoint_header_that_is_not_an_object(tmp_path_factory, text):
    """A header that is JSON but not an object is refused (it used to raise AttributeError)."""
    ck = _checkpoint_module()
    data = _resha(ck.MAGIC + struct.pack("<Q", len(text)) + text)
    result, _ = outcome("checkpoint", "crafted: header not an object", lambda: _read_checkpoint(tmp_path_factory,
                                                                                               data))
    assert result == "refused"


@pytest.mark.parametrize("text", [b"[" * 100_000 + b"]" * 100_000, b"{" * 10, b"\xff",
                                  b'{"format":1,"meta":{},"blobs":[],"payload_bytes":0,"state":{"s":[1e999999]}}'])
def test_checkpoint_pathological_header(tmp_path_factory, text):
    ck = _checkpoint_module()
    data = _resha(ck.MAGIC + struct.pack("<Q", len(text)) + text)
    result, _ = outcome("checkpoint", "pathological header", lambda: _read_checkpoint(tmp_path_factory, data))
    assert result == "refused" or text.endswith(b"}}")
