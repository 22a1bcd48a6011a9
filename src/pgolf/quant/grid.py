"""Per-row quantization grids: how the scale of each row is chosen, and round-to-nearest onto it.

A row w of a matrix is stored as integers q in [-qmax, qmax] and one fp16 scale s, w ~ q * s. Everything that
decides quality and size at a given bit width is in the choice of s (docs/techniques.md#integer-storage-and-bit-widths):

- `percentile`: s = quantile(|w|, 0.9999984) / qmax, the baseline's clip (docs/rules.md#baseline-int8-export) at any
width;
- `search` (GPTQ-lite, 2026-03-22 record): per row, try the clip quantiles {0.999, 0.9995, 0.9999, 0.99999, 1.0} and
  keep the one with the least squared reconstruction error;
- `sdclip` (SDClip, PR #1394): s = k * std(w) / qmax. For near-Gaussian rows the entropy of q is about
  b - log2(k) + const bits, so k is a monotone size knob: larger k, coarser grid, fewer bytes, more rounding error
  but less clipping (and (b, k) ~ (b + 1, 2k)). Records use k ~ 11.5-13 for int6 matrices and 14-20 for int7/int8
  embeddings;
- `absmean` (BitNet b1.58, arXiv:2402.17764): s = mean(|w|), the natural scale for ternary weights (qmax = 1).

Scales are rounded to fp16 *before* the integers are computed, so q * s16 is exactly the grid point chosen.
"""

from __future__ import annotations

import torch

from pgolf.errors import PgolfError
from pgolf.quant.choices import CLIP_METHODS  # `quant.clip`, defined torch-free there
from pgolf.quant.schemes import clip_quantile, qmax

SEARCH_QUANTILES = (0.999, 0.9995, 0.9999, 0.99999, 1.0)
BASELINE_QUANTILE = 0.9999984
MIN_SCALE = 2.0 ** -14  # smallest normal fp16: a zero row gets this scale and all-zero integers


def _fp16(scale: torch.Tensor) -> torch.Tensor:
    return scale.clamp_min(MIN_SCALE).to(torch.float16).float()


def round_to_grid(w: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Integers of `w` [rows, cols] on the per-row grid `scale` [rows]: clamp(round(w / s), -qmax, qmax)."""
    top = qmax(bits)
    return torch.clamp(torch.round(w / scale[:, None]), -top, top)


def row_scales(w: torch.Tensor, bits: int, method: str = "sdclip", k: float = 12.85) -> torch.Tensor:
    """fp16-representable float32 scales, one per row of `w`, chosen by `method` (see the module docstring)."""
    if w.ndim != 2:
        raise PgolfError(f"row scales need a 2-D matrix, got shape {list(w.shape)}")
    if not 2 <= bits <= 8:
        raise PgolfError(f"bits must be in 2..8, got {bits}")
    w = w.float()
    top = qmax(bits)
    if method == "percentile":
        return _fp16(clip_quantile(w.abs(), BASELINE_QUANTILE) / top)
    if method == "sdclip":
        if k <= 0:
            raise PgolfError(f"sdclip k must be positive, got {k}")
        return _fp16(k * w.std(dim=1, unbiased=False) / top)
    if method == "absmean":
        return _fp16(w.abs().mean(dim=1) / top)
    if method == "search":
        best_scale = best_err = None
        for q in SEARCH_QUANTILES:
            scale = _fp16(clip_quantile(w.abs(), q) / top)
            err = ((round_to_grid(w, scale, bits) * scale[:, None] - w) ** 2).sum(dim=1)
            if best_err is None:
                best_scale, best_err = scale, err
            else:
                better = err < best_err
                best_scale = torch.where(better, scale, best_scale)
                best_err = torch.where(better, err, best_err)
        return best_scale
    raise PgolfError(f"unknown clip method {method!r} (known: {', '.join(CLIP_METHODS)})")


def quantize_rtn(w: torch.Tensor, bits: int, method: str = "sdclip", k: float = 12.85
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Round-to-nearest: (integers as int8 [rows, cols], fp16 scales [rows])."""
    scale = row_scales(w, bits, method, k)
    return round_to_grid(w.float(), scale, bits).to(torch.int8), scale.to(torch.float16)
