"""Muon against torch.optim.Muon with Newton-Schulz held equal, and against a hand-written reference loop.

The relationship with torch (derived here, checked below). torch keeps an EMA buffer E_t = m E_{t-1} + (1 - m) g_t;
the baseline (and pgolf) keep the SGD sum S_t = m S_{t-1} + g_t. From E_0 = S_0 = 0, induction gives
E_t = (1 - m) S_t for constant m. The Nesterov inputs to Newton-Schulz are then
  torch: lerp(g, E, m) = (1 - m) g + m E = (1 - m) (g + m S)      pgolf: g + m S,
and without Nesterov E versus S: the same factor (1 - m) in both cases. Newton-Schulz starts with X / (|X|_F + eps),
so the factor cancels up to eps / |X|_F (about 1e-8 here). Both scale the step by sqrt(max(1, rows/cols)) (torch's
adjust_lr_fn="original"). torch's Newton-Schulz always runs in bfloat16; to compare the optimizers rather than two
bfloat16 roundings, the test swaps torch's Newton-Schulz for the same float32 one on both sides, which leaves a
float32-rounding tolerance (rtol 1e-4). The end-to-end comparison with torch's own bfloat16 Newton-Schulz is in
test_muon.py (2% relative, measured about 1%).

The equivalence needs a constant momentum: when m changes between steps (the baseline's warm-up) E_t is no longer a
multiple of S_t, and the two forms genuinely differ; pgolf follows the baseline's SGD form.
"""

from __future__ import annotations

import pytest
import torch

import pgolf.optim.muon as pgolf_muon
from pgolf.optim.muon import Muon, zeropower_newton_schulz

SHAPES = [(32, 16), (16, 48), (24, 24), (7, 40)]


def _run(make_opt, steps: int = 6, seed: int = 0) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(*s)) for s in SHAPES]
    opt = make_opt(params)
    gen = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    return [p.detach().clone() for p in params]


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="this torch has no torch.optim.Muon")
@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("momentum", [0.95, 0.6])
def test_equals_torch_muon_with_the_same_newton_schulz(monkeypatch, nesterov, momentum):
    import torch.optim._muon as torch_muon

    torch_inputs, our_inputs = [], []

    def torch_ns(grad, coefficients, steps, eps):
        torch_inputs.append(grad.clone())
        return zeropower_newton_schulz(grad, steps=steps, coefficients=tuple(coefficients), eps=eps,
                                       dtype=torch.float32)

    def our_ns(g, **kwargs):
        our_inputs.extend(g.clone().unbind(0))  # pgolf batches same-shaped matrices: [n, rows, cols]
        return zeropower_newton_schulz(g, **kwargs)

    monkeypatch.setattr(torch_muon, "_zeropower_via_newtonschulz", torch_ns)
    monkeypatch.setattr(pgolf_muon, "zeropower_newton_schulz", our_ns)
    theirs = _run(lambda ps: torch.optim.Muon(ps, lr=0.03, momentum=momentum, nesterov=nesterov, weight_decay=0.0,
                                              adjust_lr_fn="original"))
    ours = _run(lambda ps: Muon(ps, lr=0.03, momentum=momentum, nesterov=nesterov, ns_dtype=torch.float32))
    assert len(torch_inputs) == len(our_inputs) == 6 * len(SHAPES)
    for t, o in zip(torch_inputs, our_inputs):
        assert torch.allclose(t, (1 - momentum) * o, rtol=1e-5, atol=1e-6)  # the derived factor, exactly
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def _reference(momenta: list[float], lrs: list[float], nesterov: bool = True) -> list[torch.Tensor]:
    """The baseline's update written out: S = m S + g; u = g + m S (Nesterov) or S; p -= lr sqrt(max(1,r/c)) NS(u)."""
    torch.manual_seed(0)
    params = [torch.randn(*s) for s in SHAPES]
    bufs = [torch.zeros_like(p) for p in params]
    gen = torch.Generator().manual_seed(1)
    for m, lr in zip(momenta, lrs):
        for p, buf in zip(params, bufs):
            g = torch.randn(p.shape, generator=gen)
            buf.mul_(m).add_(g)
            u = g + m * buf if nesterov else buf
            p -= lr * max(1.0, p.size(0) / p.size(1)) ** 0.5 * zeropower_newton_schulz(u, dtype=torch.float32)
    return params


