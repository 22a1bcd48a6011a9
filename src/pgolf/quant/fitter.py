"""The budget fitter: keep the config's plan (bits and SDClip k per tensor group) when it fits the cap, and change it
as little as it must when it does not, reporting every change.

Records fitted the cap by hand (bit widths per group, SDClip k per group, Muon WD as a size lever) and one pruned
+-1 values against a budget computed in MiB (docs/techniques.md#quantization-and-export). The plan a preset spells
out (`quant.bits`, `quant.clip_k`) is such a hand fit, tuned on real losses, so the fitter trusts it over any proxy.
The cap is the decimal 16,000,000 bytes minus the exact code bytes:

1. Quantize with the explicit plan for real (GPTQ and LQER when enabled) and encode the artifact. If it fits, it is
   the result, unchanged: the same integers and bytes as without the fitter.
2. Otherwise, for every group of per-row matrices and every smaller option (bits in a window around the plan's, k on
   a grid around the plan's), round to nearest and measure (a) the bytes, estimated from the order-0 entropy of the
   group's integers (the entropy coder reaches it within a fraction of a percent; LZ-type codecs are calibrated
   below) plus its fp16 scales, and (b) the loss proxy: the diagonal-Hessian-weighted squared error
   sum_ij E_ij^2 H_jj / tr(H) (the second-order term of the layer loss, as in OBS/GPTQ; plain squared error without
   Hessians). AWQ-lite's wide column groups (pgolf/quant/awq.py, chosen once under the explicit plan) are rounded
   at `awq_bits` and counted as the separate stream the codec makes of them (their own entropy). A smaller option is always charged more error than the plan's own: the round-to-nearest proxy ranks
   the ways to shrink, it does not overrule the plan, and no group changes for free.
3. Choose one option per group minimizing the summed proxy under the byte budget: a multiple-choice knapsack solved
   by a Lagrangian sweep (per group, argmin error + lambda * bytes, the plan's option winning ties; bisection on
   lambda), so groups are shrunk where it costs least and the others keep their plan.
4. Quantize for real and encode: the real size is the judge. The ratio of real to estimated bytes is calibrated on
   the explicit plan, and the budget shrinks by any overshoot until it fits.
5. If even the smallest plan does not fit, zero the +-1 integers with the smallest scales (least important, as in
   PR #609's selective pruning), binary-searching the count against the real encoded size.

The result never exceeds the budget: every returned artifact was encoded and measured. `FitReport` records whether
the plan was kept, every change (group, from, to, estimated bytes saved; the pruning with its measured saving), the
final plan, bytes per group, and predicted versus actual size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from pgolf.errors import PgolfError
from pgolf.quant.grid import round_to_grid, row_scales
from pgolf.quant.groups import tensor_group
from pgolf.quant.awq import fine_columns
from pgolf.quant.recipe import GroupPlan, awq_groups, is_row_matrix, plan_for, quantize_mixed
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
    keep: bool = False  # the explicit plan's own option: preferred at equal cost


@dataclass
class FitReport:
    """What the fitter kept or changed, and how well it predicted the size."""

    budget_bytes: int
    kept_plan: bool = False
    plan_bytes: int = 0  # the explicit plan's real encoded size
    changes: list[dict] = field(default_factory=list)
    plan: dict[str, dict] = field(default_factory=dict)
    group_est_bytes: dict[str, int] = field(default_factory=dict)
    predicted_bytes: int = 0
    actual_bytes: int = 0
    rounds: int = 0
    pruned: int = 0
    proxy_error: float | None = None  # summed proxy of a changed plan (none is computed for a kept one)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line for the log: kept, or every change and what it saved."""
        if self.kept_plan:
            return (f"kept the explicit plan {_plan_text(self.plan)}: {self.actual_bytes} bytes <= budget "
                    f"{self.budget_bytes}")
        changes = "; ".join(f"{c['group']} {_option_text(c['from'])} -> {_option_text(c['to'])} "
                            f"(saves ~{c['est_bytes_saved']} bytes)" if "est_bytes_saved" in c else
                            f"{c['group']}: {c['to']['pruned']} +-1 zeroed (saves {c['bytes_saved']} bytes)"
                            for c in self.changes)
        return (f"the explicit plan needs {self.plan_bytes} bytes > budget {self.budget_bytes}; "
                f"{len(self.changes)} changes: {changes}; predicted {self.predicted_bytes} actual "
                f"{self.actual_bytes} rounds {self.rounds}")


def _option_text(o: dict) -> str:
    return f"int{o['bits']} k={o['k']:g}"


