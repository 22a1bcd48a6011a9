"""The quantization stage's named choices, importable without torch: the export scheme, the clip method, the
calibration source and reserve, and `parse_group_values` for the per-group `quant.bits` and `quant.clip_k`.

`pgolf.options` checks a config against them before anything imports torch (`pgolf config show`, a mistyped `--set`:
well under a second); `recipe`, `grid` and `gptq` import them from here, so the list a config is checked against is
the list the code runs.
"""

from __future__ import annotations

from typing import Any, Callable

from pgolf.errors import PgolfError
from pgolf.quant.groups import GROUPS

EXPORT_SCHEMES = ("int8", "mixed")  # `quant.scheme`: the baseline's int8 export, or the records' mixed recipe
CLIP_METHODS = ("percentile", "search", "sdclip", "absmean")  # `quant.clip`: see grid
# `quant.calib`: where the Hessians' inputs come from (training batches inside the budget, or self-generated).
CALIBRATION_SOURCES = ("train", "self")
CALIB_RESERVES = ("fixed", "measured")  # `quant.calib_reserve`: how much of the training clock calibration keeps


def parse_group_values(spec: str, cast: Callable[[str], Any], what: str, *, lo: float, hi: float) -> dict[str, Any]:
    """Parse "embed=7,attn=6,default=6" into {key: value}; keys are groups or group prefixes (`attn` covers
    `attn.q` ...) or `default`. PgolfError for a bad key, value or range."""
    out: dict[str, Any] = {}
    prefixes = {g.split(".")[0] for g in GROUPS}
    for part in (p.strip() for p in str(spec).split(",") if p.strip()):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or (key not in GROUPS and key not in prefixes and key != "default"):
            raise PgolfError(f"config: {what}: {part!r} is not GROUP=VALUE with GROUP one of "
                             f"{', '.join(sorted(set(GROUPS) | prefixes | {'default'}))}")
        try:
            v = cast(value.strip())
        except ValueError:
            raise PgolfError(f"config: {what}: {value.strip()!r} is not a valid {cast.__name__}") from None
        if not lo <= v <= hi:
            raise PgolfError(f"config: {what}: {key}={v} is outside [{lo}, {hi}]")
        out[key] = v
    return out
