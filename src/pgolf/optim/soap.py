"""SOAP for the block matrices, `optim.matrix_optimizer=soap` (docs/techniques.md#soap-matrix-optimizer-option).

SOAP (Vyas, Morwani, Zhao, Shapira, Brandfonbrener, Janson, Kakade 2024, "SOAP: Improving and Stabilizing Shampoo
using Adam", arXiv:2409.11321) runs Adam in the eigenbasis of Shampoo's two Kronecker factors (L = EMA of G G^T,
R = EMA of G^T G), refreshing the eigenbases every few steps. pgolf does not implement it: it takes heavyball's
`heavyball.SOAP` (HeavyBall, Lucas Nestler "ClashLuke" and HomebrewML contributors; `pip install heavyball`, the
`soap` extra), imported only when a run asks for it, so the package and the submission bundle (pgolf's code only)
never need heavyball. What it scored against Muon at CPU scale: docs/BENCHMARKS.md#soap-for-the-matrices.

What pgolf sets: the matrix group's lr (`optim.matrix_lr`, recorded as `base_lr` like Muon's) and decoupled weight
decay `optim.muon_weight_decay` (p <- p*(1 - lr*wd), Muon's formula); heavyball's defaults otherwise (betas 0.9/0.95,
shampoo_beta 0.95, preconditioner refreshed every 2 steps, eps 1e-8, no warm-up of its own). The wrapper adapts two
heavyball habits to pgolf's trainer:

* learning rate: heavyball reads its lr from `group["base_lr"]` and, when `lr` differs, overwrites `base_lr` with it,
  while pgolf's schedule (train/sync.py) writes `lr = base_lr * multiplier` every step. Left alone the multipliers
  would compound; `step` hands heavyball the scheduled `lr` as its `base_lr` and puts pgolf's back afterwards.
* checkpoints: pgolf's checkpoint holds tensors and JSON only (pgolf/train/checkpoint.py), so `state_dict` turns
  heavyball's sets into lists (`load_state_dict` turns them back) and leaves out the pickled preconditioning
  schedule, which the constructor rebuilds from the same arguments.
* compile: heavyball torch.compiles its kernels on first use (mode max-autotune-no-cudagraphs) on any device. The
  switch is the process-wide `heavyball.utils.compile_mode`; pgolf sets it from `optim.muon_compile` (the matrix
  optimizer's compile option): auto compiles on CUDA only, so CPU runs start at once and need no C++ toolchain.

The Muon-only knobs are no-ops here: GradSync sets momentum (its warm-up) and the weight-decay taper on `Muon`
instances only, and `muon_ns`, `muon_row_norm`, `muon_backend_steps` are Muon's. Gradients reach SOAP averaged:
it is one of the unsharded optimizers, whose parameters DDP all-reduces (or `clip_then_average` with per-rank
clipping) before any optimizer steps, and every rank then computes the same update. `muon_sharded` is refused.
"""

from __future__ import annotations

import functools

import torch

from pgolf.config import OptimConfig
from pgolf.errors import PgolfError
# `optim.matrix_optimizer` and its check, torch-free for pgolf.options (re-exported)
from pgolf.optim.choices import MATRIX_OPTIMIZERS, check_soap  # noqa: F401
from pgolf.runtime import should_compile

HEAVYBALL_COMPILE_MODE = "max-autotune-no-cudagraphs"  # heavyball 3's own default for `utils.compile_mode`
_SET_KEYS = ("is_initialized",)  # heavyball's per-view state that is a set (a list in pgolf's checkpoints)


def _heavyball():
    try:
        import heavyball
    except ImportError as exc:
        raise PgolfError(f"config: optim.matrix_optimizer=soap needs heavyball ({exc}); "
                         "pip install heavyball (or pgolf[soap])") from None
    return heavyball


@functools.cache
def _soap_class() -> type:
    heavyball = _heavyball()

    class SOAP(heavyball.SOAP):
        """heavyball.SOAP whose step uses the `lr` the trainer's schedule set (see the module docstring)."""

        def step(self, closure=None):
            ours = [g.get("base_lr") for g in self.param_groups]
            for g in self.param_groups:
                g["base_lr"] = g["lr"]
            try:
                return super().step(closure)
            finally:
                for g, base in zip(self.param_groups, ours):
                    g["lr"] = g["base_lr"]
                    if base is not None:
                        g["base_lr"] = base

        def state_dict(self):
            sd = super().state_dict()
            sd["heavyball"] = {k: v for k, v in sd["heavyball"].items() if k != "precond_schedule"}
            sd["state"] = {i: {j: {k: sorted(v) if isinstance(v, set) else v for k, v in views.items()}
                               for j, views in per_param.items()} for i, per_param in sd["state"].items()}
            return sd

        def load_state_dict(self, state_dict):
            state_dict = dict(state_dict)
            state_dict["state"] = {i: {j: {k: set(v) if k in _SET_KEYS else v for k, v in views.items()}
                                       for j, views in per_param.items()}
                                   for i, per_param in state_dict["state"].items()}
            super().load_state_dict(state_dict)

    return SOAP


def build_soap(params: list[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """heavyball's SOAP over `params` (the blocks' matrices) at `optim.matrix_lr`, `base_lr` recorded."""
    heavyball = _heavyball()
    device = params[0].device if params else torch.device("cpu")
    heavyball.utils.compile_mode = HEAVYBALL_COMPILE_MODE if should_compile(cfg.muon_compile, device) else None
    opt = _soap_class()(params, lr=cfg.matrix_lr, weight_decay=cfg.muon_weight_decay)
    for g in opt.param_groups:
        g["base_lr"] = cfg.matrix_lr
    return opt
