"""The challenge's shard format (docs/rules.md#shard-format), read through validated memory maps.

A shard is a header of 256 little-endian int32 (magic 20240520, version 1, token count, zeros) followed by that many
little-endian uint16 token ids; names are `fineweb_{train,val}_NNNNNN.bin`. Readers check magic, version and the exact
file size, so a truncated or foreign file is refused instead of silently training on garbage. Those checks cannot see
token bytes changed in place (same size, valid header): the SHA-256 of each whole file (`shard_sha256`, recorded in
the data manifest by whoever writes the directory) can, and `pgolf data verify` compares them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from pgolf.errors import PgolfError
from pgolf.fileio import atomic_output

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4


def shard_name(split: str, index: int) -> str:
    return f"fineweb_{split}_{index:06d}.bin"


def write_shard(path: str | Path, tokens: Sequence[int] | np.ndarray) -> str:
    """Write one shard atomically; refuses ids that do not fit uint16. Returns the file's SHA-256 (hex), computed
    from the bytes written, so recording it costs no second read."""
    arr = np.asarray(tokens)
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise PgolfError(f"{path}: token ids must be in [0, 65535] (got {int(arr.min())}..{int(arr.max())})")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, arr.size
    digest = hashlib.sha256()
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            for part in (header.tobytes(), arr.astype("<u2", copy=False).tobytes()):
                digest.update(part)
                f.write(part)
    return digest.hexdigest()


def shard_sha256(path: str | Path, chunk: int = 1 << 23) -> str:
    """The SHA-256 (hex) of a whole shard file, header included, read in 8 MiB blocks; one PgolfError if it is
    missing or unreadable."""
    path = Path(path)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
    except FileNotFoundError:
        raise PgolfError(f"{path}: shard file is missing") from None
    except OSError as exc:
        raise PgolfError(f"{path}: cannot read shard: {exc.strerror or exc}") from None
    return digest.hexdigest()


def read_header(path: str | Path) -> int:
    """Validate a shard's header and size; return its token count."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except FileNotFoundError:
        raise PgolfError(f"{path}: shard file is missing") from None
    except OSError as exc:
        raise PgolfError(f"{path}: cannot read shard: {exc.strerror}") from None
    if len(raw) < HEADER_BYTES:
        raise PgolfError(f"{path}: corrupt shard: {size} bytes is shorter than the {HEADER_BYTES}-byte header")
    header = np.frombuffer(raw, dtype="<i4")
    if header[0] != SHARD_MAGIC:
        raise PgolfError(f"{path}: not a challenge shard: bad magic {int(header[0])} (expected {SHARD_MAGIC})")
    if header[1] != SHARD_VERSION:
        raise PgolfError(f"{path}: unsupported shard version {int(header[1])} (expected {SHARD_VERSION})")
    count = int(header[2])
    expected = HEADER_BYTES + 2 * count
    if count < 0 or size != expected:
        kind = "truncated" if size < expected else "oversized"
        raise PgolfError(f"{path}: {kind} shard: header says {count} tokens ({expected} bytes) "
                         f"but the file has {size} bytes")
    return count


def read_shard(path: str | Path) -> np.ndarray:
    """A read-only uint16 memory map of a validated shard's tokens."""
    count = read_header(path)
    if count == 0:
        return np.zeros(0, dtype=np.uint16)
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(count,))


def shard_paths(data_dir: str | Path, split: str) -> list[Path]:
    """The split's shards in order (`fineweb_val_bytes_*` sidecars excluded)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise PgolfError(f"{data_dir}: data directory does not exist")
    files = sorted(p for p in data_dir.glob(f"fineweb_{split}_*.bin") if not p.name.startswith("fineweb_val_bytes_"))
    if not files:
        raise PgolfError(f"{data_dir}: no fineweb_{split}_*.bin shards")
    return files


class ShardWriter:
    """Accumulates documents' tokens into shards of `shard_size` tokens (documents may straddle shards)."""

    def __init__(self, out_dir: str | Path, split: str, shard_size: int = 10**8) -> None:
        if shard_size <= 0:
            raise PgolfError(f"shard size must be positive (got {shard_size})")
        self.out_dir = Path(out_dir)
        self.split = split
        self.shard_size = shard_size
        self.files: list[Path] = []
        self.sha256: dict[str, str] = {}  # file name -> SHA-256 of the whole file, as written
        self.num_tokens = 0
        self._buf = np.empty(shard_size, dtype=np.uint16)
        self._fill = 0

    def add(self, tokens: np.ndarray) -> None:
        tokens = np.asarray(tokens)
        pos = 0
        while pos < len(tokens):
            take = min(len(tokens) - pos, self.shard_size - self._fill)
            self._buf[self._fill:self._fill + take] = tokens[pos:pos + take]
            self._fill += take
            pos += take
            if self._fill == self.shard_size:
                self._flush()
        self.num_tokens += len(tokens)

    def _flush(self) -> None:
        path = self.out_dir / shard_name(self.split, len(self.files))
        self.sha256[path.name] = write_shard(path, self._buf[:self._fill])
        self.files.append(path)
        self._fill = 0

    def close(self) -> list[Path]:
        if self._fill or not self.files:
            self._flush()
        return self.files

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
