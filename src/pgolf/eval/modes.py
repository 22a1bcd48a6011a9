"""Evaluation modes: the one API every scorer implements, so that `pgolf eval` totals it and `pgolf legality`
audits it (conditions C1-C4 of issue #1017, docs/rules.md#score-first-test-time-training).

The mode API
------------
A mode is an `EvalMode` object. `mode.run(model, tokens, device=..., batch_tokens=..., rank=..., world_size=...)`
is a generator of `ScoredChunk`s. A chunk is a [B, T] grid of slots; the slots where `mask` is true are scored
events, each a (position, full log-prob vector) pair:

- `positions[b, t]`: the index in `tokens` of the token being scored (1 .. len(tokens) - 1; token 0 is only
  context);
- `log_probs[b, t]`: the FULL log-probability vector over the vocabulary that scores it (normalised: its
  logsumexp is 0);
- `nats[b, t]`: the loss charged, which must be -log_probs[b, t, token].

Over all ranks a mode must score every position exactly once. A mode may read any token of the stream to build
its inputs, but the distribution for position p may depend only on the artifact and tokens[:p] (C1).

Adaptive modes (test-time training, caches) set `adaptive = True` and receive val tokens for adaptation ONLY
through `mode.adapt(model, positions, tokens)`: call it from inside `run` after the chunk holding those positions
has been yielded (score first, then update: C3), and pass the token values (`tokens[positions]`) as well as their
positions. `pgolf legality` wraps `adapt` to record what it was given and when, and compares that with the yield
order. `run` is consumed under `torch.no_grad()` (by the evaluator and the checker); adaptation that needs
gradients turns them on itself with `torch.enable_grad()`. An adaptive mode may change the model's weights: the
checker gives every run its own copy of the model. `pgolf.eval.fixtures.UnigramCacheMode` is a small legal
reference of this protocol.

The non-adaptive modes are `WindowedMode`s: a window plan (`pgolf.eval.windows`) run in batches of right-padded
windows (causal attention makes padding after the last real position exact). `flat`, `sliding` and `doc` differ
only in their plans. `doc` scores every document in its own windows (isolated rows, positions restarting at its
BOS), which isolates every token-mixing path of the model at once: attention, SmearGate and BigramHash (which hashes
the previous token and would leak across a boundary under a mere attention mask). The records get the same effect
with `flash_attn_varlen_func` and `cu_seqlens` at BOS positions (PR #1530).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from pgolf.errors import PgolfError, choose
from pgolf.eval.names import FIXED_MODES  # noqa: F401  (re-exported: the fixed-predictor modes built here)
from pgolf.eval.windows import (WindowPlan, batch_bounds, check_window_args, document_segments, sliding_plan,
                                split_for_rank)
from pgolf.runtime import autocast_for, should_compile

DEFAULT_STRIDE = 64
PAD_TOKEN = 0


@dataclass
class ScoredChunk:
    """A batch of scored events; slots with mask False (padding, context-only positions) are not events."""

    positions: torch.Tensor  # int64 [B, T]
    targets: torch.Tensor  # int64 [B, T], tokens[positions]
    log_probs: torch.Tensor  # float32 [B, T, V]
    nats: torch.Tensor  # float32 [B, T]
    mask: torch.Tensor  # bool [B, T]

    def events(self) -> Iterator[tuple[int, int, float, torch.Tensor]]:
        """(position, target token, nats, full log-prob vector) of every scored slot, on the CPU."""
        rows, cols = self.mask.nonzero(as_tuple=True)
        pos = self.positions[rows, cols].cpu().tolist()
        tgt = self.targets[rows, cols].cpu().tolist()
        nats = self.nats[rows, cols].double().cpu().tolist()
        logp = self.log_probs[rows, cols].cpu()
        for i in range(len(pos)):
            yield pos[i], tgt[i], nats[i], logp[i]


class EvalMode:
    """Base of all modes; see the module docstring for the contract."""

    name: str = "mode"
    adaptive: bool = False

    def describe(self) -> str:
        return self.name

    def prepare(self, model: torch.nn.Module, device: torch.device, batch_tokens: int = 0) -> float:
        """Work before scoring that is not eval time (compiling on random tokens); returns its seconds."""
        return 0.0

    def run(self, model: torch.nn.Module, tokens: np.ndarray, *, device: torch.device, batch_tokens: int,
            rank: int = 0, world_size: int = 1) -> Iterator[ScoredChunk]:
        raise NotImplementedError

    def adapt(self, model: torch.nn.Module, positions: np.ndarray, tokens: np.ndarray) -> None:
        """Adaptive modes only: update state from already-scored tokens (`tokens[i]` sits at `positions[i]`)."""
        raise PgolfError(f"eval mode {self.name!r} is not adaptive")

    def no_op(self) -> str | None:
        """After a run of an adaptive mode: why it did less than configured (adapted zero times, ran fewer global
        phases than asked), or None. A val split shorter than one adaptation unit makes a TTT mode score exactly as
        its fixed counterpart; the report line and result.json say so instead of passing it off as TTT."""
        mode = getattr(self, "inner", self)  # the n-gram tilt wraps the scored mode
        gate = getattr(mode, "_gate", None)
        if not mode.adaptive or gate is None:
            return None
        if gate.releases == 0:
            return f"{mode.name} adapted 0 times: the val split is shorter than one adaptation unit, so it scored " \
                   "as a fixed model"
        asked = mode.s.phases if getattr(mode, "phased", False) else 0
        ran = len(getattr(mode, "report", {}).get("phases", []))
        if ran < asked:
            return f"{mode.name} ran {ran} of {asked} global phases: too few documents for the phase boundaries"
        return None


class WindowedMode(EvalMode):
    """A fixed predictor scored over a window plan; subclasses choose the plan (and fixtures break the rules)."""

    ordered = False  # True: keep plan order on each rank (adaptive subclasses need it)
    compile = "off"  # `eval.compile` (set by `build_mode`): `prepare` compiles the forward for fixed shapes

    def __init__(self, seq_len: int, stride: int) -> None:
        check_window_args(seq_len, stride)
        self.seq_len, self.stride = seq_len, stride
        self._fixed: Callable | None = None  # compiled log_probs over padded [rows, seq_len] x [rows, width]
        self._rows = 0

    def prepare(self, model: torch.nn.Module, device: torch.device, batch_tokens: int = 0) -> float:
        """When `compile` says so, compile the forward for fixed, padded shapes and warm it up on random tokens
        (no val data, outside the eval time, as the record's warm-up); seconds spent (0 when not compiling)."""
        if not should_compile(self.compile, device):
            return 0.0
        return self.compile_fixed(model, device, max(1, batch_tokens // self.seq_len))

    def widths(self) -> list[int]:
        """The scored-column widths of the fixed shapes: `stride` (later sliding windows) and `seq_len`."""
        return sorted({self.stride, self.seq_len})

    def compile_fixed(self, model: torch.nn.Module, device: torch.device, rows: int,
                      backend: str | Callable = "inductor") -> float:
        """Every batch is then padded to `rows` windows of `seq_len` tokens and its scored columns to the next of
        `widths()`, so the compiled forward sees only those few shapes."""
        start = time.perf_counter()
        self._rows = rows
        self._fixed = torch.compile(lambda x, y, cols: self.log_probs(model, x, y, cols), dynamic=False,
                                    backend=backend)
        x = torch.randint(0, 2, (rows, self.seq_len), device=device)
        with torch.no_grad():
            for width in self.widths():
                self._fixed(x, x, torch.arange(width, device=device).expand(rows, -1).contiguous())
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    def _padded_log_probs(self, model, x: torch.Tensor, y: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """`log_probs` through the compiled fixed shapes: rows in groups of `_rows`, padded with PAD rows, windows
        right-padded to seq_len (causal: exact), scored columns padded to the next width (results cut back)."""
        rows, width = cols.shape
        fixed_width = next(w for w in self.widths() if w >= width)
        out = []
        for r in range(0, rows, self._rows):
            xs, ys, cs = x[r:r + self._rows], y[r:r + self._rows], cols[r:r + self._rows]
            n = xs.size(0)
            pad = (0, self.seq_len - xs.size(1), 0, self._rows - n)
            xs, ys = F.pad(xs, pad, value=PAD_TOKEN), F.pad(ys, pad, value=PAD_TOKEN)
            cs = F.pad(cs, (0, fixed_width - width, 0, self._rows - n))
            out.append(self._fixed(xs, ys, cs)[:n, :width])
        return torch.cat(out) if len(out) > 1 else out[0]

    def describe(self) -> str:
        return f"{self.name} (seq_len {self.seq_len}, stride {self.stride})"

    def plan(self, tokens: np.ndarray) -> WindowPlan:
        n = len(tokens) - 1
        return sliding_plan(np.array([0]), np.array([n]), self.seq_len, self.stride)

    def log_probs(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Full log-prob vectors [B, S, V] at the columns `cols` [B, S] of inputs x [B, T]: the head runs only on
        the positions a window scores (y [B, T], the targets, is for fixtures that misuse it)."""
        with autocast_for(x.device):
            h = model.hidden(x)
            logits = model.head(h.gather(1, cols[..., None].expand(-1, -1, h.size(-1))))
        return F.log_softmax(logits.float(), dim=-1)

    def run(self, model, tokens, *, device, batch_tokens, rank=0, world_size=1):
        share = split_for_rank(self.plan(tokens), rank, world_size, ordered=self.ordered)
        yield from self.run_plan(model, tokens, share, device=device, batch_tokens=batch_tokens)

    def run_plan(self, model: torch.nn.Module, tokens: np.ndarray, plan: WindowPlan, *, device: torch.device,
                 batch_tokens: int, before_batch: Callable | None = None) -> Iterator[ScoredChunk]:
        """Score the windows of `plan`, in order, batched to about `batch_tokens` input tokens
        (`before_batch(model, stream, windows)` runs before each batch; only a broken fixture uses it)."""
        stream = torch.from_numpy(np.asarray(tokens, dtype=np.int64)).to(device)
        for i, j in batch_bounds(plan.lengths, max(1, batch_tokens)):
            windows = plan.take(slice(i, j))
            if before_batch is not None:
                before_batch(model, stream, windows)
            yield self.score_batch(model, stream, windows, device)

    @torch.no_grad()
    def score_batch(self, model: torch.nn.Module, stream: torch.Tensor, windows: WindowPlan,
                    device: torch.device) -> ScoredChunk:
        longest = int(windows.lengths.max())
        starts = torch.from_numpy(windows.starts).to(device)[:, None]
        lengths = torch.from_numpy(windows.lengths).to(device)[:, None]
        score_from = torch.from_numpy(windows.score_from).to(device)[:, None]
        cols = torch.arange(longest, device=device)[None, :]
        real = cols < lengths
        idx = torch.where(real, starts + cols, starts)  # padding re-reads a real token; it is never scored
        x = torch.where(real, stream[idx], PAD_TOKEN)
        y = torch.where(real, stream[idx + 1], PAD_TOKEN)
        # The scored slots of each window: columns score_from .. length - 1, left-aligned in a [B, S] grid.
        k = torch.arange(int(windows.scored_counts.max()), device=device)[None, :]
        mask = k < lengths - score_from
        scored = torch.where(mask, score_from + k, 0)
        logp = self._padded_log_probs(model, x, y, scored) if self._fixed else self.log_probs(model, x, y, scored)
        targets = y.gather(1, scored)
        nats = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return ScoredChunk(positions=idx.gather(1, scored) + 1, targets=targets, log_probs=logp, nats=nats,
                           mask=mask)


class FlatMode(WindowedMode):
    """Consecutive non-overlapping windows; the last, short window is scored too."""

    name = "flat"

    def __init__(self, seq_len: int, stride: int = 0) -> None:
        super().__init__(seq_len, seq_len)


class SlidingMode(WindowedMode):
    """Windows every `stride` targets; each target scored once with >= seq_len - stride context (PR #50 lineage,
    `R/2026-03-19_SlidingWindowEval`)."""

    name = "sliding"


class DocumentMode(WindowedMode):
    """Document-isolated scoring: no window crosses a BOS; documents longer than seq_len slide inside themselves
    (`R/2026-03-17_LoRA_TTT` README: most of its gain came from not attending across documents)."""

    name = "doc"

    def __init__(self, seq_len: int, stride: int, bos_id: int) -> None:
        super().__init__(seq_len, stride)
        self.bos_id = bos_id

    def describe(self) -> str:
        return f"{self.name} (seq_len {self.seq_len}, stride {self.stride}, BOS {self.bos_id})"

    def plan(self, tokens: np.ndarray) -> WindowPlan:
        starts, ends = document_segments(tokens, self.bos_id)
        return sliding_plan(starts, ends, self.seq_len, self.stride)


ModeFactory = Callable[[int, int, int], EvalMode]

# One factory per fixed-predictor mode (`FIXED_MODES`); `pgolf.eval.ttt` builds the TTT modes.
MODE_FACTORIES: dict[str, ModeFactory] = {
    "flat": lambda seq_len, stride, bos_id: FlatMode(seq_len),
    "sliding": lambda seq_len, stride, bos_id: SlidingMode(seq_len, stride),
    "doc": lambda seq_len, stride, bos_id: DocumentMode(seq_len, stride, bos_id),
}


def resolve_stride(seq_len: int, stride: int) -> int:
    """0 means the records' 64, capped at seq_len."""
    return stride if stride > 0 else min(DEFAULT_STRIDE, seq_len)


def make_mode(name: str, *, seq_len: int, stride: int = 0, bos_id: int = 1,
              extra: dict[str, ModeFactory] | None = None) -> EvalMode:
    """Build a mode by name (`extra` adds factories, e.g. the legality fixtures)."""
    factories = {**MODE_FACTORIES, **(extra or {})}
    return choose(factories, name, "eval mode")(seq_len, resolve_stride(seq_len, stride), bos_id)
