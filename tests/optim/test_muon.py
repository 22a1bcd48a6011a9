"""Muon: Newton-Schulz band, agreement with torch.optim.Muon, and the distributed path over gloo."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

from conftest import spawn_gloo_workers
from pgolf.optim.muon import Muon, zeropower_newton_schulz


@pytest.mark.parametrize("shape", [(32, 96), (128, 48), (64, 256)])  # well-conditioned: no near-zero singular values
def test_newton_schulz_lands_in_the_classic_band(shape):
    torch.manual_seed(0)
    g = torch.randn(*shape)
    s = torch.linalg.svdvals(zeropower_newton_schulz(g, dtype=torch.float32))
    assert s.min() > 0.6 and s.max() < 1.2
    assert zeropower_newton_schulz(g, dtype=torch.float32).shape == shape


def _displacements(make_opt, steps: int = 5) -> list[torch.Tensor]:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(*s)) for s in [(32, 16), (16, 48), (24, 24)]]
    start = [p.detach().clone() for p in params]
    opt = make_opt(params)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    return [p.detach() - s for p, s in zip(params, start)]


def test_matches_torch_optim_muon():
    """torch keeps an EMA buffer (lerp) where we keep the SGD sum; the Nesterov updates differ by exactly the
    factor 1/(1-momentum), which Newton-Schulz's normalisation removes, and both scale by sqrt(max(1, rows/cols)).
    torch runs NS in bfloat16 (about 1% noise, measured); ours runs in float32 here."""
    theirs = _displacements(lambda ps: torch.optim.Muon(ps, lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0,
                                                        adjust_lr_fn="original"))
    ours = _displacements(lambda ps: Muon(ps, lr=0.02, momentum=0.95, ns_dtype=torch.float32))
    plain = _displacements(lambda ps: Muon(ps, lr=0.02, momentum=0.95, nesterov=False, ns_dtype=torch.float32))
    for a, b, c in zip(ours, theirs, plain):
        assert (a - b).norm() / b.norm() < 0.02
        assert (c - b).norm() / b.norm() > 0.1  # the comparison can tell a different update rule apart


def test_only_matrices():
    with pytest.raises(ValueError):
        Muon([torch.nn.Parameter(torch.zeros(3))])


def _three_steps() -> list[torch.Tensor]:
    """Five matrices, three Muon steps on seeded gradients; the same on every rank."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(16, 8)) for _ in range(5)]
    opt = Muon(params, lr=0.05)
    for step in range(3):
        gen = torch.Generator().manual_seed(step)
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    return [p.detach().clone() for p in params]


def _worker(rank: int, world: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    queue.put((rank, [t.numpy() for t in _three_steps()]))  # by value, not via shared-memory handles
    dist.destroy_process_group()


def test_distributed_equals_single_process():
    """Two gloo ranks (round-robin ownership, flat all-reduce) end with the single-process parameters."""
    results = spawn_gloo_workers(_worker)
    single = _three_steps()
    for rank in (0, 1):
        for got, want in zip(results[rank], single):
            assert torch.equal(torch.from_numpy(got), want)


def test_compiled_newton_schulz_is_the_same_step_without_recompiles():
    """optim.muon_compile: one fullgraph, fixed-shape graph per bank shape, compiled on the first step only."""
    from torch._dynamo.testing import CompileCounter

    def run(compile_mode: str, counter=None) -> list[torch.Tensor]:
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(s)) for s in [(16, 8), (16, 8), (8, 24)]]
        opt = Muon(params, lr=0.05, coefficients="polar_express", compile=compile_mode)
        if counter is not None:
            opt.compile_backend = counter
        for step in range(3):
            gen = torch.Generator().manual_seed(step)
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        return [p.detach() for p in params]

    counter = CompileCounter()
    torch._dynamo.reset()
    compiled = run("on", counter)
    torch._dynamo.reset()
    assert counter.frame_count == 2  # two bank shapes, three steps
    for a, b in zip(compiled, run("off")):
        torch.testing.assert_close(a, b)
    assert run("auto") is not None and Muon([torch.nn.Parameter(torch.zeros(2, 2))])._newton_schulz(
        torch.device("cpu")) is zeropower_newton_schulz  # auto compiles on CUDA only
