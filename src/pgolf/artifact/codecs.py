"""Byte codecs for the artifact payload: a registry of exact, deterministic compress/decompress pairs.

`CODECS` maps a codec name (stored in the artifact header) to a `Codec(compress, decompress)`:
`compress(data: bytes, level: int, layout) -> bytes` and `decompress(blob: bytes, layout) -> bytes`, where `layout`
lists the arrays inside `data` (`Segment`s: tensor, key, storage scheme, group, dtype, shape, offset, nbytes). A
codec's blob must be self-contained (decoding needs nothing but the blob), compression must be deterministic for a
given library version, and decoding must be strict: truncated input or trailing bytes are errors, never silently
accepted. Decoders raise `PgolfError`; the container adds the file name.

Codecs here:

- `none`: identity (for inspection and tests).
- `zlib`: the baseline's compressor (docs/rules.md#artifact-accounting: `zlib.compress(level=9)`), a standard zlib
stream.
- `lzma`: LZMA2 with preset `level` (0-9) in the raw format (no .xz container: the artifact's CRC32 already
  guards the bytes, and the xz framing would cost ~60 bytes). LZMA at preset 9 is what records used from 03-25
  on (docs/rules.md#compressors). Decoding uses a 64 MiB window, the largest any preset writes, so the level need not be
  stored.
- `zstd`: one Zstandard frame at `level` 0-22 (0: zstd's default, 3; the 03-19/03-20 records used 22), no
  checksum.
- `brotli`: Brotli at quality `level` 0-11, window 2**24 (`lgwin` 24; the records' brotli-11).
- `bshf-brotli`: every multi-byte array (fp16 scales, fp32 passthrough) split into byte planes
  (`transforms.byte_shuffle`, the idea of PR #1089), then brotli at quality `level`. int8 arrays are unchanged.
- `ans`: the quantized integers entropy-coded by rANS, one stream per tensor group with 1, 2 or 4 column classes,
  everything else byte-shuffled into one brotli blob at quality `level` 0-11 (`ans_container`, which documents the
  blob).
- `ans2`: `ans` with a context model per stream (`ans2_context`): row classes x column classes and row references
  (`ans_container`).

Layout-aware codecs (`bshf-brotli`, `ans`, `ans2`) read `layout` on both sides; the container derives the same one
from the tensor table on load, so nothing about it is stored. The row-reordering and transposition transforms
(`transforms`) are what the record's lrzip stage needs; `ans2` gets their effect from row references instead (no
permutation to store) and uses neither.

New codecs register here by adding an entry; the container format does not change because the header names the
codec and the payload is an opaque blob.
"""

from __future__ import annotations

import lzma
import zlib
from typing import Callable, NamedTuple

from pgolf.artifact.ans_container import ans2_compress, ans2_decompress, ans_compress, ans_decompress
# Each codec's level range and the checks, torch- and numpy-free for pgolf.options (check_codec re-exported).
from pgolf.artifact.choices import LEVELS, check_codec, check_level as _check_level  # noqa: F401
# Segment is re-exported: the layout vocabulary belongs to the registry's interface (`format` imports it here).
from pgolf.artifact.codec_base import (Layout, Segment, from_brotli, itemsize, layout_pieces, room,  # noqa: F401
                                       to_brotli)
from pgolf.artifact.transforms import byte_shuffle, byte_unshuffle
from pgolf.errors import PgolfError, choose, require

# Largest LZMA2 dictionary of any preset (preset 8 and 9 use 64 MiB); decoding with it reads every preset's output.
_LZMA_DICT_BYTES = 64 << 20


class Codec(NamedTuple):
    """A payload codec: `compress(data, level, layout) -> blob`, `decompress(blob, layout, limit) -> data`, exact
    inverses. `limit` (None: no limit) is the most bytes decoding may produce: a blob that would inflate beyond it is
    a PgolfError raised before more than about that many bytes are allocated (a crafted artifact cannot make the
    loader allocate more than its header's `payload_bytes`)."""

    compress: Callable[[bytes, int, Layout], bytes]
    decompress: Callable[[bytes, Layout, int | None], bytes]


def _none_compress(data: bytes, level: int, layout: Layout = ()) -> bytes:
    return bytes(data)


def _none_decompress(blob: bytes, layout: Layout = (), limit: int | None = None) -> bytes:
    return _within(bytes(blob), limit, "stored")


def _within(out: bytes, limit: int | None, name: str) -> bytes:
    if limit is not None and len(out) > limit:
        raise PgolfError(f"{name} data inflates beyond the {limit:,} bytes the header declares")
    return out


def _zlib_compress(data: bytes, level: int, layout: Layout = ()) -> bytes:
    return zlib.compress(data, _check_level("zlib", level, *LEVELS["zlib"]))


def _strict_stream(name: str, decoder, run, error: type[Exception]) -> bytes:
    """Decode one complete stream with a zlib/lzma decompressor object: corrupt, truncated or trailing data is a
    PgolfError."""
    try:
        out = run()
    except error as exc:
        raise PgolfError(f"{name} data is corrupt ({exc})") from None
    if not decoder.eof:
        raise PgolfError(f"{name} data is truncated")
    if decoder.unused_data:
        raise PgolfError(f"{name} data has {len(decoder.unused_data)} trailing bytes")
    return out


