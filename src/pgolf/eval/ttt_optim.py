"""What every TTT learner shares, written once: the optimizer factory, the cosine learning rate across chunks, and
`frozen`, which turns the base weights' gradients off while adapters train and restores each weight's own flag."""

from __future__ import annotations

import contextlib
import math
from typing import Iterable, Iterator

import torch
from torch import nn

from pgolf.errors import PgolfError

ADAM_EPS = 1e-10  # the records' TTT AdamW epsilon
SGD_MOMENTUM = 0.9  # full-model SGD (phased TTT's global phases, sgd-ttt), as the records
OPTIMIZERS = ("adamw", "sgd")


def make_optimizer(kind: str, params: Iterable[nn.Parameter], lr: float, *, betas: tuple[float, float] = (0.9, 0.95),
                   weight_decay: float = 0.0, device: torch.device | None = None) -> torch.optim.Optimizer:
    """The TTT optimizers, built in one place: "adamw" for the per-document adapters (`betas`, `weight_decay`, eps
    1e-10, fused on CUDA) and "sgd" for full-model steps (momentum 0.9)."""
    if kind == "adamw":
        fused = True if device is not None and device.type == "cuda" else None
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=ADAM_EPS, weight_decay=weight_decay, fused=fused)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM)
    raise PgolfError(f"internal: TTT optimizer {kind!r} is not one of {', '.join(OPTIMIZERS)}")


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def cosine_lr(peak: float, step: int, steps: int) -> float:
    """`peak` at step 0 falling to 0 at step `steps` - 1 along a half cosine (the records' TTT schedule across
    chunks; one step: `peak`)."""
    return peak * 0.5 * (1 + math.cos(math.pi * step / max(steps - 1, 1)))


@contextlib.contextmanager
def requires_grad(model: nn.Module, flag: bool) -> Iterator[None]:
    """Every parameter of `model` with requires_grad `flag` inside the block; each one's own flag back after it
    (also when the block raises, or when a generator holding it is closed)."""
    params = list(model.parameters())
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(flag)
    try:
        yield
    finally:
        for p, flag_before in zip(params, before):
            p.requires_grad_(flag_before)


def frozen(model: nn.Module) -> contextlib.AbstractContextManager[None]:
    """No gradient into the base weights inside the block (adapters train on their own tensors); restored after."""
    return requires_grad(model, False)
