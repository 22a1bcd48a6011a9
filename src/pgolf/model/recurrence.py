"""Depth recurrence ("Loop45"; PRs #1204/#1331/#1394/#1437/#1493; docs/techniques.md#depth-recurrence).

Layers loop_start..loop_end run `num_loops` extra times after their first pass, so 11 weight sets can act as
17 virtual layers. The U-Net split is taken over the VIRTUAL order: the first half are encoder applications that
push skips, the rest decoder applications that pop them. Looping is switched on once training progress reaches
`loop_start_frac`; before that the plain order runs.

It did not pay in the CPU-scale ablations (measured: docs/BENCHMARKS.md); the records gain from it when the
parameter budget, not the step count, is what binds (11 x 512 at 16 MB).
"""

from __future__ import annotations


def virtual_layers(num_layers: int, loop_start: int, loop_end: int, num_loops: int, looping: bool) -> list[int]:
    """Physical layer index of every virtual layer, in order."""
    if not looping or num_loops <= 0:
        return list(range(num_layers))
    repeat = list(range(loop_start, loop_end + 1))
    return list(range(loop_end + 1)) + repeat * num_loops + list(range(loop_end + 1, num_layers))


def unet_split(order: list[int]) -> tuple[list[int], list[int]]:
    """(encoder, decoder) halves of a virtual order; the decoder gets the extra layer when the count is odd."""
    n_enc = len(order) // 2
    return order[:n_enc], order[n_enc:]


def max_skips(num_layers: int, loop_start: int, loop_end: int, num_loops: int) -> int:
    """Skip connections needed by the larger of the two orders (plain and looped)."""
    counts = []
    for looping in (False, True):
        enc, dec = unet_split(virtual_layers(num_layers, loop_start, loop_end, num_loops, looping))
        counts.append(min(len(enc), len(dec)))
    return max(counts)
