"""Bits per byte from summed nats: the challenge's tokenizer-agnostic score (docs/rules.md#bits-per-byte).

val_loss = sum(nats) / tokens and val_bpb = sum(nats) / (ln 2 * bytes), where bytes come from the one byte-accounting
function in `pgolf.data.bytes`. Sums are kept in float64 (and all-reduced as float64 across ranks).
"""

from __future__ import annotations

import math

from pgolf.errors import PgolfError


def bpb_from_sums(nats: float, tokens: int, num_bytes: int) -> tuple[float, float]:
    """(val_loss in nats/token, val_bpb) from the totals of a scored stream."""
    if tokens <= 0 or num_bytes <= 0:
        raise PgolfError(f"cannot compute BPB: {tokens} scored tokens and {num_bytes} bytes")
    return nats / tokens, nats / (math.log(2.0) * num_bytes)
