"""Order-0 entropy coding of quantized-integer streams: a compact frequency table plus rANS.

Records store int6/int7/int8 weights one per int8 byte and let a general compressor remove the slack (docs/techniques.md
3.3-3.4). Those weights are close to i.i.d. within a role, so a context-free (order-0) coder driven by the stream's
exact histogram gets within a few hundred bytes of n * H(histogram), which byte-oriented compressors (brotli, lzma)
do not reach. The coder is range-variant Asymmetric Numeral Systems (rANS; J. Duda, "Asymmetric numeral systems",
arXiv:0902.0271 / arXiv:1311.2540) from the maintained `constriction` library (R. Bamler, "Understanding Entropy
Coding With Asymmetric Numeral Systems (ANS): a Statistician's Perspective", arXiv:2201.01741): its `AnsCoder`
with one `Categorical` model per stream, 32-bit words and 24-bit probabilities, coded in Rust.

Model table (`model_bytes`), integers as LEB128 varints, signed ones zigzag-mapped:

    zigzag(low)  K  [precision  f_0 .. f_{K-1}]        (the bracket only when K > 1)

`low` is the smallest symbol, `K` the alphabet size (largest - smallest + 1); the frequencies are the histogram
rescaled to sum to exactly 2**precision, every present symbol at least 1. The precision (1..24) is chosen per
stream to minimise table bytes + coded bytes: a 500-symbol stream gets a coarse table, a 36-million-symbol stream a
fine one. A stream with a single distinct value (K = 1) needs no coded words at all.

Decoding is strict: every table field is range-checked, and after decoding exactly the expected number of symbols
the coder must be back in its initial, empty state (truncated or altered words leave it elsewhere); any violation
is a `PgolfError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pgolf.errors import PgolfError, require

MAX_PRECISION = 24  # constriction's AnsCoder works with 24-bit probabilities
_MAX_VARINT_BYTES = 10


# ---------------------------------------------------------------------------------------------------------- varints

def write_varint(out: bytearray, value: int) -> None:
    """Append `value` (>= 0) as an unsigned LEB128 varint."""
    if value < 0:
        raise ValueError(f"varint of a negative number {value}")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def zigzag(value: int) -> int:
    """Signed -> unsigned so that small magnitudes stay small: 0, -1, 1, -2 ... -> 0, 1, 2, 3 ..."""
    return 2 * value if value >= 0 else -2 * value - 1


def unzigzag(value: int) -> int:
    return value >> 1 if value % 2 == 0 else -((value + 1) >> 1)


class ByteReader:
    """Sequential reader over a blob; every overrun or malformed field is a `PgolfError` naming `what`."""

    def __init__(self, blob: bytes, what: str):
        self.blob = memoryview(blob)
        self.pos = 0
        self.what = what

    def fail(self, problem: str) -> PgolfError:
        return PgolfError(f"{self.what} is corrupt: {problem}")

    def varint(self, label: str) -> int:
        value = 0
        for i in range(_MAX_VARINT_BYTES):
            if self.pos >= len(self.blob):
                raise PgolfError(f"{self.what} is truncated (in {label})")
            byte = self.blob[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << (7 * i)
            if byte < 0x80:
                return value
        raise self.fail(f"{label} is not a valid varint")

    def take(self, n: int, label: str) -> bytes:
        if n > len(self.blob) - self.pos:
            raise PgolfError(f"{self.what} is truncated (in {label}: {n:,} bytes wanted, "
                             f"{len(self.blob) - self.pos:,} left)")
        chunk = bytes(self.blob[self.pos:self.pos + n])
        self.pos += n
        return chunk

    def finish(self) -> None:
        if self.pos != len(self.blob):
            raise self.fail(f"{len(self.blob) - self.pos:,} trailing bytes")


# ------------------------------------------------------------------------------------------------------------ model

@dataclass(frozen=True)
class SymbolModel:
    """An order-0 model over the symbols low .. low + len(freqs) - 1; `freqs` sum to 2**precision (K > 1)."""

    low: int
    freqs: np.ndarray  # int64, one per symbol of the alphabet
    precision: int

    @property
    def size(self) -> int:
        return len(self.freqs)


def histogram(values: np.ndarray) -> tuple[int, np.ndarray]:
    """(smallest value, counts of every value from it to the largest) of an int8/uint8 array; (0, []) if empty."""
    if values.dtype not in (np.int8, np.uint8):
        raise ValueError(f"histogram of {values.dtype} values (int8/uint8 only)")
    counts = np.bincount(values.reshape(-1).view(np.uint8), minlength=256).astype(np.int64)
    if values.dtype == np.int8:
        counts = np.concatenate([counts[128:], counts[:128]])  # index i <-> value i - 128
    offset = -128 if values.dtype == np.int8 else 0
    present = np.flatnonzero(counts)
    if present.size == 0:
        return 0, counts[:0]
    return int(present[0]) + offset, counts[present[0]:present[-1] + 1]


def entropy_bits(counts: np.ndarray) -> float:
    """n * H(counts): the order-0 bound, in bits, for coding the symbols of this histogram."""
    counts = np.asarray(counts, dtype=np.float64)
    counts = counts[counts > 0]
    n = counts.sum()
    return float(-(counts * np.log2(counts / n)).sum()) if n else 0.0


def quantize_counts(counts: np.ndarray, precision: int) -> np.ndarray:
    """The histogram rescaled to integers summing to exactly 2**precision, every present symbol >= 1 (requires
    2**precision >= number of present symbols). Deterministic: rounding, then the sum is fixed one unit at a time
    on the most frequent symbols."""
    counts = np.asarray(counts, dtype=np.int64)
    total = 1 << precision
    present = counts > 0
    freqs = np.where(present, np.maximum(1, np.rint(counts * (total / counts.sum()))), 0).astype(np.int64)
    order = np.argsort(-counts, kind="stable")
    diff = total - int(freqs.sum())
    while diff:
        step = 1 if diff > 0 else -1
        movable = order[present[order]] if step > 0 else order[freqs[order] > 1]
        if movable.size == 0:
            raise ValueError(f"{int(present.sum())} symbols do not fit into 2**{precision}")
        take = movable[:abs(diff)]
        freqs[take] += step
        diff -= step * len(take)
    return freqs


def model_bytes(model: SymbolModel) -> bytes:
    out = bytearray()
    write_varint(out, zigzag(model.low))
    write_varint(out, model.size)
    if model.size > 1:
        write_varint(out, model.precision)
        for f in model.freqs.tolist():
            write_varint(out, f)
    return bytes(out)


def _coded_bits(counts: np.ndarray, freqs: np.ndarray, precision: int) -> float:
    present = counts > 0
    return float(-(counts[present] * (np.log2(freqs[present]) - precision)).sum())


def fit_model(low: int, counts: np.ndarray) -> SymbolModel:
    """The model for a histogram (from `histogram`), with the precision that minimises table + coded size."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.size <= 1:
        return SymbolModel(low, np.ones(counts.size, dtype=np.int64), 0)
    lowest = max(1, math.ceil(math.log2(int((counts > 0).sum()))))
    best: tuple[float, SymbolModel] | None = None
    for precision in range(lowest, MAX_PRECISION + 1):
        model = SymbolModel(low, quantize_counts(counts, precision), precision)
        bits = _coded_bits(counts, model.freqs, precision) + 8 * len(model_bytes(model))
        if best is None or bits < best[0]:
            best = (bits, model)
    return best[1]


