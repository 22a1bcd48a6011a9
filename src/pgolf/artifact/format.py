"""pgolf's artifact container: self-describing, checksummed, deterministic, and never unpickled.

The baseline (docs/rules.md#baseline-int8-export) pickles a dict with `torch.save` and zlib-compresses it; loading
such a file runs the
unpickler, which can execute code. This container holds only JSON and raw typed arrays (docs/artifact.md):

    offset   size  field (integers little-endian)
    0        4     magic b"PGLF"
    4        1     format version (1)
    5        4     H: byte length of the compressed header (uint32)
    9        H     header: UTF-8 JSON (sorted keys, no spaces), zlib level 9
    9+H      P     payload: every array's raw little-endian bytes, concatenated in table order, compressed with
                   the header's codec (P = file size - 13 - H)
    9+H+P    4     CRC32 (zlib.crc32) of bytes [0, 9+H+P)

Fixed overhead is 13 bytes; the rest is the compressed header (config, tokenizer, tensor table, meta).

The header holds `format_version`, `codec`, `level`, `config`, `tokenizer`, `tensors` (a list of {name, shape,
dtype, scheme, arrays: [{key, dtype, shape, offset, nbytes}]}), `payload_bytes` (uncompressed) and `meta`. Array and
tensor dtypes are names looked up in whitelists, schemes and codecs are names looked up in registries; nothing is
evaluated, so loading a stranger's artifact cannot execute code. Loading checks, in order: size, magic, version,
header bounds, the CRC (every single damaged byte and every burst of up to 32 bits is caught before anything is
decoded), the header's JSON and types, the payload's size, and that arrays tile the payload exactly in table order.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pgolf.artifact.codecs import Segment, compress, decompress, get_codec
from pgolf.quant.groups import tensor_group
from pgolf.errors import PgolfError
from pgolf.fileio import atomic_write_bytes
from pgolf.quant.schemes import (ARRAY_DTYPES, SCHEMES, TENSOR_DTYPES, QuantizedModel, QuantizedTensor,
                                 check_tensor, dequantize_state_dict, tensor_bits)

MAGIC = b"PGLF"
FORMAT_VERSION = 1
CAP_BYTES = 16_000_000
HEADER_LEVEL = 9
MAX_HEADER_BYTES = 64 << 20  # refuse headers that decompress beyond this (a crafted zlib bomb)
# Refuse payloads declared beyond this before decoding (a 16 MB artifact's payload is tens of MB; a crafted header
# must not make the loader allocate terabytes), and never let the codec inflate past the declared size.
MAX_PAYLOAD_BYTES = 1 << 30
_PREFIX = struct.Struct("<4sBI")
_CRC = struct.Struct("<I")
FIXED_OVERHEAD = _PREFIX.size + _CRC.size  # 13 bytes


@dataclass
class Artifact:
    """A loaded, validated artifact. `state_dict()` dequantizes (original dtypes and shapes)."""

    path: str
    header: dict
    quantized: QuantizedModel
    file_bytes: int
    header_bytes: int = 0  # compressed header length H

    @property
    def config(self) -> dict:
        return self.header["config"]

    @property
    def tokenizer(self) -> dict:
        return self.header["tokenizer"]

    @property
    def meta(self) -> dict:
        return self.header["meta"]

    @property
    def codec(self) -> str:
        return self.header["codec"]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dequantize_state_dict(self.quantized)


# ------------------------------------------------------------------------------------------------------------ write

def _table_and_payload(qm: QuantizedModel) -> tuple[list[dict], bytes]:
    table: list[dict] = []
    chunks: list[bytes] = []
    offset = 0
    seen: set[str] = set()
    for qt in qm.tensors:
        if not isinstance(qt.name, str) or qt.name in seen:
            raise PgolfError(f"tensor {qt.name!r}: duplicate or invalid tensor name")
        seen.add(qt.name)
        problem = check_tensor(qt)
        if problem:
            raise PgolfError(f"tensor {qt.name}: {problem}")
        arrays = []
        for key, arr in qt.arrays.items():
            if not isinstance(key, str):
                raise PgolfError(f"tensor {qt.name}: array key {key!r} is not a string")
            dtype = arr.dtype.name
            raw = np.require(arr, dtype=ARRAY_DTYPES[dtype], requirements="C").tobytes()
            arrays.append({"key": key, "dtype": dtype, "shape": [int(d) for d in arr.shape], "offset": offset,
                           "nbytes": len(raw)})
            chunks.append(raw)
            offset += len(raw)
        table.append({"name": qt.name, "shape": [int(d) for d in qt.shape], "dtype": qt.dtype, "scheme": qt.scheme,
                      "arrays": arrays})
    return table, b"".join(chunks)


def payload_layout(table: list[dict]) -> list[Segment]:
    """The codec's view of the payload: one `Segment` per stored array, from a (validated) tensor table."""
    return [Segment(t["name"], a["key"], t["scheme"], tensor_group(t["name"]), a["dtype"], tuple(a["shape"]),
                    a["offset"], a["nbytes"]) for t in table for a in t["arrays"]]


