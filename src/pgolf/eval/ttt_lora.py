"""The batched per-document LoRA TTT modes, `lora-ttt` and `phased-ttt`: the 1.0611 record's batched phased LoRA
TTT (PR #1855's `eval_val_ttt_phased`, after PRs #1530/#1610/#1626/#1767; docs/techniques.md#test-time-training), on
the one model (`pgolf.model.lora.BatchedLoRA` passed through `GPT.hidden` and `GPT.head`), behind the legality gate
of `pgolf.eval.ttt_gate`:

* documents are sorted by length, cut into batches of `batch_docs`, and the batches run longest first;
* every document of a batch has its own adapters (rank `rank`, scale alpha/rank) on `targets` of every virtual-layer
  slot (a looped layer gets one per application) and on the tied head, and its own AdamW state (lr, betas, weight
  decay; eps 1e-10), fresh for every batch. B starts at zero; A is drawn U(+-1/sqrt(in)) at the start of a phase
  and, with `warm_start_a`, carried from batch to batch: batch j continues the A of batch j - `chains` (the record's
  8 ranks each carry their own; here the chain of a batch does not depend on the world size, so any number of ranks
  dividing `chains` scores the same);
* each document's targets are cut into chunks of `chunk` (with `short_doc_chunks`, PR #2014's smaller chunks for a
  batch of short documents: `batch_chunk`); chunk c is scored in one window of up to `seq_len` tokens
  of its own document ending at the chunk's end, the head runs only on the chunk's positions, and then (except for a
  document's last chunk) one AdamW step on the mean loss of that chunk, reusing the scoring forward's graph;
* `phased-ttt` adds global phases: the first `prefix_docs` documents in scoring order are divided by `phases`
  boundaries; after the batch in which the count of scored documents reaches a boundary, `boundary` of the scored
  documents (`phase_documents`: by `phase_docs`, the first scored, or as the record picks them, the first by their
  batch's ascending-length index) are concatenated and one epoch of SGD (momentum 0.9, clip 1.0) on the base
  weights runs over them in chunks of `chunk_tokens` tokens, one step per chunk (its `seq_len` sequences, cut at
  document starts), with a cosine learning rate from `phase_lr` across the chunks; the last chunk is not trained
  on, as in the record. Then fresh adapters continue. With AsymLogit (`model.asym_logit`) the phases' loss uses the
  symmetric softcap and leaves the two caps alone, as PR #2135 runs it; `train_logit_caps` trains the caps there
  too, through the asymmetric cap (PRs #1923/#1945). The per-document adapters never train them.

Under torchrun the batches are dealt round-robin to the ranks, each phase's sequences are split across ranks with
the gradients all-reduced, and the evaluator sums the nats, tokens and bytes: the score equals one process's up to
float summation order. On the CPU the batched forward and the AdamW step run only on the rows whose document still
has chunks (`BatchedLoRA.take`, `RowAdamW`): no score changes, and a batch of a few documents costs what they do,
not what 64 rows would. The knobs are `pgolf.config.TTTConfig` (`[ttt]`).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pgolf.config import TTTConfig
from pgolf.errors import PgolfError
# the [ttt] names and option parsers, torch-free for pgolf.options (re-exported: LEGACY_TARGETS)
from pgolf.eval.choices import LEGACY_TARGETS, PHASE_DOCS, batch_chunk, lora_targets, short_doc_chunks  # noqa: F401
from pgolf.eval.modes import PAD_TOKEN, EvalMode, ScoredChunk
from pgolf.eval.ttt_gate import ScoredPositions
from pgolf.eval.ttt_optim import cosine_lr, frozen, make_optimizer, requires_grad, set_lr
from pgolf.eval.windows import document_segments
from pgolf.model.roles import Role, RoleError, param_role
from pgolf.runtime import DistContext, autocast_for, should_compile

PAD_MULTIPLE = 256  # compiled TTT windows are padded to a multiple of this (a few fixed shapes)
PHASE_BATCH_SEQS = 256  # sequences per global-phase SGD step (the record: 32 per rank x 8 ranks)
PHASE_CLIP = 1.0


@dataclass(frozen=True)
class Schedule:
    """Which documents are scored together, in what order, by which rank, and where the global phases fall.

    Documents are target segments [starts[d], ends[d]) (`pgolf.eval.windows.document_segments`); `batches[j]` lists
    the documents of the j-th batch in scoring order (ascending length); `phase_after[j]` is the number of documents
    a global phase trains on after batch j (`phase_documents`), or 0; `batch_index[j]` is batch j's index among the
    batches numbered by ascending length, before they were put longest first (the record's `orig_batch_idx`)."""

    starts: np.ndarray
    ends: np.ndarray
    batches: list[np.ndarray]
    phase_after: dict[int, int]
    batch_index: np.ndarray

    @property
    def order(self) -> np.ndarray:
        """Every document in scoring order."""
        return np.concatenate(self.batches) if self.batches else np.zeros(0, dtype=np.int64)


def make_schedule(tokens: np.ndarray, bos_id: int, batch_docs: int, phases: int, prefix_docs: int) -> Schedule:
    """Length-sorted batches, longest first, and the phase points (PR #1855's `_build_ttt_global_batches` and phase
    boundaries prefix * (k + 1) // phases)."""
    starts, ends = document_segments(tokens, bos_id)
    lengths = ends - starts
    by_length = np.argsort(lengths, kind="stable")
    batches = [by_length[i:i + batch_docs] for i in range(0, len(by_length), batch_docs)]
    # longest first; stable: batches with equal longest documents keep their order
    batch_index = np.array(sorted(range(len(batches)), key=lambda i: -int(lengths[batches[i]].max())), dtype=np.int64)
    batches = [batches[i] for i in batch_index]
    prefix = min(prefix_docs, len(starts))
    boundaries = sorted({prefix * (k + 1) // phases for k in range(phases)} - {0}) if phases > 0 else []
    done = np.cumsum([len(b) for b in batches])
    phase_after, last = {}, -1
    for boundary in boundaries:
        j = max(int(np.searchsorted(done, boundary)), last + 1)
        if j < len(batches) - 1:  # a phase after the last batch could not help any score
            phase_after[j] = boundary
            last = j
    return Schedule(starts, ends, batches, phase_after, batch_index)


def phase_documents(sched: Schedule, j: int, rule: str = "scored-order") -> np.ndarray:
    """The documents the global phase after batch j trains on, in the order they are concatenated: `phase_after[j]`
    of the documents of batches 0..j (all scored by then), picked by `ttt.phase_docs`:
    - `scored-order`: the first scored (the batches of the longest documents, which run first);
    - `batch-index`: PR #1855's rule (its `scored_docs_for_global.sort`): the scored documents sorted by (the index
      of their batch among the batches numbered by ascending length, their position in the batch), and the first
      of those kept, so the shortest scored documents, shortest first."""
    boundary = sched.phase_after[j]
    if rule == "scored-order":
        return sched.order[:boundary]
    if rule == "batch-index":
        scored = sorted(range(j + 1), key=lambda b: int(sched.batch_index[b]))
        return np.concatenate([sched.batches[b] for b in scored])[:boundary]
    raise PgolfError(f"config: ttt.phase_docs={rule!r} must be one of {', '.join(PHASE_DOCS)}")


def _is_logit_cap(name: str) -> bool:
    """Whether parameter `name` is one of AsymLogit's caps (False for a name no role rule knows)."""
    try:
        return param_role(name) is Role.LOGIT_CAP
    except RoleError:
        return False


def _draw_generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from non-negative integers (the same numbers on every rank and device).
    `BatchedLoRA.draw_a` draws on the CPU and copies to the adapters' device; a CUDA generator there fails
    ("Expected a 'cpu' device type for generator but found 'cuda'")."""
    g = torch.Generator(device="cpu")
    g.manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0] >> 1))
    return g


class BatchedLoRAMode(EvalMode):
    """`lora-ttt` (no phases) and, with `phases`, `phased-ttt`; see the module docstring. `compile` is
    `eval.compile` (`pgolf.eval.evaluate.build_mode` passes it)."""

    name = "lora-ttt"
    adaptive = True
    phased = False

    def __init__(self, seq_len: int, s: TTTConfig, bos_id: int, compile: str = "auto") -> None:
        self.rules = short_doc_chunks(s.short_doc_chunks)
        if max([s.chunk, *(c for _, c in self.rules)]) > seq_len:  # a chunk is scored in one window of <= seq_len
            raise PgolfError(f"{self.name}: ttt.chunk={s.chunk} must be at most the eval window seq_len={seq_len}"
                             f"{f' (and ttt.short_doc_chunks={s.short_doc_chunks!r})' if self.rules else ''}")
        if s.phase_docs not in PHASE_DOCS:
            raise PgolfError(f"config: ttt.phase_docs={s.phase_docs!r} must be one of {', '.join(PHASE_DOCS)}")
        self.seq_len, self.s, self.bos_id = seq_len, s, bos_id
        self.targets = lora_targets(s.targets)
        self.compile = compile  # `eval.compile`: the adapted forward compiled for fixed shapes (auto: on CUDA)
        self.log: Callable[[str], None] | None = None  # progress lines (the trainer passes its log)
        self.report: dict = {}

    def describe(self) -> str:
        s = self.s
        text = (f"{self.name} (seq_len {self.seq_len}, chunk {s.chunk}, {s.batch_docs} docs per batch, rank {s.rank}"
                f"{f', alpha {s.alpha:g}' if s.alpha else ''}, targets {','.join(self.targets)}, lr {s.lr:g}, "
                f"betas {s.beta1:g}/{s.beta2:g}, wd {s.weight_decay:g}"
                f"{', warm-start A' if s.warm_start_a else ''}"
                f"{f', short-doc chunks {s.short_doc_chunks}' if self.rules else ''})")
        if self.phased:
            text = (text[:-1] + f", {s.phases} phases over {s.prefix_docs} docs, phase lr {s.phase_lr:g}"
                    f"{f', phase docs {s.phase_docs}' if s.phase_docs != PHASE_DOCS[0] else ''}"
                    f"{', logit caps trained' if s.train_logit_caps else ''})")
        return text

    # ---------------------------------------------------------------------------------------------- the loop
    def run(self, model, tokens, *, device, batch_tokens, rank=0, world_size=1) -> Iterator[ScoredChunk]:
        s = self.s
        if s.warm_start_a and s.chains % world_size:
            raise PgolfError(f"{self.name}: ttt.chains={s.chains} must be a multiple of the world size "
                             f"{world_size} (each rank carries whole warm-start chains)")
        start = time.perf_counter()
        tokens = np.asarray(tokens)
        self._tokens = tokens
        self._stream = torch.from_numpy(tokens.astype(np.int64)).to(device)
        self._gate = ScoredPositions(len(tokens), self.name)
        self._ctx = DistContext(rank, world_size, 0, device)
        sched = make_schedule(tokens, self.bos_id, s.batch_docs, s.phases if self.phased else 0, s.prefix_docs)
        self._sched = sched
        self.report = {"docs": len(sched.starts), "batches": len(sched.batches), "phases": []}
        if self.rules:  # batches per chunk size (PR #2014's short-document chunks)
            sizes = [batch_chunk(int((sched.ends[b] - sched.starts[b]).max()), self.rules, s.chunk)
                     for b in sched.batches]
            self.report["chunk_batches"] = {str(c): sizes.count(c) for c in sorted(set(sizes))}
            self._say(f"ttt_chunks: {self.report['chunk_batches']}")
        self._say(f"ttt_phased: total_docs:{len(sched.starts)} prefix_docs:{min(s.prefix_docs, len(sched.starts))} "
                  f"batches:{len(sched.batches)} num_phases:{len(sched.phase_after)} "
                  f"boundaries:{sorted(sched.phase_after.values())}" if self.phased else
                  f"ttt_lora: total_docs:{len(sched.starts)} batches:{len(sched.batches)}")
        with frozen(model):
            model.eval()
            self._setup(model, device)
            chains: dict[int, dict[str, torch.Tensor]] = {}
            phase = 0
            for j, batch in enumerate(sched.batches):
                if j % world_size == rank:
                    self._load_adapters(chains, j, phase, device)
                    yield from self._score_batch(model, batch, device)
                    if s.warm_start_a:
                        chains[j % s.chains] = {k: a.detach().clone() for k, a in self.lora.a.items()}
                if j in sched.phase_after:
                    phase += 1
                    chains.clear()  # fresh adapters after a phase
                    self._global_phase(model, j, phase, start)
        self.report["seconds"] = round(time.perf_counter() - start, 4)

    def _say(self, line: str) -> None:
        if self.log is not None and self._ctx.is_main:
            self.log(line)

    def _load_adapters(self, chains: dict, j: int, phase: int, device: torch.device) -> None:
        """B = 0; A from the chain of batch j (warm start) or freshly drawn."""
        with torch.no_grad():
            for b in self.lora.b.values():
                b.zero_()
            chain = chains.get(j % self.s.chains) if self.s.warm_start_a else None
            if chain is not None:
                for k, a in self.lora.a.items():
                    a.copy_(chain[k])
            else:
                key = (0, j % self.s.chains) if self.s.warm_start_a else (1, j)  # a chain's start, or batch j's
                self.lora.draw_a(_draw_generator(self.s.seed, phase, *key))
        self.opt = make_optimizer("adamw", self.lora.parameters(), self.s.lr, betas=(self.s.beta1, self.s.beta2),
                                  weight_decay=self.s.weight_decay, device=device)

    def _setup(self, model: nn.Module, device: torch.device) -> None:
        """The adapters (one set of batch_docs rows, reset in place for every batch) and the forward
        (x [B, T], cols [B, C]) -> float32 log-probs [B, C, V] of the adapted model at columns `cols`, compiled with
        fixed shapes when `compile` says so (windows padded to PAD_MULTIPLE, rows to batch_docs, always with
        gradients), once per model."""
        from pgolf.model.lora import BatchedLoRA

        if getattr(self, "_set_up_for", None) is model:
            return
        s = self.s
        self.lora = lora = BatchedLoRA(model.cfg, rows=s.batch_docs, rank=s.rank, slots=model.slots,
                                       targets=self.targets, alpha=s.alpha, device=device)

        def forward(x: torch.Tensor, cols: torch.Tensor, rows: tuple[int, int] | None = None) -> torch.Tensor:
            adapters = lora if rows is None else lora.take(*rows)  # rows: the adapters of x's rows (eager only)
            with autocast_for(x.device):
                h = model.hidden(x, adapters)
                h = h.gather(1, cols[..., None].expand(-1, -1, h.size(-1)))
                return F.log_softmax(model.head(h, adapters).float(), dim=-1)

        self._pad, self._compiled = s.pad_multiple, should_compile(self.compile, device)
        self._trim = device.type == "cpu" and not self._compiled  # forward only the rows of unfinished documents
        self._forward = forward
        if self._compiled:
            self._pad = self._pad or PAD_MULTIPLE
            import torch._dynamo

            widths = sum(len(range(0, top, self._pad)) for top in self._shapes().values())
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, widths + 2)
            self._forward = torch.compile(forward, dynamic=False)
        self._set_up_for = model

    def _shapes(self) -> dict[int, int]:
        """chunk size -> the widest window a batch with that chunk can have (a rule's batches have fewer than
        LENGTH targets per document)."""
        shapes = {self.s.chunk: self.seq_len}
        for length, size in self.rules:
            shapes[size] = max(shapes.get(size, 0), min(self.seq_len, length - 1))
        return shapes

    def prepare(self, model: nn.Module, device: torch.device, batch_tokens: int = 0) -> float:
        """Compile every fixed shape ahead of scoring, on random tokens (no val data), as the record's warm-up
        before its eval timer; seconds spent (0 when not compiling)."""
        if not should_compile(self.compile, device):
            return 0.0
        start = time.perf_counter()
        with frozen(model):
            model.eval()
            self._setup(model, device)
            gen = torch.Generator(device="cpu").manual_seed(self.s.seed)
            try:
                for chunk, top in self._shapes().items():
                    for width in range(self._pad, top + self._pad, self._pad):
                        width = min(width, self.seq_len)
                        x = torch.randint(0, model.cfg.vocab_size, (self.s.batch_docs, width), generator=gen).to(device)
                        cols = torch.arange(chunk, device=device).clamp(max=width - 1).expand(self.s.batch_docs, -1)
                        with torch.enable_grad():
                            self._forward(x, cols).mean().backward()
            finally:
                self.lora.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    def _score_batch(self, model: nn.Module, batch: np.ndarray, device: torch.device) -> Iterator[ScoredChunk]:
        s, sched = self.s, self._sched
        rows = s.batch_docs
        a = np.zeros(rows, dtype=np.int64)
        n = np.zeros(rows, dtype=np.int64)  # targets of each row's document (0: an empty row)
        a[:len(batch)], n[:len(batch)] = sched.starts[batch], sched.ends[batch] - sched.starts[batch]
        size = batch_chunk(int(n.max()), self.rules, s.chunk)  # s.chunk unless short_doc_chunks says otherwise
        n_chunks = -(-n // size)
        for c in range(int(n_chunks.max())):
            # On the CPU only the rows whose document still has chunks (a contiguous range: the batch is sorted by
            # length), since the others' loss is masked out; compiled, or on CUDA, every row (fixed shapes).
            live = np.flatnonzero(c < n_chunks)
            lo, hi = (int(live[0]), int(live[-1]) + 1) if self._trim else (0, rows)
            a_c, n_c, chunks_c = a[lo:hi], n[lo:hi], n_chunks[lo:hi]
            chunk_end = np.minimum((c + 1) * size, n_c)
            win_start = np.maximum(0, chunk_end - self.seq_len)
            win_len = np.where(c < chunks_c, chunk_end - win_start, 0)
            score_from = c * size - win_start
            count = np.where(c < chunks_c, chunk_end - c * size, 0)
            train = c < chunks_c - 1  # a document's last chunk is not trained on: nothing of it is left
            width = max(1, int(win_len.max()))
            if self._pad:
                width = min(self.seq_len, -(-width // self._pad) * self._pad)
            t = torch.from_numpy
            col = torch.arange(width, device=device)[None, :]
            first = t(a_c + win_start).to(device)[:, None]
            real = col < t(win_len).to(device)[:, None]
            idx = torch.where(real, first + col, 0)
            x = torch.where(real, self._stream[idx], PAD_TOKEN)
            k = torch.arange(size, device=device)[None, :]
            mask = k < t(count).to(device)[:, None]
            cols = torch.where(mask, t(score_from).to(device)[:, None] + k, 0)
            positions = torch.where(mask, first + cols + 1, 0)
            targets = torch.where(mask, self._stream[positions], PAD_TOKEN)
            with torch.set_grad_enabled(bool(train.any()) or self._compiled):  # compiled: one graph per width
                logp = self._forward(x, cols, None if hi - lo == rows else (lo, hi))
            nats = -logp.detach().gather(-1, targets[..., None]).squeeze(-1)
            yield ScoredChunk(positions=positions, targets=targets, log_probs=logp.detach(), nats=nats, mask=mask)
            scored = positions[mask].cpu().numpy()
            self._gate.add(scored)
            if train.any():
                train_mask = mask & t(train).to(device)[:, None]
                self._pending = functools.partial(self._chunk_step, logp, train_mask, (lo, hi))
                released = positions[train_mask].cpu().numpy()
                self.adapt(model, released, self._tokens[released])
            del logp

    def adapt(self, model: nn.Module, positions: np.ndarray, tokens: np.ndarray) -> None:
        """Release scored tokens to the pending learner: the chunk step, or a global phase."""
        self._gate.check(positions)
        values = torch.as_tensor(np.asarray(tokens, dtype=np.int64), device=self._stream.device)
        learn, self._pending = self._pending, None
        learn(values)

    def _chunk_step(self, logp: torch.Tensor, train_mask: torch.Tensor, rows: tuple[int, int],
                    values: torch.Tensor) -> None:
        """One AdamW step on every training row's mean loss over its chunk (rows are independent documents). Only
        the forward's rows lo..hi-1 are stepped: rows from hi on are empty, and nothing reads the adapters of the
        rows before lo (documents done) again, except, with warm-start A, their A, which a later batch continues,
        so every row of A is stepped then, as AdamW over the whole batch would."""
        if int(train_mask.sum()) != len(values):
            raise PgolfError(f"internal: {self.name}: {len(values)} released tokens for {int(train_mask.sum())} slots")
        with torch.enable_grad():
            targets = torch.zeros(train_mask.shape, dtype=torch.int64, device=values.device)
            targets[train_mask] = values
            nats = -logp.gather(-1, targets[..., None]).squeeze(-1)
            per_doc = (nats * train_mask).sum(1) / train_mask.sum(1).clamp(min=1)
            self.opt.zero_grad(set_to_none=True)
            per_doc.sum().backward()
        lo, hi = rows
        if hi - lo == self.s.batch_docs:
            self.opt.step()
        else:
            stepped = self.lora.b.values() if self.s.warm_start_a else self.lora.parameters()
            self.opt.step(rows={p: slice(lo, hi) for p in stepped})

    # ------------------------------------------------------------------------------------- global SGD phases
    def _global_phase(self, model: nn.Module, j: int, phase: int, start: float) -> None:
        """After batch j, on every rank: one SGD epoch on the base weights over the documents `phase_documents`
        picks (all scored, by some rank)."""
        sched = self._sched
        self._ctx.barrier()  # every rank has scored every batch up to j
        for doc in np.concatenate(sched.batches[:j + 1]):
            self._gate.add(np.arange(sched.starts[doc] + 1, sched.ends[doc] + 1))
        t0 = time.perf_counter()
        docs = phase_documents(sched, j, self.s.phase_docs)
        done = sum(len(b) for b in sched.batches[:j + 1])
        self._say(f"ttpp: phase:{phase}/{len(sched.phase_after)} pd:{done} gd:{len(docs)} t:{t0 - start:.1f}s")
        positions = np.concatenate([np.arange(sched.starts[d] + 1, sched.ends[d] + 1) for d in docs])
        self._pending = functools.partial(self._phase_sgd, model, docs)
        self.adapt(model, positions, self._tokens[positions])
        seconds = time.perf_counter() - t0
        self.report["phases"].append({"phase": phase, "docs": int(len(docs)), "scored_docs": int(done),
                                      "start_s": round(t0 - start, 4), "seconds": round(seconds, 4),
                                      "steps": self._phase_steps})
        self._say(f"ttpr: phase:{phase}/{len(sched.phase_after)} t:{time.perf_counter() - start:.1f}s")

    def _phase_sgd(self, model: nn.Module, docs: np.ndarray, values: torch.Tensor) -> None:
        """PR #1855's `train_val_ttt_global_sgd_distributed` on the released documents: their tokens (each with
        its leading BOS) concatenated; chunks of chunk_tokens; one step per chunk over its seq_len sequences."""
        sched, s, ctx, L = self._sched, self.s, self._ctx, self.seq_len
        lengths = sched.ends[docs] - sched.starts[docs]
        if int(lengths.sum()) != len(values):
            raise PgolfError(f"internal: {self.name}: {len(values)} released tokens for {int(lengths.sum())}")
        heads = self._stream[torch.from_numpy(sched.starts[docs]).to(values.device)]  # BOS (or token 0)
        pieces = torch.split(values, lengths.tolist())
        stream = torch.cat([torch.cat((h[None], p)) for h, p in zip(heads, pieces)])
        total = len(stream) - 1
        n_chunks = -(-total // s.chunk_tokens)
        # The base weights train here (frozen again after); AsymLogit's caps only with train_logit_caps.
        params = [p for name, p in model.named_parameters() if s.train_logit_caps or not _is_logit_cap(name)]
        trained = {id(p) for p in params}
        self._phase_steps = 0
        with requires_grad(model, True):
            for p in model.parameters():
                p.requires_grad_(id(p) in trained)
            opt = make_optimizer("sgd", params, s.phase_lr)
            for c in range(n_chunks - 1):  # the record leaves the last chunk out
                lr = cosine_lr(s.phase_lr, c, n_chunks)
                a = c * s.chunk_tokens
                n_seqs = (min(a + s.chunk_tokens, total) - a) // L
                for g0 in range(0, n_seqs, PHASE_BATCH_SEQS):
                    g1 = min(g0 + PHASE_BATCH_SEQS, n_seqs)
                    n = g1 - g0  # this step's sequences, split across ranks
                    mine = range(g0 + n * ctx.rank // ctx.world_size, g0 + n * (ctx.rank + 1) // ctx.world_size)
                    seqs = [stream[a + i * L:a + (i + 1) * L + 1] for i in mine]
                    set_lr(opt, lr)
                    opt.zero_grad(set_to_none=True)
                    if seqs:
                        with torch.enable_grad():
                            (self._segments_loss(model, seqs) / (n * L)).backward()
                    _all_reduce_grads(params, ctx)
                    torch.nn.utils.clip_grad_norm_(params, PHASE_CLIP)
                    opt.step()
                    self._phase_steps += 1

    def _segments_loss(self, model: nn.Module, seqs: list[torch.Tensor]) -> torch.Tensor:
        """Summed loss of sequences (inputs seq[:-1], targets seq[1:]), each cut where an input is BOS, so no
        document attends to another (the record's cu_seqlens at BOS positions). The logits are softcapped
        symmetrically, as the record's training forward does, unless the phase trains AsymLogit's caps."""
        rows = []
        for seq in seqs:
            cuts = (seq[:-1] == self.bos_id).nonzero().squeeze(1).tolist()
            bounds = sorted({0, *cuts, len(seq) - 1})
            rows += [seq[b0:b1 + 1] for b0, b1 in zip(bounds[:-1], bounds[1:])]
        width = max(len(r) for r in rows) - 1
        x = torch.full((len(rows), width), PAD_TOKEN, dtype=torch.int64, device=seqs[0].device)
        y = torch.full_like(x, -100)
        for i, r in enumerate(rows):
            x[i, :len(r) - 1], y[i, :len(r) - 1] = r[:-1], r[1:]
        with autocast_for(x.device):
            logits = model.head(model.hidden(x), symmetric=not self.s.train_logit_caps)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), ignore_index=-100,
                               reduction="sum")


def _all_reduce_grads(params: list[nn.Parameter], ctx: DistContext) -> None:
    """Sum every gradient across ranks in one collective (a rank without sequences adds zeros)."""
    if not ctx.distributed:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    ctx.all_reduce_sum(flat)
    for p, g in zip(params, torch.split(flat, [g.numel() for g in grads])):
        p.grad = g.view_as(p).clone()


class PhasedLoRAMode(BatchedLoRAMode):
    name = "phased-ttt"
    phased = True
