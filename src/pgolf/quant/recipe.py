"""Model-level quantization recipes: from a trained state dict (and optional Hessians) to a `QuantizedModel`.

`int8` is the official baseline export (pgolf/quant/schemes.py). `mixed` is the records' recipe
(docs/techniques.md#quantization-and-export),
every piece a knob of `QuantConfig`:

- non-float tensors are stored raw; float tensors of at most `passthrough_numel` elements are fp16 passthrough,
  except attention-gate weights, which become int8 per row with `int8_gates` (QuantGate, PR #1736);
- every other 2-D float tensor is stored per row with the bit width of its group (`bits`; int7/int8 embeddings,
  int6 matrices; bits=2 is ternary {-1, 0, 1}) on the grid chosen by `clip` and the group's SDClip `clip_k`
  (pgolf/quant/grid.py), rounded to nearest or, where a Hessian is given, by GPTQ (pgolf/quant/gptq.py);
- larger tensors of other ranks: int8 with one scale (the baseline's rule);
- AWQ-lite (pgolf/quant/awq.py, PR #1908): with GPTQ, the `awq_top` most salient column groups of the model go
  to `awq_bits` inside the same solve;
- LQER (pgolf/quant/lqer.py) then corrects the `lqer_top` matrices with the largest error ||W - W_hat||_F, its B
  factor with one scale per `lqer_group` entries.

`plan_for` turns the config into a per-group `GroupPlan`; the budget fitter (pgolf/quant/fitter.py) searches over
plans and calls `quantize_mixed` with the one it picks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pgolf.errors import PgolfError
from pgolf.model.roles import keeps_fp32
from pgolf.quant.awq import fine_columns, group_saliency, select_groups
# `quant.scheme` and the parser of `quant.bits`/`quant.clip_k`, defined torch-free there
from pgolf.quant.choices import EXPORT_SCHEMES, parse_group_values
from pgolf.quant.gptq import FineColumns, hessian_error, rtn_or_gptq
from pgolf.quant.grid import row_scales
from pgolf.quant.groups import GROUPS, tensor_group
from pgolf.quant.lqer import lqer_correction
from pgolf.quant.schemes import (QuantizedModel, QuantizedTensor, awq_scheme, quantize_state_dict, quantize_tensor,
                                 row_integers)

if TYPE_CHECKING:
    from pgolf.config import QuantConfig


def group_value(values: dict[str, Any], group: str, fallback: Any) -> Any:
    """The value for `group`: exact key, then its prefix (`attn` for `attn.q`), then `default`, then `fallback`."""
    for key in (group, group.split(".")[0], "default"):
        if key in values:
            return values[key]
    return fallback


@dataclass
class GroupPlan:
    """How one tensor group is stored: bit width and SDClip multiplier."""

    bits: int
    k: float


@dataclass
class MixedReport:
    """What `quantize_mixed` did: per tensor error (Hessian-weighted when available), LQER choices and AWQ-lite's
    wide column groups (matrix name -> first columns)."""

    errors: dict[str, float] = field(default_factory=dict)
    lqer: list[str] = field(default_factory=list)
    awq: dict[str, list[int]] = field(default_factory=dict)


def plan_for(qcfg: QuantConfig, groups: list[str] | None = None) -> dict[str, GroupPlan]:
    """The per-group plan a `QuantConfig` asks for."""
    bits = parse_group_values(qcfg.bits, int, "quant.bits", lo=2, hi=8)
    ks = parse_group_values(qcfg.clip_k, float, "quant.clip_k", lo=1e-3, hi=1e3)
    return {g: GroupPlan(group_value(bits, g, 6), group_value(ks, g, 12.85)) for g in (groups or GROUPS)}


def is_row_matrix(name: str, t: torch.Tensor, passthrough_numel: int) -> bool:
    """Whether `mixed` stores this tensor as a per-row integer matrix (and so the plan applies to it)."""
    return t.is_floating_point() and t.ndim == 2 and t.numel() > passthrough_numel


def quantize_matrix(w: torch.Tensor, plan: GroupPlan, clip: str, hessian: torch.Tensor | None,
                    awq: tuple[list[int], int, int] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, FineColumns | None]:
    """(int8 integers, fp16 scales, AWQ-lite's wide columns or None) of one matrix under `plan`; `awq` = (first
    columns, group width, bits) of its wide groups."""
    scale = row_scales(w, plan.bits, clip, plan.k)
    fine = fine_columns(w.shape[1], awq[0], awq[1], scale, plan.bits, awq[2]) if awq else None
    return rtn_or_gptq(w, scale, plan.bits, hessian, fine), scale.to(torch.float16), fine


def awq_groups(state: dict[str, torch.Tensor], qcfg: QuantConfig, plan: dict[str, GroupPlan],
               hessians: dict[str, torch.Tensor] | None, act_rms: dict[str, torch.Tensor] | None = None
               ) -> dict[str, list[int]]:
    """AWQ-lite's choice (pgolf/quant/awq.py): GPTQ matrix name -> first columns of its `awq_bits` groups. Only
    matrices GPTQ solves (a Hessian, `quant.gptq`) whose plan width is below `awq_bits` compete; `act_rms` defaults
    to sqrt(diag H), which ranks a matrix's groups the same and the model's alike when every matrix saw the same
    rows."""
    if qcfg.awq_top <= 0 or not qcfg.gptq or not hessians:
        return {}
    saliency = {}
    for name, t in state.items():
        group = tensor_group(name)
        if (name not in hessians or not is_row_matrix(name, t, qcfg.passthrough_numel)
                or (group == "gate" and qcfg.int8_gates) or plan[group].bits >= qcfg.awq_bits
                or t.shape[1] < qcfg.awq_group):
            continue
        rms = act_rms[name] if act_rms and name in act_rms else torch.diagonal(hessians[name]).double().sqrt()
        saliency[name] = group_saliency(t.detach().cpu(), rms.cpu(), qcfg.awq_group)
    return select_groups(saliency, qcfg.awq_top, qcfg.awq_group)


def quantize_mixed(state: dict[str, torch.Tensor], qcfg: QuantConfig, *,
                   hessians: dict[str, torch.Tensor] | None = None,
                   plan: dict[str, GroupPlan] | None = None,
                   act_rms: dict[str, torch.Tensor] | None = None) -> tuple[QuantizedModel, MixedReport]:
    """The `mixed` recipe (module docstring) with `plan` (default: `plan_for(qcfg)`); `act_rms` (per weight name,
    from calibration) scores AWQ-lite's groups."""
    plan = plan or plan_for(qcfg)
    hessians = hessians if qcfg.gptq else None
    report = MixedReport(awq=awq_groups(state, qcfg, plan, hessians, act_rms))
    tensors: list[QuantizedTensor] = []
    residuals: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        group = tensor_group(name)
        t = t.detach().cpu()
        if not t.is_floating_point():
            tensors.append(quantize_tensor(name, t, "raw"))
        elif group == "gate" and qcfg.int8_gates and t.ndim == 2:
            tensors.append(_int_row_record(name, t, GroupPlan(8, 0.0), "search", None))
        elif t.numel() <= qcfg.passthrough_numel:
            tensors.append(quantize_tensor(name, t, "fp32" if keeps_fp32(name) else "fp16"))
        elif t.ndim != 2:
            tensors.append(quantize_tensor(name, t, "int8_tensor"))
        else:
            h = hessians.get(name) if hessians else None
            record = _int_row_record(name, t, plan[group], qcfg.clip, h, report.awq.get(name), qcfg)
            w_hat = row_integers(record.arrays, record.shape, plan[group].bits, qcfg.awq_bits)
            residuals[name] = t.float() - w_hat
            report.errors[name] = hessian_error(t, w_hat, h)
            tensors.append(record)
    if qcfg.lqer_top > 0 and residuals:
        worst = sorted(residuals, key=lambda n: float(residuals[n].norm()), reverse=True)[:qcfg.lqer_top]
        by_name = {qt.name: qt for qt in tensors}
        for name in worst:
            qt = by_name[name]
            arrays, correction = lqer_correction(residuals[name], qcfg.lqer_rank, qcfg.lqer_group)
            qt.arrays.update(arrays)
            qt.scheme += "_lqer"
            h = hessians.get(name) if hessians else None
            report.errors[name] = hessian_error(residuals[name], correction, h)
            report.lqer.append(name)
    return QuantizedModel(tensors), report


