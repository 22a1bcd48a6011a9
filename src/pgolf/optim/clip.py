"""Gradient clipping, over the reduced gradient or per rank before the reduction.

`global` (the usual way, and pgolf's default): ranks first average their gradients (DDP), then the averaged gradient
is clipped to `optim.grad_clip_norm`. `rank` (as the 1.0611 record does it, PR #1855, whose optimizers reduce the
gradients themselves inside their step): every rank clips its own gradient, then the clipped gradients are averaged.
The two differ only when ranks' gradient norms differ, and are the same at world size 1.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from pgolf.optim.choices import CLIP_SCOPES  # noqa: F401  (re-exported; `optim.grad_clip_scope`)
from pgolf.runtime import DistContext


def clip_then_average(params: Iterable[torch.nn.Parameter], max_norm: float, ctx: DistContext) -> None:
    """Clip this rank's gradients to `max_norm` (0: no clipping), then replace them by their mean over ranks.

    The caller must have kept the gradients unreduced (DDP's `no_sync` for every micro-step). One flat all-reduce
    per dtype keeps the communication to a single call in the common case."""
    params = [p for p in params if p.grad is not None]
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    grads = [p.grad for p in params]
    if not ctx.distributed:
        return
    for dtype in sorted({g.dtype for g in grads}, key=str):
        group = [g for g in grads if g.dtype == dtype]
        flat = ctx.all_reduce_sum(_flatten_dense_tensors(group)).div_(ctx.world_size)
        for g, reduced in zip(group, _unflatten_dense_tensors(flat, group)):
            g.copy_(reduced)
