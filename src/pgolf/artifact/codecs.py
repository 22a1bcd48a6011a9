"""Byte codecs for the artifact payload. Each must round-trip exactly; more (zstd, brotli, entropy coding) plug in
through `CODECS` without changing the container."""

from __future__ import annotations

import lzma
import zlib
from typing import Callable, NamedTuple

from pgolf.errors import PgolfError


class Codec(NamedTuple):
    compress: Callable[[bytes, int], bytes]
    decompress: Callable[[bytes], bytes]


def _lzma_compress(data: bytes, level: int) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, preset=min(max(level, 0), 9) | lzma.PRESET_EXTREME)


CODECS: dict[str, Codec] = {
    "none": Codec(lambda data, level: bytes(data), bytes),
    "zlib": Codec(lambda data, level: zlib.compress(data, level), zlib.decompress),
    "lzma": Codec(_lzma_compress, lzma.decompress),
}


def get_codec(name: str) -> Codec:
    if name not in CODECS:
        raise PgolfError(f"unknown codec {name!r} (known: {', '.join(CODECS)})")
    return CODECS[name]


def compress(name: str, data: bytes, level: int = 9) -> bytes:
    return get_codec(name).compress(data, level)


def decompress(name: str, data: bytes) -> bytes:
    try:
        return get_codec(name).decompress(data)
    except (zlib.error, lzma.LZMAError, ValueError) as exc:
        raise PgolfError(f"payload does not decompress with {name}: {exc}") from None
