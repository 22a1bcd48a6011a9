"""The one owner of how gradients reach the weights, decided once from the config (pgolf/train/trainer.py used to
decide it by `isinstance`/`hasattr` on every step): DDP and its `no_sync` micro-steps, global or per-rank clipping,
sharded Muon's launch/finish around the other optimizers, the schedule's LR/momentum/decay, and the weight average
(EMA, SWA or none) taken after each step. Its saved state is the weight average's (checkpoint key `weight_average`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from pgolf.config import OptimConfig
from pgolf.errors import choose
from pgolf.optim.clip import clip_then_average
from pgolf.optim.ema import SWA, WEIGHT_AVERAGES, weight_average_kind
from pgolf.optim.muon import Muon
from pgolf.optim.schedule import muon_momentum
from pgolf.optim.sharded_muon import ShardedMuon
from pgolf.runtime import DistContext


class GradSync:
    """Wraps `model` (the possibly compiled `base_model`) in DDP when distributed and steps `optimizers`.

    The trainer calls `zero_grad()`, runs each micro-step's forward/backward on `self.model` inside
    `micro_step(last)`, then `step(...)` once."""

    def __init__(self, base_model: torch.nn.Module, model: torch.nn.Module, optimizers: list, cfg: OptimConfig,
                 ctx: DistContext) -> None:
        if ctx.distributed:
            ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
            model = DDP(model, device_ids=ids, broadcast_buffers=False)
        self.model = model
        self.base_model, self.optimizers, self.cfg, self.ctx = base_model, optimizers, cfg, ctx
        self.clip = cfg.grad_clip_norm
        self.sharded = [opt for opt in optimizers if isinstance(opt, ShardedMuon)]
        self.others = [opt for opt in optimizers if opt not in self.sharded]
        self.muons = [opt for opt in optimizers if isinstance(opt, Muon)]
        self.ddp = isinstance(model, DDP)
        # Per-rank clipping needs each rank's own gradient: DDP does not reduce, clip_then_average does after
        # clipping. Sharded Muon reduces its matrices' gradients itself (one reduce-scatter), so DDP must not
        # reduce them either.
        self.per_rank = self.ddp and ((self.clip > 0 and cfg.grad_clip_scope == "rank") or bool(self.sharded))
        owned = {id(p) for opt in self.sharded for g in opt.param_groups for p in g["params"]}
        self._unowned = [p for p in base_model.parameters() if id(p) not in owned]
        kind = weight_average_kind(cfg)
        self.average = choose(WEIGHT_AVERAGES, kind, "weight average")(base_model, cfg) if kind else None
        self._swa = isinstance(self.average, SWA)  # SWA snapshots on a schedule; EMA updates every step

    def zero_grad(self) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    def micro_step(self, last: bool) -> AbstractContextManager:
        """The context of one micro-step's forward/backward: DDP reduces only after the last one, and never when
        the gradients are clipped per rank or reduced by sharded Muon."""
        return self.model.no_sync() if self.ddp and (self.per_rank or not last) else nullcontext()

    def step(self, step: int, lr_mul: float, wd_mul: float = 1.0) -> None:
        """Apply the schedule, reduce and clip the gradients, step every optimizer, update the weight average."""
        momentum = muon_momentum(step, self.cfg)
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * lr_mul
        for opt in self.muons:
            for group in opt.param_groups:
                group["momentum"] = momentum
                group["weight_decay"] = self.cfg.muon_weight_decay * wd_mul
        if self.per_rank and self.sharded:
            if self.clip > 0:
                torch.nn.utils.clip_grad_norm_(self.base_model.parameters(), self.clip)
            clip_then_average(self._unowned, 0.0, self.ctx)
        elif self.per_rank:
            clip_then_average(self.base_model.parameters(), self.clip, self.ctx)
        elif self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.base_model.parameters(), self.clip)
        for opt in self.sharded:  # reduce-scatter and Newton-Schulz now; the all-gathers overlap the other steps
            opt.launch()
        for opt in self.others:
            opt.step()
        for opt in self.sharded:
            opt.finish()
        if self._swa:
            self.average.maybe_add(self.base_model, step + 1, lr_mul)
        elif self.average is not None:
            self.average.update(self.base_model)

    def swap_in_average(self) -> None:
        """Put the averaged weights (if any) into the model: they are what gets validated and exported."""
        if self.average is not None:
            self.average.copy_to(self.base_model)

    def state_dict(self) -> dict | None:
        return self.average.state_dict() if self.average is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.average is not None:
            self.average.load_state_dict(state)
