"""Tensor groups: the role a state-dict entry plays, shared by quantization policies, codecs and the budget fitter.

Records tune bit widths and clip multipliers per role (attention, MLP, embedding;
docs/techniques.md#quantization-and-export) and the 1.0611
compressor concatenates all layers of one role into one stream (3.4), because matrices of one role have similar
statistics. `tensor_group` maps a parameter name to that group through its role (`pgolf.model.roles`); it ignores
the layer index.
"""

from __future__ import annotations

from pgolf.model.roles import Role, RoleError, param_role

# The quantization group of every role; control tensors (and anything else small) are `other`.
_GROUP_OF_ROLE: dict[Role, str] = {
    Role.EMBED: "embed",
    Role.HEAD: "head",
    Role.BIGRAM_TABLE: "bigram",
    Role.VALUE_EMBED: "value_embed",
    Role.EMBED_PROJ: "embed_proj",
    Role.ATTN_Q: "attn.q",
    Role.ATTN_K: "attn.k",
    Role.ATTN_V: "attn.v",
    Role.ATTN_PROJ: "attn.proj",
    Role.MLP_FC: "mlp.fc",
    Role.MLP_PROJ: "mlp.proj",
    Role.GATE: "gate",
    Role.CONTROL: "other",
    Role.LOGIT_CAP: "other",
    Role.LORA: "other",
}
GROUPS = tuple(dict.fromkeys(_GROUP_OF_ROLE.values()))
MATRIX_GROUPS = tuple(g for r, g in _GROUP_OF_ROLE.items() if r.matrix)


def tensor_group(name: str) -> str:
    """The group of state-dict entry `name` (a key of `GROUPS`); `other` for control tensors and for names that are
    no GPT parameter (state dicts built by hand, e.g. in tests and benchmarks)."""
    try:
        return _GROUP_OF_ROLE[param_role(name)]
    except RoleError:
        return "other"
