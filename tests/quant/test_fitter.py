"""The budget fitter never exceeds the cap, spends spare bytes, and prunes only when it must."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgolf.artifact.format import encode_artifact
from pgolf.options import resolve_config
from pgolf.errors import PgolfError
from pgolf.quant.fitter import choose, Option, fit_budget
from pgolf.quant.recipe import quantize_mixed


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


def test_fitter_spends_spare_bytes_and_reports_predicted_vs_actual():
    q = _qcfg()
    state = _state(0, 2, 48)
    base = _size(q)(quantize_mixed(state, q)[0])
    qm, report = fit_budget(state, q, budget_bytes=2 * base, encoded_size=_size(q))
    assert base < report.actual_bytes <= 2 * base
    assert report.pruned == 0 and set(report.plan) == {"embed", "attn.q", "mlp.fc"}
    assert abs(report.predicted_bytes - report.actual_bytes) < 0.15 * report.actual_bytes


def test_fitter_prunes_only_below_the_smallest_plan():
    q = _qcfg()
    state = _state(1, 1, 32)
    qm, report = fit_budget(state, q, budget_bytes=int(0.6 * _size(q)(quantize_mixed(state, q)[0])),
                            encoded_size=_size(q))
    assert report.pruned == 0
    with pytest.raises(PgolfError, match="no room"):
        fit_budget(state, q, budget_bytes=0, encoded_size=_size(q))


def test_choose_solves_a_small_knapsack_exactly():
    opts = {"a": [Option(6, 1, 100, 1.0), Option(4, 1, 60, 5.0)], "b": [Option(6, 1, 100, 1.0), Option(4, 1, 50, 2.0)]}
    assert {g: o.est_bytes for g, o in choose(opts, 160).items()} == {"a": 100, "b": 50}
    assert choose(opts, 100) is None
