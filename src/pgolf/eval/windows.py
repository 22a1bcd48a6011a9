"""Window arithmetic of the scoring modes: which tokens each window reads and which of its targets it scores.

Indexing: a stream of n + 1 tokens has n targets; target j is token j + 1, predicted from tokens[: j + 1]. A
window reads tokens[start : start + length] and predicts tokens[start + 1 : start + length + 1]; it scores its
positions [score_from, length), i.e. targets start + score_from .. start + length - 1.

Every mode is a sliding plan over segments of the target range (docs/rules.md#sliding-window,
docs/rules.md#document-isolated-evaluation):
- a segment [a, e) is cut into windows that START every `stride` targets (a, a + s, a + 2s, ...), each `seq_len`
  long but truncated at e; the first scores all its positions, each later one only the targets the previous window
  did not reach (its last `stride`, fewer in the final window). Windows stop at the first one that reaches e, so
  the last window ends exactly at the segment's final target and every target is scored exactly once. This is the
  fixed condition of `R/2026-04-01_Vocab4096_MLPMult4_WD085` (a later window exists only while ws + L - s < total);
  the earlier off-by-one kept truncated tail windows and scored ~2k tail tokens twice.
- flat = one segment with stride == seq_len (consecutive windows, the last one short);
- sliding = one segment, stride < seq_len;
- doc = one segment per document, split where an INPUT token is BOS, so the BOS that starts document N + 1 is a
  target of document N (predicted from document N's context) and document N + 1's windows start at its BOS.

Window starts depend only on the segment start, never on where a segment ends, so where a window sits depends only
on tokens before the targets it scores (strict causality, condition C1 of issue #1017).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pgolf.errors import PgolfError


@dataclass(frozen=True)
class WindowPlan:
    """Windows as parallel int64 arrays (a million windows stay cheap)."""

    starts: np.ndarray
    lengths: np.ndarray
    score_from: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def scored_counts(self) -> np.ndarray:
        return self.lengths - self.score_from

    def take(self, index: np.ndarray | slice) -> "WindowPlan":
        return WindowPlan(self.starts[index], self.lengths[index], self.score_from[index])

    def scored_targets(self) -> np.ndarray:
        """Every scored target index, in plan order (repeats included; for tests and checks)."""
        counts = self.scored_counts
        base = np.repeat(self.starts + self.score_from, counts)
        offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        return base + offsets


def check_window_args(seq_len: int, stride: int) -> None:
    if seq_len < 1:
        raise PgolfError(f"eval: seq_len={seq_len} must be at least 1")
    if not 1 <= stride <= seq_len:
        raise PgolfError(f"eval: stride={stride} must be in [1, seq_len={seq_len}]")


def sliding_plan(seg_starts: np.ndarray, seg_ends: np.ndarray, seq_len: int, stride: int) -> WindowPlan:
    """Sliding windows over each target segment [seg_starts[i], seg_ends[i]) (non-empty, ascending)."""
    check_window_args(seq_len, stride)
    a = np.asarray(seg_starts, dtype=np.int64)
    e = np.asarray(seg_ends, dtype=np.int64)
    span = e - a
    if len(span) and span.min() < 1:
        raise PgolfError("internal: empty evaluation segment")
    extra = np.where(span > seq_len, -(-(span - seq_len) // stride), 0)  # windows after the first
    counts = extra + 1
    seg = np.repeat(np.arange(len(a)), counts)
    k = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    starts = a[seg] + k * stride
    lengths = np.minimum(starts + seq_len, e[seg]) - starts
    score_from = np.where(k == 0, 0, seq_len - stride).astype(np.int64)
    return WindowPlan(starts, lengths, score_from)


def document_segments(tokens: np.ndarray, bos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Target segments [start, end) of the stream: a new one begins at every input position that holds BOS."""
    n_targets = len(tokens) - 1
    inputs = np.asarray(tokens[:n_targets])
    cuts = np.flatnonzero(inputs == bos_id)
    starts = np.unique(np.concatenate(([0], cuts))).astype(np.int64)
    ends = np.append(starts[1:], n_targets).astype(np.int64)
    return starts, ends


def split_for_rank(plan: WindowPlan, rank: int, world_size: int, *, ordered: bool) -> WindowPlan:
    """This rank's windows: a contiguous block when `ordered` (plan order matters), else every world_size-th
    window after sorting by length, so ranks get near-equal work when documents differ in length."""
    if ordered:
        n = len(plan)
        return plan.take(slice(n * rank // world_size, n * (rank + 1) // world_size))
    order = np.argsort(-plan.lengths, kind="stable")
    return plan.take(order[rank::world_size])


def batch_bounds(lengths: np.ndarray, batch_tokens: int) -> list[tuple[int, int]]:
    """Greedy [i, j) batches of consecutive windows whose padded size rows * max(length) fits `batch_tokens`
    (always at least one window per batch)."""
    bounds, i, n = [], 0, len(lengths)
    while i < n:
        j, longest = i + 1, int(lengths[i])
        while j < n:
            longest_next = max(longest, int(lengths[j]))
            if (j + 1 - i) * longest_next > batch_tokens:
                break
            longest, j = longest_next, j + 1
        bounds.append((i, j))
        i = j
    return bounds
