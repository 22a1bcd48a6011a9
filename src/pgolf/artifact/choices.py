"""The artifact stage's named choices, importable without torch or the compression libraries: the payload codecs
and the level range of each (`quant.codec`, `quant.level`), checked by `check_codec`.

`pgolf.options` checks a config against them before anything heavy is imported (`pgolf config show`, a mistyped
`--set`: well under a second). `codecs` imports `LEVELS` and the checks from here and keeps the registry of
implementations (`codecs.CODECS`); tests/test_options.py asserts that both name the same codecs, so they cannot
drift apart.
"""

from __future__ import annotations

from pgolf.errors import PgolfError
from pgolf.suggest import did_you_mean

# Valid `level` range of each codec (zlib/lzma presets, zstd levels, brotli qualities; `none` ignores it).
LEVELS: dict[str, tuple[int, int]] = {"none": (-(2 ** 31), 2 ** 31), "zlib": (0, 9), "lzma": (0, 9), "zstd": (0, 22),
                                      "brotli": (0, 11), "bshf-brotli": (0, 11), "ans": (0, 11),
                                      "ans2": (0, 11)}


def check_codec(name: str, level: int) -> None:
    """PgolfError unless `name` is a codec and `level` is valid for it (checked when a config is built, so a bad
    pair fails before training rather than at export)."""
    if name not in LEVELS:
        raise PgolfError(f"unknown codec {name!r} (available: {', '.join(sorted(LEVELS))})"
                         + did_you_mean(name, LEVELS, quote=True))
    check_level(name, level, *LEVELS[name])


def check_level(codec: str, level: int, lo: int, hi: int) -> int:
    """`level`, or PgolfError unless it is an integer in [lo, hi]."""
    if isinstance(level, bool) or not isinstance(level, int) or not lo <= level <= hi:
        raise PgolfError(f"codec {codec}: level must be an integer {lo}..{hi}, got {level!r}")
    return level
