"""Score-first test-time training (TTT): per-document LoRA, chunked full-model SGD and phased global SGD
(docs/rules.md#score-first-test-time-training, docs/techniques.md#test-time-training), on the eval mode API of
`pgolf.eval.modes`.

Legality by construction (conditions C1-C4 of issue #1017). Every TTT mode here is a `ScoreFirstMode`, whose `run`
is the only code that touches the token stream, and it is fixed: it scores a unit of windows (yielding the chunk, so
the scores are final), advances a high-water mark of scored positions, and only then calls `adapt` with the
positions just released. `adapt` refuses any position above the mark, and the learners (`LoRALearner`,
`SGDLearner`) never see the stream at all: they receive only `ScoredTokens`, built by `adapt` from released
positions. So "train before score" is not a rule a TTT mode must remember; a learner has no way to reach a token
before it is scored. `pgolf legality` audits the same modes from the outside.

Modes:

- `lora-ttt` (PR #77 -> `R/2026-03-17_LoRA_TTT`; PR #1530): documents in order; each document's targets are cut
  into chunks of `chunk` tokens, each scored in a window of up to `seq_len` tokens of its own document, then one
  Adam step on that chunk's loss updates rank-`rank` LoRA adapters on the target linears. Adapters are reset between
  documents (B zeroed; A re-drawn, or kept with `warm_start_a`, PR #1767), so documents adapt independently.
- `sgd-ttt` (PR #549 -> `R/2026-03-23_LeakyReLU_LegalTTT_ParallelMuon`): the stream in chunks of `chunk_tokens`
  targets, each scored with sliding windows, then `epochs` of SGD (momentum 0.9, cosine LR across chunks, clip
  1.0) on all weights over that chunk's tokens; the last chunk is not trained on (nothing is left to score).
- `phased-ttt` (PRs #1610/#1626): `lora-ttt`, plus global phases: when the number of scored documents crosses
  one of `phases` boundaries spread over the first `prefix_docs` documents, one epoch of SGD on the base weights
  over every scored document so far, then fresh adapters.

Adaptation runs on one process (documents are not yet split across ranks for TTT).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pgolf.errors import PgolfError
from pgolf.eval.modes import EvalMode, ScoredChunk, WindowedMode
from pgolf.eval.windows import WindowPlan, document_segments, sliding_plan
from pgolf.runtime import autocast_for

from pgolf.eval.names import TTT_MODES  # noqa: F401


@dataclass
class TTTSettings:
    """Knobs of the TTT modes (the 03-17 LoRA record's values by default; docs/techniques.md#per-document-lora-ttt)."""

    chunk: int = 256  # lora/phased: targets scored per adaptation step
    rank: int = 8
    alpha: float = 0.0  # 0: scale 1; else alpha / rank
    targets: tuple[str, ...] = ("attn.c_q", "attn.c_v")
    lr: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    warm_start_a: bool = False
    chunk_tokens: int = 32_768  # sgd: targets per chunk
    sgd_lr: float = 0.002
    epochs: int = 3
    phases: int = 3  # phased
    prefix_docs: int = 2000
    phase_lr: float = 0.001
    seed: int = 0


@dataclass(frozen=True)
class ScoredTokens:
    """Token values at contiguous positions [first, first + len) whose scores are final. `train_from` is the
    offset of the first target a learner should take a loss on (earlier ones are context)."""

    first: int
    tokens: torch.Tensor  # int64 [n]
    train_from: int


# ------------------------------------------------------------------------------------------------------ learners

class LoRALearner:
    """Low-rank adapters on the target linears, added through forward hooks (the model code is untouched):
    y = W x + s * B (A x), A [r, in] ~ N(0, 1/in), B [out, r] = 0, so a fresh adapter changes nothing."""

    def __init__(self, model: nn.Module, s: TTTSettings) -> None:
        from pgolf.model.layers import CastedLinear

        self.s = s
        self.gen = torch.Generator(device="cpu").manual_seed(s.seed)
        self.modules = {name: m for name, m in model.named_modules()
                        if isinstance(m, CastedLinear) and any(name.endswith(t) for t in s.targets)}
        if not self.modules:
            raise PgolfError(f"lora-ttt: no linear layer matches targets {', '.join(s.targets)}")
        device = next(model.parameters()).device
        self.a = {n: torch.zeros(s.rank, m.in_features, device=device) for n, m in self.modules.items()}
        self.b = {n: torch.zeros(m.out_features, s.rank, device=device) for n, m in self.modules.items()}
        for t in [*self.a.values(), *self.b.values()]:
            t.requires_grad_(True)
        self.scale = s.alpha / s.rank if s.alpha > 0 else 1.0
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in self.modules.items()]
        self.opt = None
        self.reset(first=True)

    def _hook(self, name: str):
        def hook(module, inputs, output):
            x = inputs[0]
            return output + self.scale * F.linear(F.linear(x, self.a[name].to(x.dtype)), self.b[name].to(x.dtype))
        return hook

    @torch.no_grad()
    def reset(self, first: bool = False) -> None:
        for name, a in self.a.items():
            if first or not self.s.warm_start_a:
                a.copy_(torch.randn(a.shape, generator=self.gen) / math.sqrt(a.shape[1]))
            self.b[name].zero_()
        self.opt = torch.optim.AdamW([*self.a.values(), *self.b.values()], lr=self.s.lr, betas=self.s.betas,
                                     weight_decay=self.s.weight_decay)

    def step(self, model: nn.Module, scored: ScoredTokens) -> None:
        loss = _span_loss(model, scored)
        if loss is None:
            return
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


