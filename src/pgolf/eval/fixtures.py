"""Evaluators that `pgolf legality` must judge: one legal adaptive reference and one broken mode per condition
of issue #1017 (docs/rules.md#score-first-test-time-training). They exist for the checker's tests and for `pgolf
legality --mode NAME`;
`pgolf eval` never offers them.

- `score-first-cache` (legal, adaptive): the model's distribution mixed with a unigram cache of tokens that were
  already scored, updated through `adapt` after each chunk is yielded; the reference of the adaptive protocol.
- `broken-adapt-first` (C3, and C1): the same cache, updated with a chunk's tokens BEFORE the chunk is scored
  (the "train on val before evaluating it" pattern).
- `broken-double-score` (C4): sliding windows kept for every start < n, each scoring its last `stride` positions
  (the tail off-by-one fixed in `R/2026-04-01_Vocab4096_MLPMult4_WD085`).
- `broken-target-renorm` (C1): adds a bonus to the gold token's logit and renormalises, so the distribution
  depends on the token it scores (the n-gram caches with the target in the key, PR #779 ruling).
- `broken-target-unnormalized` (C2): adds a bonus to the gold token's log-prob without renormalising (scoring
  only the gold token).
- `broken-peek` (C1): the window is read one token ahead, so each distribution has seen the token it scores.
- `broken-cycle` (C1): the score-first cache, but the second half of the stream is scored (with the first half's
  unscored tokens in its windows) and released before the first half is scored with the cache: tokens near the
  middle and those just after it predict each other.
- `ngram-tilt` (legal): sliding windows with the n-gram tilt of `pgolf.eval.tilt` (order 3, so that hints fire on
  a few thousand tokens), the production code path.
- `broken-ngram-target` (C1): the same tilt, but every hint is the token being scored (an n-gram table that counts
  the target before reading it, on a context seen for the first time: the caches keyed on the target, PR #779).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from pgolf.errors import PgolfError
from pgolf.eval.modes import ModeFactory, SlidingMode, WindowPlan
from pgolf.eval.ngram import ngram_hints
from pgolf.eval.tilt import NgramTiltMode, TiltSettings

GOLD_BONUS = 2.0


class UnigramCacheMode(SlidingMode):
    """p = (1 - w) p_model + w p_cache, p_cache = (counts + 1) / (seen + V) over tokens passed to `adapt`.

    Score-first at chunk granularity: windows run in plan order, one batch at a time, and `adapt` receives a
    batch's scored tokens after the batch was yielded (`adapt_first` reverses that, which is illegal)."""

    name = "score-first-cache"
    adaptive = True
    ordered = True

    def __init__(self, seq_len: int, stride: int, weight: float = 0.1, adapt_first: bool = False) -> None:
        super().__init__(seq_len, stride)
        self.weight, self.adapt_first = weight, adapt_first
        self.counts: torch.Tensor | None = None

    def run(self, model, tokens, *, device, batch_tokens, rank=0, world_size=1):
        if world_size != 1:
            raise PgolfError(f"eval mode {self.name!r} runs on one rank only")
        self.counts = None
        plan = self.plan(tokens)
        for chunk in self.run_plan(model, tokens, plan, device=device, batch_tokens=batch_tokens,
                                   before_batch=self._adapt_before if self.adapt_first else None):
            yield chunk
            if not self.adapt_first:
                self._adapt_on(model, chunk)

    def _adapt_on(self, model: torch.nn.Module, chunk) -> None:
        pos = chunk.positions[chunk.mask].cpu().numpy()
        self.adapt(model, pos, chunk.targets[chunk.mask].cpu().numpy())

    def _adapt_before(self, model: torch.nn.Module, stream: torch.Tensor, windows: WindowPlan) -> None:
        pos = windows.scored_targets() + 1
        self.adapt(model, pos, stream[torch.from_numpy(pos).to(stream.device)].cpu().numpy())

    def adapt(self, model: torch.nn.Module, positions: np.ndarray, tokens: np.ndarray) -> None:
        new = torch.bincount(torch.from_numpy(np.asarray(tokens, dtype=np.int64))).double()
        old = self.counts if self.counts is not None else torch.zeros(0, dtype=torch.float64)
        size = max(len(old), len(new))
        self.counts = F.pad(old, (0, size - len(old))) + F.pad(new, (0, size - len(new)))

    def log_probs(self, model, x, y, cols):
        logp = super().log_probs(model, x, y, cols)
        vocab = logp.size(-1)
        counts = torch.zeros(vocab, dtype=torch.float64)
        if self.counts is not None:
            counts[:len(self.counts)] = self.counts[:vocab]
        cache = ((counts + 1) / (counts.sum() + vocab)).to(logp.device, torch.float32)
        return ((1 - self.weight) * logp.exp() + self.weight * cache).log()


