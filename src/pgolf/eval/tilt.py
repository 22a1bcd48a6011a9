"""The causal n-gram tilt: any eval mode's distributions, tilted toward the token an n-gram of the already-scored
val stream predicts (PR #1145's idea; the token-only form of PRs #1514, #2018 and the final record, PR #2135).

For each scored position p, `pgolf.eval.ngram` gives a hint h (the token that most often followed p's last
`order - 1` tokens earlier in the stream) and its share q of those continuations. Where q >= `threshold`, the
model's distribution is tilted by a logit boost b on h and renormalised in closed form:

    p'(a) = p(a) * exp(b [a = h]) / Z,   Z = 1 + p(h) (e^b - 1)
    -log p'(y) = -log p(y) - b [y = h] + log1p(p(h) (e^b - 1))

With `gamma` > 0 the boost is confidence-adaptive, b = boost * (1 - p(h))^gamma (PR #2129): little tilt where the
model already agrees. The hint depends only on tokens before p and p(h) only on the model's prefix-only
distribution, so the tilted distribution is causal (C1) and normalised (C2); it changes what is scored, never what a
test-time-training mode adapts on (its own loss, inside the wrapped mode). `pgolf legality` checks the tilt like any
mode (fixture `ngram-tilt`) and flags `broken-ngram-target`, whose hint is the token being scored.

The hints are computed for the whole stream when `run` starts, inside the eval timer (the record computes them in
a 200 s Python pass; pgolf's sort-based pass is timed in docs/BENCHMARKS.md#n-gram-hints).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from pgolf.eval.modes import EvalMode, ScoredChunk
from pgolf.eval.ngram import ngram_hints


@dataclass(frozen=True)
class TiltSettings:
    """The `eval.ngram_*` settings."""

    order: int
    threshold: float = 0.8
    boost: float = 2.625
    gamma: float = 0.0
    hashed: bool = False

    @classmethod
    def from_eval(cls, cfg) -> "TiltSettings | None":
        """From an `EvalConfig`; None when the tilt is off (`ngram_order` 0)."""
        if cfg.ngram_order <= 0:
            return None
        return cls(cfg.ngram_order, cfg.ngram_threshold, cfg.ngram_boost, cfg.ngram_gamma, cfg.ngram_hashed)

    def describe(self) -> str:
        adaptive = f", gamma {self.gamma:g}" if self.gamma else ""
        hashed = ", hashed contexts" if self.hashed else ""
        return f"n-gram tilt (order {self.order}, q >= {self.threshold:g}, boost {self.boost:g}{adaptive}{hashed})"


def tilt_chunk(chunk: ScoredChunk, hint: torch.Tensor, share: torch.Tensor, settings: TiltSettings) -> ScoredChunk:
    """`chunk` with each gated slot's distribution tilted toward its hint (`hint`/`share`: per stream position)."""
    pos = chunk.positions.clamp(min=0)
    h = hint[pos].long()
    gate = chunk.mask & (share[pos] >= settings.threshold)
    logp_hint = chunk.log_probs.gather(-1, h.unsqueeze(-1)).squeeze(-1)
    p_hint = logp_hint.exp()
    boost = torch.full_like(p_hint, settings.boost)
    if settings.gamma:
        boost = boost * (1.0 - p_hint).clamp(min=0.0).pow(settings.gamma)
    boost = torch.where(gate, boost, 0.0)
    log_z = torch.log1p(p_hint * torch.expm1(boost))
    log_probs = (chunk.log_probs - log_z.unsqueeze(-1)).scatter_add(-1, h.unsqueeze(-1), boost.unsqueeze(-1))
    nats = chunk.nats + log_z - boost * (chunk.targets == h)
    return ScoredChunk(positions=chunk.positions, targets=chunk.targets, log_probs=log_probs, nats=nats,
                       mask=chunk.mask)


class NgramTiltMode(EvalMode):
    """`inner` (any mode) with the n-gram tilt on every distribution it scores. An adaptive inner mode adapts
    exactly as it would alone; its `adapt` calls go through this object's `adapt`, so a checker that instruments
    this mode sees them."""

    def __init__(self, inner: EvalMode, settings: TiltSettings, hints=ngram_hints) -> None:
        self.inner, self.settings, self._hints = inner, settings, hints
        self.name, self.adaptive = inner.name, inner.adaptive
        self.tilt_report: dict = {}
        if inner.adaptive:
            inner.adapt = self._adapt_through  # instance attribute: the inner `run`'s self.adapt lands here

    def _adapt_through(self, model: torch.nn.Module, positions: np.ndarray, tokens: np.ndarray) -> None:
        self.adapt(model, positions, tokens)

    def adapt(self, model: torch.nn.Module, positions: np.ndarray, tokens: np.ndarray) -> None:
        type(self.inner).adapt(self.inner, model, positions, tokens)

    def describe(self) -> str:
        return f"{self.inner.describe()} + {self.settings.describe()}"

    def prepare(self, model: torch.nn.Module, device: torch.device, batch_tokens: int = 0) -> float:
        return self.inner.prepare(model, device, batch_tokens)

    @property
    def report(self) -> dict:
        return {**getattr(self.inner, "report", {}), "ngram_tilt": self.tilt_report}

    @property
    def log(self):
        return getattr(self.inner, "log", None)

    @log.setter
    def log(self, value) -> None:
        self.inner.log = value

    def run(self, model, tokens, *, device, batch_tokens, rank=0, world_size=1):
        start = time.perf_counter()
        hints = self._hints(np.asarray(tokens), self.settings.order, hashed=self.settings.hashed, device=device)
        hint, share = hints.token, hints.share
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        gated = share >= self.settings.threshold
        self.tilt_report = {"hint_seconds": round(time.perf_counter() - start, 3), "positions": int(len(share)),
                            "hinted": int(gated.sum())}
        hits = torch.zeros((), dtype=torch.int64, device=device)
        for chunk in self.inner.run(model, tokens, device=device, batch_tokens=batch_tokens, rank=rank,
                                    world_size=world_size):
            tilted = tilt_chunk(chunk, hint, share, self.settings)
            pos = chunk.positions.clamp(min=0)
            hits += (chunk.mask & gated[pos] & (hint[pos].long() == chunk.targets)).sum()
            yield tilted
        self.tilt_report["hits_this_rank"] = int(hits)


def with_tilt(mode: EvalMode, eval_cfg) -> EvalMode:
    """`mode` wrapped in the n-gram tilt when `eval_cfg.ngram_order` > 0, else `mode` itself."""
    settings = TiltSettings.from_eval(eval_cfg)
    return mode if settings is None else NgramTiltMode(mode, settings)