class SGDLearner:
    """Plain SGD with momentum on every weight of the model, over sequences of already-scored tokens."""

    def __init__(self, model: nn.Module, lr: float, seq_len: int) -> None:
        self.params = [p for p in model.parameters()]
        self.opt = torch.optim.SGD(self.params, lr=lr, momentum=0.9)
        self.seq_len = seq_len

    def epoch(self, model: nn.Module, scored: ScoredTokens, lr: float, epochs: int = 1) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr
        n = len(scored.tokens)
        for _ in range(epochs):
            for a in range(0, n - 1, self.seq_len):
                piece = ScoredTokens(scored.first + a, scored.tokens[a:a + self.seq_len + 1], 0)
                loss = _span_loss(model, piece)
                if loss is None:
                    continue
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.params, 1.0)
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


# --------------------------------------------------------------------------------------------------------- driver

class ScoreFirstMode(EvalMode):
    """The fixed score-then-release loop (module docstring). Subclasses choose the scoring units and the learner;
    they never see the stream."""

    adaptive = True

    def __init__(self, seq_len: int, s: TTTSettings, bos_id: int) -> None:
        self.seq_len, self.s, self.bos_id = seq_len, s, bos_id
        self._scorer = WindowedMode(seq_len, seq_len)

    def describe(self) -> str:
        return f"{self.name} (seq_len {self.seq_len})"

    # The units: a list of (window plan, release kind) in scoring order; see subclasses.
    def units(self, tokens: np.ndarray) -> Iterator[tuple[WindowPlan, str]]:
        raise NotImplementedError

    def run(self, model, tokens, *, device, batch_tokens, rank=0, world_size=1) -> Iterator[ScoredChunk]:
        if world_size > 1:
            raise PgolfError(f"eval mode {self.name} runs on one process (got world size {world_size})")
        self._stream = torch.from_numpy(np.asarray(tokens, dtype=np.int64)).to(device)
        self._mark = 0  # every target position <= _mark has been yielded (scored)
        model.eval()
        self.start(model)
        try:
            for plan, kind in self.units(tokens):
                first = int(plan.starts[0] + plan.score_from[0]) + 1
                if first != self._mark + 1:
                    raise PgolfError(f"internal: {self.name} scores out of order")
                self.before_unit(model, kind)
                for chunk in self._scorer.run_plan(model, tokens, plan, device=device, batch_tokens=batch_tokens):
                    yield chunk
                last = int((plan.starts + plan.lengths).max())
                self._mark, self._kind, self._new_targets = last, kind, last - first + 1
                positions = np.arange(max(1, int(plan.starts[0]) + 1), last + 1)
                self.adapt(model, positions, tokens[positions])
        finally:
            self.finish(model)

    def adapt(self, model: nn.Module, positions: np.ndarray, tokens: np.ndarray) -> None:
        """Release scored tokens to the learner. Refuses anything not yet scored, so no learner can train first."""
        if len(positions) == 0:
            return
        if int(positions.max()) > self._mark or np.any(np.diff(positions) != 1):
            raise PgolfError(f"{self.name}: refusing to adapt on positions that are not yet scored "
                             f"(up to {int(positions.max())}, scored up to {self._mark})")
        values = torch.as_tensor(np.asarray(tokens, dtype=np.int64), device=self._stream.device)
        self.learn(model, ScoredTokens(int(positions[0]), values, max(0, len(positions) - self._new_targets)),
                   self._kind)

    def before_unit(self, model: nn.Module, kind: str) -> None:
        """Called before a unit is scored (e.g. fresh adapters for a new document); sees no tokens."""

    def scored_prefix(self) -> ScoredTokens:
        """Every token scored so far (positions 1 .. mark): what a global adaptation phase may train on."""
        return ScoredTokens(1, self._stream[1:self._mark + 1], 0)

    def start(self, model: nn.Module) -> None:
        pass

    def learn(self, model: nn.Module, scored: ScoredTokens, kind: str) -> None:
        raise NotImplementedError

    def finish(self, model: nn.Module) -> None:
        pass


