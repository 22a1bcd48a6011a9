"""Muon over parameter banks, sharded across ranks (the record's parallel Muon, PR #1855 after modded-nanogpt's
distributed Muon; docs/techniques.md#parallel-muon).

Plain distributed Muon reduces every matrix gradient twice: DDP all-reduces it, then each rank orthogonalises its
round-robin share and a second all-reduce spreads the updates. Here the gradients of the Muon matrices arrive
unreduced (the trainer keeps DDP from touching them) and every bank of same-shape matrices costs one reduce-scatter
and one all-gather, both in `comm_dtype` (bf16 by default), i.e. the traffic of a single all-reduce at half the bytes:

1. stack the bank's gradients [k, rows, cols], padded to a multiple of the world size;
2. reduce-scatter: rank r receives the summed gradients of matrices r*m .. r*m + m - 1 (m = padded k / world);
3. momentum, Nesterov, row norm and Newton-Schulz on those m matrices only (their momentum lives on rank r only);
4. all-gather the m updates of every rank, and every rank applies all k.

With `comm_dtype=torch.float32` this is the same update as single-process Muon on the averaged gradient
(`tests/optim/test_sharded_muon.py`). At world size 1 nothing is communicated or rounded.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from pgolf.optim.muon import Muon


class ShardedMuon(Muon):
    """`Muon` whose `step` reduces the (unreduced, per-rank) gradients itself, sharded by bank."""

    def __init__(self, params, comm_dtype: torch.dtype = torch.bfloat16, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self.comm_dtype = comm_dtype

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
        for group in self.param_groups:
            banks: dict[torch.Size, list[int]] = {}
            for i, p in enumerate(group["params"]):
                if p.grad is not None:
                    banks.setdefault(p.shape, []).append(i)
            for idx in banks.values():
                self._step_bank(group, idx, world, rank, distributed)
        return loss

    def _step_bank(self, group: dict, idx: list[int], world: int, rank: int, distributed: bool) -> None:
        params = group["params"]
        per = -(-len(idx) // world)
        shape = params[idx[0]].shape
        if distributed:
            bank = torch.zeros(per * world, *shape, device=params[idx[0]].device, dtype=self.comm_dtype)
            bank[:len(idx)] = torch.stack([params[i].grad for i in idx])
            shard = torch.empty(per, *shape, device=bank.device, dtype=self.comm_dtype)
            dist.reduce_scatter_tensor(shard, bank, op=dist.ReduceOp.SUM)
            mine = idx[rank * per:(rank + 1) * per]
            for j, i in enumerate(mine):  # this rank's matrices now carry the mean gradient
                params[i].grad = shard[j].to(params[i].dtype).div_(world)
        else:
            mine = idx
        updates = self._orthogonalised(group, mine)
        if distributed:
            local = torch.zeros(per, *shape, device=bank.device, dtype=self.comm_dtype)
            for j, i in enumerate(mine):
                local[j] = updates[i]
            gathered = torch.empty(per * world, *shape, device=bank.device, dtype=self.comm_dtype)
            dist.all_gather_into_tensor(gathered, local)
            updates = {i: gathered[n] for n, i in enumerate(idx)}
        lr, wd = group["lr"], group["weight_decay"]
        for i in idx:
            p = params[i]
            if wd:
                p.mul_(1 - lr * wd)
            p.add_(updates[i].to(p.dtype), alpha=-lr)