def encode_artifact(qm: QuantizedModel, *, config: dict, tokenizer: dict, codec: str = "zlib", level: int = 9,
                    meta: dict | None = None) -> bytes:
    """The artifact's bytes; identical bytes for identical input."""
    get_codec(codec)
    for label, value in (("config", config), ("tokenizer", tokenizer), ("meta", meta or {})):
        if not isinstance(value, dict):
            raise PgolfError(f"artifact {label} must be a dict, got {type(value).__name__}")
    table, payload = _table_and_payload(qm)
    header = {"format_version": FORMAT_VERSION, "codec": codec, "level": level, "config": config,
              "tokenizer": tokenizer, "tensors": table, "payload_bytes": len(payload), "meta": meta or {}}
    try:
        text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise PgolfError(f"artifact header is not JSON-serializable: {exc}") from None
    header_blob = zlib.compress(text.encode("utf-8"), HEADER_LEVEL)
    blob = compress(codec, payload, level, payload_layout(table))
    body = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_blob)) + header_blob + blob
    return body + _CRC.pack(zlib.crc32(body))


def save_artifact(path: str | Path, qm: QuantizedModel, *, config: dict, tokenizer: dict, codec: str = "zlib",
                  level: int = 9, meta: dict | None = None) -> int:
    """Write the artifact atomically; returns its size in bytes."""
    data = encode_artifact(qm, config=config, tokenizer=tokenizer, codec=codec, level=level, meta=meta)
    atomic_write_bytes(path, data)
    return len(data)


# ------------------------------------------------------------------------------------------------------------- read

def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PgolfError(f"{path}: artifact file not found (missing)") from None
    except IsADirectoryError:
        raise PgolfError(f"{path}: is a directory, not an artifact file") from None
    except OSError as exc:
        raise PgolfError(f"{path}: cannot read artifact: {exc.strerror or exc}") from None


def _is_int(x: Any) -> bool:
    return type(x) is int  # JSON true/false are ints in Python; refuse them


def _inflate_header(blob: bytes) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(blob, MAX_HEADER_BYTES)
    if d.unconsumed_tail:
        raise ValueError(f"header inflates beyond {MAX_HEADER_BYTES} bytes")
    if not d.eof or d.unused_data:
        raise ValueError("header is not one complete zlib stream")
    return out