def _chunked_document_plans(tokens: np.ndarray, bos_id: int, seq_len: int, chunk: int
                            ) -> Iterator[tuple[int, WindowPlan]]:
    """(document index, plan of one chunk): each document's targets in chunks of `chunk`, each chunk scored by one
    window of up to `seq_len` tokens of its own document."""
    starts, ends = document_segments(tokens, bos_id)
    for d, (a, e) in enumerate(zip(starts.tolist(), ends.tolist())):
        plan = sliding_plan(np.array([a]), np.array([e]), seq_len, min(chunk, seq_len))
        for i in range(len(plan)):
            yield d, plan.take(slice(i, i + 1))


class LoRATTTMode(ScoreFirstMode):
    name = "lora-ttt"

    def describe(self) -> str:
        return (f"{self.name} (seq_len {self.seq_len}, chunk {self.s.chunk}, rank {self.s.rank}, "
                f"lr {self.s.lr}, targets {','.join(self.s.targets)})")

    def units(self, tokens):
        current = None
        for doc, plan in _chunked_document_plans(tokens, self.bos_id, self.seq_len, self.s.chunk):
            yield plan, "new_doc" if doc != current else "chunk"
            current = doc

    def start(self, model):
        for p in model.parameters():
            p.requires_grad_(False)
        self.lora = LoRALearner(model, self.s)

    def before_unit(self, model, kind):
        if kind == "new_doc":
            self.lora.reset()  # documents adapt independently

    def learn(self, model, scored, kind):
        self.lora.step(model, scored)  # loss on the chunk just scored; the rest of the window is context

    def finish(self, model):
        self.lora.remove()
        for p in model.parameters():
            p.requires_grad_(True)


