"""Exponential moving average of the weights, swapped in before export (records from 03-20 on, decay 0.997 then
0.9965; docs/techniques.md#ema-and-swa). Kept in float32 whatever the parameters' dtype.

With only a few hundred steps the average still carries early, much worse weights, so it hurts at the scales a CPU
reaches (measured: docs/BENCHMARKS.md, record-cpu ablation); the records' gain came at thousands of steps."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """ema <- decay * ema + (1 - decay) * param after every optimizer step, as one fused `_foreach_lerp_` over all
    parameters (one kernel launch per step instead of one per tensor)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {name: p.detach().float().clone() for name, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        names, params = zip(*model.named_parameters())
        params = [p.detach() if p.dtype == torch.float32 else p.detach().float() for p in params]
        torch._foreach_lerp_([self.shadow[n] for n in names], params, 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Replace the model's parameters with the averages."""
        for name, p in model.named_parameters():
            p.copy_(self.shadow[name].to(p.dtype))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow = {k: v.clone() for k, v in state.items()}


class SWA:
    """Stochastic weight averaging (Izmailov et al., arXiv:1803.05407): the uniform mean of snapshots taken every
    `every` steps once the LR multiplier has fallen below `lr_below` (PR #265: every 120 steps below 0.5; the 03-22
    "tight" SWA: every 50 steps below 0.2; docs/techniques.md#ema-and-swa). Swapped in before export like EMA."""

    def __init__(self, model: nn.Module, every: int, lr_below: float) -> None:
        self.every, self.lr_below = every, lr_below
        self.total = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in model.named_parameters()}
        self.count = 0

    @torch.no_grad()
    def maybe_add(self, model: nn.Module, step: int, lr_mul: float) -> bool:
        """Add a snapshot after `step` if it is due; returns whether it was taken."""
        if lr_mul >= self.lr_below or step % self.every:
            return False
        for name, p in model.named_parameters():
            self.total[name].add_(p.detach().float())
        self.count += 1
        return True

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Replace the model's parameters with the mean of the snapshots (no-op before the first one)."""
        if self.count:
            for name, p in model.named_parameters():
                p.copy_((self.total[name] / self.count).to(p.dtype))

    def state_dict(self) -> dict:
        return {"count": self.count, "total": {k: v.clone() for k, v in self.total.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state["count"])
        self.total = {k: v.clone() for k, v in state["total"].items()}


# Weight average kind (`weight_average_kind`) -> factory (model, optim config).
WEIGHT_AVERAGES = {
    "ema": lambda model, o: EMA(model, o.ema_decay),
    "swa": lambda model, o: SWA(model, o.swa_every, o.swa_lr_below),  # same swap-in protocol as EMA
}


def weight_average_kind(optim_cfg) -> str:
    """The average a run keeps: "ema" when ema_decay > 0, else "swa" when swa_every > 0, else "" (none)."""
    return "ema" if optim_cfg.ema_decay > 0 else "swa" if optim_cfg.swa_every > 0 else ""