def _split(path: str, data: bytes) -> tuple[dict, int, int]:
    """Check framing and CRC; return (header, header_len, payload_start)."""
    if len(data) < FIXED_OVERHEAD:
        if not MAGIC.startswith(data[:4]):
            raise PgolfError(f"{path}: not a pgolf artifact (bad magic)")
        raise PgolfError(f"{path}: truncated artifact ({len(data)} bytes, the smallest is {FIXED_OVERHEAD + 1})")
    magic, version, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise PgolfError(f"{path}: not a pgolf artifact (bad magic)")
    if version != FORMAT_VERSION:
        raise PgolfError(f"{path}: unsupported artifact format version {version} (this pgolf reads version "
                         f"{FORMAT_VERSION}; the file is newer or damaged)")
    start = _PREFIX.size + header_len
    if start > len(data) - _CRC.size:
        raise PgolfError(f"{path}: truncated artifact: the header ({header_len:,} bytes) runs past the end of the "
                         f"{len(data):,}-byte file")
    if zlib.crc32(memoryview(data)[:-_CRC.size]) != _CRC.unpack_from(data, len(data) - _CRC.size)[0]:
        raise PgolfError(f"{path}: artifact is damaged: checksum mismatch")
    try:
        header = json.loads(_inflate_header(data[_PREFIX.size:start]).decode("utf-8"))
    except (zlib.error, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise PgolfError(f"{path}: artifact header is not valid JSON ({type(exc).__name__})") from None
    return header, header_len, start


def _check_header(path: str, header: Any) -> None:
    if not isinstance(header, dict):
        raise PgolfError(f"{path}: artifact header is not a JSON object")
    kinds = {"format_version": _is_int, "codec": lambda v: isinstance(v, str), "level": _is_int,
             "config": lambda v: isinstance(v, dict), "tokenizer": lambda v: isinstance(v, dict),
             "tensors": lambda v: isinstance(v, list), "payload_bytes": lambda v: _is_int(v) and v >= 0,
             "meta": lambda v: isinstance(v, dict)}
    for key, ok in kinds.items():
        if key not in header:
            raise PgolfError(f"{path}: artifact header lacks {key!r}")
        if not ok(header[key]):
            raise PgolfError(f"{path}: artifact header field {key!r} has the wrong type or value")
    if header["payload_bytes"] > MAX_PAYLOAD_BYTES:
        raise PgolfError(f"{path}: artifact header declares a {header['payload_bytes']:,}-byte payload, more than "
                         f"the {MAX_PAYLOAD_BYTES:,} this pgolf loads (damaged or crafted)")
    if header["format_version"] != FORMAT_VERSION:
        raise PgolfError(f"{path}: artifact header says format version {header['format_version']}, the file says "
                         f"{FORMAT_VERSION}")
    try:
        get_codec(header["codec"])
    except PgolfError as exc:
        raise PgolfError(f"{path}: {exc}") from None


def _shape(value: Any) -> tuple[int, ...] | None:
    if not isinstance(value, list) or not all(_is_int(d) and d >= 0 for d in value):
        return None
    return tuple(value)


def _parse_table(path: str, header: dict, payload: bytes | None) -> QuantizedModel | None:
    """Validate the tensor table against the payload (or, with `payload=None`, against the header's
    `payload_bytes` alone, before decompressing) and return the tensors (None without a payload)."""
    payload_len = header["payload_bytes"] if payload is None else len(payload)
    tensors: list[QuantizedTensor] = []
    names: set[str] = set()
    offset = 0
    for i, entry in enumerate(header["tensors"]):
        where = f"{path}: tensor #{i}"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise PgolfError(f"{where}: table entry is not an object with a name")
        name = entry["name"]
        where = f"{path}: tensor {name}"
        if name in names:
            raise PgolfError(f"{where}: listed twice")
        names.add(name)
        shape = _shape(entry.get("shape"))
        if shape is None:
            raise PgolfError(f"{where}: invalid shape {entry.get('shape')!r}")
        if not isinstance(entry.get("dtype"), str) or entry["dtype"] not in TENSOR_DTYPES:
            raise PgolfError(f"{where}: unknown dtype {entry.get('dtype')!r}")
        if not isinstance(entry.get("scheme"), str) or entry["scheme"] not in SCHEMES:
            raise PgolfError(f"{where}: unknown scheme {entry.get('scheme')!r}")
        if not isinstance(entry.get("arrays"), list):
            raise PgolfError(f"{where}: arrays must be a list")
        arrays: dict[str, np.ndarray] = {}
        for a in entry["arrays"]:
            if not isinstance(a, dict) or not isinstance(a.get("key"), str) or a["key"] in arrays:
                raise PgolfError(f"{where}: array entry without a key, or a key listed twice")
            key, a_shape = a["key"], _shape(a.get("shape"))
            if not isinstance(a.get("dtype"), str) or a["dtype"] not in ARRAY_DTYPES:
                raise PgolfError(f"{where}: array {key}: dtype {a.get('dtype')!r} is not allowed")
            if a_shape is None:
                raise PgolfError(f"{where}: array {key}: invalid shape {a.get('shape')!r}")
            if shape == () and a_shape == (1,):
                a_shape = ()  # artifacts written before 2026-11-22 stored 0-d tensors as 1-element arrays
            dtype = ARRAY_DTYPES[a["dtype"]]
            count = math.prod(a_shape)
            lo, n = a.get("offset"), a.get("nbytes")
            if not (_is_int(lo) and _is_int(n)) or n != count * dtype.itemsize:
                raise PgolfError(f"{where}: array {key}: nbytes {n!r} does not match {a['dtype']}{list(a_shape)}")
            if lo != offset or lo + n > payload_len:
                raise PgolfError(f"{where}: array {key}: offset {lo:,} + {n:,} bytes is out of range (expected "
                                 f"offset {offset:,}, payload {payload_len:,} bytes)")
            offset += n
            if payload is None:
                continue
            arr = np.frombuffer(payload, dtype=dtype, count=count, offset=lo).reshape(a_shape)
            if dtype.kind == "b" and count and arr.view(np.uint8).max() > 1:
                raise PgolfError(f"{where}: array {key}: bool values other than 0 and 1")
            arrays[key] = arr
        if payload is None:
            continue
        qt = QuantizedTensor(name, shape, entry["dtype"], entry["scheme"], arrays)
        problem = check_tensor(qt)
        if problem:
            raise PgolfError(f"{where}: {problem}")
        tensors.append(qt)
    if offset != payload_len:
        raise PgolfError(f"{path}: the tensor table covers {offset:,} of the {payload_len:,} payload bytes")
    return None if payload is None else QuantizedModel(tensors)


def decode_artifact(data: bytes, path: str | Path = "<bytes>") -> Artifact:
    """Validate and decode artifact bytes (`path` only labels error messages)."""
    label = str(path)
    header, header_len, start = _split(label, data)
    _check_header(label, header)
    _parse_table(label, header, None)
    try:
        payload = decompress(header["codec"], data[start:-_CRC.size], payload_layout(header["tensors"]),
                             limit=header["payload_bytes"])
    except PgolfError as exc:
        raise PgolfError(f"{label}: payload does not decompress: {exc}") from None
    if len(payload) != header["payload_bytes"]:
        raise PgolfError(f"{label}: payload is {len(payload):,} bytes, the header says {header['payload_bytes']:,}")
    return Artifact(label, header, _parse_table(label, header, payload), len(data), header_len)


def load_artifact(path: str | Path) -> Artifact:
    """Read and validate an artifact file; PgolfError naming the file for anything wrong with it."""
    path = Path(path)
    return decode_artifact(_read(path), path)


# ------------------------------------------------------------------------------------------------- cap and inspect

def check_cap(artifact_bytes: int, code_bytes: int, path: str | Path) -> int:
    """Total submission bytes (artifact + code); PgolfError above the decimal 16,000,000-byte cap
    (docs/rules.md#the-cap)."""
    total = int(artifact_bytes) + int(code_bytes)
    if total > CAP_BYTES:
        raise PgolfError(f"{path}: artifact over the cap: {artifact_bytes:,} + code {code_bytes:,} = {total:,} bytes "
                         f"> {CAP_BYTES:,}")
    return total


def _tensor_layout(qt: QuantizedTensor) -> list[Segment]:
    layout, offset = [], 0
    for key, arr in qt.arrays.items():
        layout.append(Segment(qt.name, key, qt.scheme, tensor_group(qt.name), arr.dtype.name, tuple(arr.shape),
                              offset, int(arr.nbytes)))
        offset += int(arr.nbytes)
    return layout


def describe_artifact(path: str | Path) -> list[dict]:
    """One row per tensor and a final `TOTAL` row, for `pgolf inspect`.

    Tensor rows: name, shape, dtype (original), scheme, bits, stored_bytes (uncompressed arrays) and
    compressed_bytes (that tensor's arrays compressed alone with the artifact's codec and level: an estimate, since
    the file compresses all arrays as one stream). The TOTAL row adds codec, level, payload_bytes,
    payload_compressed_bytes, header_bytes, overhead_bytes (header + 13 fixed) and file_bytes.
    """
    art = load_artifact(path)
    codec, level = art.header["codec"], art.header["level"]
    rows = []
    for qt in art.quantized.tensors:
        raw = b"".join(np.require(a, requirements="C").tobytes() for a in qt.arrays.values())
        rows.append({"name": qt.name, "shape": list(qt.shape), "dtype": qt.dtype, "scheme": qt.scheme,
                     "group": tensor_group(qt.name), "bits": tensor_bits(qt), "stored_bytes": len(raw),
                     "compressed_bytes": len(compress(codec, raw, level, _tensor_layout(qt)))})
    overhead = FIXED_OVERHEAD + art.header_bytes
    rows.append({"name": "TOTAL", "shape": [], "dtype": "", "scheme": "", "bits": None,
                 "stored_bytes": art.header["payload_bytes"],
                 "compressed_bytes": sum(r["compressed_bytes"] for r in rows),
                 "codec": codec, "level": level, "tensors": len(art.quantized.tensors),
                 "payload_bytes": art.header["payload_bytes"], "payload_compressed_bytes": art.file_bytes - overhead,
                 "header_bytes": art.header_bytes, "overhead_bytes": overhead, "file_bytes": art.file_bytes})
    return rows


def _aligned(head: tuple[str, ...], body: list[tuple[str, ...]], right: set[int]) -> list[str]:
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths)))
            .rstrip() for line in [head, *body]]


