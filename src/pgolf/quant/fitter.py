"""The budget fitter: pick bits and SDClip k per tensor group so the artifact fits the cap with the least loss.

Records fitted the cap by hand (bit widths per group, SDClip k per group, Muon WD as a size lever) and one pruned
+-1 values against a budget computed in MiB (docs/techniques.md#quantization-and-export). Here the search is automatic
and the cap is the
decimal 16,000,000 bytes minus the exact code bytes:

1. For every group of per-row matrices and every option (bits in a window around the config's, k on a grid around
   the config's), round to nearest and measure (a) the bytes, estimated from the order-0 entropy of the group's
   integers (the entropy coder reaches it within a fraction of a percent; LZ-type codecs are calibrated below) plus
   its fp16 scales, and (b) the loss proxy: the diagonal-Hessian-weighted squared error sum_ij E_ij^2 H_jj / tr(H)
   (the second-order term of the layer loss, as in OBS/GPTQ; plain squared error without Hessians).
2. Choose one option per group minimizing the summed proxy under the byte budget: a multiple-choice knapsack solved
   by a Lagrangian sweep (per group, argmin error + lambda * bytes; bisection on lambda).
3. Quantize for real (GPTQ and LQER when enabled) and encode the artifact: the real size is the judge. The ratio of
   real to estimated bytes calibrates the estimate, and the budget shrinks by any overshoot until it fits.
4. If even the smallest plan does not fit, zero the +-1 integers with the smallest scales (least important, as in
   PR #609's selective pruning), binary-searching the count against the real encoded size.

The result never exceeds the budget: every returned artifact was encoded and measured. `FitReport` records the plan,
bytes per group, and predicted versus actual size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from pgolf.errors import PgolfError
from pgolf.quant.grid import round_to_grid, row_scales
from pgolf.quant.groups import tensor_group
from pgolf.quant.recipe import GroupPlan, is_row_matrix, plan_for, quantize_mixed
from pgolf.quant.schemes import QuantizedModel

if TYPE_CHECKING:
    from pgolf.config import QuantConfig


K_FACTORS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.15, 1.3, 1.5)
MAX_ROUNDS = 6


@dataclass
class Option:
    bits: int
    k: float
    est_bytes: float
    error: float


@dataclass
class FitReport:
    """What the fitter chose and how well it predicted the size."""

    budget_bytes: int
    plan: dict[str, dict] = field(default_factory=dict)
    group_est_bytes: dict[str, int] = field(default_factory=dict)
    predicted_bytes: int = 0
    actual_bytes: int = 0
    rounds: int = 0
    pruned: int = 0
    proxy_error: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def entropy_bytes(values: np.ndarray) -> float:
    """Order-0 entropy of an integer array, in bytes (the floor any per-symbol coder can reach)."""
    if values.size == 0:
        return 0.0
    counts = np.bincount((values.astype(np.int64) - int(values.min())).ravel())
    p = counts[counts > 0] / values.size
    return float(-(p * np.log2(p)).sum() * values.size / 8)


def _diag_error(w: torch.Tensor, w_hat: torch.Tensor, h_diag: torch.Tensor | None) -> float:
    e2 = (w - w_hat).double() ** 2
    if h_diag is None:
        return float(e2.sum())
    return float((e2 * h_diag[None, :]).sum() / h_diag.sum().clamp_min(1e-30))


def group_options(mats: dict[str, torch.Tensor], plan: GroupPlan, clip: str,
                  h_diags: dict[str, torch.Tensor]) -> list[Option]:
    """Every (bits, k) candidate of one group with its estimated bytes and proxy error (round to nearest)."""
    options = []
    for bits in range(max(2, plan.bits - 3), min(8, plan.bits + 1) + 1):
        for f in K_FACTORS:
            k = round(plan.k * f, 4)
            ints, err, rows = [], 0.0, 0
            for name, w in mats.items():
                s = row_scales(w, bits, clip, k)
                q = round_to_grid(w, s, bits)
                ints.append(q.to(torch.int8).numpy().ravel())
                err += _diag_error(w, q * s[:, None], h_diags.get(name))
                rows += w.shape[0]
            options.append(Option(bits, k, entropy_bytes(np.concatenate(ints)) + 2 * rows, err))
    return options


def choose(options: dict[str, list[Option]], budget: float) -> dict[str, Option] | None:
    """Least total error with total est_bytes <= budget (Lagrangian relaxation); None if nothing fits."""
    def pick(lam: float) -> dict[str, Option]:
        return {g: min(opts, key=lambda o: (o.error + lam * o.est_bytes, o.est_bytes)) for g, opts in options.items()}

    def size(sel: dict[str, Option]) -> float:
        return sum(o.est_bytes for o in sel.values())

    smallest = {g: min(opts, key=lambda o: o.est_bytes) for g, opts in options.items()}
    if size(smallest) > budget:
        return None
    if size(pick(0.0)) <= budget:
        return pick(0.0)
    lo, hi = 0.0, 1.0
    while size(pick(hi)) > budget:
        hi *= 4
        if hi > 1e30:
            return smallest
    for _ in range(60):
        mid = (lo + hi) / 2
        if size(pick(mid)) > budget:
            lo = mid
        else:
            hi = mid
    return pick(hi)


def _prune_pm1(qm: QuantizedModel, count: int) -> QuantizedModel:
    """A copy of `qm` with the `count` +-1 integers of smallest scale (least important) set to 0."""
    entries = []
    for i, qt in enumerate(qm.tensors):
        if qt.scheme.startswith("int") and qt.scheme.endswith(("_row", "_row_lqer")):
            q, s = qt.arrays["q"], qt.arrays["scale"].astype(np.float32)
            rows, cols = np.nonzero(np.abs(q) == 1)
            entries.append((s[rows] ** 2, i, rows, cols))
    if not entries:
        return qm
    imp = np.concatenate([e[0] for e in entries])
    order = np.argsort(imp, kind="stable")[:count]
    which = np.concatenate([np.full(len(e[0]), n) for n, e in enumerate(entries)])[order]
    pos = np.concatenate([np.arange(len(e[0])) for e in entries])[order]
    tensors = [type(qt)(qt.name, qt.shape, qt.dtype, qt.scheme, dict(qt.arrays)) for qt in qm.tensors]
    for n, (_, i, rows, cols) in enumerate(entries):
        sel = pos[which == n]
        if len(sel):
            q = tensors[i].arrays["q"].copy()
            q[rows[sel], cols[sel]] = 0
            tensors[i].arrays["q"] = q
    return QuantizedModel(tensors)


def _zero_integers(qm: QuantizedModel) -> QuantizedModel:
    """A copy with every per-row integer array zeroed: its encoded size is the bytes of everything else."""
    tensors = []
    for qt in qm.tensors:
        arrays = dict(qt.arrays)
        if qt.scheme.startswith("int") and "_row" in qt.scheme:
            arrays["q"] = np.zeros_like(arrays["q"])
        tensors.append(type(qt)(qt.name, qt.shape, qt.dtype, qt.scheme, arrays))
    return QuantizedModel(tensors)


def _record(report: FitReport, selection: dict[str, Option], ratio: float) -> None:
    report.plan = {g: {"bits": o.bits, "k": o.k} for g, o in sorted(selection.items())}
    report.group_est_bytes = {g: int(round(ratio * o.est_bytes)) for g, o in sorted(selection.items())}
    report.proxy_error = sum(o.error for o in selection.values())


def fit_budget(state: dict[str, torch.Tensor], qcfg: QuantConfig, *, budget_bytes: int,
               encoded_size: Callable[[QuantizedModel], int],
               hessians: dict[str, torch.Tensor] | None = None) -> tuple[QuantizedModel, FitReport]:
    """The `mixed` quantization of `state` that fits `budget_bytes` (as measured by `encoded_size`) with the
    least proxy loss (module docstring)."""
    if budget_bytes <= 0:
        raise PgolfError(f"budget fitter: no room for the model ({budget_bytes:,} bytes left after the code)")
    base = plan_for(qcfg)
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for name, t in state.items():
        if is_row_matrix(name, t, qcfg.passthrough_numel) and not (tensor_group(name) == "gate" and qcfg.int8_gates):
            groups.setdefault(tensor_group(name), {})[name] = t.detach().float().cpu()
    h_diags = {n: torch.diagonal(h).double() for n, h in (hessians or {}).items()}
    options = {g: group_options(mats, base[g], qcfg.clip, h_diags) for g, mats in groups.items()}
    report = FitReport(budget_bytes=int(budget_bytes))

    # Calibrate bytes = other + ratio * (entropy of the integers) on the config's own plan.
    qm0, _ = quantize_mixed(state, qcfg, hessians=hessians, plan=base)
    actual0 = encoded_size(qm0)
    other = float(encoded_size(_zero_integers(qm0)))
    est0 = sum(entropy_bytes(qt.arrays["q"]) for qt in qm0.tensors if tensor_group(qt.name) in groups
               and qt.scheme.startswith("int") and "_row" in qt.scheme)
    ratio = max(1e-3, (actual0 - other) / est0) if est0 > 0 else 1.0
    target = float(budget_bytes)
    best: tuple[QuantizedModel, int] | None = None
    for rnd in range(1, MAX_ROUNDS + 1):
        report.rounds = rnd
        selection = choose(options, (target - other) / ratio)
        if selection is None:
            break
        plan = dict(base) | {g: GroupPlan(o.bits, o.k) for g, o in selection.items()}
        qm, _ = quantize_mixed(state, qcfg, hessians=hessians, plan=plan)
        actual = encoded_size(qm)
        report.predicted_bytes = int(round(other + ratio * sum(o.est_bytes for o in selection.values())))
        if actual <= budget_bytes:
            best = (qm, actual)
            _record(report, selection, ratio)
            break
        target -= (actual - budget_bytes) + 0.002 * budget_bytes
    if best is None:
        # The smallest plan, then +-1 pruning binary-searched against the real size.
        smallest = {g: min(opts, key=lambda o: o.est_bytes) for g, opts in options.items()}
        plan = dict(base) | {g: GroupPlan(o.bits, o.k) for g, o in smallest.items()}
        qm, _ = quantize_mixed(state, qcfg, hessians=hessians, plan=plan)
        total_pm1 = sum(int((np.abs(qt.arrays["q"]) == 1).sum()) for qt in qm.tensors
                        if qt.scheme.startswith("int") and "_row" in qt.scheme)
        if encoded_size(_prune_pm1(qm, total_pm1)) > budget_bytes:
            raise PgolfError(f"budget fitter: even the smallest plan with every +-1 pruned exceeds "
                             f"{budget_bytes:,} bytes; shrink the model")
        lo, hi = 0, total_pm1
        while lo < hi:
            mid = (lo + hi) // 2
            if encoded_size(_prune_pm1(qm, mid)) <= budget_bytes:
                hi = mid
            else:
                lo = mid + 1
        qm = _prune_pm1(qm, lo)
        best = (qm, encoded_size(qm))
        report.pruned = lo
        report.predicted_bytes = int(round(other + ratio * sum(o.est_bytes for o in smallest.values())))
        _record(report, smallest, ratio)
    report.actual_bytes = int(best[1])
    return best[0], report