class CycleCacheMode(UnigramCacheMode):
    """The score-first cache with the plan's windows reordered: those scoring the second half first."""

    name = "broken-cycle"

    def plan(self, tokens: np.ndarray) -> WindowPlan:
        plan = super().plan(tokens)
        second = plan.starts + plan.score_from >= (len(tokens) - 1) // 2
        return plan.take(np.concatenate((np.flatnonzero(second), np.flatnonzero(~second))))


class DoubleScoreMode(SlidingMode):
    """Keeps a window for every start < n and lets truncated tail windows score their last `stride` positions."""

    name = "broken-double-score"

    def plan(self, tokens: np.ndarray) -> WindowPlan:
        n = len(tokens) - 1
        starts = np.arange(0, n, self.stride, dtype=np.int64)
        lengths = np.minimum(starts + self.seq_len, n) - starts
        score_from = np.where(starts == 0, 0, np.maximum(lengths - self.stride, 0)).astype(np.int64)
        return WindowPlan(starts, lengths, score_from)


class TargetRenormMode(SlidingMode):
    name = "broken-target-renorm"

    def log_probs(self, model, x, y, cols):
        logits = super().log_probs(model, x, y, cols)
        return F.log_softmax(logits + GOLD_BONUS * F.one_hot(y.gather(1, cols), logits.size(-1)), dim=-1)


class TargetUnnormalizedMode(SlidingMode):
    name = "broken-target-unnormalized"

    def log_probs(self, model, x, y, cols):
        logp = super().log_probs(model, x, y, cols)
        return logp + GOLD_BONUS * F.one_hot(y.gather(1, cols), logp.size(-1))


class PeekMode(SlidingMode):
    name = "broken-peek"

    def log_probs(self, model, x, y, cols):
        return super().log_probs(model, y, y, cols)


FIXTURE_TILT = TiltSettings(order=3)


def _target_hints(tokens: np.ndarray, order: int, *, hashed: bool = False, device=None):
    """Broken: every position with a context is hinted its own token (what a table that counts the token before
    reading it gives on a context seen for the first time), with share 1."""
    hints = ngram_hints(tokens, order, hashed=hashed, device=device)
    target = torch.as_tensor(np.asarray(tokens, dtype=np.int64), device=hints.token.device)
    has_context = torch.arange(len(target), device=target.device) >= order - 1
    return dataclasses.replace(hints, token=torch.where(has_context, target, hints.token),
                               share=has_context.to(hints.share.dtype))


def _tilted(seq_len: int, stride: int, name: str, hints=ngram_hints) -> NgramTiltMode:
    mode = NgramTiltMode(SlidingMode(seq_len, stride), FIXTURE_TILT, hints=hints)
    mode.name = name
    return mode


FIXTURES: dict[str, ModeFactory] = {
    "score-first-cache": lambda seq_len, stride, bos_id: UnigramCacheMode(seq_len, stride),
    "broken-adapt-first": lambda seq_len, stride, bos_id: _renamed(UnigramCacheMode(seq_len, stride,
                                                                                    adapt_first=True),
                                                                   "broken-adapt-first"),
    "broken-double-score": lambda seq_len, stride, bos_id: DoubleScoreMode(seq_len, stride),
    "broken-target-renorm": lambda seq_len, stride, bos_id: TargetRenormMode(seq_len, stride),
    "broken-target-unnormalized": lambda seq_len, stride, bos_id: TargetUnnormalizedMode(seq_len, stride),
    "broken-peek": lambda seq_len, stride, bos_id: PeekMode(seq_len, stride),
    "broken-cycle": lambda seq_len, stride, bos_id: CycleCacheMode(seq_len, stride, weight=0.5),
    "ngram-tilt": lambda seq_len, stride, bos_id: _tilted(seq_len, stride, "ngram-tilt"),
    "broken-ngram-target": lambda seq_len, stride, bos_id: _tilted(seq_len, stride, "broken-ngram-target",
                                                                   hints=_target_hints),
}

# The condition each broken fixture is built to violate (the checker's tests assert it is flagged).
EXPECTED_VIOLATION = {
    "broken-adapt-first": "C3",
    "broken-double-score": "C4",
    "broken-target-renorm": "C1",
    "broken-target-unnormalized": "C2",
    "broken-peek": "C1",
    "broken-cycle": "C1",
    "broken-ngram-target": "C1",
}


def _renamed(mode, name: str):
    mode.name = name
    return mode
