"""Which parameter is trained by which optimizer, at which learning rate (the baseline's grouping).

Muon takes every 2-D matrix inside the blocks except control tensors; Adam takes the embedding (tied: also the
head), an untied head, and every vector/scalar/control tensor, each group with its own betas and decoupled weight
decay (AdamW; the 1.0611 record decays the embedding by 0.085 and the scalars by 0.02). Each group records its
`base_lr` so the trainer's schedule can scale all of them by one multiplier.
"""

from __future__ import annotations

import torch
from torch import nn

from pgolf.config import OptimConfig, parse_betas
from pgolf.model.control import CONTROL_PATTERNS
from pgolf.optim.muon import Muon
from pgolf.optim.sharded_muon import ShardedMuon


def parameter_roles(model: nn.Module) -> dict[str, str]:
    """name -> one of 'matrix', 'scalar', 'embed', 'head'."""
    roles = {}
    for name, p in model.named_parameters():
        if name.startswith("tok_emb"):
            roles[name] = "embed"
        elif name.startswith("lm_head"):
            roles[name] = "head"
        elif name.startswith("blocks.") and p.ndim == 2 and not any(c in name for c in CONTROL_PATTERNS):
            roles[name] = "matrix"
        else:
            roles[name] = "scalar"
    return roles


def build_optimizers(model: nn.Module, cfg: OptimConfig) -> list[torch.optim.Optimizer]:
    roles = parameter_roles(model)
    params = dict(model.named_parameters())
    by_role: dict[str, list[nn.Parameter]] = {"matrix": [], "scalar": [], "embed": [], "head": []}
    for name, role in roles.items():
        by_role[role].append(params[name])
    tied = getattr(getattr(model, "cfg", None), "tie_embeddings", True)
    default = (cfg.beta1, cfg.beta2)
    adam_groups = [
        {"params": by_role["embed"], "lr": cfg.tied_embed_lr if tied else cfg.embed_lr,
         "betas": parse_betas(cfg.embed_betas, default, "optim.embed_betas"), "weight_decay": cfg.embed_weight_decay},
        {"params": by_role["head"], "lr": cfg.head_lr, "betas": parse_betas(cfg.head_betas, default, "optim.head_betas"),
         "weight_decay": cfg.head_weight_decay},
        {"params": by_role["scalar"], "lr": cfg.scalar_lr,
         "betas": parse_betas(cfg.scalar_betas, default, "optim.scalar_betas"), "weight_decay": cfg.scalar_weight_decay},
    ]
    adam_groups = [g for g in adam_groups if g["params"]]
    for g in adam_groups:
        g["base_lr"] = g["lr"]
    fused = any(p.is_cuda for g in adam_groups for p in g["params"])
    # AdamW: decoupled weight decay per group (param *= 1 - lr * wd); with wd 0 it is exactly Adam.
    adam = torch.optim.AdamW(adam_groups, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps, weight_decay=0.0,
                             fused=fused or None)
    kind = ShardedMuon if cfg.muon_sharded else Muon
    muon = kind(by_role["matrix"], lr=cfg.matrix_lr, momentum=cfg.muon_momentum, backend_steps=cfg.muon_backend_steps,
                coefficients=cfg.muon_ns, row_norm=cfg.muon_row_norm, weight_decay=cfg.muon_weight_decay,
                compile=cfg.muon_compile)
    for g in muon.param_groups:
        g["base_lr"] = cfg.matrix_lr
    return [adam, muon]
