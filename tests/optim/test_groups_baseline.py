"""The baseline's optimizer grouping on the full baseline model, and properties of the baseline schedules."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf.config import ModelConfig, OptimConfig
from pgolf.model.gpt import GPT
from pgolf.model.roles import is_control
from pgolf.optim.groups import build_optimizers
from pgolf.optim.muon import Muon
from pgolf.optim.schedule import muon_momentum, warmdown_multiplier


@pytest.fixture(scope="module")
def baseline():
    model = GPT(ModelConfig())
    return model, build_optimizers(model, OptimConfig())


def test_the_baselines_control_tensors_are_control(baseline):
    """The official baseline's CONTROL_TENSOR_NAME_PATTERNS (attn_scale, mlp_scale, resid_mix, q_gain, skip_weight)
    are exactly the baseline model's control tensors."""
    model, _ = baseline
    official = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight")
    for name, _ in model.named_parameters():
        assert is_control(name) == any(p in name for p in official), name


def test_baseline_tensors_land_in_the_baseline_groups(baseline):
    model, opts = baseline
    cfg = OptimConfig()
    names = {id(p): n for n, p in model.named_parameters()}
    where: dict[str, tuple[str, float]] = {}
    for opt in opts:
        kind = "muon" if isinstance(opt, Muon) else "adam" if isinstance(opt, torch.optim.Adam) else "other"
        for group in opt.param_groups:
            assert group["base_lr"] == group["lr"]
            for p in group["params"]:
                assert names[id(p)] not in where, f"{names[id(p)]} is in two groups"
                where[names[id(p)]] = (kind, group["base_lr"])
    assert set(where) == set(names.values())
    matrices = {f"blocks.{i}.{m}.weight" for i in range(9)
                for m in ("attn.c_q", "attn.c_k", "attn.c_v", "attn.proj", "mlp.fc", "mlp.proj")}
    assert {n for n, (k, _) in where.items() if k == "muon"} == matrices
    assert all(where[n] == ("muon", cfg.matrix_lr) for n in matrices)
    assert where["tok_emb.weight"] == ("adam", cfg.tied_embed_lr)
    controls = {n for n in names.values() if n not in matrices and n != "tok_emb.weight"}
    assert len(controls) == 9 * 4 + 1  # attn_scale, mlp_scale, resid_mix, q_gain per block; skip_weights
    assert all(where[n] == ("adam", cfg.scalar_lr) for n in controls)
    assert where["blocks.4.resid_mix"][0] == "adam"  # 2-D but a control tensor: never Muon


def test_adam_settings(baseline):
    _, opts = baseline
    adam = next(o for o in opts if isinstance(o, torch.optim.Adam))
    cfg = OptimConfig()
    assert adam.defaults["betas"] == (cfg.beta1, cfg.beta2) and adam.defaults["eps"] == cfg.adam_eps
    assert all(g["weight_decay"] == 0 for g in adam.param_groups)  # the baseline's Adam: no decay in any group
    assert not adam.defaults["fused"]  # CPU parameters; fused is chosen only for CUDA parameters
    muon = next(o for o in opts if isinstance(o, Muon))
    assert muon.defaults["momentum"] == cfg.muon_momentum and muon.defaults["nesterov"]
    assert muon.defaults["backend_steps"] == cfg.muon_backend_steps


def test_untied_embedding_and_head_lrs():
    model = GPT(ModelConfig(vocab_size=64, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1,
                            tie_embeddings=False))
    cfg = OptimConfig(embed_lr=0.3, head_lr=0.01)
    lrs = {id(p): g["base_lr"] for o in build_optimizers(model, cfg) for g in o.param_groups for p in g["params"]}
    assert lrs[id(model.tok_emb.weight)] == 0.3 and lrs[id(model.lm_head.weight)] == 0.01


def test_momentum_warmup_is_linear_and_then_constant():
    cfg = OptimConfig(muon_momentum_warmup_start=0.8, muon_momentum=0.9, muon_momentum_warmup_steps=10)
    assert [round(muon_momentum(s, cfg), 6) for s in (0, 5, 10, 11, 10_000)] == [0.8, 0.85, 0.9, 0.9, 0.9]
    assert muon_momentum(0, OptimConfig(muon_momentum_warmup_steps=0)) == OptimConfig().muon_momentum


@settings(max_examples=200, deadline=None)
@given(step=st.integers(1, 50_000), elapsed=st.floats(0.0, 900.0), cap=st.floats(1.0, 900.0),
       warmdown=st.integers(0, 5_000), extra=st.floats(0.0, 100.0))
def test_time_warmdown_is_in_unit_interval_and_non_increasing_in_time(step, elapsed, cap, warmdown, extra):
    m = warmdown_multiplier(step, elapsed, cap, warmdown, 20_000)
    assert 0.0 <= m <= 1.0
    assert warmdown_multiplier(step, elapsed + extra, cap, warmdown, 20_000) <= m + 1e-12
    if elapsed >= cap and warmdown > 0:
        assert m == 0.0


def test_time_warmdown_matches_the_baselines_formula():
    # 1000 steps in 50 s: 50 ms/step; 1200 warmdown steps = 60 s. At 50 s of a 100 s cap, 50 s remain: 50/60.
    assert warmdown_multiplier(1000, 50.0, 100.0, 1200, 20_000) == pytest.approx(50 / 60)
    # 1000 steps in 30 s: 30 ms/step; warmdown 36 s; 70 s remain > 36 s: full LR.
    assert warmdown_multiplier(1000, 30.0, 100.0, 1200, 20_000) == 1.0


@settings(max_examples=100, deadline=None)
@given(iterations=st.integers(1, 10_000), warmdown=st.integers(1, 10_000), step=st.integers(0, 10_000))
def test_step_warmdown_without_cap(iterations, warmdown, step):
    step = min(step, iterations)
    m = warmdown_multiplier(step, 0.0, 0.0, warmdown, iterations)
    start = max(iterations - warmdown, 0)
    assert m == (1.0 if step < start else pytest.approx((iterations - step) / warmdown))
    assert 0.0 <= m <= 1.0
    assert warmdown_multiplier(iterations, 0.0, 0.0, warmdown, iterations) == 0.0
