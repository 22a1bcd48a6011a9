"""Late quantization-aware training: which layers get fake quantization, and switching it on.

`configure_qat` runs before torch.compile and marks every block linear layer with `quant.qat_bits` and the SDClip
k of its group; `set_qat_active` flips their `qat_mix` buffers (see `pgolf.model.layers.CastedLinear`). The
records found little or no benefit (2026-04-01 README), so it is off by default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from pgolf.quant.groups import tensor_group
from pgolf.quant.recipe import plan_for

if TYPE_CHECKING:
    from pgolf.config import QuantConfig


def configure_qat(model: nn.Module, qcfg: QuantConfig) -> int:
    """Mark the block linears for QAT at `qcfg.qat_bits` with their group's SDClip k; returns how many."""
    from pgolf.model.layers import CastedLinear

    plan = plan_for(qcfg)
    count = 0
    for name, module in model.named_modules():
        if isinstance(module, CastedLinear) and name.startswith("blocks."):
            group_plan = plan[tensor_group(f"{name}.weight")]
            module.qat_bits = qcfg.qat_bits
            module.qat_k = group_plan.k
            count += 1
    return count


def set_qat_active(model: nn.Module, active: bool) -> None:
    """Switch fake quantization on or off in every configured layer (safe under torch.compile)."""
    from pgolf.model.layers import CastedLinear

    for module in model.modules():
        if isinstance(module, CastedLinear) and module.qat_bits:
            module.qat_mix.fill_(1.0 if active else 0.0)
