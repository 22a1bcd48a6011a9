"""Byte codecs for the artifact payload: a registry of exact, deterministic compress/decompress pairs.

`CODECS` maps a codec name (stored in the artifact header) to a `Codec(compress, decompress)`:
`compress(data: bytes, level: int, layout) -> bytes` and `decompress(blob: bytes, layout) -> bytes`, where `layout`
lists the arrays inside `data` (`Segment`s: tensor, key, scheme, group, dtype, shape, offset, nbytes). A codec's blob must be
self-contained (decoding needs nothing but the blob), compression must be deterministic for a given library
version, and decoding must be strict: truncated input or trailing bytes are errors, never silently accepted.
Decoders raise `PgolfError`; the container adds the file name.

Codecs here:

- `none`: identity (for inspection and tests).
- `zlib`: the baseline's compressor (CHALLENGE.md 3.1-3.2: `zlib.compress(level=9)`), a standard zlib stream.
- `lzma`: LZMA2 with preset `level` (0-9) in the raw format (no .xz container: the artifact's CRC32 already
  guards the bytes, and the xz framing would cost ~60 bytes). LZMA at preset 9 is what records used from 03-25
  on (CHALLENGE.md 3.4). Decoding uses a 64 MiB window, the largest any preset writes, so the level need not be
  stored.

Later codecs (zstd-22, byte-shuffle + brotli-11 from PR #1089, entropy coders; CHALLENGE.md 3.4) register here by
adding an entry; the container format does not change because the header names the codec and the payload is an
opaque blob.
"""

from __future__ import annotations

import lzma
import zlib
from typing import Callable, NamedTuple, Sequence

from pgolf.errors import PgolfError

# Largest LZMA2 dictionary of any preset (preset 8 and 9 use 64 MiB); decoding with it reads every preset's output.
_LZMA_DICT_BYTES = 64 << 20


class Segment(NamedTuple):
    """Where one stored array lies in the uncompressed payload, and what it is.

    The container derives the layout from the tensor table, which it decodes before the payload, so a codec may
    use it on both sides (to entropy-code integer streams per group, transpose matrices, shuffle bytes) without
    storing it again. Byte-oriented codecs ignore it.
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


class Codec(NamedTuple):
    """A payload codec: `compress(data, level, layout) -> blob`, `decompress(blob, layout) -> data`, exact inverses."""

    compress: Callable[[bytes, int, Layout], bytes]
    decompress: Callable[[bytes, Layout], bytes]


def _check_level(codec: str, level: int, lo: int, hi: int) -> int:
    if isinstance(level, bool) or not isinstance(level, int) or not lo <= level <= hi:
        raise PgolfError(f"codec {codec}: level must be an integer {lo}..{hi}, got {level!r}")
    return level


def _none_compress(data: bytes, level: int, layout: Layout = ()) -> bytes:
    return bytes(data)


def _none_decompress(blob: bytes, layout: Layout = ()) -> bytes:
    return bytes(blob)


def _zlib_compress(data: bytes, level: int, layout: Layout = ()) -> bytes:
    return zlib.compress(data, _check_level("zlib", level, 0, 9))


def _zlib_decompress(blob: bytes, layout: Layout = ()) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(blob) + d.flush()
    except zlib.error as exc:
        raise PgolfError(f"zlib data is corrupt ({exc})") from None
    if not d.eof:
        raise PgolfError("zlib data is truncated")
    if d.unused_data:
        raise PgolfError(f"zlib data has {len(d.unused_data)} trailing bytes")
    return out


def _lzma_compress(data: bytes, level: int, layout: Layout = ()) -> bytes:
    preset = _check_level("lzma", level, 0, 9)
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": preset}])


def _lzma_decompress(blob: bytes, layout: Layout = ()) -> bytes:
    d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW,
                              filters=[{"id": lzma.FILTER_LZMA2, "dict_size": _LZMA_DICT_BYTES}])
    try:
        out = d.decompress(blob)
    except lzma.LZMAError as exc:
        raise PgolfError(f"lzma data is corrupt ({exc})") from None
    if not d.eof:
        raise PgolfError("lzma data is truncated")
    if d.unused_data:
        raise PgolfError(f"lzma data has {len(d.unused_data)} trailing bytes")
    return out


CODECS: dict[str, Codec] = {
    "none": Codec(_none_compress, _none_decompress),
    "zlib": Codec(_zlib_compress, _zlib_decompress),
    "lzma": Codec(_lzma_compress, _lzma_decompress),
}


def get_codec(name: str) -> Codec:
    """The registered codec `name`; PgolfError naming the known ones otherwise."""
    codec = CODECS.get(name) if isinstance(name, str) else None
    if codec is None:
        raise PgolfError(f"unknown codec {name!r} (known: {', '.join(sorted(CODECS))})")
    return codec


def compress(name: str, data: bytes, level: int = 9, layout: Layout = ()) -> bytes:
    """Compress `data` with codec `name` at `level`; `layout` describes the arrays in `data` (may be empty)."""
    return get_codec(name).compress(bytes(data), level, layout)


def decompress(name: str, blob: bytes, layout: Layout = ()) -> bytes:
    """Decompress a blob written by `compress(name, ..., layout)` with the same layout; PgolfError when it is
    damaged or truncated."""
    return get_codec(name).decompress(bytes(blob), layout)
