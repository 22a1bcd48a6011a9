"""Tensor groups: the role a state-dict entry plays, shared by quantization policies, codecs and the budget fitter.

Records tune bit widths and clip multipliers per role (attention, MLP, embedding;
docs/techniques.md#quantization-and-export) and the 1.0611
compressor concatenates all layers of one role into one stream (3.4), because matrices of one role have similar
statistics. `tensor_group` maps a parameter name to that role; it ignores the layer index.
"""

from __future__ import annotations

import re

# (regex on the name without the layer prefix, group); first match wins.
_RULES: tuple[tuple[str, str], ...] = (
    (r"^tok_emb\.weight$", "embed"),
    (r"^lm_head\.weight$", "head"),
    (r"^bigram\.table\.weight$", "bigram"),
    (r"^value_embed\.weight$", "value_embed"),
    (r"(^bigram\.proj|^value_embed_proj)\.weight$", "embed_proj"),
    (r"attn\.c_q\.weight$", "attn.q"),
    (r"attn\.c_k\.weight$", "attn.k"),
    (r"attn\.c_v\.weight$", "attn.v"),
    (r"attn\.proj\.weight$", "attn.proj"),
    (r"mlp\.fc\.weight$", "mlp.fc"),
    (r"mlp\.proj\.weight$", "mlp.proj"),
    (r"attn_gate", "gate"),
)
GROUPS = tuple(dict.fromkeys(g for _, g in _RULES)) + ("other",)
MATRIX_GROUPS = ("attn.q", "attn.k", "attn.v", "attn.proj", "mlp.fc", "mlp.proj")


def tensor_group(name: str) -> str:
    """The role of state-dict entry `name` (a key of `GROUPS`); `other` for small control tensors and the rest."""
    for pattern, group in _RULES:
        if re.search(pattern, name):
            return group
    return "other"
