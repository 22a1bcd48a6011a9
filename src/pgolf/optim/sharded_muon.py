"""Muon over parameter banks, sharded across ranks (the record's parallel Muon, PR #1855 after modded-nanogpt's
distributed Muon; docs/techniques.md#parallel-muon).

Plain distributed Muon reduces every matrix gradient twice: DDP all-reduces it, then each rank orthogonalises its
round-robin share and a second all-reduce spreads the updates. Here the gradients of the Muon matrices arrive
unreduced (the trainer keeps DDP from touching them) and every bank of same-shape matrices costs one reduce-scatter
and one all-gather, both in `comm_dtype` (bf16 by default), i.e. the traffic of a single all-reduce at half the bytes:

1. stack the bank's gradients [k, rows, cols], padded to a multiple of the world size;
2. reduce-scatter (every bank launched at once): rank r receives the summed gradients of matrices r*m .. r*m + m - 1
   (m = padded k / world);
3. momentum, Nesterov, row norm and Newton-Schulz on those m matrices only (their momentum lives on rank r only);
4. all-gather the m updates of every rank, launched without waiting, and every rank applies all k.

`launch()` does 1-3 and starts the all-gathers; `finish()` waits for them and applies the updates, so the trainer
runs the Adam step in between (overlap); `step()` is both. With `comm_dtype=torch.float32` this is the same update
as single-process Muon on the averaged gradient (`tests/optim/test_sharded_muon.py`). At world size 1 nothing is
communicated or rounded.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from pgolf.optim.muon import Muon


class ShardedMuon(Muon):
    """`Muon` whose step reduces the (unreduced, per-rank) gradients itself, sharded by bank."""

    def __init__(self, params, comm_dtype: torch.dtype = torch.bfloat16, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self.comm_dtype = comm_dtype
        self._pending: list = []  # (group, bank indices, updates or gathered bank, all-gather work or None)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        self.launch()
        self.finish()
        return loss

    @torch.no_grad()
    def launch(self) -> None:
        """Reduce-scatter every bank, orthogonalise this rank's shard, start the all-gathers."""
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
        scattered = []
        for group in self.param_groups:
            banks: dict[torch.Size, list[int]] = {}
            for i, p in enumerate(group["params"]):
                if p.grad is not None:
                    banks.setdefault(p.shape, []).append(i)
            for idx in banks.values():
                scattered.append((group, idx, *self._reduce_scatter(group, idx, world, distributed)))
        for group, idx, shard, work in scattered:
            params = group["params"]
            if not distributed:
                self._pending.append((group, idx, self._orthogonalised(group, idx), None))
                continue
            work.wait()
            per = shard.size(0)
            mine = idx[rank * per:(rank + 1) * per]
            for j, i in enumerate(mine):  # this rank's matrices now carry the mean gradient
                params[i].grad = shard[j].to(params[i].dtype).div_(world)
            updates = self._orthogonalised(group, mine)
            local = torch.zeros_like(shard)
            for j, i in enumerate(mine):
                local[j] = updates[i]
            gathered = torch.empty(per * world, *shard.shape[1:], device=shard.device, dtype=self.comm_dtype)
            self._pending.append((group, idx, gathered, dist.all_gather_into_tensor(gathered, local, async_op=True)))

    def _reduce_scatter(self, group: dict, idx: list[int], world: int, distributed: bool):
        if not distributed:
            return None, None
        params = group["params"]
        per = -(-len(idx) // world)
        bank = torch.zeros(per * world, *params[idx[0]].shape, device=params[idx[0]].device, dtype=self.comm_dtype)
        bank[:len(idx)] = torch.stack([params[i].grad for i in idx])
        shard = torch.empty(per, *bank.shape[1:], device=bank.device, dtype=self.comm_dtype)
        return shard, dist.reduce_scatter_tensor(shard, bank, op=dist.ReduceOp.SUM, async_op=True)

    @torch.no_grad()
    def finish(self) -> None:
        """Wait for the all-gathers and apply every bank's updates (with decoupled weight decay)."""
        for group, idx, updates, work in self._pending:
            if work is not None:
                work.wait()
                updates = {i: updates[n] for n, i in enumerate(idx)}
            lr, wd = group["lr"], group["weight_decay"]
            for i in idx:
                p = group["params"][i]
                if wd:
                    p.mul_(1 - lr * wd)
                p.add_(updates[i].to(p.dtype), alpha=-lr)
        self._pending.clear()
