"""BigramHash embedding (PR #162; docs/techniques.md#bigramhash): a hashed table of (previous, current) token pairs.

Position i > 0 looks up row (36313 * t_i XOR 27191 * t_{i-1}) mod (V_b - 1); position 0 uses the reserved last
row V_b - 1. The looked-up d_b-dimensional vector is projected to the model width by a zero-initialised linear map
and multiplied by a learnable scalar (init 0.05), then added to the token embedding before the RMSNorm. The table
also starts at zero, so the model starts as if the option were off. The records used 4096x128 up to 10240x128 and
3072x112, and dropped it once the vocabulary grew to 4096 (04-01 README).
"""

from __future__ import annotations

import torch
from torch import nn

from pgolf.model.layers import CastedLinear


def bigram_index(input_ids: torch.Tensor, table_rows: int) -> torch.Tensor:
    """Row of every position: the hash of (previous, current) token, row `table_rows - 1` at position 0."""
    prev, cur = input_ids[:, :-1].long(), input_ids[:, 1:].long()
    hashed = torch.bitwise_xor(36313 * cur, 27191 * prev) % (table_rows - 1)
    first = torch.full_like(input_ids[:, :1], table_rows - 1, dtype=torch.long)
    return torch.cat((first, hashed), dim=1)


class BigramHash(nn.Module):
    def __init__(self, table_rows: int, table_dim: int, model_dim: int) -> None:
        super().__init__()
        self.table_rows = table_rows
        self.table = nn.Embedding(table_rows, table_dim)
        nn.init.zeros_(self.table.weight)
        self.proj = CastedLinear(table_dim, model_dim, zero_init=True)
        self.scale = nn.Parameter(torch.tensor(0.05))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = self.proj(self.table(bigram_index(input_ids, self.table_rows)))
        return self.scale.to(h.dtype) * h
