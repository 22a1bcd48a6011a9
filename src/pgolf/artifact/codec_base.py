"""What the payload codecs share: where arrays lie in the payload (`Segment`, `layout_pieces`) and brotli with
strict, bounded decoding.

A module of its own so that the registry (`codecs`) and the `ans`/`ans2` container (`ans_container`), which the
registry lists, both build on it without importing each other (the import graph stays acyclic,
tests/test_architecture.py). `codecs` re-exports `Segment`, `Layout` and `layout_pieces`.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple, Sequence

import numpy as np

from pgolf.errors import PgolfError, require

# Brotli window: 2**24 bytes, the largest of the standard format (what records used with brotli-11).
BROTLI_LGWIN = 24


class Segment(NamedTuple):
    """Where one stored array lies in the uncompressed payload, and what it is.

    The container derives the layout from the tensor table, which it decodes before the payload, so a codec may
    use it on both sides (to entropy-code integer streams per group, transpose matrices, shuffle bytes) without
    storing it again. Byte-oriented codecs ignore it. `scheme` is the tensor's storage scheme
    (`pgolf.quant.schemes.SCHEMES`), not the export recipe `quant.scheme`.
    """

    tensor: str
    key: str
    scheme: str
    group: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


Layout = Sequence[Segment]


def itemsize(dtype: str) -> int:
    """Bytes per element of an array dtype name (1 for names numpy does not know), the byte-shuffle width."""
    try:
        return np.dtype(dtype).itemsize
    except TypeError:
        return 1


def layout_pieces(total: int, layout: Layout) -> Iterator[tuple[int, int, Segment | None]]:
    """(start, end, segment) covering [0, total) in order; bytes no segment describes come as segment None.
    PgolfError when the layout's arrays overlap, run backwards or past `total`."""
    pos = 0
    for seg in layout:
        if seg.offset < pos or seg.nbytes < 0 or seg.offset + seg.nbytes > total:
            raise PgolfError(f"array {seg.tensor}.{seg.key} (offset {seg.offset:,}, {seg.nbytes:,} bytes) does not "
                             f"fit a {total:,}-byte payload in order")
        if seg.offset > pos:
            yield pos, seg.offset, None
        yield seg.offset, seg.offset + seg.nbytes, seg
        pos = seg.offset + seg.nbytes
    if pos < total:
        yield pos, total, None


def room(limit: int | None) -> int:
    """A decoder output bound one byte past `limit`, so that an oversized stream shows (0: unbounded)."""
    return 0 if limit is None else limit + 1


def to_brotli(data: bytes, quality: int) -> bytes:
    """Brotli at `quality` with the records' window (`BROTLI_LGWIN`); the caller has checked the quality."""
    return require("brotli", "the brotli codecs").compress(data, quality=quality, lgwin=BROTLI_LGWIN)


def from_brotli(blob: bytes, what: str = "brotli data", limit: int | None = None) -> bytes:
    """Decode one complete brotli stream: corrupt, truncated or trailing data, or more than `limit` bytes out, is a
    PgolfError naming `what`."""
    brotli = require("brotli", "the brotli codecs")
    d = brotli.Decompressor()
    try:
        out = d.process(blob, output_buffer_limit=room(limit))  # refuses bytes after the end of the stream
    except brotli.error:
        raise PgolfError(f"{what} is corrupt or has trailing bytes") from None
    if limit is not None and len(out) > limit:
        raise PgolfError(f"{what} inflates beyond the {limit:,} bytes the header declares")
    if not d.is_finished():
        raise PgolfError(f"{what} is truncated")
    return out
