"""What the TTT learners share: `frozen` gives every weight its own requires_grad back, the cosine schedule's ends,
the one optimizer factory, and `RowAdamW`, which steps some rows of the adapters as AdamW steps them."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pgolf.errors import PgolfError
from pgolf.eval.ttt_optim import RowAdamW, cosine_lr, frozen, make_optimizer, requires_grad


def _net() -> nn.Module:
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    net[0].bias.requires_grad_(False)  # mixed flags: each must come back as it was, not all True
    return net


def _flags(net: nn.Module) -> list[bool]:
    return [p.requires_grad for p in net.parameters()]


def test_frozen_turns_gradients_off_and_restores_each_flag():
    net = _net()
    before = _flags(net)
    with frozen(net):
        assert not any(_flags(net))
        assert net(torch.ones(1, 3)).grad_fn is None
        with requires_grad(net, True):  # the global phase's full-model steps, inside a frozen run
            assert all(_flags(net))
        assert not any(_flags(net))
    assert _flags(net) == before == [True, False, True, True]


def test_frozen_restores_after_an_error_and_when_a_generator_is_closed():
    net = _net()
    with pytest.raises(RuntimeError):
        with frozen(net):
            raise RuntimeError("boom")
    assert _flags(net) == [True, False, True, True]

    def scorer():  # as a TTT mode's `run`: a generator holding the frozen block
        with frozen(net):
            yield 1
            yield 2

    run = scorer()
    next(run)
    assert not any(_flags(net))
    run.close()
    assert _flags(net) == [True, False, True, True]


def test_cosine_lr_runs_from_peak_to_zero():
    assert cosine_lr(0.5, 0, 5) == 0.5 and cosine_lr(0.5, 4, 5) == pytest.approx(0.0, abs=1e-17)
    assert cosine_lr(0.5, 2, 5) == pytest.approx(0.25)
    assert cosine_lr(0.5, 0, 1) == 0.5  # one step: the peak
    # the expression both TTT learners used before they shared it, bit for bit
    assert all(cosine_lr(0.002, i, 7) == 0.5 * 0.002 * (1 + math.cos(math.pi * i / max(1, 6))) for i in range(7))


def test_the_optimizer_factory_builds_what_the_learners_asked_for():
    net = _net()
    adam = make_optimizer("adamw", net.parameters(), 0.01, betas=(0.0, 0.99), weight_decay=0.5,
                          device=torch.device("cpu"))
    group = adam.param_groups[0]
    assert isinstance(adam, torch.optim.AdamW)
    assert (group["lr"], group["betas"], group["weight_decay"], group["eps"]) == (0.01, (0.0, 0.99), 0.5, 1e-10)
    sgd = make_optimizer("sgd", list(net.parameters()), 0.002)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9
    assert sgd.param_groups[0]["lr"] == 0.002
    with pytest.raises(PgolfError, match="not one of adamw, sgd"):
        make_optimizer("lion", net.parameters(), 0.1)


def _adam_pair(shapes, weight_decay=0.5):
    """Equal parameters under torch's AdamW and under RowAdamW (the TTT settings: eps 1e-10, beta1 0)."""
    gen = torch.Generator().manual_seed(0)
    ref = [nn.Parameter(torch.randn(shape, generator=gen)) for shape in shapes]
    rows = [nn.Parameter(p.detach().clone()) for p in ref]
    kw = dict(lr=0.01, betas=(0.0, 0.99), weight_decay=weight_decay)
    return ref, torch.optim.AdamW(ref, eps=1e-10, **kw), rows, make_optimizer("adamw", rows, **kw)


def _set_grads(params, seed):
    gen = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)


def test_row_adamw_without_rows_is_adamw_bit_for_bit():
    ref, adam, rows, row_adam = _adam_pair([(4, 3, 5), (4, 6, 3)])
    assert isinstance(row_adam, RowAdamW)
    for step in range(4):
        _set_grads(ref, step), _set_grads(rows, step)
        adam.step(), row_adam.step()
    for a, b in zip(ref, rows):
        assert torch.equal(a, b)
        assert all(torch.equal(adam.state[a][k], row_adam.state[b][k]) for k in ("step", "exp_avg", "exp_avg_sq"))


def test_row_adamw_steps_the_rows_it_is_given_as_adamw_does():
    """Rows 0-3 for two steps, then rows 2-3 only (as rows whose documents are done drop out); the second
    parameter is not listed, so all its rows step (warm-start A). Each row ends where AdamW over the whole tensor
    leaves it after the steps it took part in, moments and all; a row left out does not move."""
    ref, adam, rows, row_adam = _adam_pair([(4, 3, 5), (4, 6, 3)])
    for step in range(5):
        _set_grads(ref, step), _set_grads(rows, step)
        adam.step()
        row_adam.step(rows={rows[0]: slice(0, 4) if step < 2 else slice(2, 4)})
        if step == 1:
            after_two = (ref[0].detach().clone(), adam.state[ref[0]]["exp_avg"].clone())
    assert torch.equal(rows[0][2:], ref[0][2:])
    assert torch.equal(row_adam.state[rows[0]]["exp_avg_sq"][2:], adam.state[ref[0]]["exp_avg_sq"][2:])
    assert torch.equal(rows[0][:2], after_two[0][:2]) and not torch.equal(rows[0][:2], ref[0][:2])
    assert torch.equal(row_adam.state[rows[0]]["exp_avg"][:2], after_two[1][:2])
    assert torch.equal(rows[1], ref[1])  # not listed: every row
    assert float(row_adam.state[rows[0]]["step"]) == float(adam.state[ref[0]]["step"]) == 5
