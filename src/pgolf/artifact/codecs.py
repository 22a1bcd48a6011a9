"""Byte codecs for the artifact payload: a registry of exact, deterministic compress/decompress pairs.

`CODECS` maps a codec name (stored in the artifact header) to a `Codec(compress, decompress)`:
`compress(data: bytes, level: int, layout) -> bytes` and `decompress(blob: bytes, layout) -> bytes`, where `layout`
lists the arrays inside `data` (`Segment`s: tensor, key, scheme, group, dtype, shape, offset, nbytes). A codec's blob
must be
self-contained (decoding needs nothing but the blob), compression must be deterministic for a given library
version, and decoding must be strict: truncated input or trailing bytes are errors, never silently accepted.
Decoders raise `PgolfError`; the container adds the file name.

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
- `ans`: entropy coding of the quantized integers (arrays keyed "q"/"q..." stored as int8/uint8): one stream per
  tensor group (all layers of one role; also split by scheme, key and dtype). Each stream's columns may be split
  into 2 or 4 classes by their mean |q| (input features of unequal importance leave some columns with smaller
  integers even after per-row scaling); the encoder keeps the class count (1, 2 or 4) with the fewest total bytes,
  stores 2-bit column labels, and codes every class by rANS with its own histogram (`entropy`). Everything else is
  byte-shuffled into one brotli blob at quality `level` 0-11. Blob: b"PANS", varint payload length, varint stream
  count, per non-empty stream: class count, packed labels, per class its model table and coded length; then varint
  side-blob length, the side blob, the coded classes. Bytes that no array describes (an empty layout) go to the
  side blob, so `ans` also works as a plain brotli. Smaller than brotli-11 on int6 weights (docs/BENCHMARKS.md).

- `ans2`: `ans` with a context model per stream (`context`): row classes x column classes chosen by co-clustering,
  and row references, where a row is coded in contexts of its nearest row's values (the long-range stage that the
  1.0611 record's similarity sort + lrzip plays). Same side blob as `ans`. Blob: b"PAN2", varint payload length,
  varint stream count, per non-empty stream its plan and context tables (`context.encode_stream`), varint side-blob
  length, the side blob, the coded contexts. Smallest of the codecs on int6 weights (docs/BENCHMARKS.md).

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
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np

from pgolf.artifact.context import decode_stream, encode_stream, read_stream
from pgolf.artifact.entropy import (ByteReader, decode_symbols, encode_symbols, entropy_bits, fit_model, histogram,
                                    model_bytes, read_model, write_varint)
from pgolf.artifact.transforms import byte_shuffle, byte_unshuffle
from pgolf.errors import PgolfError, choose, require

# Largest LZMA2 dictionary of any preset (preset 8 and 9 use 64 MiB); decoding with it reads every preset's output.
_LZMA_DICT_BYTES = 64 << 20
# Brotli window: 2**24 bytes, the largest of the standard format (what records used with brotli-11).
BROTLI_LGWIN = 24


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
    """A payload codec: `compress(data, level, layout) -> blob`, `decompress(blob, layout, limit) -> data`, exact
    inverses. `limit` (None: no limit) is the most bytes decoding may produce: a blob that would inflate beyond it is
    a PgolfError raised before more than about that many bytes are allocated (a crafted artifact cannot make the
    loader allocate more than its header's `payload_bytes`)."""

    compress: Callable[[bytes, int, Layout], bytes]
    decompress: Callable[[bytes, Layout, int | None], bytes]


# Valid `level` range of each codec (zlib/lzma presets, zstd levels, brotli qualities; `none` ignores it).
LEVELS: dict[str, tuple[int, int]] = {"none": (-(2 ** 31), 2 ** 31), "zlib": (0, 9), "lzma": (0, 9), "zstd": (0, 22),
                                      "brotli": (0, 11), "bshf-brotli": (0, 11), "ans": (0, 11),
                                      "ans2": (0, 11)}


def check_codec(name: str, level: int) -> None:
    """PgolfError unless `name` is a codec and `level` is valid for it (checked when a config is built, so a bad
    pair fails before training rather than at export)."""
    get_codec(name)
    _check_level(name, level, *LEVELS[name])


def _check_level(codec: str, level: int, lo: int, hi: int) -> int:
    if isinstance(level, bool) or not isinstance(level, int) or not lo <= level <= hi:
        raise PgolfError(f"codec {codec}: level must be an integer {lo}..{hi}, got {level!r}")
    return level


def _none_compress(data: bytes, level: int, layout: Layout = ()) -> bytes:
    return bytes(data)


def _none_decompress(blob: bytes, layout: Layout = (), limit: int | None = None) -> bytes:
    return _within(bytes(blob), limit, "stored")


def _within(out: bytes, limit: int | None, name: str) -> bytes:
    if limit is not None and len(out) > limit:
        raise PgolfError(f"{name} data inflates beyond the {limit:,} bytes the header declares")
    return out


def _room(limit: int | None) -> int:
    """A decoder output bound one byte past `limit`, so that an oversized stream shows (0: unbounded)."""
    return 0 if limit is None else limit + 1


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
        out = _within(d.decompress(blob, _room(limit)), limit, "zlib")
        return out + d.flush()

    return _strict_stream("zlib", d, run, zlib.error)


def _lzma_compress(data: bytes, level: int, layout: Layout = ()) -> bytes:
    preset = _check_level("lzma", level, *LEVELS["lzma"])
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": preset}])


def _lzma_decompress(blob: bytes, layout: Layout = (), limit: int | None = None) -> bytes:
    d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW,
                              filters=[{"id": lzma.FILTER_LZMA2, "dict_size": _LZMA_DICT_BYTES}])
    return _strict_stream("lzma", d, lambda: _within(d.decompress(blob, _room(limit) or -1), limit, "lzma"),
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


def _brotli(data: bytes, quality: int) -> bytes:
    return require("brotli", "the brotli codecs").compress(data, quality=quality, lgwin=BROTLI_LGWIN)


def _unbrotli(blob: bytes, what: str = "brotli data", limit: int | None = None) -> bytes:
    brotli = require("brotli", "the brotli codecs")
    d = brotli.Decompressor()
    try:
        out = d.process(blob, output_buffer_limit=_room(limit))  # refuses bytes after the end of the stream
    except brotli.error:
        raise PgolfError(f"{what} is corrupt or has trailing bytes") from None
    if limit is not None and len(out) > limit:
        raise PgolfError(f"{what} inflates beyond the {limit:,} bytes the header declares")
    if not d.is_finished():
        raise PgolfError(f"{what} is truncated")
    return out


def _brotli_compress(data: bytes, level: int, layout: Layout = ()) -> bytes:
    return _brotli(data, _check_level("brotli", level, *LEVELS["brotli"]))


def _brotli_decompress(blob: bytes, layout: Layout = (), limit: int | None = None) -> bytes:
    return _unbrotli(blob, limit=limit)


# ---------------------------------------------------------------------------------------- layout-aware codecs

def _itemsize(dtype: str) -> int:
    try:
        return np.dtype(dtype).itemsize
    except TypeError:
        return 1


def is_symbol_stream(seg: Segment) -> bool:
    """Whether an array holds quantized integers one per byte (key "q" or "q..."; int8/uint8), which `ans`
    entropy-codes; everything else is generic bytes."""
    return seg.dtype in ("int8", "uint8") and seg.key.startswith("q")


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


def _shuffled(data: bytes, layout: Layout) -> bytes:
    return b"".join(byte_shuffle(data[a:b], _itemsize(seg.dtype)) if seg else data[a:b]
                    for a, b, seg in layout_pieces(len(data), layout))


def _bshf_brotli_compress(data: bytes, level: int, layout: Layout = ()) -> bytes:
    return _brotli(_shuffled(data, layout), _check_level("bshf-brotli", level, *LEVELS["bshf-brotli"]))


def _bshf_brotli_decompress(blob: bytes, layout: Layout = (), limit: int | None = None) -> bytes:
    raw = _unbrotli(blob, limit=limit)
    return b"".join(byte_unshuffle(raw[a:b], _itemsize(seg.dtype)) if seg else raw[a:b]
                    for a, b, seg in layout_pieces(len(raw), layout))


ANS_MAGIC = b"PANS"


def symbol_streams(pieces: Sequence[tuple[int, int, Segment | None]]) -> dict[tuple, list[tuple[int, int, Segment]]]:
    """Integer arrays (`is_symbol_stream`) of `layout_pieces` output grouped into streams, in order of first
    appearance: one per (group, scheme, key, dtype), so all layers of one role share a histogram (the 1.0611
    record's per-group streams, docs/rules.md#compressors) while differently quantized arrays do not."""
    streams: dict[tuple, list[tuple[int, int, Segment]]] = {}
    for a, b, seg in pieces:
        if seg is not None and is_symbol_stream(seg):
            streams.setdefault((seg.group, seg.scheme, seg.key, seg.dtype), []).append((a, b, seg))
    return streams


def split_payload(data: bytes, layout: Layout) -> tuple[dict[tuple, np.ndarray], bytes]:
    """What `ans` codes: each symbol stream's values (int8/uint8, layers concatenated) and the side bytes (every
    other array byte-shuffled, plus bytes no array describes), in payload order."""
    pieces = list(layout_pieces(len(data), layout))
    streams = {key: np.frombuffer(b"".join(data[a:b] for a, b, _ in members), dtype=key[3])
               for key, members in symbol_streams(pieces).items()}
    side = b"".join(byte_shuffle(data[a:b], _itemsize(seg.dtype)) if seg else data[a:b]
                    for a, b, seg in pieces if seg is None or not is_symbol_stream(seg))
    return streams, side


ANS_CLASS_CHOICES = (1, 2, 4)  # column classes per stream (labels cost 2 bits per column when > 1)


def _column_labels(members: list[tuple[int, int, Segment]], values: np.ndarray, k: int) -> np.ndarray:
    """Class of every column of every 2-D member (by quantile of its mean |q| within the stream), concatenated;
    members of other ranks contribute no labels (their values are class 0)."""
    if k == 1:
        return np.zeros(0, dtype=np.uint8)
    means, pos = [], 0
    for a, b, seg in members:
        n = b - a
        if len(seg.shape) == 2 and n:
            means.append(np.abs(values[pos:pos + n].reshape(seg.shape).astype(np.int16)).mean(axis=0))
        pos += n
    if not means:
        return np.zeros(0, dtype=np.uint8)
    m = np.concatenate(means)
    edges = np.quantile(m, np.linspace(0, 1, k + 1)[1:-1])
    return np.digitize(m, edges).astype(np.uint8)


def _element_classes(members: list[tuple[int, int, Segment]], labels: np.ndarray, count: int) -> np.ndarray:
    """Per element of the stream, its column's class (0 for members without labels)."""
    out = np.zeros(count, dtype=np.uint8)
    pos = li = 0
    for a, b, seg in members:
        n = b - a
        if len(seg.shape) == 2 and n and labels.size:
            cols = seg.shape[1]
            out[pos:pos + n] = np.tile(labels[li:li + cols], seg.shape[0])
            li += cols
        pos += n
    return out


def _label_count(members: list[tuple[int, int, Segment]]) -> int:
    return sum(seg.shape[1] for a, b, seg in members if len(seg.shape) == 2 and b > a)


def _pack2(labels: np.ndarray) -> bytes:
    padded = np.zeros(-(-labels.size // 4) * 4, dtype=np.uint8)
    padded[:labels.size] = labels
    q = padded.reshape(-1, 4)
    return (q[:, 0] | q[:, 1] << 2 | q[:, 2] << 4 | q[:, 3] << 6).astype(np.uint8).tobytes()


def _unpack2(data: bytes, count: int) -> np.ndarray:
    b = np.frombuffer(data, dtype=np.uint8)
    return np.stack([b & 3, b >> 2 & 3, b >> 4 & 3, b >> 6 & 3], axis=1).reshape(-1)[:count]


def _code_stream(values: np.ndarray, members, head: bytearray, coded: list[bytes]) -> None:
    """Choose the number of column classes (fewest total bytes: models + coded bits + labels), write the choice,
    labels and one model per class to `head`, and the coded classes to `coded`."""
    best = None
    for k in ANS_CLASS_CHOICES:
        labels = _column_labels(members, values, k)
        if k > 1 and labels.size == 0:
            continue
        classes = _element_classes(members, labels, values.size) if k > 1 else np.zeros(values.size, np.uint8)
        if k > 1 and np.bincount(classes, minlength=k).min() == 0:
            continue  # every class must hold symbols
        models = [fit_model(*histogram(values[classes == c])) for c in range(k)]
        bits = sum(entropy_bits(histogram(values[classes == c])[1]) + 8 * len(model_bytes(m))
                   for c, m in enumerate(models)) + 2 * labels.size * (k > 1)
        if best is None or bits < best[0]:
            best = (bits, k, labels, classes, models)
    _, k, labels, classes, models = best
    write_varint(head, k)
    if k > 1:
        head += _pack2(labels)
    for c, model in enumerate(models):
        coded.append(encode_symbols(values[classes == c], model))
        head += model_bytes(model)
        write_varint(head, len(coded[-1]))


def _stream_codec_compress(name: str, magic: bytes, code_stream) -> Callable[[bytes, int, Layout], bytes]:
    """The compressor of `ans` / `ans2`: header (magic, payload length, stream count), each non-empty symbol
    stream through `code_stream(values, members, head, coded)`, then the side bytes as one brotli blob at quality
    `level`, then the coded streams."""
    def compress_(data: bytes, level: int, layout: Layout = ()) -> bytes:
        quality = _check_level(name, level, *LEVELS[name])
        streams, side = split_payload(data, layout)
        members_of = symbol_streams(list(layout_pieces(len(data), layout)))
        head = bytearray(magic)
        write_varint(head, len(data))
        write_varint(head, len(streams))
        coded: list[bytes] = []
        for key, values in streams.items():
            if values.size:
                code_stream(values, members_of[key], head, coded)
        side_blob = _brotli(side, quality) if side else b""
        write_varint(head, len(side_blob))
        return bytes(head) + side_blob + b"".join(coded)
    return compress_


def _open(blob: bytes, layout: Layout, magic: bytes, what: str, limit: int | None):
    """Shared start of decoding `ans` and `ans2`: (reader, payload length, pieces, streams) after checking the
    magic, the payload length against the layout and `limit`, and the stream count."""
    reader = ByteReader(blob, what)
    if reader.take(len(magic), "magic") != magic:
        raise PgolfError(f"{what} is corrupt: bad magic")
    total = reader.varint("payload length")
    if limit is not None and total > limit:
        raise reader.fail(f"payload length {total:,} is more than the {limit:,} bytes the header declares")
    try:
        pieces = list(layout_pieces(total, layout))
    except PgolfError:
        raise reader.fail(f"payload length {total:,} does not hold the arrays the table lists") from None
    streams = symbol_streams(pieces)
    if reader.varint("stream count") != len(streams):
        raise reader.fail("stream count does not match the tensor table")
    return reader, total, pieces, streams


def _side(reader: ByteReader, side_len: int, what: str) -> bytes:
    side_blob = reader.take(reader.varint("side blob length"), "side blob")
    side = _unbrotli(side_blob, f"{what} (side blob)", side_len) if side_blob else b""
    if len(side) != side_len:
        raise reader.fail(f"side blob holds {len(side):,} bytes, expected {side_len:,}")
    return side


def _fill_side(out: bytearray, pieces, side: bytes) -> None:
    """Put the side bytes (every piece that is not a symbol stream) back in place, un-shuffled."""
    pos = 0
    for a, b, seg in pieces:
        if seg is not None and is_symbol_stream(seg):
            continue
        out[a:b] = byte_unshuffle(side[pos:pos + b - a], _itemsize(seg.dtype)) if seg else side[pos:pos + b - a]
        pos += b - a


def _ans_decompress(blob: bytes, layout: Layout = (), limit: int | None = None) -> bytes:
    what = "ans data"
    reader, total, pieces, streams = _open(blob, layout, ANS_MAGIC, what, limit)
    plans = []
    for (_, _, _, dtype), members in streams.items():
        count = sum(b - a for a, b, _ in members)
        if count == 0:
            continue
        k = reader.varint("class count")
        if k not in ANS_CLASS_CHOICES:
            raise reader.fail(f"class count {k} is not one of {ANS_CLASS_CHOICES}")
        classes = np.zeros(count, dtype=np.uint8)
        if k > 1:
            n_labels = _label_count(members)
            labels = _unpack2(reader.take(-(-n_labels // 4), "column classes"), n_labels)
            if n_labels == 0 or int(labels.max()) >= k:
                raise reader.fail("column classes out of range")
            classes = _element_classes(members, labels, count)
        info = np.iinfo(np.dtype(dtype))
        parts = []
        for c in range(k):
            model = read_model(reader, int(info.min), int(info.max))
            parts.append((c, model, reader.varint("stream length")))
        plans.append((dtype, members, count, classes, parts))
    side = _side(reader, total - sum(count for _, _, count, _, _ in plans), what)
    out = bytearray(total)
    for dtype, members, count, classes, parts in plans:
        values = np.zeros(count, dtype=np.int32)
        for c, model, nbytes in parts:
            mask = classes == c
            values[mask] = decode_symbols(reader.take(nbytes, "coded stream"), model, int(mask.sum()), what)
        values = values.astype(dtype)
        pos = 0
        for a, b, _ in members:
            out[a:b] = values[pos:pos + b - a].tobytes()
            pos += b - a
    reader.finish()
    _fill_side(out, pieces, side)
    return bytes(out)


ANS2_MAGIC = b"PAN2"


def _matrix_shape(seg: Segment, nbytes: int) -> tuple[int, int] | None:
    """A stream member's (rows, cols) when `ans2` models it as a matrix (2-D, non-empty), else None."""
    if len(seg.shape) == 2 and seg.shape[0] > 0 and seg.shape[1] > 0 and seg.shape[0] * seg.shape[1] == nbytes:
        return int(seg.shape[0]), int(seg.shape[1])
    return None


def _code_stream2(values: np.ndarray, members, head: bytearray, coded: list[bytes]) -> None:
    """One `ans2` stream: its matrices and the rest of its values through the context model."""
    mats, loose, pos = [], [], 0
    for a, b, seg in members:
        shape, part = _matrix_shape(seg, b - a), values[pos:pos + b - a]
        if shape:
            mats.append(part.reshape(shape))
        else:
            loose.append(part)
        pos += b - a
    encode_stream(mats, np.concatenate(loose) if loose else values[:0], head, coded)


def _ans2_decompress(blob: bytes, layout: Layout = (), limit: int | None = None) -> bytes:
    what = "ans2 data"
    reader, total, pieces, streams = _open(blob, layout, ANS2_MAGIC, what, limit)
    heads = []
    for (_, _, _, dtype), members in streams.items():
        if sum(b - a for a, b, _ in members) == 0:
            continue
        shapes = [_matrix_shape(seg, b - a) for a, b, seg in members]
        heads.append((dtype, members, shapes, read_stream(reader, [s for s in shapes if s], dtype)))
    side = _side(reader, total - sum(b - a for _, members, _, _ in heads for a, b, _ in members), what)
    out = bytearray(total)
    for dtype, members, shapes, stream_head in heads:
        loose_count = sum(b - a for (a, b, _), s in zip(members, shapes) if s is None)
        mats, loose = decode_stream(stream_head, [s for s in shapes if s], loose_count,
                                    lambda n: reader.take(n, "coded context"), what)
        mats, pos = iter(mats), 0
        for (a, b, _), shape in zip(members, shapes):
            if shape:
                out[a:b] = next(mats).astype(dtype).tobytes()
            else:
                out[a:b] = loose[pos:pos + b - a].astype(dtype).tobytes()
                pos += b - a
    reader.finish()
    _fill_side(out, pieces, side)
    return bytes(out)


CODECS: dict[str, Codec] = {
    "none": Codec(_none_compress, _none_decompress),
    "zlib": Codec(_zlib_compress, _zlib_decompress),
    "lzma": Codec(_lzma_compress, _lzma_decompress),
    "zstd": Codec(_zstd_compress, _zstd_decompress),
    "brotli": Codec(_brotli_compress, _brotli_decompress),
    "bshf-brotli": Codec(_bshf_brotli_compress, _bshf_brotli_decompress),
    "ans": Codec(_stream_codec_compress("ans", ANS_MAGIC, _code_stream), _ans_decompress),
    "ans2": Codec(_stream_codec_compress("ans2", ANS2_MAGIC, _code_stream2), _ans2_decompress),
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
