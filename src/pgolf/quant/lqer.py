"""LQER: a low-rank, low-bit correction of the quantization error (PR #1797; docs/techniques.md#lqer).

After quantization, E = W - W_hat holds what the grid could not represent. Its top singular directions carry a large
part of ||E||_F for the worst matrices (embeddings, MLP inputs), so storing a rank-r approximation E ~ A @ B costs
little: A = U_r S_r [rows, r] in INT2 (-2..1) with one fp16 scale max|A|/1.5, B = V_r^T [r, cols] in INT4 (-8..7)
with one fp16 scale per `group` consecutive entries (max/7.5; 64 in PR #1797, 32 in PR #2060 and PR #2135:
`quant.lqer_group`). Dequantization adds A_hat @ B_hat to W_hat. A group other than 64 is stored with the record
(`lqer_group`); at 64 nothing is added, so such artifacts are byte-identical to those written before the option.
"""

from __future__ import annotations

import numpy as np
import torch

from pgolf.quant.schemes import LQER_A_RANGE, LQER_B_RANGE, LQER_GROUP, lqer_residual


def _fp16_scale(x: torch.Tensor) -> torch.Tensor:
    return x.clamp_min(2.0 ** -14).to(torch.float16).float()


def lqer_arrays(error: torch.Tensor, rank: int, group: int = LQER_GROUP) -> dict[str, np.ndarray]:
    """The quantized low-rank factors of `error` [rows, cols] (arrays `lqer_a`, `lqer_a_scale`, `lqer_b`,
    `lqer_b_scale`, and `lqer_group` unless it is 64, of an `..._lqer` storage record)."""
    e = error.double()
    rank = max(1, min(rank, *e.shape))
    u, s, vh = torch.linalg.svd(e, full_matrices=False)
    a = (u[:, :rank] * s[:rank]).float()
    b = vh[:rank].float()
    a_scale = _fp16_scale(a.abs().max() / 1.5)
    qa = torch.clamp(torch.round(a / a_scale), *LQER_A_RANGE)
    flat = b.reshape(-1)
    n_groups = -(-flat.numel() // group)
    padded = torch.zeros(n_groups * group)
    padded[:flat.numel()] = flat
    g_scale = _fp16_scale(padded.view(n_groups, group).abs().amax(dim=1) / 7.5)
    qb = torch.clamp(torch.round(padded.view(n_groups, group) / g_scale[:, None]), *LQER_B_RANGE)
    qb = qb.reshape(-1)[:flat.numel()].reshape(b.shape)
    arrays = {"lqer_a": qa.to(torch.int8).numpy(), "lqer_a_scale": a_scale.to(torch.float16).reshape(()).numpy(),
              "lqer_b": qb.to(torch.int8).numpy(), "lqer_b_scale": g_scale.to(torch.float16).numpy()}
    if group != LQER_GROUP:
        arrays["lqer_group"] = np.array(group, dtype=np.int32)
    return arrays


def lqer_correction(error: torch.Tensor, rank: int, group: int = LQER_GROUP
                    ) -> tuple[dict[str, np.ndarray], torch.Tensor]:
    """`lqer_arrays` and the correction they decode to (so callers can measure the remaining error)."""
    arrays = lqer_arrays(error, rank, group)
    return arrays, lqer_residual(arrays)
