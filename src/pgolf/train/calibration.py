"""GPTQ calibration at the end of training: the Hessians of every quantized matrix (and each input channel's
activation RMS, for AWQ-lite), from `calib_batches` training micro-batches right after training (inside the
wall-clock budget, docs/techniques.md#gptq-calibration) or from sequences the trained model samples itself (touching
no data after the clock). Q, K and V share one Hessian, all-reduced once across ranks.

How much of the training clock calibration on training data keeps (`quant.calib_reserve`):

- `fixed`: `quant.gptq_reserve_seconds`, as the records set it by hand. PR #2135 reserved 0.5 s while its 32
  calibration batches took 6.9 s after its 599.6 s stop: 606.5 s in all.
- `measured`: before the clock starts, `probe_calibration` times the calibration pgolf will run on real training
  batches (the first batch, which allocates the Hessians, a second one, and the all-reduce and copy to the host,
  then puts the loader back), and the reserve is `RESERVE_MARGIN` x (first + (calib_batches - 1) x next + finish),
  never less than `gptq_reserve_seconds`. Every rank uses the largest estimate.

Either way the run logs, and result.json records, the reserve, the calibration's real seconds and whether training
plus calibration stayed inside `train.max_wallclock_seconds`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from pgolf.errors import PgolfError
from pgolf.runtime import autocast_for

RESERVE_MARGIN = 1.5  # measured reserve = margin x the probe's estimate (timing noise, a slower first real batch)


def calibrates_on_train(q) -> bool:
    """Whether the export reads training batches after training (so the training clock must leave room)."""
    return q.scheme == "mixed" and q.gptq and q.calib == "train"


@dataclass
class Calibration:
    """What calibration hands the export: Hessians and activation RMS by weight name (on the CPU), and the report
    for result.json; all None without GPTQ."""

    hessians: dict | None = None
    act_rms: dict | None = None
    report: dict | None = None


def reserve_seconds(q, estimate: float | None) -> float:
    """Seconds of the training clock kept for calibration: `gptq_reserve_seconds`, or with `calib_reserve =
    measured` at least `RESERVE_MARGIN` x the probe's `estimate`."""
    if q.calib_reserve == "measured" and estimate is not None:
        return max(q.gptq_reserve_seconds, RESERVE_MARGIN * estimate)
    return q.gptq_reserve_seconds


@torch.no_grad()
def probe_calibration(model, loader, cfg, ctx, sync=lambda: None) -> dict:
    """Time the calibration on training batches before the clock starts (the loader is put back, the weights are
    untouched; `sync` waits for the device): {"first", "next", "finish", "estimate"} in seconds, the estimate for
    `calib_batches` batches, the largest over the ranks."""
    from pgolf.quant.gptq import HessianCollector

    state = loader.state_dict()
    model.eval()
    try:
        with HessianCollector(model) as collector:
            sync()
            t0 = time.perf_counter()
            _collect_on_train(collector, loader, cfg, ctx, batches=1)
            sync()
            t1 = time.perf_counter()
            if cfg.quant.calib_batches > 1:
                _collect_on_train(collector, loader, cfg, ctx, batches=1)
            sync()
            t2 = time.perf_counter()
            _finish(collector, ctx)
            sync()
            t3 = time.perf_counter()
    finally:
        model.train()
        loader.load_state_dict(state)
    first, nxt, finish = t1 - t0, (t2 - t1 if cfg.quant.calib_batches > 1 else 0.0), t3 - t2
    estimate = first + (cfg.quant.calib_batches - 1) * nxt + finish
    estimate = float(ctx.all_reduce_max(torch.tensor([estimate], dtype=torch.float32, device=ctx.device)).item())
    return {"first": round(first, 4), "next": round(nxt, 4), "finish": round(finish, 4),
            "estimate": round(estimate, 4)}


def calibrate(model, loader, cfg, ctx, clock, log, train_ms: float, reserve: dict | None = None) -> Calibration:
    """The Hessians (and activation RMS) for GPTQ, or an empty Calibration without it. `reserve` is what the
    trainer kept of the clock ({"mode", "seconds", "estimate"}), reported against the real time."""
    from pgolf.quant.gptq import CALIBRATION_SOURCES, HessianCollector

    q = cfg.quant
    if not (q.scheme == "mixed" and q.gptq):
        return Calibration()
    model.eval()
    with clock.phase("calibration"), HessianCollector(model) as collector:
        if q.calib == "train":
            _collect_on_train(collector, loader, cfg, ctx, q.calib_batches)
        elif q.calib == "self":
            _collect_on_samples(collector, model, cfg, ctx)
        else:
            raise PgolfError(f"config: quant.calib={q.calib!r} must be one of {', '.join(CALIBRATION_SOURCES)}")
        hessians, act_rms = _finish(collector, ctx)  # inside the phase: the all-reduce and copy are calibration too
    model.train()
    seconds = clock.seconds["calibration"]
    distinct = len(collector.distinct())
    report = {"source": q.calib, "tokens": collector.tokens_seen * ctx.world_size, "matrices": len(hessians),
              "distinct_hessians": distinct, "seconds": round(seconds, 4)}
    what = f"{len(hessians)} Hessians ({distinct} distinct, fp32)"
    if q.calib == "train":
        used = train_ms / 1000 + seconds
        cap = cfg.train.max_wallclock_seconds
        report["train_plus_calibration_seconds"] = round(used, 4)
        log.line(f"gptq_calibration: {what} from {collector.tokens_seen} train tokens in "
                 f"{seconds:.2f}s; training + calibration {used:.1f}s of {cap:.0f}s")
        if reserve is not None:
            fits = report["reserve"] = {**reserve, "fits": seconds <= reserve["seconds"]}
            log.line(f"calib_reserve: {reserve['seconds']:.2f}s kept, {seconds:.2f}s used: "
                     + ("fits" if fits["fits"] else "DOES NOT FIT"))
        if 0 < cap < used:
            log.line("WARNING: calibration on training data ran past the wall-clock budget; raise "
                     "quant.gptq_reserve_seconds, set quant.calib_reserve=measured or lower quant.calib_batches")
    else:
        log.line(f"gptq_calibration: {what} from {collector.tokens_seen} self-generated "
                 f"tokens in {seconds:.2f}s (after the clock; no data read)")
    return Calibration(hessians, act_rms, report)


def _finish(collector, ctx) -> tuple[dict, dict]:
    """All-reduce every distinct Hessian once and copy Hessians and activation RMS to the host."""
    for h in collector.distinct():  # Q, K and V share one matrix: reduce it once
        ctx.all_reduce_sum(h)
    return collector.hessians_on("cpu"), collector.activation_rms("cpu", ctx.world_size)


def _collect_on_train(collector, loader, cfg, ctx, batches: int) -> None:
    """`batches` training micro-batches, cut at documents as in training when the loader packs them."""
    for _ in range(batches):
        x, _, segments = loader.next_batch(cfg.train.micro_batch_tokens * ctx.world_size, cfg.train.train_seq_len, 1)
        with autocast_for(ctx.device):
            collector.collect(x.to(ctx.device), segments.to(ctx.device) if segments is not None else None)


def _collect_on_samples(collector, model, cfg, ctx) -> None:
    """Sequences the trained model samples itself."""
    from pgolf.quant.gptq import generate_calibration

    q = cfg.quant
    seqs = generate_calibration(model, num_seqs=q.calib_seqs, seq_len=q.calib_seq_len,
                                temperature=q.calib_temperature, seed=cfg.train.seed + ctx.rank, device=ctx.device)
    with autocast_for(ctx.device):
        collector.collect(seqs.to(ctx.device))