def _int_row_record(name: str, t: torch.Tensor, plan: GroupPlan, clip: str, h: torch.Tensor | None,
                    awq_starts: list[int] | None = None, qcfg: QuantConfig | None = None) -> QuantizedTensor:
    """One matrix's `intN_row` record, or `intN_row_awqM` when AWQ-lite chose groups of it (`awq_starts`)."""
    if not bool(torch.isfinite(t).all()):
        raise PgolfError(f"tensor {name}: has non-finite values (NaN or inf); cannot quantize it")
    awq = (awq_starts, qcfg.awq_group, qcfg.awq_bits) if awq_starts else None
    q, scale, fine = quantize_matrix(t.float(), plan, clip, h, awq)
    dtype = str(t.dtype).removeprefix("torch.")
    if fine is None:
        return QuantizedTensor(name, tuple(t.shape), dtype, f"int{plan.bits}_row",
                               {"q": q.numpy(), "scale": scale.numpy()})
    return QuantizedTensor(name, tuple(t.shape), dtype, awq_scheme(plan.bits, fine.bits),
                           {"q": q[:, ~fine.mask].contiguous().numpy(), "scale": scale.numpy(),
                            "q_awq": q[:, fine.mask].contiguous().numpy(),
                            "awq_start": np.array(awq_starts, dtype=np.int32)})


def quantize_for_export(state: dict[str, torch.Tensor], qcfg: QuantConfig, *,
                        hessians: dict[str, torch.Tensor] | None = None,
                        act_rms: dict[str, torch.Tensor] | None = None) -> tuple[QuantizedModel, MixedReport | None]:
    """Quantize a state dict the way `qcfg.scheme` says (int8: the baseline; mixed: the records' recipe)."""
    if qcfg.scheme == "int8":
        return quantize_state_dict(state, "int8"), None
    if qcfg.scheme == "mixed":
        return quantize_mixed(state, qcfg, hessians=hessians, act_rms=act_rms)
    raise PgolfError(f"unknown quantization scheme {qcfg.scheme!r} (known: {', '.join(EXPORT_SCHEMES)})")
