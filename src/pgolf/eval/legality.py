"""Automated legality checks of an evaluation mode on a small slice of val: conditions C1-C4 of issue #1017
("A Field Guide to Valid Submissions", docs/rules.md#score-first-test-time-training).

The checker drives a mode through the mode API (`pgolf.eval.modes`): it consumes the (position, full log-prob
vector) events and, for adaptive modes, wraps `mode.adapt` to record which tokens it was given and when.

- C1 strict causality: the mode is rerun with token t replaced (for a sample of t, always including the last);
  every log-prob vector used to score a position <= t must be unchanged (max |difference| <= tolerance), except
  where the mode had released t to `adapt` (after scoring it) before it scored that position: a later token may
  reach an earlier one only after it was scored and released, the way the records' TTT scores documents in their
  own order (length-sorted batches, PR #1855) rather than in stream order
  (docs/rules.md#c1-when-documents-are-scored-out-of-stream-order).
  The excuse is judged by timing alone (release stamped with the number of chunks yielded so far, a position with
  the index of the chunk that first scored it; excused if release <= index), not by the channel. For modes that do
  not adapt this is plain strict causality. This also catches distributions that depend on their own target (t
  itself is checked, and cannot be released before it is scored without failing C3) and adaptation that comes too
  early. No cycles: a position p > t whose distribution moves with t must not have been released to `adapt`
  before t was scored, since t's score could then depend on p while p's depends on t (a later position scored
  first with earlier, unscored tokens in its context, released, and the earlier tokens then scored with what was
  learned: the pair predicts each other; fixture `broken-cycle`). pgolf's TTT modes never do this: each document
  is scored in its own rows, its chunks in stream order.
- C2 full normalised distribution: every vector's logsumexp is 0 and the reported nats equal -logp[token].
- C3 score before update: every position passed to `adapt` was already yielded as scored, and the token values
  passed are the stream's; vacuous for fixed predictors.
- C4 single pass: every position 1 .. n is scored exactly once (and no other position is).

Each check is sampled (a few thousand tokens, a few perturbations), so a pass is evidence, not proof; a failure is
a concrete counterexample, printed in the table.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pgolf.errors import PgolfError
from pgolf.eval.modes import EvalMode, make_mode
from pgolf.eval.tilt import with_tilt

CONDITIONS = {
    "C1": "causality",
    "C2": "full normalized distribution",
    "C3": "score before update",
    "C4": "each token scored once",
}


@dataclass
class ConditionResult:
    condition: str
    passed: bool
    detail: str


@dataclass
class LegalityReport:
    mode: str
    tokens: int
    results: list[ConditionResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def violated(self) -> list[str]:
        return [r.condition for r in self.results if not r.passed]

    def table(self) -> str:
        lines = [f"legality of {self.mode} on {self.tokens} val tokens",
                 f"{'condition':<34} {'result':<6} detail"]
        for r in self.results:
            name = f"{r.condition} {CONDITIONS[r.condition]}"
            lines.append(f"{name:<34} {'pass' if r.passed else 'FAIL':<6} {r.detail}")
        lines.append("legal" if self.passed else f"VIOLATES {', '.join(self.violated)}")
        return "\n".join(lines)


@dataclass
class _AdaptLog:
    """What the instrumented `adapt` was given."""

    calls: int = 0
    tokens: int = 0
    early: list[tuple[int, int]] = field(default_factory=list)  # (position, chunks yielded so far), not yet scored
    wrong_values: int = 0  # calls whose token values are not the stream's
    released_at: np.ndarray | None = None  # per position: chunks yielded when it was first released (else max)


@dataclass
class _Observation:
    """What one run of a mode showed the checker."""

    log_probs: torch.Tensor  # [n + 1, V] float32, NaN where never scored (first scoring kept)
    counts: np.ndarray  # times each position was scored
    yielded_at: np.ndarray  # index of the chunk that first scored each position
    outside: int = 0  # events at positions outside 1..n
    wrong_target: int = 0  # events whose reported target is not the stream's token
    max_lse: float = 0.0
    max_nats_error: float = 0.0
    adapt: _AdaptLog = field(default_factory=_AdaptLog)


def _observe(make: Callable[[], EvalMode], model: torch.nn.Module, tokens: np.ndarray, *, device: torch.device,
             batch_tokens: int) -> _Observation:
    mode = make()
    if mode.adaptive:
        model = copy.deepcopy(model)  # adaptation may change weights; every run starts from the artifact
    n = len(tokens) - 1
    scored = np.zeros(n + 1, dtype=bool)
    stream = np.asarray(tokens, dtype=np.int64)
    obs: _Observation | None = None
    chunk_index = 0
    inner_adapt = mode.adapt

    def recording_adapt(model_: torch.nn.Module, positions: np.ndarray, values: np.ndarray) -> None:
        pos = np.asarray(positions, dtype=np.int64).ravel()
        vals = np.asarray(values, dtype=np.int64).ravel()
        log.calls += 1
        log.tokens += len(pos)
        inside = (pos >= 0) & (pos <= n)
        for p in pos[~inside | ~scored[np.clip(pos, 0, n)]][:5]:
            log.early.append((int(p), chunk_index))
        if len(vals) != len(pos) or np.any(vals[inside] != stream[pos[inside]]):
            log.wrong_values += 1
        log.released_at[pos[inside]] = np.minimum(log.released_at[pos[inside]], chunk_index)
        inner_adapt(model_, positions, values)

    log = _AdaptLog(released_at=np.full(n + 1, np.iinfo(np.int64).max))
    mode.adapt = recording_adapt  # instance attribute shadows the method: the one channel is instrumented
    with torch.no_grad():
        model.eval()
        for chunk in mode.run(model, tokens, device=device, batch_tokens=batch_tokens, rank=0, world_size=1):
            rows, cols = chunk.mask.nonzero(as_tuple=True)
            pos = chunk.positions[rows, cols].cpu().numpy().astype(np.int64)
            logp = chunk.log_probs[rows, cols].float().cpu()
            if obs is None:
                obs = _Observation(torch.full((n + 1, logp.size(-1)), float("nan")), np.zeros(n + 1, np.int64),
                                   np.full(n + 1, np.iinfo(np.int64).max))
            inside = (pos >= 1) & (pos <= n)
            obs.outside += int((~inside).sum())
            keep = torch.from_numpy(inside)
            pos, logp = pos[inside], logp[keep]
            reported_nats = chunk.nats[rows, cols].double().cpu()[keep]
            reported_targets = chunk.targets[rows, cols].cpu().numpy()[inside]
            truth = torch.from_numpy(stream[pos])
            obs.wrong_target += int((reported_targets != stream[pos]).sum())
            if len(pos):
                lp = logp.double()
                obs.max_lse = max(obs.max_lse, float(torch.logsumexp(lp, 1).abs().max()))
                gold = lp.gather(1, truth[:, None]).squeeze(1)
                obs.max_nats_error = max(obs.max_nats_error, float((reported_nats + gold).abs().max()))
            _, first = np.unique(pos, return_index=True)
            fresh = first[obs.counts[pos[first]] == 0]  # first scoring of a position is the one kept
            obs.log_probs[torch.from_numpy(pos[fresh])] = logp[torch.from_numpy(fresh)]
            obs.yielded_at[pos[fresh]] = chunk_index
            np.add.at(obs.counts, pos, 1)
            scored[pos] = True
            chunk_index += 1
    if obs is None:
        raise PgolfError(f"legality: mode {mode.name!r} scored nothing")
    obs.adapt = log
    return obs


def _perturbation_positions(n: int, count: int, rng: np.random.Generator) -> list[int]:
    picks = set(rng.choice(np.arange(1, n + 1), size=min(n, max(0, count - 2)), replace=False).tolist())
    picks.update({max(1, n // 2), n})
    return sorted(int(p) for p in picks)


def check_mode(make: Callable[[], EvalMode], model: torch.nn.Module, tokens: np.ndarray, *,
               device: torch.device | None = None, batch_tokens: int = 16_384, perturbations: int = 8,
               tolerance: float = 1e-4, seed: int = 0) -> LegalityReport:
    """Check the mode built by `make()` (a fresh instance per run) on `tokens` against C1-C4."""
    device = device or torch.device("cpu")
    tokens = np.asarray(tokens)
    n = len(tokens) - 1
    if n < 2:
        raise PgolfError("legality: need at least 3 tokens")
    ref = _observe(make, model, tokens, device=device, batch_tokens=batch_tokens)
    report = LegalityReport(make().describe(), len(tokens))
    vocab = ref.log_probs.size(1)

    # C1: rerun with one token changed; nothing scored at or before it may move, unless the mode had released the
    # changed token to `adapt` before scoring that position.
    rng = np.random.default_rng(seed)
    worst, counterexample = 0.0, ""
    changed_positions = _perturbation_positions(n, perturbations, rng)
    for t in changed_positions:
        changed = tokens.copy()
        changed[t] = (int(tokens[t]) + int(rng.integers(1, vocab))) % vocab
        other = _observe(make, model, changed, device=device, batch_tokens=batch_tokens)
        a, b = ref.log_probs[1:t + 1], other.log_probs[1:t + 1]
        adapted_on_t = torch.from_numpy(ref.adapt.released_at[t] <= ref.yielded_at[1:t + 1])
        both = ~(a.isnan().any(1) | b.isnan().any(1) | adapted_on_t)
        same_inf = (a == b)  # equal infinities have a NaN difference
        diff = torch.where(same_inf, 0.0, (a - b).abs()).nan_to_num(nan=float("inf"))[both]
        if diff.numel():
            per_pos = diff.max(dim=1).values
            if float(per_pos.max()) > worst:
                worst = float(per_pos.max())
                p = int(torch.nonzero(both).squeeze(1)[int(per_pos.argmax())]) + 1
                counterexample = f" (changing token {t} moved the distribution scoring token {p})"
        # No cycles: a later token p that t's context reaches may not have been released to adapt before t was
        # scored, or t's score could depend on p while p's depends on t.
        a, b = ref.log_probs[t + 1:], other.log_probs[t + 1:]
        released_first = torch.from_numpy(ref.adapt.released_at[t + 1:] <= ref.yielded_at[t])
        both = ~(a.isnan().any(1) | b.isnan().any(1)) & released_first
        diff = torch.where(a == b, 0.0, (a - b).abs()).nan_to_num(nan=float("inf"))[both]
        if diff.numel():
            per_pos = diff.max(dim=1).values
            if float(per_pos.max()) > worst:
                worst = float(per_pos.max())
                p = int(torch.nonzero(both).squeeze(1)[int(per_pos.argmax())]) + t + 1
                counterexample = (f" (changing token {t} moved the distribution scoring token {p}, which had been "
                                  f"released to adapt before token {t} was scored: the two can predict each other)")
    report.results.append(ConditionResult(
        "C1", worst <= tolerance,
        f"max |dlogp| {worst:.2e} where a changed token may not reach, {len(changed_positions)} perturbations"
        + (counterexample if worst > tolerance else "")))

    # C2: normalised vectors, and the reported nats are -logp[token].
    c2_ok = ref.max_lse <= tolerance and ref.max_nats_error <= tolerance * 10 and ref.wrong_target == 0
    report.results.append(ConditionResult(
        "C2", c2_ok, f"max |logsumexp| {ref.max_lse:.2e}, max |nats + logp[token]| {ref.max_nats_error:.2e}"
        + (f", {ref.wrong_target} events report a target that is not the stream's" if ref.wrong_target else "")))

    # C3: adaptation only on tokens already scored.
    log = ref.adapt
    if log.calls == 0:
        report.results.append(ConditionResult("C3", True, "no adaptation (fixed predictor)"))
    else:
        bad = bool(log.early) or log.wrong_values > 0
        detail = f"{log.calls} adapt calls, {log.tokens} tokens"
        if log.early:
            pos, chunk = log.early[0]
            detail += f"; token {pos} was given to adapt before it was scored (before chunk {chunk} was yielded)"
        if log.wrong_values:
            detail += f"; {log.wrong_values} calls passed token values that are not the stream's"
        report.results.append(ConditionResult("C3", not bad, detail))

    # C4: every position exactly once.
    counts = ref.counts[1:]
    missing, repeated = int((counts == 0).sum()), int((counts > 1).sum())
    c4_ok = missing == 0 and repeated == 0 and ref.outside == 0
    detail = f"{n} positions, {missing} missing, {repeated} scored more than once"
    if ref.outside:
        detail += f", {ref.outside} events outside the stream"
    if repeated:
        detail += f" (first: token {int(np.flatnonzero(counts > 1)[0]) + 1}, {int(counts.max())}x at most)"
    report.results.append(ConditionResult("C4", c4_ok, detail))
    return report


def mode_factories() -> dict:
    """Every mode the checker can name: the eval modes and the fixtures."""
    from pgolf.config import TTTConfig
    from pgolf.eval.fixtures import FIXTURES
    from pgolf.eval.modes import MODE_FACTORIES
    from pgolf.eval.ttt import ttt_factories

    return {**MODE_FACTORIES, **ttt_factories(TTTConfig()), **FIXTURES}


def check_artifact(artifact_path: str | Path, data_dir: str | Path, *, mode: str, tokens: int = 4096,
                   seq_len: int = 0, stride: int = 0, batch_tokens: int = 16_384, perturbations: int = 8,
                   tolerance: float = 1e-4, device: torch.device | None = None, seed: int = 0) -> LegalityReport:
    """Check a named mode with the artifact's model on the first `tokens` val tokens."""
    from pgolf.artifact.format import load_artifact
    from pgolf.eval.evaluate import ValidationData, model_from_artifact
    from pgolf.eval.fixtures import FIXTURES

    if tokens < 3:
        raise PgolfError(f"legality: --tokens {tokens} must be at least 3")
    device = device or torch.device("cpu")
    artifact = load_artifact(artifact_path)
    model, cfg = model_from_artifact(artifact, artifact_path, device)
    val = ValidationData(data_dir, expected_vocab=cfg.model.vocab_size, max_tokens=tokens)
    sha = artifact.tokenizer.get("sha256")
    if sha and sha != val.manifest["tokenizer"]["sha256"]:
        raise PgolfError(f"{artifact_path}: tokenizer mismatch: the artifact was trained with "
                         f"{artifact.tokenizer.get('file')} but {data_dir} uses {val.manifest['tokenizer']['file']}")
    seq_len = seq_len or cfg.eval.seq_len or cfg.train.train_seq_len
    stride = stride or cfg.eval.stride

    from pgolf.eval.ttt import ttt_factories

    # Eager TTT: compiling every rerun's fresh forward would only cost time (the compiled forward is the same math).
    extra = {**FIXTURES, **ttt_factories(cfg.ttt, compile="off")}

    def make() -> EvalMode:
        built = make_mode(mode, seq_len=seq_len, stride=stride, bos_id=val.bos_id, extra=extra)
        # the artifact's n-gram tilt (eval.ngram_order) is part of what its score runs; fixtures bring their own
        return built if mode in FIXTURES else with_tilt(built, cfg.eval)

    make()  # unknown names and bad strides fail here, before any scoring
    return check_mode(make, model, val.tokens, device=device, batch_tokens=batch_tokens,
                      perturbations=perturbations, tolerance=tolerance, seed=seed)
