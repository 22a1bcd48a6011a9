"""Which parameter is trained by which optimizer, at which learning rate (the baseline's grouping).

Muon takes the linear weights inside the blocks (SOAP with `optim.matrix_optimizer=soap`, pgolf/optim/soap.py); Adam
takes the embedding (tied: also the head), an untied head, and every other tensor (control tensors, gates, extra
embedding tables) at the scalar learning rate; which is which is each parameter's role (`pgolf.model.roles`).
AsymLogit's caps (Role.LOGIT_CAP, PR #1923) are in no group: PR #2135 never trains them, so they stay at the symmetric
cap they start from (only phased TTT may move them). Each Adam group has its own betas and decoupled weight decay
(AdamW; the 1.0611 record decays the embedding by 0.085 and the scalars by 0.02). Each group records its `base_lr` so
the trainer's schedule can scale all of them by one multiplier.
"""

from __future__ import annotations

import torch
from torch import nn

from pgolf.config import OptimConfig, parse_betas
from pgolf.errors import PgolfError
from pgolf.model.roles import Role, param_role
from pgolf.optim.muon import Muon
from pgolf.optim.sharded_muon import ShardedMuon


# Optimizer group of every role (pgolf/model/roles.py). Only the blocks' matrices go to Muon; the bigram and value
# embedding tables and their projections train with the scalars, as every non-block tensor but the embedding and head
# does. LoRA adapters are absent: test-time training gives them their own optimizer (pgolf/eval/ttt_optim.py).
# UNTRAINED roles are in no optimizer.
UNTRAINED = "none"
OPTIMIZER_GROUPS: dict[Role, str] = {
    Role.EMBED: "embed", Role.HEAD: "head",
    Role.ATTN_Q: "matrix", Role.ATTN_K: "matrix", Role.ATTN_V: "matrix", Role.ATTN_PROJ: "matrix",
    Role.MLP_FC: "matrix", Role.MLP_PROJ: "matrix",
    Role.BIGRAM_TABLE: "scalar", Role.VALUE_EMBED: "scalar", Role.EMBED_PROJ: "scalar", Role.GATE: "scalar",
    Role.CONTROL: "scalar", Role.LOGIT_CAP: UNTRAINED,
}


def parameter_roles(model: nn.Module) -> dict[str, str]:
    """name -> optimizer group, one of 'matrix', 'scalar', 'embed', 'head', or UNTRAINED (in none; from each
    parameter's role)."""
    groups = {}
    for name, p in model.named_parameters():
        role = param_role(name, p)
        if role not in OPTIMIZER_GROUPS:
            raise PgolfError(f"internal: parameter {name!r} ({role.name}) has no optimizer group")
        groups[name] = OPTIMIZER_GROUPS[role]
    return groups


def build_optimizers(model: nn.Module, cfg: OptimConfig) -> list[torch.optim.Optimizer]:
    roles = parameter_roles(model)
    params = dict(model.named_parameters())
    by_role: dict[str, list[nn.Parameter]] = {"matrix": [], "scalar": [], "embed": [], "head": [], UNTRAINED: []}
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
    if cfg.matrix_optimizer == "soap":  # heavyball's SOAP (pgolf/optim/soap.py), imported only here
        from pgolf.optim.soap import build_soap

        return [adam, build_soap(by_role["matrix"], cfg)]
    kind = ShardedMuon if cfg.muon_sharded else Muon
    muon = kind(by_role["matrix"], lr=cfg.matrix_lr, momentum=cfg.muon_momentum, backend_steps=cfg.muon_backend_steps,
                coefficients=cfg.muon_ns, row_norm=cfg.muon_row_norm, weight_decay=cfg.muon_weight_decay,
                compile=cfg.muon_compile)
    for g in muon.param_groups:
        g["base_lr"] = cfg.matrix_lr
    return [adam, muon]
