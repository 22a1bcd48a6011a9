"""pgolf's artifact container: self-describing, checksummed, and never unpickled.

Layout (little-endian):

    offset  size  field
    0       4     magic b"PGLF"
    4       1     format version (1)
    5       4     H = length of the compressed header
    9       H     header: zlib-9 compressed UTF-8 JSON (codec, config, tokenizer, tensor table, meta)
    9+H     P     payload: every array's raw little-endian bytes in table order, compressed with the header's codec
    end-4   4     CRC32 of all bytes before it

The tensor table lists for each tensor its name, shape, original dtype, storage scheme and its arrays (key, dtype,
shape, offset and length in the uncompressed payload). Array dtypes are whitelisted names; nothing is evaluated,
so loading a stranger's artifact cannot execute code. CRC32 detects every single flipped byte (any burst of up to
32 bits), and a damaged file is refused before anything is decoded.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pgolf.artifact.codecs import compress, decompress, get_codec
from pgolf.errors import PgolfError
from pgolf.fileio import atomic_write_bytes
from pgolf.quant.schemes import SCHEME_BITS, QuantizedModel, QuantizedTensor, dequantize_state_dict

MAGIC = b"PGLF"
FORMAT_VERSION = 1
CAP_BYTES = 16_000_000
_PREFIX = struct.Struct("<4sBI")
ARRAY_DTYPES = {"int8", "uint8", "int16", "uint16", "int32", "int64", "float16", "float32", "float64", "bool"}


@dataclass
class Artifact:
    header: dict
    quantized: QuantizedModel
    file_bytes: int

    @property
    def config(self) -> dict:
        return self.header["config"]

    @property
    def tokenizer(self) -> dict:
        return self.header["tokenizer"]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dequantize_state_dict(self.quantized)


def _table_and_payload(qm: QuantizedModel) -> tuple[list[dict], bytes]:
    table, chunks, offset = [], [], 0
    for qt in qm.tensors:
        arrays = []
        for key, arr in qt.arrays.items():
            arr = np.ascontiguousarray(arr)
            dtype = arr.dtype.name
            if dtype not in ARRAY_DTYPES:
                raise PgolfError(f"tensor {qt.name}: cannot store array dtype {dtype}")
            raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            arrays.append({"key": key, "dtype": dtype, "shape": list(arr.shape), "offset": offset,
                           "nbytes": len(raw)})
            chunks.append(raw)
            offset += len(raw)
        table.append({"name": qt.name, "shape": list(qt.shape), "dtype": qt.dtype, "scheme": qt.scheme,
                      "arrays": arrays})
    return table, b"".join(chunks)


def encode_artifact(qm: QuantizedModel, *, config: dict, tokenizer: dict, codec: str = "zlib", level: int = 9,
                    meta: dict | None = None) -> bytes:
    """The artifact's bytes (deterministic for the same input)."""
    get_codec(codec)
    table, payload = _table_and_payload(qm)
    header = {"format_version": FORMAT_VERSION, "codec": codec, "level": level, "config": config,
              "tokenizer": tokenizer, "tensors": table, "payload_bytes": len(payload), "meta": meta or {}}
    header_blob = zlib.compress(json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8"), 9)
    body = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_blob)) + header_blob + compress(codec, payload, level)
    return body + struct.pack("<I", zlib.crc32(body))


def save_artifact(path: str | Path, qm: QuantizedModel, *, config: dict, tokenizer: dict, codec: str = "zlib",
                  level: int = 9, meta: dict | None = None) -> int:
    """Write the artifact atomically; returns its size in bytes."""
    data = encode_artifact(qm, config=config, tokenizer=tokenizer, codec=codec, level=level, meta=meta)
    atomic_write_bytes(path, data)
    return len(data)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PgolfError(f"{path}: artifact file is missing") from None
    except IsADirectoryError:
        raise PgolfError(f"{path}: is a directory, not an artifact file") from None
    except OSError as exc:
        raise PgolfError(f"{path}: cannot read artifact: {exc.strerror}") from None


def _parse_header(path: Path, data: bytes) -> tuple[dict, int]:
    if len(data) < _PREFIX.size + 4:
        raise PgolfError(f"{path}: truncated artifact ({len(data)} bytes)")
    magic, version, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise PgolfError(f"{path}: not a pgolf artifact (bad magic)")
    if zlib.crc32(data[:-4]) != struct.unpack("<I", data[-4:])[0]:
        raise PgolfError(f"{path}: artifact is damaged or truncated: checksum mismatch")
    if version != FORMAT_VERSION:
        raise PgolfError(f"{path}: unsupported artifact format version {version} (this pgolf reads {FORMAT_VERSION})")
    end = _PREFIX.size + header_len
    if end > len(data) - 4:
        raise PgolfError(f"{path}: truncated artifact: header runs past the end")
    try:
        header = json.loads(zlib.decompress(data[_PREFIX.size:end]).decode("utf-8"))
        for key in ("codec", "config", "tokenizer", "tensors", "payload_bytes"):
            header[key]
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise PgolfError(f"{path}: artifact header is invalid ({type(exc).__name__})") from None
    return header, end


