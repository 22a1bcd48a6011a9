"""SmearGate v2 with the BOS fix (PR #1667, modded-nanogpt style; BOS fix PRs #1851/#1855;
docs/techniques.md#smeargate).

On the raw token embedding, before the RMSNorm: x_t <- x_t + lam * sigmoid(w . x_t[:12]) * x_{t-1}, with w (12 -> 1)
and the scalar lam both zero-initialised, so the model starts as the baseline. Position 0 is untouched, and the
previous-token term is zeroed wherever the current token is BOS, so the last token of document N cannot leak into
document N+1's first representation (the bug found in PR #1797's audit). `bos_fix=False` drops that guard, as PR
#2135 ran (its SMEAR_GATE_BOS_FIX was off): kept only to reproduce it and to measure what the fix is worth.
"""

from __future__ import annotations

import torch
from torch import nn

GATE_INPUTS = 12


class SmearGate(nn.Module):
    def __init__(self, dim: int, bos_id: int, bos_fix: bool = True) -> None:
        super().__init__()
        self.bos_id = bos_id
        self.bos_fix = bos_fix
        self.smear_gate = nn.Parameter(torch.zeros(GATE_INPUTS))
        self.smear_lambda = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(x[..., :GATE_INPUTS] @ self.smear_gate.to(x.dtype)).unsqueeze(-1)
        prev = torch.cat((torch.zeros_like(x[:, :1]), x[:, :-1]), dim=1)
        mixed = self.smear_lambda.to(x.dtype) * gate * prev
        if self.bos_fix:
            mixed = mixed * (input_ids != self.bos_id).unsqueeze(-1).to(x.dtype)
        return x + mixed
