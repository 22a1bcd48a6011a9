"""Exponential moving average of the weights, swapped in before export (records from 03-20 on, decay 0.997 then
0.9965; CHALLENGE.md 5.2). Kept in float32 whatever the parameters' dtype."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """ema <- decay * ema + (1 - decay) * param after every optimizer step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {name: p.detach().float().clone() for name, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            self.shadow[name].lerp_(p.detach().float(), 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Replace the model's parameters with the averages."""
        for name, p in model.named_parameters():
            p.copy_(self.shadow[name].to(p.dtype))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow = {k: v.clone() for k, v in state.items()}