def _plan_text(plan: dict[str, dict]) -> str:
    return ", ".join(f"{g} {_option_text(o)}" for g, o in plan.items())


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
                  h_diags: dict[str, torch.Tensor], awq: dict[str, list[int]] | None = None,
                  qcfg: QuantConfig | None = None) -> list[Option]:
    """Every (bits, k) candidate of one group with its estimated bytes and proxy error (round to nearest); the
    matrices in `awq` keep their wide column groups at `qcfg.awq_bits` in every candidate narrower than that."""
    options = []
    for bits in range(max(2, plan.bits - 3), min(8, plan.bits + 1) + 1):
        for f in K_FACTORS:
            k = round(plan.k * f, 4)
            ints, wide, err, rows = [], [], 0.0, 0
            for name, w in mats.items():
                s = row_scales(w, bits, clip, k)
                q = round_to_grid(w, s, bits)
                w_hat = q * s[:, None]
                if awq and name in awq and bits < qcfg.awq_bits:
                    fine = fine_columns(w.shape[1], awq[name], qcfg.awq_group, s, bits, qcfg.awq_bits)
                    q_wide = round_to_grid(w[:, fine.mask], fine.scale, fine.bits)
                    w_hat[:, fine.mask] = q_wide * fine.scale[:, None]
                    wide.append(q_wide.to(torch.int8).numpy())
                    q = q[:, ~fine.mask]
                ints.append(q.to(torch.int8).numpy().ravel())
                err += _diag_error(w, w_hat, h_diags.get(name))
                rows += w.shape[0]
            options.append(Option(bits, k, _est_bytes(ints, rows, wide), err))
    return options


def _est_bytes(ints: list[np.ndarray], rows: int, wide: list[np.ndarray] | None = None) -> float:
    """A group's estimated bytes: the order-0 entropy of all its integers plus one fp16 scale per row, and the
    entropy of AWQ-lite's wide columns apart (their own stream; their step is derived, not stored)."""
    est = entropy_bytes(np.concatenate([a.ravel() for a in ints])) + 2 * rows
    if wide:
        est += entropy_bytes(np.concatenate([a.ravel() for a in wide]))
    return est


def shrink_options(options: list[Option], plan: GroupPlan) -> list[Option]:
    """The plan's own option (`keep`) and every smaller one, each charged more proxy error than the plan's (so no
    group changes for free: the proxy ranks the ways to shrink, it never overrules the plan)."""
    own = next(o for o in options if o.bits == plan.bits and o.k == round(plan.k, 4))
    floor = own.error * (1 + 1e-6) + 1e-30
    smaller = [Option(o.bits, o.k, o.est_bytes, max(o.error, floor)) for o in options if o.est_bytes < own.est_bytes]
    return [Option(own.bits, own.k, own.est_bytes, own.error, keep=True), *smaller]


def choose(options: dict[str, list[Option]], budget: float) -> dict[str, Option] | None:
    """Least total error with total est_bytes <= budget (Lagrangian relaxation); None if nothing fits."""
    def pick(lam: float) -> dict[str, Option]:
        return {g: min(opts, key=lambda o: (o.error + lam * o.est_bytes, not o.keep, o.est_bytes))
                for g, opts in options.items()}

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
        if qt.is_row_scaled:
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
        if qt.is_row_scaled:
            for key in ("q", "q_awq"):
                if key in arrays:
                    arrays[key] = np.zeros_like(arrays[key])
        tensors.append(type(qt)(qt.name, qt.shape, qt.dtype, qt.scheme, arrays))
    return QuantizedModel(tensors)


def _group_est_bytes(qm: QuantizedModel, groups: dict[str, dict[str, torch.Tensor]]) -> dict[str, float]:
    """`_est_bytes` of each fitted group's real (GPTQ) integers in `qm` (AWQ-lite's wide columns apart)."""
    ints: dict[str, list[np.ndarray]] = {}
    wide: dict[str, list[np.ndarray]] = {}
    for qt in qm.tensors:
        if tensor_group(qt.name) in groups and qt.is_row_scaled:
            ints.setdefault(tensor_group(qt.name), []).append(qt.arrays["q"])
            if "q_awq" in qt.arrays:
                wide.setdefault(tensor_group(qt.name), []).append(qt.arrays["q_awq"])
    return {g: _est_bytes(qs, sum(q.shape[0] for q in qs), wide.get(g)) for g, qs in sorted(ints.items())}


def _record(report: FitReport, selection: dict[str, Option], own: dict[str, Option], ratio: float) -> None:
    report.plan = {g: {"bits": o.bits, "k": o.k} for g, o in sorted(selection.items())}
    report.group_est_bytes = {g: int(round(ratio * o.est_bytes)) for g, o in sorted(selection.items())}
    report.proxy_error = sum(o.error for o in selection.values())
    report.changes = [{"group": g, "from": {"bits": own[g].bits, "k": own[g].k}, "to": {"bits": o.bits, "k": o.k},
                       "est_bytes_saved": int(round(ratio * (own[g].est_bytes - o.est_bytes)))}
                      for g, o in sorted(selection.items()) if not o.keep]


