"""The budget fitter never exceeds the cap, keeps an explicit plan that fits, reports every change it makes, and
prunes only when it must."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgolf.artifact.format import encode_artifact
from pgolf.options import resolve_config
from pgolf.errors import PgolfError
from pgolf.quant.fitter import choose, Option, fit_budget
from pgolf.quant.groups import tensor_group
from pgolf.quant.recipe import plan_for, quantize_mixed


def _state(seed: int, layers: int, dim: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {"tok_emb.weight": torch.randn(128, dim, generator=g) * 0.02}
    for i in range(layers):
        sd[f"blocks.{i}.attn.c_q.weight"] = torch.randn(dim, dim, generator=g) * 0.05
        sd[f"blocks.{i}.mlp.fc.weight"] = torch.randn(2 * dim, dim, generator=g) * 0.05
        sd[f"blocks.{i}.attn_scale"] = torch.ones(dim)
    return sd


def _qcfg(codec="lzma"):
    q = resolve_config("baseline").quant
    q.scheme, q.passthrough_numel, q.codec, q.fit = "mixed", 256, codec, True
    return q


def _size(q):
    return lambda qm: len(encode_artifact(qm, config={}, tokenizer={}, codec=q.codec))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 1000), layers=st.integers(1, 2), dim=st.sampled_from([32, 48]),
       fraction=st.floats(0.2, 1.5), codec=st.sampled_from(["lzma", "zlib"]))
def test_fitter_never_exceeds_the_budget(seed, layers, dim, fraction, codec):
    q = _qcfg(codec)
    state = _state(seed, layers, dim)
    base = _size(q)(quantize_mixed(state, q)[0])
    budget = int(base * fraction)
    try:
        qm, report = fit_budget(state, q, budget_bytes=budget, encoded_size=_size(q))
    except PgolfError as exc:
        assert "smallest plan" in str(exc)
        return
    assert _size(q)(qm) == report.actual_bytes <= budget
    assert report.kept_plan == (report.plan_bytes <= budget) and report.kept_plan == (report.changes == [])


def _encoded(q, qm) -> bytes:
    return encode_artifact(qm, config={}, tokenizer={}, codec=q.codec)


@pytest.mark.parametrize("gptq", [False, True])
def test_an_explicit_plan_that_fits_is_kept_byte_for_byte(gptq):
    q = _qcfg()
    q.bits, q.clip_k, q.gptq = "embed=7,attn=5,mlp=6", "embed=14,attn=13,mlp=11.5", gptq
    state = _state(0, 2, 48)
    hessians = {n: _hessian(t.shape[1], i) for i, (n, t) in enumerate(state.items()) if t.ndim == 2}
    plain = _encoded(q, quantize_mixed(state, q, hessians=hessians)[0])
    qm, report = fit_budget(state, q, budget_bytes=len(plain), encoded_size=_size(q), hessians=hessians)
    assert _encoded(q, qm) == plain
    assert report.kept_plan and report.changes == [] and report.rounds == 0 and report.pruned == 0
    assert report.plan == {"embed": {"bits": 7, "k": 14.0}, "attn.q": {"bits": 5, "k": 13.0},
                           "mlp.fc": {"bits": 6, "k": 11.5}}
    assert report.actual_bytes == report.plan_bytes == len(plain)
    assert "kept the explicit plan" in report.summary()


def _hessian(cols: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4 * cols, cols, generator=g) * torch.linspace(0.2, 2.0, cols)
    return x.T @ x


def test_a_plan_that_does_not_fit_changes_only_what_it_must_and_reports_every_change():
    q = _qcfg()
    state = _state(0, 2, 48)
    plain = len(_encoded(q, quantize_mixed(state, q)[0]))
    qm, report = fit_budget(state, q, budget_bytes=int(0.85 * plain), encoded_size=_size(q))
    assert not report.kept_plan and report.plan_bytes == plain and report.actual_bytes <= int(0.85 * plain)
    base = {g: {"bits": p.bits, "k": p.k} for g, p in plan_for(q, list(report.plan)).items()}
    changed = {g for g in report.plan if report.plan[g] != base[g]}
    assert changed and changed == {c["group"] for c in report.changes}
    for c in report.changes:
        assert c["from"] == base[c["group"]] and c["to"] == report.plan[c["group"]] and c["est_bytes_saved"] > 0
    schemes = {qt.name: qt.scheme for qt in qm.tensors}
    for g, o in report.plan.items():
        assert all(schemes[n] == f"int{o['bits']}_row" for n in state if tensor_group(n) == g)
    assert abs(report.predicted_bytes - report.actual_bytes) < 0.15 * report.actual_bytes
    line = report.summary()
    assert all(f"{c['group']} int{c['from']['bits']}" in line for c in report.changes)


def test_fitter_prunes_only_below_the_smallest_plan():
    q = _qcfg()
    state = _state(1, 1, 32)
    qm, report = fit_budget(state, q, budget_bytes=int(0.6 * _size(q)(quantize_mixed(state, q)[0])),
                            encoded_size=_size(q))
    assert report.pruned == 0 and not any(c["group"] == "all" for c in report.changes)
    small = int(0.2 * _size(q)(quantize_mixed(state, q)[0]))
    try:
        qm, report = fit_budget(state, q, budget_bytes=small, encoded_size=_size(q))
    except PgolfError:
        return
    assert report.pruned > 0 and report.changes[-1]["group"] == "all"
    assert report.changes[-1]["to"] == {"pruned": report.pruned} and report.changes[-1]["bytes_saved"] > 0
    with pytest.raises(PgolfError, match="no room"):
        fit_budget(state, q, budget_bytes=0, encoded_size=_size(q))


def test_choose_solves_a_small_knapsack_exactly():
    opts = {"a": [Option(6, 1, 100, 1.0), Option(4, 1, 60, 5.0)], "b": [Option(6, 1, 100, 1.0), Option(4, 1, 50, 2.0)]}
    assert {g: o.est_bytes for g, o in choose(opts, 160).items()} == {"a": 100, "b": 50}
    assert choose(opts, 100) is None