def read_model(reader: ByteReader, lo: int, hi: int) -> SymbolModel:
    """Parse a model table whose symbols must lie in [lo, hi]."""
    low = unzigzag(reader.varint("symbol model"))
    size = reader.varint("symbol model")
    if size < 1 or low < lo or low + size - 1 > hi:
        raise reader.fail(f"symbol range {low}..{low + size - 1} lies outside {lo}..{hi}")
    if size == 1:
        return SymbolModel(low, np.ones(1, dtype=np.int64), 0)
    precision = reader.varint("symbol model")
    if not 1 <= precision <= MAX_PRECISION:
        raise reader.fail(f"model precision {precision} is outside 1..{MAX_PRECISION}")
    freqs = np.array([reader.varint("symbol frequencies") for _ in range(size)], dtype=np.int64)
    if int(freqs.max()) > (1 << precision) or int(freqs.sum()) != 1 << precision:
        raise reader.fail(f"symbol frequencies do not sum to 2**{precision}")
    return SymbolModel(low, freqs, precision)


def _constriction():
    return require("constriction", "the ans/ans2 codecs")


def _categorical(model: SymbolModel):
    return _constriction().stream.model.Categorical(model.freqs.astype(np.float64) / (1 << model.precision),
                                                 perfect=False)


# ------------------------------------------------------------------------------------------------------------ coding

