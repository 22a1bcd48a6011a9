"""SmearGate v2 with the BOS fix (PR #1667, modded-nanogpt style; BOS fix PRs #1851/#1855;
docs/techniques.md#smeargate).

On the raw token embedding, before the RMSNorm: x_t <- x_t + lam * sigmoid(w . x_t[:12]) * x_{t-1}, with w (12 -> 1)
and the scalar lam both zero-initialised, so the model starts as the baseline. Position 0 is untouched, and the
previous-token term is zeroed wherever the current token is BOS, so the last token of document N cannot leak into
document N+1's first representation (the bug found in PR #1797's audit).
"""

from __future__ import annotations

import torch
from torch import nn

GATE_INPUTS = 12


class SmearGate(nn.Module):
    def __init__(self, dim: int, bos_id: int) -> None:
        super().__init__()
        self.bos_id = bos_id
        self.smear_gate = nn.Parameter(torch.zeros(GATE_INPUTS))
        self.smear_lambda = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(x[..., :GATE_INPUTS] @ self.smear_gate.to(x.dtype)).unsqueeze(-1)
        prev = torch.cat((torch.zeros_like(x[:, :1]), x[:, :-1]), dim=1)
        keep = (input_ids != self.bos_id).unsqueeze(-1).to(x.dtype)
        return x + self.smear_lambda.to(x.dtype) * gate * prev * keep
