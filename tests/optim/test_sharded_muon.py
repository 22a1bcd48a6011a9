"""Sharded Muon over parameter banks (pgolf/optim/sharded_muon.py): two gloo ranks holding different gradients end
where single-process Muon ends on their average."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from conftest import spawn_gloo_workers
from pgolf.optim.muon import Muon
from pgolf.optim.sharded_muon import ShardedMuon

SHAPES = [(16, 8)] * 3 + [(8, 24)] * 2 + [(12, 12)]  # three banks; 3 and 1 matrices do not split evenly over 2


def _params() -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(s)) for s in SHAPES]


def _grad(step: int, rank: int, shape) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1000 * step + 7 * rank + shape[0] * shape[1])
    return torch.randn(shape, generator=gen)


def _run(make, rank: int | None, world: int) -> list[torch.Tensor]:
    """Three steps; rank None: the single process that sees the ranks' mean gradient."""
    params = _params()
    opt = make(params)
    for step in range(3):
        for k, p in enumerate(params):
            if rank is None:
                p.grad = sum(_grad(step, r, p.shape) + k for r in range(world)) / world
            else:
                p.grad = _grad(step, rank, p.shape) + k
        opt.step()
    return [p.detach().clone() for p in params]


KW = dict(lr=0.05, momentum=0.9, weight_decay=0.1, row_norm=True, coefficients="polar_express",
          ns_dtype=torch.float32)


def _worker(rank: int, world: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    exact = _run(lambda ps: ShardedMuon(ps, comm_dtype=torch.float32, **KW), rank, world)
    bf16 = _run(lambda ps: ShardedMuon(ps, comm_dtype=torch.bfloat16, **KW), rank, world)
    queue.put((rank, ([t.numpy() for t in exact], [t.numpy() for t in bf16])))
    dist.destroy_process_group()


def test_two_ranks_apply_the_single_process_update():
    results = spawn_gloo_workers(_worker)
    single = _run(lambda ps: Muon(ps, **KW), None, 2)
    start = _params()
    for rank in (0, 1):
        exact, bf16 = results[rank]
        for got, want, init in zip(exact, single, start):
            torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-5, atol=1e-6)
        for got, want, init in zip(bf16, single, start):  # bf16 traffic: close, not equal
            moved = (want - init).norm()
            assert (torch.from_numpy(got) - want).norm() < 0.05 * moved
    for a, b in zip(results[0][0], results[1][0]):  # every rank holds the same weights
        assert (a == b).all()


def test_one_process_is_plain_muon():
    torch.testing.assert_close(_run(lambda ps: ShardedMuon(ps, **KW), 0, 1), _run(lambda ps: Muon(ps, **KW), None, 1))