def load_artifact(path: str | Path) -> Artifact:
    """Read and validate an artifact (checksum, header, payload size, every array's bounds)."""
    path = Path(path)
    data = _read(path)
    header, start = _parse_header(path, data)
    payload = _decompress_checked(path, str(header["codec"]), data[start:-4])
    if len(payload) != header["payload_bytes"]:
        raise PgolfError(f"{path}: payload is {len(payload)} bytes, header says {header['payload_bytes']}")
    tensors = []
    try:
        for entry in header["tensors"]:
            arrays = {}
            for a in entry["arrays"]:
                if a["dtype"] not in ARRAY_DTYPES:
                    raise PgolfError(f"{path}: tensor {entry['name']}: array dtype {a['dtype']!r} is not allowed")
                lo, n = int(a["offset"]), int(a["nbytes"])
                dtype = np.dtype(a["dtype"]).newbyteorder("<")
                count = int(np.prod(a["shape"], dtype=np.int64))
                if lo < 0 or n != count * dtype.itemsize or lo + n > len(payload):
                    raise PgolfError(f"{path}: tensor {entry['name']}: array {a['key']} is out of bounds")
                arrays[a["key"]] = np.frombuffer(payload, dtype=dtype, count=count, offset=lo).reshape(a["shape"])
            if entry["scheme"] not in SCHEME_BITS:
                raise PgolfError(f"{path}: tensor {entry['name']}: unknown scheme {entry['scheme']!r}")
            tensors.append(QuantizedTensor(entry["name"], tuple(entry["shape"]), entry["dtype"], entry["scheme"],
                                           arrays))
    except (KeyError, TypeError, ValueError) as exc:
        raise PgolfError(f"{path}: artifact tensor table is invalid ({type(exc).__name__}: {exc})") from None
    return Artifact(header, QuantizedModel(tensors), len(data))


def _decompress_checked(path: Path, codec: str, blob: bytes) -> bytes:
    try:
        return decompress(codec, blob)
    except PgolfError as exc:
        raise PgolfError(f"{path}: {exc}") from None


def check_cap(artifact_bytes: int, code_bytes: int, path: str | Path) -> int:
    """Total submission bytes; refuses a total above the decimal 16,000,000-byte cap."""
    total = artifact_bytes + code_bytes
    if total > CAP_BYTES:
        raise PgolfError(f"{path}: artifact over the cap: {artifact_bytes:,} + code {code_bytes:,} = {total:,} bytes "
                         f"> {CAP_BYTES:,}")
    return total


def describe_artifact(path: str | Path) -> list[dict]:
    """One row per tensor (scheme, bits, stored bytes, bytes when compressed alone) and a totals row."""
    art = load_artifact(path)
    codec, level = art.header["codec"], int(art.header.get("level", 9))
    rows = []
    for qt in art.quantized.tensors:
        raw = b"".join(np.ascontiguousarray(a).tobytes() for a in qt.arrays.values())
        rows.append({"name": qt.name, "shape": list(qt.shape), "scheme": qt.scheme, "bits": SCHEME_BITS[qt.scheme],
                     "codec": codec, "stored_bytes": len(raw), "compressed_alone": len(compress(codec, raw, level))})
    rows.append({"name": "TOTAL", "shape": [], "scheme": "", "bits": 0, "codec": codec,
                 "stored_bytes": sum(r["stored_bytes"] for r in rows),
                 "compressed_alone": sum(r["compressed_alone"] for r in rows), "file_bytes": art.file_bytes})
    return rows


def format_inspect_table(rows: list[dict]) -> str:
    head = ("tensor", "shape", "scheme", "bits", "codec", "stored", "compressed")
    body = [(r["name"], "x".join(map(str, r["shape"])) or "-", r["scheme"] or "-", str(r["bits"] or "-"), r["codec"],
             f"{r['stored_bytes']:,}", f"{r['compressed_alone']:,}") for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i < 5 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in [head, *body]]
    total = rows[-1]
    lines.append(f"file: {total.get('file_bytes', 0):,} bytes (tensors compressed one by one sum to "
                 f"{total['compressed_alone']:,}; the file compresses them together)")
    return "\n".join(lines)
