"""LQER: a low-rank, low-bit correction of the quantization error (PR #1797; docs/techniques.md#lqer).

After quantization, E = W - W_hat holds what the grid could not represent. Its top singular directions carry a large
part of ||E||_F for the worst matrices (embeddings, MLP inputs), so storing a rank-r approximation E ~ A @ B costs
little: A = U_r S_r [rows, r] in INT2 (-2..1) with one fp16 scale max|A|/1.5, B = V_r^T [r, cols] in INT4 (-8..7)
with one fp16 scale per 64 consecutive entries (max/7.5). Dequantization adds A_hat @ B_hat to W_hat.
"""

from __future__ import annotations

import numpy as np
import torch

from pgolf.quant.schemes import LQER_A_RANGE, LQER_B_RANGE, LQER_GROUP, lqer_residual


def _fp16_scale(x: torch.Tensor) -> torch.Tensor:
    return x.clamp_min(2.0 ** -14).to(torch.float16).float()


def lqer_arrays(error: torch.Tensor, rank: int) -> dict[str, np.ndarray]:
    """The quantized low-rank factors of `error` [rows, cols] (arrays `lqer_a`, `lqer_a_scale`, `lqer_b`,
    `lqer_b_scale` of an `..._lqer` storage record)."""
    e = error.double()
    rank = max(1, min(rank, *e.shape))
    u, s, vh = torch.linalg.svd(e, full_matrices=False)
    a = (u[:, :rank] * s[:rank]).float()
    b = vh[:rank].float()
    a_scale = _fp16_scale(a.abs().max() / 1.5)
    qa = torch.clamp(torch.round(a / a_scale), *LQER_A_RANGE)
    flat = b.reshape(-1)
    n_groups = -(-flat.numel() // LQER_GROUP)
    padded = torch.zeros(n_groups * LQER_GROUP)
    padded[:flat.numel()] = flat
    g_scale = _fp16_scale(padded.view(n_groups, LQER_GROUP).abs().amax(dim=1) / 7.5)
    qb = torch.clamp(torch.round(padded.view(n_groups, LQER_GROUP) / g_scale[:, None]), *LQER_B_RANGE)
    qb = qb.reshape(-1)[:flat.numel()].reshape(b.shape)
    return {"lqer_a": qa.to(torch.int8).numpy(), "lqer_a_scale": a_scale.to(torch.float16).reshape(()).numpy(),
            "lqer_b": qb.to(torch.int8).numpy(), "lqer_b_scale": g_scale.to(torch.float16).numpy()}


def lqer_correction(error: torch.Tensor, rank: int) -> tuple[dict[str, np.ndarray], torch.Tensor]:
    """`lqer_arrays` and the correction they decode to (so callers can measure the remaining error)."""
    arrays = lqer_arrays(error, rank)
    return arrays, lqer_residual(arrays)
