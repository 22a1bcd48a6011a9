"""Parameter roles: the one place that reads parameter names.

Every parameter of a GPT (and so every state-dict entry, artifacts included: they carry names without modules) plays
exactly one role. The optimizer groups, the export policies, GPTQ's shared inputs and the LoRA targets ask
`param_role` and keep their own tables keyed by `Role`, so a new parameter needs one rule in `_RULES` and nothing
else; without one, `param_role` raises and tests/model/test_roles.py (every technique on) fails.

| role               | parameters                                   | optimizer         | int8 small | mixed group |
|--------------------|----------------------------------------------|-------------------|------------|-------------|
| EMBED              | tok_emb.weight (tied: also the head)         | Adam, embed lr    | fp16       | embed       |
| HEAD               | lm_head.weight (untied only)                 | Adam, head lr     | fp16       | head        |
| BIGRAM_TABLE       | bigram.table.weight                          | Adam, scalar lr   | fp16       | bigram      |
| VALUE_EMBED        | value_embed.weight                           | Adam, scalar lr   | fp16       | value_embed |
| EMBED_PROJ         | bigram.proj.weight, value_embed_proj.weight  | Adam, scalar lr   | fp16       | embed_proj  |
| ATTN_Q .. MLP_PROJ | the blocks' six linear weights (`matrix`)    | Muon              | fp16       | attn.*, mlp.* |
| GATE               | attention-gate weights (also control)        | Adam, scalar lr   | fp32       | gate        |
| CONTROL            | scales, mixes, gains, skips, lanes, alphas   | Adam, scalar lr   | fp32       | other       |
| LOGIT_CAP          | logit_cap_pos, logit_cap_neg (AsymLogit)     | none (see below)  | fp32       | other, fp32 |
| LORA               | test-time adapters (BatchedLoRA a.*, b.*)    | TTT's own AdamW   | not exported | other     |

The int8 export (pgolf/quant/schemes.py) stores floats of up to 65,536 elements as the "int8 small" column says and
larger ones as int8 rows. The mixed export (pgolf/quant/recipe.py) stores floats of up to `passthrough_numel`
elements as fp16 (LOGIT_CAP: fp32, `keeps_fp32`; GATE: int8 rows with `int8_gates`) and larger ones as integer rows
at their group's bit width, by GPTQ where a Hessian exists: every linear weight, Q, K and V of one attention sharing
one (`shared_input`, they read one input), and the tied embedding. Control tensors steer the network (a small error
in one moves every activation after it), which is why the int8 export keeps them in fp32 and `cast_body` keeps them
out of bf16.

LOGIT_CAP (model.asym_logit, PR #1923) is control too: each of the two scalars scales every positive or every
negative logit. No optimizer group holds them (training never moves them, as in PR #2135); phased TTT's global
phases train them with `ttt.train_logit_caps` (pgolf/eval/ttt_lora.py). Every export keeps them in fp32.
"""

from __future__ import annotations

import re
from enum import Enum

from pgolf.errors import PgolfError


class Role(Enum):
    EMBED = "embed"
    HEAD = "head"
    BIGRAM_TABLE = "bigram_table"
    VALUE_EMBED = "value_embed"
    EMBED_PROJ = "embed_proj"
    ATTN_Q = "attn.q"
    ATTN_K = "attn.k"
    ATTN_V = "attn.v"
    ATTN_PROJ = "attn.proj"
    MLP_FC = "mlp.fc"
    MLP_PROJ = "mlp.proj"
    GATE = "gate"
    CONTROL = "control"
    LOGIT_CAP = "logit_cap"
    LORA = "lora"

    @property
    def matrix(self) -> bool:
        """A linear weight inside the blocks (Muon trains these)."""
        return self in _MATRICES

    @property
    def control(self) -> bool:
        """A tensor that steers the network (kept float32 by the int8 export and by `cast_body`)."""
        return self in (Role.CONTROL, Role.GATE, Role.LOGIT_CAP)

    @property
    def ndim(self) -> int | None:
        """The rank a tensor of this role has (None: any)."""
        return {Role.CONTROL: None, Role.LORA: 3, Role.LOGIT_CAP: 0}.get(self, 2)


