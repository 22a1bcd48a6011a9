"""The `ans` and `ans2` codecs: the quantized integers entropy-coded by rANS per tensor group, the rest brotli.

Split from the registry (`codecs`) because it is a container format of its own: how the payload is split into
symbol streams and side bytes, and how the coded streams are framed.

- `ans`: entropy coding of the quantized integers (arrays keyed "q"/"q..." stored as int8/uint8): one stream per
  tensor group (all layers of one role; also split by storage scheme, key and dtype). Each stream's columns may be
  split into 2 or 4 classes by their mean |q| (input features of unequal importance leave some columns with smaller
  integers even after per-row scaling); the encoder keeps the class count (1, 2 or 4) with the fewest total bytes,
  stores 2-bit column labels, and codes every class by rANS with its own histogram (`rans`). Everything else is
  byte-shuffled into one brotli blob at quality `level` 0-11. Blob: b"PANS", varint payload length, varint stream
  count, per non-empty stream: class count, packed labels, per class its model table and coded length; then varint
  side-blob length, the side blob, the coded classes. Bytes that no array describes (an empty layout) go to the
  side blob, so `ans` also works as a plain brotli. Smaller than brotli-11 on int6 weights (docs/BENCHMARKS.md).
- `ans2`: `ans` with a context model per stream (`ans2_context`): row classes x column classes chosen by
  co-clustering, and row references, where a row is coded in contexts of its nearest row's values (the long-range
  stage that the 1.0611 record's similarity sort + lrzip plays). Same side blob as `ans`. Blob: b"PAN2", varint
  payload length, varint stream count, per non-empty stream its plan and context tables
  (`ans2_context.encode_stream`), varint side-blob length, the side blob, the coded contexts. Smallest of the codecs
  on int6 weights (docs/BENCHMARKS.md).

`ans_compress(data, quality, layout)` takes a brotli quality already checked by the registry; the decoders are
strict like every codec's (truncated, altered or trailing bytes are a PgolfError).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from pgolf.artifact.ans2_context import decode_stream, encode_stream, read_stream
from pgolf.artifact.codec_base import Layout, Segment, from_brotli, itemsize, layout_pieces, to_brotli
from pgolf.artifact.rans import (ByteReader, decode_symbols, encode_symbols, entropy_bits, fit_model, histogram,
                                 model_bytes, read_model, write_varint)
from pgolf.artifact.transforms import byte_shuffle, byte_unshuffle
from pgolf.errors import PgolfError


def is_symbol_stream(seg: Segment) -> bool:
    """Whether an array holds quantized integers one per byte (key "q" or "q..."; int8/uint8), which `ans`
    entropy-codes; everything else is generic bytes."""
    return seg.dtype in ("int8", "uint8") and seg.key.startswith("q")


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
    side = b"".join(byte_shuffle(data[a:b], itemsize(seg.dtype)) if seg else data[a:b]
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


def _stream_compressor(magic: bytes, code_stream) -> Callable[[bytes, int, Layout], bytes]:
    """The compressor of `ans` / `ans2`: header (magic, payload length, stream count), each non-empty symbol
    stream through `code_stream(values, members, head, coded)`, then the side bytes as one brotli blob at
    `quality` (checked by the registry, `codecs`), then the coded streams."""
    def compress_(data: bytes, quality: int, layout: Layout = ()) -> bytes:
        streams, side = split_payload(data, layout)
        members_of = symbol_streams(list(layout_pieces(len(data), layout)))
        head = bytearray(magic)
        write_varint(head, len(data))
        write_varint(head, len(streams))
        coded: list[bytes] = []
        for key, values in streams.items():
            if values.size:
                code_stream(values, members_of[key], head, coded)
        side_blob = to_brotli(side, quality) if side else b""
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
    side = from_brotli(side_blob, f"{what} (side blob)", side_len) if side_blob else b""
    if len(side) != side_len:
        raise reader.fail(f"side blob holds {len(side):,} bytes, expected {side_len:,}")
    return side


def _fill_side(out: bytearray, pieces, side: bytes) -> None:
    """Put the side bytes (every piece that is not a symbol stream) back in place, un-shuffled."""
    pos = 0
    for a, b, seg in pieces:
        if seg is not None and is_symbol_stream(seg):
            continue
        out[a:b] = byte_unshuffle(side[pos:pos + b - a], itemsize(seg.dtype)) if seg else side[pos:pos + b - a]
        pos += b - a


ans_compress = _stream_compressor(ANS_MAGIC, _code_stream)


def ans_decompress(blob: bytes, layout: Layout = (), limit: int | None = None) -> bytes:
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


ans2_compress = _stream_compressor(ANS2_MAGIC, _code_stream2)


def ans2_decompress(blob: bytes, layout: Layout = (), limit: int | None = None) -> bytes:
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