def _zlib_decompress(blob: bytes, layout: Layout = (), limit: int | None = None) -> bytes:
    d = zlib.decompressobj()

    def run() -> bytes:
        out = _within(d.decompress(blob, room(limit)), limit, "zlib")
        return out + d.flush()

    return _strict_stream("zlib", d, run, zlib.error)


def _lzma_compress(data: bytes, level: int, layout: Layout = ()) -> bytes:
    preset = _check_level("lzma", level, *LEVELS["lzma"])
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": preset}])


def _lzma_decompress(blob: bytes, layout: Layout = (), limit: int | None = None) -> bytes:
    d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW,
                              filters=[{"id": lzma.FILTER_LZMA2, "dict_size": _LZMA_DICT_BYTES}])
    return _strict_stream("lzma", d, lambda: _within(d.decompress(blob, room(limit) or -1), limit, "lzma"),
                          lzma.LZMAError)


def _zstd_compress(data: bytes, level: int, layout: Layout = ()) -> bytes:
    level = _check_level("zstd", level, *LEVELS["zstd"])  # 0: zstd's default level (3)
    zstandard = require("zstandard", "the zstd codec")
    return zstandard.ZstdCompressor(level=level, write_checksum=False, write_content_size=True).compress(data)


# A zstd block header (3 bytes) plus one RLE byte stands for up to 128 KiB: output per input byte is below this.
_ZSTD_MAX_RATIO = 1 << 15


def _zstd_decompress(blob: bytes, layout: Layout = (), limit: int | None = None) -> bytes:
    zstandard = require("zstandard", "the zstd codec")
    d = zstandard.ZstdDecompressor().decompressobj()
    parts, made, pos = [], 0, 0
    try:
        while pos < len(blob) and not d.eof:
            # feed no more input than can inflate to the room left (at least 64 bytes: ~2 MiB past the limit at most)
            step = len(blob) if limit is None else max(64, (limit - made) // _ZSTD_MAX_RATIO)
            parts.append(d.decompress(blob[pos:pos + step]))
            pos += step
            made += len(parts[-1])
            if limit is not None and made > limit:
                raise PgolfError(f"zstd data inflates beyond the {limit:,} bytes the header declares")
    except zstandard.ZstdError as exc:
        raise PgolfError(f"zstd data is corrupt ({exc})") from None
    if not d.eof:
        raise PgolfError("zstd data is truncated")
    trailing = len(d.unused_data) + max(0, len(blob) - pos)
    if trailing:
        raise PgolfError(f"zstd data has {trailing} trailing bytes")
    return b"".join(parts)


def _brotli_compress(data: bytes, level: int, layout: Layout = ()) -> bytes:
    return to_brotli(data, _check_level("brotli", level, *LEVELS["brotli"]))


def _brotli_decompress(blob: bytes, layout: Layout = (), limit: int | None = None) -> bytes:
    return from_brotli(blob, limit=limit)


# ---------------------------------------------------------------------------------------- layout-aware codecs

def _shuffled(data: bytes, layout: Layout) -> bytes:
    return b"".join(byte_shuffle(data[a:b], itemsize(seg.dtype)) if seg else data[a:b]
                    for a, b, seg in layout_pieces(len(data), layout))


def _bshf_brotli_compress(data: bytes, level: int, layout: Layout = ()) -> bytes:
    return to_brotli(_shuffled(data, layout), _check_level("bshf-brotli", level, *LEVELS["bshf-brotli"]))


def _bshf_brotli_decompress(blob: bytes, layout: Layout = (), limit: int | None = None) -> bytes:
    raw = from_brotli(blob, limit=limit)
    return b"".join(byte_unshuffle(raw[a:b], itemsize(seg.dtype)) if seg else raw[a:b]
                    for a, b, seg in layout_pieces(len(raw), layout))


def _checked(name: str, compress_: Callable[[bytes, int, Layout], bytes]) -> Callable[[bytes, int, Layout], bytes]:
    """`compress_` behind codec `name`'s level check (the ans container takes an already valid brotli quality)."""
    def checked(data: bytes, level: int, layout: Layout = ()) -> bytes:
        return compress_(data, _check_level(name, level, *LEVELS[name]), layout)
    return checked


CODECS: dict[str, Codec] = {
    "none": Codec(_none_compress, _none_decompress),
    "zlib": Codec(_zlib_compress, _zlib_decompress),
    "lzma": Codec(_lzma_compress, _lzma_decompress),
    "zstd": Codec(_zstd_compress, _zstd_decompress),
    "brotli": Codec(_brotli_compress, _brotli_decompress),
    "bshf-brotli": Codec(_bshf_brotli_compress, _bshf_brotli_decompress),
    "ans": Codec(_checked("ans", ans_compress), ans_decompress),
    "ans2": Codec(_checked("ans2", ans2_compress), ans2_decompress),
}


def get_codec(name: str) -> Codec:
    """The registered codec `name`; PgolfError naming the known ones otherwise."""
    return choose(CODECS, name, "codec")


def compress(name: str, data: bytes, level: int = 9, layout: Layout = ()) -> bytes:
    """Compress `data` with codec `name` at `level`; `layout` describes the arrays in `data` (may be empty)."""
    return get_codec(name).compress(bytes(data), level, layout)


def decompress(name: str, blob: bytes, layout: Layout = (), limit: int | None = None) -> bytes:
    """Decompress a blob written by `compress(name, ..., layout)` with the same layout; PgolfError when it is
    damaged or truncated, or would decode to more than `limit` bytes (None: no limit)."""
    return get_codec(name).decompress(bytes(blob), layout, limit)
