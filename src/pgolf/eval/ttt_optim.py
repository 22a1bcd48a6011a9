"""What every TTT learner shares, written once: the optimizer factory (with `RowAdamW`, the adapters' AdamW, which
can leave finished documents' rows out of a step), the cosine learning rate across chunks, and `frozen`, which turns
the base weights' gradients off while adapters train and restores each weight's own flag."""

from __future__ import annotations

import contextlib
import math
from typing import Iterable, Iterator

import torch
from torch import nn
from torch.optim.adamw import adamw

from pgolf.errors import PgolfError

ADAM_EPS = 1e-10  # the records' TTT AdamW epsilon
SGD_MOMENTUM = 0.9  # full-model SGD (phased TTT's global phases, sgd-ttt), as the records
OPTIMIZERS = ("adamw", "sgd")


def make_optimizer(kind: str, params: Iterable[nn.Parameter], lr: float, *, betas: tuple[float, float] = (0.9, 0.95),
                   weight_decay: float = 0.0, device: torch.device | None = None) -> torch.optim.Optimizer:
    """The TTT optimizers, built in one place: "adamw" for the per-document adapters (`betas`, `weight_decay`, eps
    1e-10, fused on CUDA; a `RowAdamW`, which can leave the rows of finished documents out of a step) and "sgd"
    for full-model steps (momentum 0.9)."""
    if kind == "adamw":
        fused = True if device is not None and device.type == "cuda" else None
        return RowAdamW(params, lr=lr, betas=betas, eps=ADAM_EPS, weight_decay=weight_decay, fused=fused)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM)
    raise PgolfError(f"internal: TTT optimizer {kind!r} is not one of {', '.join(OPTIMIZERS)}")


class RowAdamW(torch.optim.AdamW):
    """AdamW over parameters whose first dimension is a batch row (one document's adapters each) that can leave
    rows out of a step: `step(rows)` updates only rows[p] (a slice) of a parameter p listed there, with AdamW's own
    update (`torch.optim.adamw.adamw`, on row slices of the parameter, its gradient and moments; the step count is
    the parameter's), so those rows end bit for bit where `torch.optim.AdamW` would put them. A row may be left
    out once nothing depends on it any more (its document is done, or the row is empty): from then on it is left
    out of every step. `step()` is AdamW's."""

    @torch.no_grad()
    def step(self, closure=None, rows: dict[nn.Parameter, slice] | None = None):  # type: ignore[override]
        if rows is None:
            return super().step(closure)
        if closure is not None:
            raise PgolfError("internal: RowAdamW.step takes no closure with rows")
        for group in self.param_groups:
            params, grads, avgs, squares, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:  # as AdamW initialises it (`Adam._init_group`)
                    on_device = group["fused"] or group["capturable"]
                    state["step"] = (torch.zeros((), dtype=torch.float32, device=p.device) if on_device
                                     else torch.tensor(0.0, dtype=torch.float32))
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                r = rows.get(p, slice(None))
                params.append(p[r])
                grads.append(p.grad[r])
                avgs.append(state["exp_avg"][r])
                squares.append(state["exp_avg_sq"][r])
                steps.append(state["step"])
            beta1, beta2 = group["betas"]
            adamw(params, grads, avgs, squares, [], steps, foreach=group["foreach"], capturable=group["capturable"],
                  differentiable=group["differentiable"], fused=group["fused"], amsgrad=group["amsgrad"], beta1=beta1,
                  beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"],
                  maximize=group["maximize"])
        return None


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