def format_inspect_table(rows: list[dict]) -> str:
    """Render `describe_artifact` rows as an aligned text table with a byte summary below it."""
    head = ("tensor", "group", "shape", "dtype", "scheme", "bits", "stored", "compressed*")
    body = [(r["name"], r.get("group", "") or "-", "x".join(map(str, r["shape"])) or "-", r["dtype"] or "-",
             r["scheme"] or "-", str(r["bits"]) if r["bits"] else "-", f"{r['stored_bytes']:,}",
             f"{r['compressed_bytes']:,}") for r in rows]
    lines = _aligned(head, body, right={5, 6, 7})
    lines.insert(1, "-" * len(lines[0]))
    if body:
        lines.insert(len(lines) - 1, "-" * len(lines[0]))
    total = rows[-1] if rows and rows[-1].get("name") == "TOTAL" else None
    groups: dict[str, list[int]] = {}
    for r in rows:
        if r["name"] != "TOTAL":
            g = groups.setdefault(r.get("group", "other"), [0, 0, 0, set()])
            g[0] += 1
            g[1] += r["stored_bytes"]
            g[2] += r["compressed_bytes"]
            g[3].add(r["scheme"])
    if groups:
        lines.append("")
        lines += _aligned(("group", "tensors", "schemes", "stored", "compressed*"),
                          [(name, str(n), ",".join(sorted(sch)), f"{st:,}", f"{co:,}")
                           for name, (n, st, co, sch) in sorted(groups.items(), key=lambda kv: -kv[1][2])],
                          right={1, 3, 4})
    if total and "file_bytes" in total:
        lines.append(f"* each tensor compressed alone with {total['codec']}-{total['level']} (an estimate)")
        lines.append(f"file {total['file_bytes']:,} bytes = payload {total['payload_compressed_bytes']:,} "
                     f"({total['payload_bytes']:,} before {total['codec']}) + header {total['header_bytes']:,} + "
                     f"{FIXED_OVERHEAD} fixed")
    return "\n".join(lines)
