"""GradSync (pgolf/train/sync.py) decides once, from the config, what the trainer's step used to decide per step;
RunParts (pgolf/train/state.py) saves and loads the components' state under the checkpoint's keys."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

from pgolf.model.gpt import GPT
from pgolf.optim.ema import EMA, SWA
from pgolf.optim.groups import build_optimizers
from pgolf.runtime import DistContext
from pgolf.train.state import RunParts
from pgolf.train.sync import GradSync

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def _sync(cfg) -> GradSync:
    torch.manual_seed(0)
    model = GPT(cfg.model)
    return GradSync(model, model, build_optimizers(model, cfg.optim), cfg.optim, CPU)


def _train_one_step(sync: GradSync, cfg, lr_mul: float = 1.0) -> None:
    sync.zero_grad()
    x = torch.randint(0, cfg.model.vocab_size, (2, 16))
    with sync.micro_step(last=True):
        sync.model(x, x).backward()
    sync.step(0, lr_mul)


def test_the_weight_average_is_chosen_once_from_the_config(tiny_config):
    assert _sync(tiny_config()).average is None and _sync(tiny_config()).state_dict() is None
    assert isinstance(_sync(tiny_config("optim.ema_decay=0.9")).average, EMA)
    assert isinstance(_sync(tiny_config("optim.swa_every=1")).average, SWA)
    one = _sync(tiny_config())
    assert not one.ddp and not one.per_rank and isinstance(one.micro_step(last=False), nullcontext)


def test_swa_snapshots_only_below_its_lr_and_the_state_round_trips(tiny_config):
    cfg = tiny_config("optim.swa_every=1", "optim.swa_lr_below=0.5")
    sync = _sync(cfg)
    _train_one_step(sync, cfg, lr_mul=1.0)
    assert sync.average.count == 0
    _train_one_step(sync, cfg, lr_mul=0.25)
    saved = sync.state_dict()
    assert saved["count"] == 1
    _train_one_step(sync, cfg, lr_mul=0.25)
    sync.load_state_dict(saved)
    assert sync.average.count == 1


def test_ema_is_swapped_in_and_the_parts_round_trip(tiny_config, tiny_data):
    from pgolf.data.loader import make_loader

    cfg = tiny_config("optim.ema_decay=0.5")
    sync = _sync(cfg)
    loader = make_loader(cfg, tiny_data, 0, 1, pin=False)
    parts = RunParts(sync.base_model, sync.optimizers, sync, loader)
    _train_one_step(sync, cfg)
    saved = parts.state_dict()
    assert set(saved) == {"model", "optimizers", "weight_average", "loader"}  # the checkpoint's keys
    saved["model"] = {k: v.clone() for k, v in saved["model"].items()}  # state_dict() shares the live tensors
    _train_one_step(sync, cfg)
    parts.load_state_dict(saved, torch.device("cpu"))
    for name, p in sync.base_model.named_parameters():
        assert torch.equal(p, saved["model"][name])
        assert torch.equal(sync.average.shadow[name], saved["weight_average"][name])
    sync.swap_in_average()
    name, p = next(iter(sync.base_model.named_parameters()))
    assert torch.equal(p, sync.average.shadow[name].to(p.dtype))
