"""Small building blocks shared by the model's modules."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CastedLinear(nn.Linear):
    """A bias-free linear layer whose float32 weight is cast to the input's dtype (autocast-friendly)."""

    def __init__(self, in_features: int, out_features: int, zero_init: bool = False) -> None:
        super().__init__(in_features, out_features, bias=False)
        if zero_init:
            nn.init.zeros_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype))