def fit_budget(state: dict[str, torch.Tensor], qcfg: QuantConfig, *, budget_bytes: int,
               encoded_size: Callable[[QuantizedModel], int],
               hessians: dict[str, torch.Tensor] | None = None,
               act_rms: dict[str, torch.Tensor] | None = None) -> tuple[QuantizedModel, FitReport]:
    """The `mixed` quantization of `state` under `budget_bytes` (as measured by `encoded_size`): the config's plan
    when it fits, else the least proxy loss over smaller plans (module docstring). `act_rms` (from calibration)
    scores AWQ-lite's groups."""
    if budget_bytes <= 0:
        raise PgolfError(f"budget fitter: no room for the model ({budget_bytes:,} bytes left after the code)")
    base = plan_for(qcfg)
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for name, t in state.items():
        if is_row_matrix(name, t, qcfg.passthrough_numel) and not (tensor_group(name) == "gate" and qcfg.int8_gates):
            groups.setdefault(tensor_group(name), {})[name] = t.detach().float().cpu()
    report = FitReport(budget_bytes=int(budget_bytes))

    # 1. The explicit plan, for real; calibrate bytes = other + ratio * (estimated group bytes) on it.
    qm0, _ = quantize_mixed(state, qcfg, hessians=hessians, plan=base, act_rms=act_rms)
    actual0 = report.plan_bytes = encoded_size(qm0)
    other = float(encoded_size(_zero_integers(qm0)))
    est0 = _group_est_bytes(qm0, groups)
    ratio = max(1e-3, (actual0 - other) / sum(est0.values())) if sum(est0.values()) > 0 else 1.0
    if actual0 <= budget_bytes:
        report.kept_plan = True
        report.plan = {g: {"bits": base[g].bits, "k": base[g].k} for g in est0}
        report.group_est_bytes = {g: int(round(ratio * b)) for g, b in est0.items()}
        report.predicted_bytes = report.actual_bytes = actual0
        return qm0, report

    # 2-4. Shrink the groups where it costs the proxy least, until the real size fits.
    h_diags = {n: torch.diagonal(h).double() for n, h in (hessians or {}).items()}
    awq = awq_groups(state, qcfg, base, hessians if qcfg.gptq else None, act_rms)
    options = {g: shrink_options(group_options(mats, base[g], qcfg.clip, h_diags, awq, qcfg), base[g])
               for g, mats in groups.items()}
    own = {g: opts[0] for g, opts in options.items()}
    measured = {_key(own): (qm0, actual0)}
    target = float(budget_bytes)
    best: tuple[QuantizedModel, int] | None = None
    for rnd in range(1, MAX_ROUNDS + 1):
        report.rounds = rnd
        selection = choose(options, (target - other) / ratio)
        if selection is None:
            break
        if _key(selection) not in measured:
            qm, _ = quantize_mixed(state, qcfg, hessians=hessians, plan=_plan(base, selection), act_rms=act_rms)
            measured[_key(selection)] = (qm, encoded_size(qm))
        qm, actual = measured[_key(selection)]
        report.predicted_bytes = int(round(other + ratio * sum(o.est_bytes for o in selection.values())))
        if actual <= budget_bytes:
            best = (qm, actual)
            _record(report, selection, own, ratio)
            break
        target -= (actual - budget_bytes) + 0.002 * budget_bytes
    if best is None:
        # 5. The smallest plan, then +-1 pruning binary-searched against the real size.
        smallest = {g: min(opts, key=lambda o: o.est_bytes) for g, opts in options.items()}
        qm, _ = quantize_mixed(state, qcfg, hessians=hessians, plan=_plan(base, smallest), act_rms=act_rms)
        unpruned = encoded_size(qm)
        total_pm1 = sum(int((np.abs(qt.arrays["q"]) == 1).sum()) for qt in qm.tensors
                        if qt.is_row_scaled)
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
        _record(report, smallest, own, ratio)
        if lo:
            report.changes.append({"group": "all", "from": {"pruned": 0}, "to": {"pruned": lo},
                                   "bytes_saved": unpruned - best[1]})
    report.actual_bytes = int(best[1])
    return best[0], report


def _key(selection: dict[str, Option]) -> tuple:
    return tuple(sorted((g, o.bits, o.k) for g, o in selection.items()))


def _plan(base: dict[str, GroupPlan], selection: dict[str, Option]) -> dict[str, GroupPlan]:
    return dict(base) | {g: GroupPlan(o.bits, o.k) for g, o in selection.items()}
