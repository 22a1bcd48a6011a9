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
- LQER (pgolf/quant/lqer.py) then corrects the `lqer_top` matrices with the largest error ||W - W_hat||_F.

`plan_for` turns the config into a per-group `GroupPlan`; the budget fitter (pgolf/quant/fitter.py) searches over
plans and calls `quantize_mixed` with the one it picks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch

from pgolf.errors import PgolfError
from pgolf.quant.gptq import hessian_error, rtn_or_gptq
from pgolf.quant.grid import row_scales
from pgolf.quant.groups import GROUPS, tensor_group
from pgolf.quant.lqer import lqer_correction
from pgolf.quant.schemes import QuantizedModel, QuantizedTensor, quantize_state_dict, quantize_tensor

EXPORT_SCHEMES = ("int8", "mixed")  # `quant.scheme`: the baseline's int8 export, or the records' mixed recipe

if TYPE_CHECKING:
    from pgolf.config import QuantConfig


def parse_group_values(spec: str, cast: Callable[[str], Any], what: str, *, lo: float, hi: float) -> dict[str, Any]:
    """Parse "embed=7,attn=6,default=6" into {key: value}; keys are groups or group prefixes (`attn` covers
    `attn.q` ...) or `default`. PgolfError for a bad key, value or range."""
    out: dict[str, Any] = {}
    prefixes = {g.split(".")[0] for g in GROUPS}
    for part in (p.strip() for p in str(spec).split(",") if p.strip()):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or (key not in GROUPS and key not in prefixes and key != "default"):
            raise PgolfError(f"config: {what}: {part!r} is not GROUP=VALUE with GROUP one of "
                             f"{', '.join(sorted(set(GROUPS) | prefixes | {'default'}))}")
        try:
            v = cast(value.strip())
        except ValueError:
            raise PgolfError(f"config: {what}: {value.strip()!r} is not a valid {cast.__name__}") from None
        if not lo <= v <= hi:
            raise PgolfError(f"config: {what}: {key}={v} is outside [{lo}, {hi}]")
        out[key] = v
    return out


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
    """What `quantize_mixed` did: per tensor error (Hessian-weighted when available) and LQER choices."""

    errors: dict[str, float] = field(default_factory=dict)
    lqer: list[str] = field(default_factory=list)


def plan_for(qcfg: QuantConfig, groups: list[str] | None = None) -> dict[str, GroupPlan]:
    """The per-group plan a `QuantConfig` asks for."""
    bits = parse_group_values(qcfg.bits, int, "quant.bits", lo=2, hi=8)
    ks = parse_group_values(qcfg.clip_k, float, "quant.clip_k", lo=1e-3, hi=1e3)
    return {g: GroupPlan(group_value(bits, g, 6), group_value(ks, g, 12.85)) for g in (groups or GROUPS)}


def is_row_matrix(name: str, t: torch.Tensor, passthrough_numel: int) -> bool:
    """Whether `mixed` stores this tensor as a per-row integer matrix (and so the plan applies to it)."""
    return t.is_floating_point() and t.ndim == 2 and t.numel() > passthrough_numel


def quantize_matrix(w: torch.Tensor, plan: GroupPlan, clip: str, hessian: torch.Tensor | None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 integers, fp16 scales) of one matrix under `plan`."""
    scale = row_scales(w, plan.bits, clip, plan.k)
    return rtn_or_gptq(w, scale, plan.bits, hessian), scale.to(torch.float16)


def quantize_mixed(state: dict[str, torch.Tensor], qcfg: QuantConfig, *,
                   hessians: dict[str, torch.Tensor] | None = None,
                   plan: dict[str, GroupPlan] | None = None) -> tuple[QuantizedModel, MixedReport]:
    """The `mixed` recipe (module docstring) with `plan` (default: `plan_for(qcfg)`)."""
    plan = plan or plan_for(qcfg)
    hessians = hessians if qcfg.gptq else None
    report = MixedReport()
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
            tensors.append(quantize_tensor(name, t, "fp16"))
        elif t.ndim != 2:
            tensors.append(quantize_tensor(name, t, "int8_tensor"))
        else:
            h = hessians.get(name) if hessians else None
            record = _int_row_record(name, t, plan[group], qcfg.clip, h)
            w_hat = _dequant_q(record)
            residuals[name] = t.float() - w_hat
            report.errors[name] = hessian_error(t, w_hat, h)
            tensors.append(record)
    if qcfg.lqer_top > 0 and residuals:
        worst = sorted(residuals, key=lambda n: float(residuals[n].norm()), reverse=True)[:qcfg.lqer_top]
        by_name = {qt.name: qt for qt in tensors}
        for name in worst:
            qt = by_name[name]
            arrays, correction = lqer_correction(residuals[name], qcfg.lqer_rank)
            qt.arrays.update(arrays)
            qt.scheme += "_lqer"
            h = hessians.get(name) if hessians else None
            report.errors[name] = hessian_error(residuals[name], correction, h)
            report.lqer.append(name)
    return QuantizedModel(tensors), report


def _int_row_record(name: str, t: torch.Tensor, plan: GroupPlan, clip: str, h: torch.Tensor | None
                    ) -> QuantizedTensor:
    if not bool(torch.isfinite(t).all()):
        raise PgolfError(f"tensor {name}: has non-finite values (NaN or inf); cannot quantize it")
    q, scale = quantize_matrix(t.float(), plan, clip, h)
    dtype = str(t.dtype).removeprefix("torch.")
    return QuantizedTensor(name, tuple(t.shape), dtype, f"int{plan.bits}_row",
                           {"q": q.numpy(), "scale": scale.numpy()})


def _dequant_q(qt: QuantizedTensor) -> torch.Tensor:
    return torch.from_numpy(qt.arrays["q"]).float() * torch.from_numpy(qt.arrays["scale"]).float()[:, None]


def quantize_for_export(state: dict[str, torch.Tensor], qcfg: QuantConfig, *,
                        hessians: dict[str, torch.Tensor] | None = None) -> tuple[QuantizedModel, MixedReport | None]:
    """Quantize a state dict the way `qcfg.scheme` says (int8: the baseline; mixed: the records' recipe)."""
    if qcfg.scheme == "int8":
        return quantize_state_dict(state, "int8"), None
    if qcfg.scheme == "mixed":
        return quantize_mixed(state, qcfg, hessians=hessians)
    raise PgolfError(f"unknown quantization scheme {qcfg.scheme!r} (known: {', '.join(EXPORT_SCHEMES)})")