def encode_symbols(values: np.ndarray, model: SymbolModel) -> bytes:
    """rANS-code `values` (integers inside the model's alphabet) as little-endian 32-bit words; b"" when the model
    has a single symbol or there are no values."""
    if model.size <= 1 or values.size == 0:
        return b""
    symbols = values.reshape(-1).astype(np.int32) - np.int32(model.low)
    coder = _constriction().stream.stack.AnsCoder()
    coder.encode_reverse(symbols, _categorical(model))
    return coder.get_compressed().astype("<u4").tobytes()


def decode_symbols(words: bytes, model: SymbolModel, count: int, what: str) -> np.ndarray:
    """The `count` symbols (int32) coded in `words` by `encode_symbols`; PgolfError unless the words decode to exactly
    `count` symbols and nothing is left over."""
    if model.size <= 1 or count == 0:
        if words:
            raise PgolfError(f"{what} is corrupt: {len(words):,} coded bytes for a stream that needs none")
        return np.full(count, model.low, dtype=np.int32)
    if len(words) % 4 or not words:
        raise PgolfError(f"{what} is corrupt: {len(words):,} coded bytes is not a positive number of 32-bit words")
    try:
        coder = _constriction().stream.stack.AnsCoder(np.frombuffer(words, dtype="<u4").astype(np.uint32))
        symbols = coder.decode(_categorical(model), count)
        clean = coder.is_empty()
    except (ValueError, RuntimeError, OverflowError) as exc:
        raise PgolfError(f"{what} is corrupt ({exc})") from None
    if not clean:
        raise PgolfError(f"{what} is corrupt: coded words left over after {count:,} symbols")
    return symbols + np.int32(model.low)


class SymbolDecoder:
    """Incremental form of `decode_symbols`: `take(count)` decodes the next `count` symbols of words written by one
    `encode_symbols` call, `finish()` checks that exactly all of them were taken. PgolfError on any mismatch."""

    def __init__(self, words: bytes, model: SymbolModel, what: str):
        self.model, self.what, self.words = model, what, words
        self.coder = None
        if model.size > 1:
            if len(words) % 4 or not words:
                raise PgolfError(f"{what} is corrupt: {len(words):,} coded bytes is not a positive number of "
                                 f"32-bit words")
            self.coder = _constriction().stream.stack.AnsCoder(np.frombuffer(words, dtype="<u4").astype(np.uint32))
            self.categorical = _categorical(model)
        elif words:
            raise PgolfError(f"{what} is corrupt: {len(words):,} coded bytes for a stream that needs none")

    def take(self, count: int) -> np.ndarray:
        if self.coder is None or count == 0:
            return np.full(count, self.model.low, dtype=np.int32)
        try:
            symbols = self.coder.decode(self.categorical, count)
        except (ValueError, RuntimeError, OverflowError) as exc:
            raise PgolfError(f"{self.what} is corrupt ({exc})") from None
        return symbols + np.int32(self.model.low)

    def finish(self) -> None:
        if self.coder is not None and not self.coder.is_empty():
            raise PgolfError(f"{self.what} is corrupt: coded words left over")