def test_reads_lr_and_momentum_from_param_groups_every_step():
    """A momentum warm-up and an LR warmdown applied by writing param_groups, as the trainer does."""
    momenta = [0.85, 0.87, 0.9, 0.93, 0.95, 0.95]
    lrs = [0.04, 0.04, 0.04, 0.02, 0.01, 0.0]

    def schedule(params):
        opt = Muon(params, lr=123.0, momentum=0.0, ns_dtype=torch.float32)
        original_step = opt.step
        calls = iter(range(len(momenta)))

        def step():
            i = next(calls)
            for group in opt.param_groups:
                group["momentum"], group["lr"] = momenta[i], lrs[i]
            return original_step()

        opt.step = step
        return opt

    for got, want in zip(_run(schedule), _reference(momenta, lrs)):
        assert torch.allclose(got, want, atol=1e-6)


def test_default_newton_schulz_dtype_follows_the_device():
    """ns_dtype=None: float32 for CPU tensors (bfloat16 matmuls are slow there), bfloat16 on CUDA."""
    seen = []

    def spy(g, **kwargs):
        seen.append(kwargs["dtype"])
        return zeropower_newton_schulz(g, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pgolf_muon, "zeropower_newton_schulz", spy)
        p = torch.nn.Parameter(torch.randn(8, 4))
        p.grad = torch.randn(8, 4)
        Muon([p]).step()
    assert seen == [torch.float32]


def test_batched_newton_schulz_equals_one_by_one():
    """Each matrix of a batch is normalised and iterated on its own (scales differ by 100x across the batch)."""
    torch.manual_seed(0)
    g = torch.randn(5, 12, 20) * torch.logspace(-1, 1, 5)[:, None, None]
    for shape_g in (g, g.mT.contiguous()):
        batched = zeropower_newton_schulz(shape_g, dtype=torch.float32)
        single = torch.stack([zeropower_newton_schulz(m, dtype=torch.float32) for m in shape_g])
        assert torch.allclose(batched, single, atol=1e-6)


def test_same_shaped_parameters_are_independent():
    """Muon batches parameters by shape; stepping them together equals stepping each with its own optimizer."""
    torch.manual_seed(0)
    together = [torch.nn.Parameter(torch.randn(16, 8)) for _ in range(3)] + [torch.nn.Parameter(torch.randn(8, 8))]
    alone = [torch.nn.Parameter(p.detach().clone()) for p in together]
    opt = Muon(together, lr=0.05, ns_dtype=torch.float32)
    opts = [Muon([p], lr=0.05, ns_dtype=torch.float32) for p in alone]
    for step in range(3):
        for k, (a, b) in enumerate(zip(together, alone)):
            a.grad = torch.randn(a.shape, generator=torch.Generator().manual_seed(10 * step + k)) * (k + 1)
            b.grad = a.grad.clone()
        opt.step()
        for o in opts:
            o.step()
    for a, b in zip(together, alone):
        assert torch.allclose(a, b, atol=1e-6)


def test_newton_schulz_shape_contract():
    """Tall inputs are handled through the transpose; the result keeps the input's shape and dtype."""
    torch.manual_seed(0)
    for shape in [(40, 8), (8, 40), (16, 16)]:
        g = torch.randn(*shape, dtype=torch.float64)
        out = zeropower_newton_schulz(g, dtype=torch.float32)
        assert out.shape == shape and out.dtype == torch.float64
        s = torch.linalg.svdvals(out)
        assert s.min() > 0.6 and s.max() < 1.2
    assert torch.equal(zeropower_newton_schulz(torch.zeros(4, 6), dtype=torch.float32), torch.zeros(4, 6))
