"""Gradient clipping per rank before the reduction (the 1.0611 record's way) against the global way."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

from conftest import spawn_gloo_workers
from pgolf.errors import PgolfError
from pgolf.optim.clip import clip_then_average
from pgolf.options import resolve_config
from pgolf.runtime import DistContext

# Two ranks' gradients for two parameters: rank 0's norm is 10, rank 1's is 0.5.
GRADS = {0: [torch.tensor([6.0, 0.0]), torch.tensor([[8.0]])], 1: [torch.tensor([0.3, 0.0]), torch.tensor([[0.4]])]}


def _params(rank: int) -> list[torch.nn.Parameter]:
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in GRADS[rank]]
    for p, g in zip(params, GRADS[rank]):
        p.grad = g.clone()
    return params


def _worker(rank: int, world: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    params = _params(rank)
    clip_then_average(params, 1.0, DistContext(rank, world, rank, torch.device("cpu")))
    queue.put((rank, [p.grad.numpy().copy() for p in params]))
    dist.destroy_process_group()


def test_two_ranks_clip_their_own_gradients_then_average():
    """Rank 0's gradient (norm 10) is scaled to norm 1, rank 1's (norm 0.5) is left alone; both end with the mean.
    Clipping the mean instead (the global way) gives a different answer, so the test can tell them apart."""
    results = spawn_gloo_workers(_worker)
    want = [(GRADS[0][i] / 10 + GRADS[1][i]) / 2 for i in range(2)]   # per rank, then the mean
    for rank in (0, 1):
        for got, w in zip(results[rank], want):
            assert torch.allclose(torch.from_numpy(got), w, atol=1e-6)
    mean = [(GRADS[0][i] + GRADS[1][i]) / 2 for i in range(2)]
    global_norm = torch.cat([m.flatten() for m in mean]).norm()
    assert global_norm > 1 and not torch.allclose(want[0], mean[0] / global_norm, atol=1e-3)


def test_one_process_is_plain_clipping():
    params = _params(0)
    clip_then_average(params, 1.0, DistContext(0, 1, 0, torch.device("cpu")))
    assert torch.allclose(torch.cat([p.grad.flatten() for p in params]).norm(), torch.tensor(1.0))


def test_scope_and_weight_decays_are_checked():
    with pytest.raises(PgolfError, match="optim.grad_clip_scope"):
        resolve_config("baseline", ["optim.grad_clip_scope=local"], environ={})
    with pytest.raises(PgolfError, match="weight decays"):
        resolve_config("baseline", ["optim.embed_weight_decay=-0.1"], environ={})
    cfg = resolve_config("record", environ={})
    assert cfg.optim.grad_clip_scope == "rank"
    assert (cfg.optim.embed_weight_decay, cfg.optim.scalar_weight_decay) == (0.085, 0.02)
