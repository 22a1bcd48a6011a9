"""The chunked full-model SGD TTT mode, `sgd-ttt` (PR #549 -> `R/2026-03-23_LeakyReLU_LegalTTT_ParallelMuon`;
docs/techniques.md#test-time-training), behind the legality gate of `pgolf.eval.ttt_gate`: the stream in chunks of
`chunk_tokens` targets, each scored with sliding windows, then `epochs` of SGD (momentum 0.9, cosine LR across
chunks, clip 1.0) on all weights over that chunk's tokens; the last chunk is not trained on. One process. The knobs
are `pgolf.config.TTTConfig` (`[ttt]`).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import nn

from pgolf.config import TTTConfig
from pgolf.errors import PgolfError
from pgolf.eval.modes import EvalMode, ScoredChunk, WindowedMode
from pgolf.eval.ttt_gate import ScoredPositions, ScoredTokens
from pgolf.eval.ttt_optim import cosine_lr, make_optimizer, set_lr
from pgolf.eval.windows import WindowPlan, sliding_plan
from pgolf.runtime import autocast_for

SGD_CLIP = 1.0


class SGDLearner:
    """Plain SGD with momentum on every weight of the model, over sequences of already-scored tokens."""

    def __init__(self, model: nn.Module, lr: float, seq_len: int) -> None:
        self.params = [p for p in model.parameters()]
        self.opt = make_optimizer("sgd", self.params, lr)
        self.seq_len = seq_len

    def epoch(self, model: nn.Module, scored: ScoredTokens, lr: float, epochs: int = 1) -> None:
        set_lr(self.opt, lr)
        n = len(scored.tokens)
        for _ in range(epochs):
            for a in range(0, n - 1, self.seq_len):
                piece = ScoredTokens(scored.first + a, scored.tokens[a:a + self.seq_len + 1], 0)
                loss = _span_loss(model, piece)
                if loss is None:
                    continue
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.params, SGD_CLIP)
                self.opt.step()


def _span_loss(model: nn.Module, scored: ScoredTokens) -> torch.Tensor | None:
    """Mean loss over the targets of `scored` from offset `train_from` on (tokens[k] is a target for k >= 1)."""
    toks = scored.tokens
    start = max(0, scored.train_from - 1)  # target j of the inputs tokens[:-1] is tokens[j + 1]
    if len(toks) < 2 or start >= len(toks) - 1:
        return None
    with torch.enable_grad(), autocast_for(toks.device):
        nats = model(toks[None, :-1], toks[None, 1:], reduction="none")[0]
        return nats[start:].float().mean()


class SGDTTTMode(EvalMode):
    """`sgd-ttt`: sliding windows in stream order, released chunk by chunk to full-model SGD."""

    name = "sgd-ttt"
    adaptive = True

    def __init__(self, seq_len: int, s: TTTConfig, bos_id: int, stride: int) -> None:
        self.seq_len, self.s, self.bos_id, self.stride = seq_len, s, bos_id, stride
        self._scorer = WindowedMode(seq_len, seq_len)

    def describe(self) -> str:
        return (f"{self.name} (seq_len {self.seq_len}, stride {self.stride}, chunk {self.s.chunk_tokens} tokens, "
                f"{self.s.epochs} epochs, lr {self.s.sgd_lr})")

    def units(self, tokens: np.ndarray) -> Iterator[WindowPlan]:
        """Windows that START in each chunk of one sliding plan over the whole stream: the same windows as
        `sliding`, in chunks of chunk_tokens targets."""
        n = len(tokens) - 1
        plan = sliding_plan(np.array([0]), np.array([n]), self.seq_len, self.stride)
        first = plan.starts + plan.score_from
        for a in range(0, n, self.s.chunk_tokens):
            yield plan.take((first >= a) & (first < a + self.s.chunk_tokens))

    def run(self, model, tokens, *, device, batch_tokens, rank=0, world_size=1) -> Iterator[ScoredChunk]:
        if world_size > 1:
            raise PgolfError(f"eval mode {self.name} runs on one process (got world size {world_size})")
        self._tokens = np.asarray(tokens)
        self._stream = torch.from_numpy(self._tokens.astype(np.int64)).to(device)
        self._gate = ScoredPositions(len(tokens), self.name)
        model.eval()
        self.sgd = SGDLearner(model, self.s.sgd_lr, self.seq_len)
        units = list(self.units(tokens))
        for i, plan in enumerate(units):
            for chunk in self._scorer.run_plan(model, tokens, plan, device=device, batch_tokens=batch_tokens):
                yield chunk
                self._gate.add(chunk.positions[chunk.mask].cpu().numpy())
            if i == len(units) - 1:
                break  # the last chunk is not trained on: nothing is left to score
            self._lr = cosine_lr(self.s.sgd_lr, i, len(units))
            first = int(plan.starts[0] + plan.score_from[0]) + 1
            last = int((plan.starts + plan.lengths).max())
            positions = np.arange(max(1, first - 1), last + 1)  # the chunk's targets and the input before them
            self.adapt(model, positions, self._tokens[positions])

    def adapt(self, model: nn.Module, positions: np.ndarray, tokens: np.ndarray) -> None:
        """`epochs` of SGD on the chunk's scored tokens (refused if any is not yet scored)."""
        self._gate.check(positions)
        values = torch.as_tensor(np.asarray(tokens, dtype=np.int64), device=self._stream.device)
        model.train()
        self.sgd.epoch(model, ScoredTokens(int(positions[0]), values, 0), self._lr, self.s.epochs)
        model.eval()
