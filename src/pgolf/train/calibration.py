"""GPTQ calibration at the end of training: the Hessians of every quantized matrix, from `calib_batches` training
micro-batches right after training (inside the wall-clock budget, which `quant.gptq_reserve_seconds` shortens;
docs/techniques.md#gptq-calibration) or from sequences the trained model samples itself (touching no data after
the clock). Q, K and V share one Hessian, all-reduced once across ranks.
"""

from __future__ import annotations

import torch

from pgolf.errors import PgolfError
from pgolf.runtime import autocast_for


def calibrates_on_train(q) -> bool:
    """Whether the export reads training batches after training (so the training clock must leave room)."""
    return q.scheme == "mixed" and q.gptq and q.calib == "train"


def collect_hessians(model, loader, cfg, ctx, clock, log, train_ms: float) -> tuple[dict | None, dict | None]:
    """(Hessians on the CPU by weight name, a report for result.json), or (None, None) without GPTQ."""
    from pgolf.quant.gptq import CALIBRATION_SOURCES, HessianCollector

    q = cfg.quant
    if not (q.scheme == "mixed" and q.gptq):
        return None, None
    model.eval()
    with clock.phase("calibration"), HessianCollector(model) as collector:
        if q.calib == "train":
            _collect_on_train(collector, loader, cfg, ctx)
        elif q.calib == "self":
            _collect_on_samples(collector, model, cfg, ctx)
        else:
            raise PgolfError(f"config: quant.calib={q.calib!r} must be one of {', '.join(CALIBRATION_SOURCES)}")
    model.train()
    for h in collector.distinct():  # Q, K and V share one matrix: reduce it once
        ctx.all_reduce_sum(h)
    hessians = collector.hessians_on("cpu")
    seconds = clock.seconds["calibration"]
    distinct = len(collector.distinct())
    report = {"source": q.calib, "tokens": collector.tokens_seen * ctx.world_size, "matrices": len(hessians),
              "distinct_hessians": distinct, "seconds": round(seconds, 4)}
    what = f"{len(hessians)} Hessians ({distinct} distinct, fp32)"
    if q.calib == "train":
        used = train_ms / 1000 + seconds
        report["train_plus_calibration_seconds"] = round(used, 4)
        log.line(f"gptq_calibration: {what} from {collector.tokens_seen} train tokens in "
                 f"{seconds:.2f}s; training + calibration {used:.1f}s of {cfg.train.max_wallclock_seconds:.0f}s")
        if cfg.train.max_wallclock_seconds > 0 and used > cfg.train.max_wallclock_seconds:
            log.line("WARNING: calibration on training data ran past the wall-clock budget; raise "
                     "quant.gptq_reserve_seconds or lower quant.calib_batches")
    else:
        log.line(f"gptq_calibration: {what} from {collector.tokens_seen} self-generated "
                 f"tokens in {seconds:.2f}s (after the clock; no data read)")
    return hessians, report


def _collect_on_train(collector, loader, cfg, ctx) -> None:
    """`calib_batches` training micro-batches, cut at documents as in training when the loader packs them."""
    for _ in range(cfg.quant.calib_batches):
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
