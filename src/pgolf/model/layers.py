"""Small building blocks shared by the model's modules."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def fake_quantize_rows(w: torch.Tensor, bits: int, k: float) -> torch.Tensor:
    """`w` rounded onto the per-row SDClip grid the export uses (pgolf/quant/grid.py), in float: the forward value of
    quantization-aware training."""
    top = (1 << (bits - 1)) - 1
    scale = (k * w.float().std(dim=1, keepdim=True, unbiased=False) / top).clamp_min(2.0 ** -14)
    return (torch.clamp(torch.round(w.float() / scale), -top, top) * scale).to(w.dtype)


class CastedLinear(nn.Linear):
    """A bias-free linear layer whose float32 weight is cast to the input's dtype (autocast-friendly).

    Optional late QAT (docs/techniques.md#late-qat): with `qat_bits` set, the forward uses
    w + qat_mix * (fake_quant(w) - w).detach(), a straight-through estimator. `qat_mix` is a non-persistent buffer,
    not a Python flag: torch.compile reads it at run time, so switching QAT on mid-training changes the compiled step
    (the 2026-03-21 record's class-attribute flag was constant-folded and never fired).
    """

    def __init__(self, in_features: int, out_features: int, zero_init: bool = False) -> None:
        super().__init__(in_features, out_features, bias=False)
        if zero_init:
            nn.init.zeros_(self.weight)
        self.qat_bits = 0
        self.qat_k = 12.85
        self.register_buffer("qat_mix", torch.zeros(()), persistent=False)

    def effective_weight(self) -> torch.Tensor:
        """The weight the forward multiplies by (fake-quantized under QAT), float32."""
        w = self.weight
        if self.qat_bits:
            w = w + self.qat_mix * (fake_quantize_rows(w, self.qat_bits, self.qat_k) - w).detach()
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight().to(x.dtype))