_MATRICES = (Role.ATTN_Q, Role.ATTN_K, Role.ATTN_V, Role.ATTN_PROJ, Role.MLP_FC, Role.MLP_PROJ)

_BLOCK = r"blocks\.\d+\."
# (full-name regex, role); names are matched whole, so a new parameter never inherits a role by accident.
_RULES: tuple[tuple[str, Role], ...] = (
    (r"tok_emb\.weight", Role.EMBED),
    (r"lm_head\.weight", Role.HEAD),
    (r"bigram\.table\.weight", Role.BIGRAM_TABLE),
    (r"value_embed\.weight", Role.VALUE_EMBED),
    (r"bigram\.proj\.weight|value_embed_proj\.weight", Role.EMBED_PROJ),
    (_BLOCK + r"attn\.c_q\.weight", Role.ATTN_Q),
    (_BLOCK + r"attn\.c_k\.weight", Role.ATTN_K),
    (_BLOCK + r"attn\.c_v\.weight", Role.ATTN_V),
    (_BLOCK + r"attn\.proj\.weight", Role.ATTN_PROJ),
    (_BLOCK + r"mlp\.fc\.weight", Role.MLP_FC),
    (_BLOCK + r"mlp\.proj\.weight", Role.MLP_PROJ),
    (_BLOCK + r"attn\.gate\.attn_gate_w", Role.GATE),
    (_BLOCK + r"(attn_scale|mlp_scale|resid_mix|ve_layer_scale|lane_rho|lane_mix|attn\.q_gain|attn\.vres_alpha)",
     Role.CONTROL),
    (r"skip_weights|skip_gates|value_embed_scale|smear\.smear_gate|smear\.smear_lambda|bigram\.scale", Role.CONTROL),
    (r"logit_cap_(pos|neg)", Role.LOGIT_CAP),
    (r"[ab]\.([a-z]+_\d+|head)", Role.LORA),  # pgolf/model/lora.py: a/b per target and virtual-layer slot
)
_COMPILED = tuple((re.compile(pattern), role) for pattern, role in _RULES)


class RoleError(PgolfError):
    """A parameter name (or shape) that no rule in `pgolf.model.roles` accounts for."""


def param_role(name: str, tensor=None) -> Role:
    """The role of parameter or state-dict entry `name`; with `tensor`, also checks its rank fits the role.
    RoleError for a name no rule knows: give a new parameter a rule in `_RULES`."""
    for pattern, role in _COMPILED:
        if pattern.fullmatch(name):
            break
    else:
        raise RoleError(f"parameter {name!r} has no role: add a rule for it to pgolf/model/roles.py (matrix, "
                        "embedding, head, control, gate, ...) so the optimizer and the export know what to do with it")
    ndim = getattr(tensor, "ndim", None)
    if ndim is not None and role.ndim is not None and ndim != role.ndim:
        raise RoleError(f"parameter {name!r} has {ndim} dimensions, but its role {role.name} needs {role.ndim}")
    return role


def is_control(name: str) -> bool:
    """Whether `name` is a control tensor (CONTROL or GATE); False for a name that is no GPT parameter (a state dict
    built by hand), as `tensor_group` puts those in `other`; test_roles.py makes sure every GPT parameter has a role."""
    try:
        return param_role(name).control
    except RoleError:
        return False


def keeps_fp32(name: str) -> bool:
    """Whether every export stores `name` in float32, even where small floats are fp16 (the mixed export's
    passthrough): the AsymLogit caps, two scalars that set the scale of every logit. False for a name that is no
    GPT parameter."""
    try:
        return param_role(name) is Role.LOGIT_CAP
    except RoleError:
        return False


def shared_input(name: str) -> str:
    """The weight whose input the linear layer of `name` also reads: Q, K and V of one attention project one
    normalised input, so GPTQ keys their one Hessian by the Q weight; every other weight is its own key."""
    if param_role(name) in (Role.ATTN_Q, Role.ATTN_K, Role.ATTN_V):
        return name.rsplit(".", 2)[0] + ".c_q.weight"
    return name
