"""Window arithmetic: every target scored exactly once, windows never leave their segment, later windows keep
seq_len - stride context, the last window ends at the final target, ranks partition the plan."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf.errors import PgolfError
from pgolf.eval.windows import (WindowPlan, batch_bounds, document_segments, sliding_plan, split_for_rank)


def _check_plan(plan: WindowPlan, seg_starts: np.ndarray, seg_ends: np.ndarray, seq_len: int, stride: int) -> None:
    n = int(seg_ends[-1])
    scored = plan.scored_targets()
    assert len(scored) == n == int(plan.scored_counts.sum())
    assert np.array_equal(np.sort(scored), np.arange(n))  # each target exactly once
    assert (plan.lengths >= 1).all() and (plan.lengths <= seq_len).all()
    assert (plan.score_from >= 0).all() and (plan.score_from < plan.lengths).all()
    seg = np.searchsorted(seg_starts, plan.starts, side="right") - 1
    ends = plan.starts + plan.lengths
    assert (ends <= seg_ends[seg]).all()  # no window crosses into the next segment
    assert ((plan.starts - seg_starts[seg]) % stride == 0).all()  # windows start every `stride`
    later = plan.starts != seg_starts[seg]
    assert (plan.score_from[later] >= seq_len - stride).all()  # context of later windows
    assert (plan.score_from[~later] == 0).all()
    for i in range(len(seg_starts)):  # each segment's last window ends exactly at its final target
        assert ends[seg == i].max() == seg_ends[i]
        assert (ends[seg == i] < seg_ends[i]).sum() == (seg == i).sum() - 1


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 3000), seq_len=st.integers(1, 300), data=st.data())
def test_single_segment_scores_every_target_once(n, seq_len, data):
    stride = data.draw(st.integers(1, seq_len))
    plan = sliding_plan(np.array([0]), np.array([n]), seq_len, stride)
    _check_plan(plan, np.array([0]), np.array([n]), seq_len, stride)
    expected_windows = 1 + max(0, -(-(n - seq_len) // stride))
    assert len(plan) == expected_windows


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(1, 2000), max_size=30, unique=True), n=st.integers(2, 2001),
       seq_len=st.integers(1, 128), data=st.data())
def test_segments_score_every_target_once(cuts, n, seq_len, data):
    stride = data.draw(st.integers(1, seq_len))
    starts = np.array(sorted({0, *[c for c in cuts if c < n]}), dtype=np.int64)
    ends = np.append(starts[1:], n)
    plan = sliding_plan(starts, ends, seq_len, stride)
    _check_plan(plan, starts, ends, seq_len, stride)


def test_stride_equal_to_seq_len_is_the_flat_cut():
    plan = sliding_plan(np.array([0]), np.array([10]), 4, 4)
    assert plan.starts.tolist() == [0, 4, 8]
    assert plan.lengths.tolist() == [4, 4, 2]
    assert plan.score_from.tolist() == [0, 0, 0]


def test_sliding_tail_has_no_off_by_one():
    # 10 targets, L=4, s=2: windows end at 4, 6, 8, 10; the last ends exactly at the final target.
    plan = sliding_plan(np.array([0]), np.array([10]), 4, 2)
    assert plan.starts.tolist() == [0, 2, 4, 6]
    assert (plan.starts + plan.lengths).tolist() == [4, 6, 8, 10]
    assert plan.score_from.tolist() == [0, 2, 2, 2]
    # 11 targets: a truncated fifth window scores the single tail target with 3 tokens of context.
    plan = sliding_plan(np.array([0]), np.array([11]), 4, 2)
    assert plan.starts.tolist()[-1] == 8 and plan.lengths.tolist()[-1] == 3 and plan.score_from.tolist()[-1] == 2


def test_document_segments_start_at_input_bos():
    tokens = np.array([1, 5, 6, 1, 7, 1, 8, 9])  # BOS = 1 at input positions 0, 3, 5
    starts, ends = document_segments(tokens, bos_id=1)
    assert starts.tolist() == [0, 3, 5] and ends.tolist() == [3, 5, 7]
    # a slice that starts mid-document gets a leading segment; a BOS as the very last token is only a target
    starts, ends = document_segments(np.array([5, 6, 1, 7, 1]), bos_id=1)
    assert starts.tolist() == [0, 2] and ends.tolist() == [2, 4]


@pytest.mark.parametrize("world", [1, 2, 3, 7])
@pytest.mark.parametrize("ordered", [True, False])
def test_ranks_partition_the_plan(world, ordered):
    starts = np.array([0, 50, 51, 300]), np.array([50, 51, 300, 1000])
    plan = sliding_plan(*starts, 64, 16)
    shares = [split_for_rank(plan, r, world, ordered=ordered) for r in range(world)]
    together = np.sort(np.concatenate([s.scored_targets() for s in shares]))
    assert np.array_equal(together, np.arange(1000))
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 1


def test_batches_cover_windows_within_budget():
    lengths = np.array([64, 64, 60, 30, 30, 30, 5, 1])
    bounds = batch_bounds(lengths, 128)
    assert bounds[0][0] == 0 and bounds[-1][1] == len(lengths)
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    for i, j in bounds:
        assert j - i == 1 or (j - i) * lengths[i:j].max() <= 128
    assert batch_bounds(np.array([500]), 10) == [(0, 1)]  # an oversized window still runs alone


def test_bad_window_arguments_raise():
    with pytest.raises(PgolfError, match="stride"):
        sliding_plan(np.array([0]), np.array([10]), 4, 5)
    with pytest.raises(PgolfError, match="stride"):
        sliding_plan(np.array([0]), np.array([10]), 4, 0)
    with pytest.raises(PgolfError, match="seq_len"):
        sliding_plan(np.array([0]), np.array([10]), 0, 1)