class SGDTTTMode(ScoreFirstMode):
    name = "sgd-ttt"

    def __init__(self, seq_len: int, s: TTTSettings, bos_id: int, stride: int) -> None:
        super().__init__(seq_len, s, bos_id)
        self.stride = stride
        self._plan: WindowPlan | None = None

    def describe(self) -> str:
        return (f"{self.name} (seq_len {self.seq_len}, stride {self.stride}, chunk {self.s.chunk_tokens} tokens, "
                f"{self.s.epochs} epochs, lr {self.s.sgd_lr})")

    def units(self, tokens):
        n = len(tokens) - 1
        self._plan = sliding_plan(np.array([0]), np.array([n]), self.seq_len, self.stride)
        bounds = list(range(0, n, self.s.chunk_tokens)) + [n]
        self._n_chunks = len(bounds) - 1
        for i, (a, e) in enumerate(zip(bounds[:-1], bounds[1:])):
            # Windows that START in [a, e) of one sliding plan over the whole stream: same windows as `sliding`.
            first = self._plan.starts + self._plan.score_from
            yield self._plan.take((first >= a) & (first < e)), "last" if i == self._n_chunks - 1 else f"chunk{i}"

    def start(self, model):
        self.sgd = SGDLearner(model, self.s.sgd_lr, self.seq_len)

    def learn(self, model, scored, kind):
        if kind == "last":
            return
        i = int(kind.removeprefix("chunk"))
        lr = 0.5 * self.s.sgd_lr * (1 + math.cos(math.pi * i / max(1, self._n_chunks - 1)))
        chunk_positions = scored.tokens[-min(len(scored.tokens), self.s.chunk_tokens + 1):]
        model.train()
        self.sgd.epoch(model, ScoredTokens(scored.first, chunk_positions, 0), lr, self.s.epochs)
        model.eval()


class PhasedTTTMode(LoRATTTMode):
    name = "phased-ttt"

    def describe(self) -> str:
        return super().describe() + f", {self.s.phases} phases over {self.s.prefix_docs} docs"

    def units(self, tokens):
        self.sgd = None
        starts, _ = document_segments(tokens, self.bos_id)
        n_docs = min(self.s.prefix_docs, len(starts))
        self._boundaries = {round(n_docs * (k + 1) / self.s.phases) for k in range(self.s.phases)} - {0}
        self._docs_done = 0
        yield from super().units(tokens)

    def before_unit(self, model, kind):
        if kind == "new_doc":
            if self._docs_done in self._boundaries:
                self._global_phase(model)
            self._docs_done += 1
        super().before_unit(model, kind)

    def _global_phase(self, model):
        """One SGD epoch on the base weights over every token scored so far, then fresh adapters."""
        self.lora.remove()
        for p in model.parameters():
            p.requires_grad_(True)
        if self.sgd is None:
            self.sgd = SGDLearner(model, self.s.phase_lr, self.seq_len)
        model.train()
        self.sgd.epoch(model, self.scored_prefix(), self.s.phase_lr, 1)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.lora = LoRALearner(model, self.s)


def ttt_settings(eval_cfg) -> TTTSettings:
    """The TTT knobs of an `EvalConfig` (fields `ttt_*`)."""
    e = eval_cfg
    return TTTSettings(chunk=e.ttt_chunk, rank=e.ttt_rank, alpha=e.ttt_alpha,
                       targets=tuple(t.strip() for t in e.ttt_targets.split(",") if t.strip()), lr=e.ttt_lr,
                       betas=(e.ttt_beta1, e.ttt_beta2), weight_decay=e.ttt_weight_decay,
                       warm_start_a=e.ttt_warm_start_a, chunk_tokens=e.ttt_chunk_tokens, sgd_lr=e.ttt_sgd_lr,
                       epochs=e.ttt_epochs, phases=e.ttt_phases, prefix_docs=e.ttt_prefix_docs,
                       phase_lr=e.ttt_phase_lr)


# TTT mode name -> factory (settings, seq_len, stride, bos_id).
TTT_MODE_FACTORIES = {
    "lora-ttt": lambda s, seq_len, stride, bos_id: LoRATTTMode(seq_len, s, bos_id),
    "sgd-ttt": lambda s, seq_len, stride, bos_id: SGDTTTMode(seq_len, s, bos_id, stride),
    "phased-ttt": lambda s, seq_len, stride, bos_id: PhasedTTTMode(seq_len, s, bos_id),
}


def ttt_factories(s: TTTSettings) -> dict:
    """Factories for `pgolf.eval.modes.make_mode(extra=...)`, bound to the settings `s`."""
    return {name: functools.partial(factory, s) for name, factory in TTT_MODE_FACTORIES.items()}
