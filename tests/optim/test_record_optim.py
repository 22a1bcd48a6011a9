"""Record optimizer techniques: Polar Express, MuonEq-R, decoupled weight decay, EMA, MIN_LR and warmdown fraction."""

from __future__ import annotations

import pytest
import torch

from pgolf.config import OptimConfig
from pgolf.optim.ema import EMA
from pgolf.optim.muon import Muon, zeropower_newton_schulz
from pgolf.optim.schedule import lr_multiplier, training_progress, wd_taper


@pytest.mark.parametrize("shape", [(64, 256), (128, 48), (512, 2048)])
def test_polar_express_lands_in_its_band_and_beats_classic(shape):
    torch.manual_seed(0)
    g = torch.randn(*shape)
    pe = torch.linalg.svdvals(zeropower_newton_schulz(g, coefficients="polar_express", dtype=torch.float32))
    classic = torch.linalg.svdvals(zeropower_newton_schulz(g, coefficients="classic", dtype=torch.float32))
    assert pe.min() > 0.85 and pe.max() < 1.15          # measured band about [0.86, 1.14]
    assert classic.min() < 0.75                         # classic NS5 leaves about [0.68, 1.13]
    assert pe.min() > classic.min() + 0.1 and (pe - 1).abs().mean() < (classic - 1).abs().mean()


def test_row_norm_makes_the_update_invariant_to_row_scaling():
    """MuonEq-R normalises rows before NS, so scaling one row of the gradient does not change the update."""
    def update(grad, row_norm):
        p = torch.nn.Parameter(torch.zeros(16, 32))
        p.grad = grad
        Muon([p], lr=1.0, momentum=0.0, row_norm=row_norm, ns_dtype=torch.float32).step()
        return p.detach().clone()

    torch.manual_seed(0)
    g = torch.randn(16, 32)
    scaled = g.clone()
    scaled[3] *= 50
    assert torch.allclose(update(g, True), update(scaled, True), atol=1e-5)
    assert not torch.allclose(update(g, False), update(scaled, False), atol=1e-2)


def test_decoupled_weight_decay():
    p = torch.nn.Parameter(torch.full((4, 4), 2.0))
    p.grad = torch.zeros(4, 4)  # zero gradient: the NS update is zero, only the decay acts
    Muon([p], lr=0.1, weight_decay=0.5, ns_dtype=torch.float32).step()
    assert torch.allclose(p.detach(), torch.full((4, 4), 2.0 * (1 - 0.1 * 0.5)))


def test_ema_equals_its_closed_form():
    model = torch.nn.Linear(3, 2, bias=False)
    values = [torch.randn(2, 3) for _ in range(6)]
    with torch.no_grad():
        model.weight.copy_(values[0])
    ema = EMA(model, decay=0.9)
    for v in values[1:]:
        with torch.no_grad():
            model.weight.copy_(v)
        ema.update(model)
    n = len(values) - 1
    closed = 0.9 ** n * values[0] + sum(0.1 * 0.9 ** (n - k) * values[k] for k in range(1, n + 1))
    ema.copy_to(model)
    assert torch.allclose(model.weight, closed, atol=1e-6)


def test_min_lr_floors_the_multiplier_and_warmdown_fraction():
    assert lr_multiplier(0, 60.0, 600.0, 10_000, 0, warmdown_frac=0.85) == 1.0    # progress 0.10 < 0.15
    assert lr_multiplier(0, 100.0, 600.0, 10_000, 0, warmdown_frac=0.85) == pytest.approx((5 / 6) / 0.85)
    assert lr_multiplier(0, 300.0, 600.0, 10_000, 0, warmdown_frac=0.85) == pytest.approx(0.5 / 0.85)
    assert lr_multiplier(0, 590.0, 600.0, 10_000, 0, warmdown_frac=0.85) == pytest.approx((1 / 60) / 0.85)
    assert lr_multiplier(0, 590.0, 600.0, 10_000, 0, warmdown_frac=0.85, min_lr=0.1) == 0.1
    assert lr_multiplier(900, 0.0, 0.0, 1000, 0, warmdown_frac=0.5) == pytest.approx(0.2)  # step-based
    assert lr_multiplier(1000, 0.0, 0.0, 1000, 200, min_lr=0.25) == 0.25                  # baseline warmdown


def test_optim_config_wires_muon_options():
    from pgolf.config import ModelConfig
    from pgolf.model.gpt import GPT
    from pgolf.optim.groups import build_optimizers

    cfg = OptimConfig(muon_ns="polar_express", muon_row_norm=True, muon_weight_decay=0.095)
    model = GPT(ModelConfig(vocab_size=64, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1))
    muon = next(o for o in build_optimizers(model, cfg) if isinstance(o, Muon))
    group = muon.param_groups[0]
    assert (group["coefficients"], group["row_norm"], group["weight_decay"]) == ("polar_express", True, 0.095)


def test_weight_decay_taper():
    assert wd_taper(0.0) == wd_taper(0.7) == 1.0
    assert wd_taper(0.85) == pytest.approx(0.75)
    assert wd_taper(1.0) == pytest.approx(0.5) and wd_taper(1.2) == pytest.approx(0.5)
    assert training_progress(10, 30.0, 600.0, 100) == pytest.approx(0.05)
    assert training_progress(10, 30.0, 0.0, 100) == pytest.approx(0.1)


def test_swa_is_the_mean_of_the_snapshots_taken_below_the_lr_threshold():
    from pgolf.optim.ema import SWA
    model = torch.nn.Linear(3, 2, bias=False)
    swa = SWA(model, every=2, lr_below=0.5)
    taken = []
    for step, lr_mul in enumerate([1.0, 0.9, 0.4, 0.4, 0.3, 0.2, 0.1], start=1):
        with torch.no_grad():
            model.weight.fill_(float(step))
        if swa.maybe_add(model, step, lr_mul):
            taken.append(step)
    assert taken == [4, 6]
    swa.copy_to(model)
    assert torch.allclose(model.weight, torch.full((2, 3), 5.0))


def test_training_with_swa(tiny_data, tiny_config, tmp_path):
    from pgolf.train.trainer import train
    result = train(tiny_config("optim.swa_every=1", "optim.swa_lr_below=1.01"), tiny_data, tmp_path / "r", echo=None)
    assert result["steps"] > 0
