"""What the TTT learners share: `frozen` gives every weight its own requires_grad back, the cosine schedule's ends,
and the one optimizer factory."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pgolf.errors import PgolfError
from pgolf.eval.ttt_optim import cosine_lr, frozen, make_optimizer, requires_grad


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
