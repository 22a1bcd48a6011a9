"""A run's state, made explicit so that checkpointing (pgolf/train/resume.py) and the export
(pgolf/train/export.py) are handed what they need instead of reaching into the Trainer.

`RunState` is where the run is (step, clock, schedule position, last validation, checkpoints); `RunParts` are the
components that save and load their own state (model, optimizers, gradient sync with its weight average, loader).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from pgolf.train.sync import GradSync


@dataclass
class RunState:
    """What the training loop advances and a checkpoint records besides the components' own state."""

    seq_len: int
    """The training sequence length now (it follows `train.seq_len_schedule`)."""
    step: int = 0
    seq_changed_at: int | None = None
    """The step the sequence length last switched at (after step 0), which `train.seq_change_warmup_steps` counts from."""
    train_ms: float = 0.0
    """Training time charged so far (validation, checkpoints and the warm-up excluded)."""
    stop_after: int | None = None
    """The step the wall clock stopped the run at, once every rank agreed on it."""
    pre_quant: dict | None = None
    """The last validation's result (the final one is result.json's `pre_quant`)."""
    resumes: list[int] = field(default_factory=list)
    """The steps this run was resumed from."""
    last_checkpoint: tuple[int, Path] | None = None
    """(step, this rank's file) of the last checkpoint written or resumed."""


@dataclass(frozen=True)
class RunParts:
    """The components whose state a checkpoint holds, under the checkpoint's keys."""

    model: torch.nn.Module
    optimizers: list
    sync: GradSync
    loader: object

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(),
                "optimizers": [opt.state_dict() for opt in self.optimizers],
                "weight_average": self.sync.state_dict(),
                "loader": self.loader.state_dict()}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.model.load_state_dict(state["model"], strict=True)
        for opt, opt_state in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
        self.sync.load_state_dict(_to_device(state["weight_average"], device))
        self.loader.load_state_dict(state["loader"])


def _to_device(tree, device: torch.device):
    if isinstance(tree, torch.Tensor):
        return tree.to(device)
    if isinstance(tree, dict):
        return {k: _to_device(v, device) for k, v in tree.items()}
    return tree
