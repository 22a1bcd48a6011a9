"""Exactly invertible rearrangements of payload bytes that make them easier for a compressor; no bytes are added.

- Byte shuffle (PR #1089's `BSHF` stride transposition, docs/rules.md#compressors): an array of k-byte items becomes k
byte
  planes (all first bytes, then all second bytes, ...). fp16 scales' exponent bytes are far more regular than their
  mantissa bytes; interleaved, a byte compressor sees noise.
- Matrix transposition (1.0611's per-group compressor): a 2-D array stored column-major, so a context compressor sees
  one input channel's weights across all output rows in a run.
- Row reordering (same record): a greedy nearest-neighbour walk over the rows by L1 distance, so similar rows sit
  next to each other; the permutation travels along as uint16 (uint32 beyond 65,536 rows).

Order-0 entropy coding is blind to order, so only the byte compressors profit from the last two; byte shuffling helps
any byte compressor on multi-byte arrays.
"""

from __future__ import annotations

import numpy as np

from pgolf.errors import PgolfError


# ----------------------------------------------------------------------------------------------------- byte shuffle

def byte_shuffle(data: bytes, itemsize: int) -> bytes:
    """Split `data` (items of `itemsize` bytes) into byte planes; a tail shorter than one item is kept at the end."""
    if itemsize <= 1 or len(data) < 2 * itemsize:
        return bytes(data)
    whole = len(data) - len(data) % itemsize
    planes = np.frombuffer(data, dtype=np.uint8, count=whole).reshape(-1, itemsize).T
    return planes.tobytes() + bytes(data[whole:])


def byte_unshuffle(data: bytes, itemsize: int) -> bytes:
    """Inverse of `byte_shuffle`."""
    if itemsize <= 1 or len(data) < 2 * itemsize:
        return bytes(data)
    whole = len(data) - len(data) % itemsize
    items = np.frombuffer(data, dtype=np.uint8, count=whole).reshape(itemsize, -1).T
    return items.tobytes() + bytes(data[whole:])


# ---------------------------------------------------------------------------------------------------- transposition

def _matrix(data: bytes, shape: tuple[int, int], itemsize: int) -> np.ndarray:
    rows, cols = shape
    if rows * cols * itemsize != len(data):
        raise PgolfError(f"{len(data):,} bytes are not a {rows}x{cols} matrix of {itemsize}-byte items")
    return np.frombuffer(data, dtype=np.dtype(f"V{itemsize}") if itemsize > 1 else np.uint8).reshape(rows, cols)


def transpose(data: bytes, shape: tuple[int, int], itemsize: int = 1) -> bytes:
    """A row-major `shape` matrix's bytes in column-major order."""
    return _matrix(data, shape, itemsize).T.tobytes()


def untranspose(data: bytes, shape: tuple[int, int], itemsize: int = 1) -> bytes:
    """Inverse of `transpose` (`shape` is the original, row-major shape)."""
    rows, cols = shape
    return _matrix(data, (cols, rows), itemsize).T.tobytes()


# ----------------------------------------------------------------------------------------------------- row ordering

def nearest_neighbour_order(matrix: np.ndarray) -> np.ndarray:
    """A permutation of the rows: start at row 0, then repeatedly go to the closest unvisited row by L1 distance
    (ties: the lowest index). O(rows^2 * cols); meant for quantized integer matrices."""
    rows = np.asarray(matrix)
    if rows.ndim != 2:
        raise ValueError(f"row ordering needs a 2-D array, got shape {rows.shape}")
    n = rows.shape[0]
    if n <= 2:
        return np.arange(n, dtype=np.int64)
    work = rows.astype(np.int32 if rows.dtype.kind in "iub" else np.float64)
    remaining = np.arange(1, n)
    order = np.empty(n, dtype=np.int64)
    order[0] = current = 0
    for step in range(1, n):
        dist = np.abs(work[remaining] - work[current]).sum(axis=1)
        pick = int(np.argmin(dist))
        current = int(remaining[pick])
        order[step] = current
        remaining = np.delete(remaining, pick)
    return order


def permutation_dtype(n: int) -> np.dtype:
    return np.dtype("<u2") if n <= 1 << 16 else np.dtype("<u4")


def permutation_bytes(order: np.ndarray) -> bytes:
    """A permutation of range(n), compactly: uint16 little-endian (uint32 beyond 65,536 entries)."""
    return np.asarray(order).astype(permutation_dtype(len(order))).tobytes()


def read_permutation(blob: bytes, n: int) -> np.ndarray:
    """Parse `permutation_bytes` output for `n` rows; PgolfError unless it is exactly a permutation of range(n)."""
    dtype = permutation_dtype(n)
    if len(blob) != n * dtype.itemsize:
        raise PgolfError(f"row permutation is {len(blob):,} bytes, expected {n * dtype.itemsize:,}")
    order = np.frombuffer(blob, dtype=dtype).astype(np.int64)
    if n and not np.array_equal(np.sort(order), np.arange(n)):
        raise PgolfError("row permutation is not a permutation")
    return order


def reorder_rows(matrix: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Rows in the walk's order."""
    return np.ascontiguousarray(np.asarray(matrix)[order])


def restore_rows(reordered: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Inverse of `reorder_rows`."""
    out = np.empty_like(reordered)
    out[order] = reordered
    return out
