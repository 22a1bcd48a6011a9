"""The baseline's schedules: Muon momentum warm-up and the time-based LR warmdown
(docs/techniques.md#baseline-schedule-and-clock)."""

from __future__ import annotations

from pgolf.config import OptimConfig


def muon_momentum(step: int, cfg: OptimConfig) -> float:
    """Linear from `muon_momentum_warmup_start` to `muon_momentum` over the warm-up steps."""
    if cfg.muon_momentum_warmup_steps <= 0:
        return cfg.muon_momentum
    frac = min(step / cfg.muon_momentum_warmup_steps, 1.0)
    return (1 - frac) * cfg.muon_momentum_warmup_start + frac * cfg.muon_momentum


def warmdown_multiplier(step: int, elapsed_s: float, max_seconds: float, warmdown_iters: int,
                        iterations: int) -> float:
    """LR multiplier: 1, then linear to 0 over the last `warmdown_iters` steps.

    With a wall-clock cap the "last steps" are estimated in time: warmdown time = warmdown_iters x the average step
    time so far, and the multiplier is remaining time / warmdown time once that is smaller. Without a cap it is
    step-based against `iterations`.
    """
    if warmdown_iters <= 0:
        return 1.0
    if max_seconds <= 0:
        start = max(iterations - warmdown_iters, 0)
        return 1.0 if step < start else max((iterations - step) / max(warmdown_iters, 1), 0.0)
    step_s = elapsed_s / max(step, 1)
    warmdown_s = warmdown_iters * step_s
    remaining = max(max_seconds - elapsed_s, 0.0)
    return remaining / max(warmdown_s, 1e-9) if remaining <= warmdown_s else 1.0


def lr_multiplier(step: int, elapsed_s: float, max_seconds: float, iterations: int, warmdown_iters: int,
                  warmdown_frac: float = 0.0, min_lr: float = 0.0) -> float:
    """The trainer's LR multiplier.

    With `warmdown_frac` > 0 (the SP8192-era records, docs/techniques.md#warmdown-fraction-and-minimum-lr) training
    progress is the fraction of the
    budget used (elapsed / max_seconds under a wall clock, else step / iterations); the multiplier is 1 until
    1 - warmdown_frac, then falls linearly to 0. Otherwise it is the baseline's `warmdown_multiplier`. Either way
    `min_lr` floors the result (MIN_LR, PR #1787).
    """
    if warmdown_frac > 0:
        progress = training_progress(step, elapsed_s, max_seconds, iterations)
        mult = min(1.0, max(0.0, (1.0 - progress) / warmdown_frac))
    else:
        mult = warmdown_multiplier(step, elapsed_s, max_seconds, warmdown_iters, iterations)
    return max(mult, min_lr)


def rewarm_multiplier(step: int, changed_at: int | None, steps: int) -> float:
    """LR re-warm after a sequence-length switch (PR #2014's SEQ_CHANGE_WARMUP_STEPS): at the k-th step from the
    switch (k = 0 at the switching step) the LR is scaled by min((k + 1) / steps, 1); 1 when off or never switched."""
    if steps <= 0 or changed_at is None:
        return 1.0
    return min(max((step - changed_at + 1) / steps, 0.0), 1.0)


def training_progress(step: int, elapsed_s: float, max_seconds: float, iterations: int) -> float:
    """Fraction of the budget used: of the wall clock when there is a cap, else of `iterations`."""
    return elapsed_s / max_seconds if max_seconds > 0 else step / max(iterations, 1)


def wd_taper(progress: float, start: float = 0.7, end_fraction: float = 0.5) -> float:
    """Muon weight-decay multiplier of the WD taper (PR #1729): 1 until `start`, then linear to `end_fraction`."""
    if progress <= start:
        return 1.0
    return 1.0 - (1.0 - end_fraction) * min((progress - start) / (1.0 - start), 1.0)


def parse_seq_len_schedule(text: str, final: int, micro_batch_tokens: int = 0) -> list[tuple[float, int]]:
    """"0:256,0.3:512" -> [(0.0, 256), (0.3, 512)]: progressive sequence length (short sequences early are cheaper
    per token and the model first learns local statistics; modded-nanogpt, PR #1394-era experiments, PR #2014's
    1k -> 2k -> 3k). Each stage runs from its fraction of training progress to the next one's, and `final` from
    `train.seq_len_full_frac` on. Fractions in [0, 1) and lengths at most `final`, both increasing. The loaders cut
    each rank's micro-batch into rows (or packed segments) of the stage length, so with `micro_batch_tokens` every
    length must divide it (2,048 need not divide 3,072: 98,304 = 48 x 2,048 = 32 x 3,072)."""
    from pgolf.errors import PgolfError

    if not str(text).strip():
        return []
    stages = []
    for part in str(text).split(","):
        frac, sep, length = part.partition(":")
        try:
            stage = (float(frac), int(length))
        except ValueError:
            raise PgolfError(f"config: train.seq_len_schedule: {part!r} is not FRACTION:LENGTH") from None
        if not sep or not 0 <= stage[0] < 1 or not 0 < stage[1] <= final:
            raise PgolfError(f"config: train.seq_len_schedule: {part!r} needs 0 <= fraction < 1 and "
                             f"0 < length <= train_seq_len={final}")
        if micro_batch_tokens and micro_batch_tokens % stage[1]:
            raise PgolfError(f"config: train.seq_len_schedule: length {stage[1]} does not divide "
                             f"train.micro_batch_tokens={micro_batch_tokens} (the loaders cut it into rows)")
        stages.append(stage)
    if [f for f, _ in stages] != sorted(f for f, _ in stages) or [n for _, n in stages] != sorted(n for _, n in stages):
        raise PgolfError("config: train.seq_len_schedule must list increasing fractions and lengths")
    return stages


def seq_len_at(progress: float, stages: list[tuple[float, int]], final: int, end: float) -> int:
    """The sequence length at training `progress`: the last stage started, or `final` once progress >= `end`
    (PR #2014's `current_train_seq_len` switches at progress > a stage's end instead of >=: the same but at the
    boundary instants; its "1024@0.100,2048@0.700,3072@1.000" is "0:1024,0.1:2048" with `end` 0.7)."""
    if progress >= end:
        return final
    length = final
    for frac, n in stages:
        if progress >= frac:
            length = n
    return length
