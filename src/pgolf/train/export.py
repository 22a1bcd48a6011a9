"""The end of a run: quantize the trained weights, compress them into the artifact, score the artifact FILE, and
write result.json (step 4 of pgolf/train/trainer.py's docstring).

Rank 0 quantizes and writes the artifact; then every rank re-reads the file and scores it, so the reported number is
always the decompressed artifact's score, never the in-memory model's (docs/rules.md: the score is of what ships).
When `quant.fit` is on, the mixed recipe is fitted to the bytes the cap leaves after the code (pgolf/quant/fitter.py).

result.json's `wallclock` block lets a reader check the 600 s rule: the training clock's seconds, the seconds of
each step that produces the artifact (calibration, quantization, compression) and their total, training plus
calibration, whether calibration counts against the clock (it reads training data) and whether the run stayed
inside `train.max_wallclock_seconds`, with the calibration reserve kept and whether the calibration fit in it.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import pgolf
from pgolf.config import Config
from pgolf.errors import PgolfError
from pgolf.fileio import atomic_write_bytes, atomic_write_json
from pgolf.runtime import DistContext, PhaseClock
from pgolf.train.runlog import RunLog
from pgolf.train.state import RunState

ARTIFACT_NAME = "artifact.pgolf"


def quantize_to_fit(state: dict[str, torch.Tensor], cfg: Config, hessians: dict[str, torch.Tensor] | None,
                    code_bytes: int, encode: Callable[[Any], bytes], log: Callable[[str], None],
                    act_rms: dict[str, torch.Tensor] | None = None) -> tuple:
    """The QuantizedModel to ship, and a report (mixed recipe details, budget fit, AWQ-lite's wide groups)."""
    from pgolf.artifact.format import CAP_BYTES
    from pgolf.quant.fitter import fit_budget
    from pgolf.quant.recipe import quantize_for_export

    q = cfg.quant
    if q.scheme == "mixed" and q.fit:
        qm, fit = fit_budget(state, q, budget_bytes=CAP_BYTES - code_bytes, hessians=hessians,
                             encoded_size=lambda m: len(encode(m)), act_rms=act_rms)
        log(f"budget_fit: {fit.summary()}")
        return qm, {"fit": fit.to_dict()} | _awq_report(qm, log)
    qm, mixed = quantize_for_export(state, q, hessians=hessians, act_rms=act_rms)
    return qm, ({"lqer": mixed.lqer} if mixed else {}) | _awq_report(qm, log)


def _awq_report(qm, log: Callable[[str], None]) -> dict:
    """AWQ-lite's wide column groups as shipped (matrix -> first columns), logged; empty when there are none."""
    awq = {qt.name: [int(s) for s in qt.arrays["awq_start"]] for qt in qm.tensors if "awq_start" in qt.arrays}
    if not awq:
        return {}
    log("awq_lite: wide column groups (first columns) " + "; ".join(f"{n} {starts}" for n, starts in awq.items()))
    return {"awq": awq}


def stored_bytes_by_group(qm) -> dict[str, int]:
    """The quantized arrays' bytes per tensor group (pgolf.quant.groups), before compression: free to count, unlike
    each group's compressed share (`pgolf inspect` compresses every tensor alone for that estimate)."""
    from pgolf.quant.groups import tensor_group

    out: dict[str, int] = {}
    for qt in qm.tensors:
        group = tensor_group(qt.name)
        out[group] = out.get(group, 0) + sum(int(a.nbytes) for a in qt.arrays.values())
    return dict(sorted(out.items()))


def export_and_score(model: torch.nn.Module, state: RunState, *, cfg: Config, ctx: DistContext, run_dir: Path,
                     data_dir: Path, data_manifest: dict, clock: PhaseClock, log: RunLog, n_params: int,
                     hessians: dict[str, torch.Tensor] | None, calibration: dict | None,
                     act_rms: dict[str, torch.Tensor] | None = None, started: float | None = None) -> dict | None:
    """Write the artifact of `model` after training (`state`: where the run ended), score it on every rank and
    return result.json's content on rank 0 (None elsewhere). Raises PgolfError, after writing result.json with
    `within_cap: false`, when artifact + code exceed the cap. `started` (a `perf_counter` time): when the run
    began, for the train.max_total_seconds report."""
    from pgolf.artifact.format import CAP_BYTES, encode_artifact
    from pgolf.bundle.code_bytes import count_code_bytes
    from pgolf.data.val_split import describe as describe_split
    from pgolf.eval.evaluate import final_score_tokens, score_artifact

    steps = state.step
    path = run_dir / ARTIFACT_NAME
    code_bytes, method = count_code_bytes(cfg.preset)
    tok = data_manifest["tokenizer"]
    quant_report: dict = {"scheme": cfg.quant.scheme, "codec": cfg.quant.codec}
    if ctx.is_main:
        meta = {"code_bytes": code_bytes, "code_bytes_method": method, "pgolf_version": pgolf.__version__,
                "steps": steps, "seed": cfg.train.seed, "preset": cfg.preset}

        def encode(qm) -> bytes:
            return encode_artifact(qm, config=cfg.to_dict(), tokenizer=dict(tok), codec=cfg.quant.codec,
                                   level=cfg.quant.level, meta=meta)

        with clock.phase("quantization"):
            weights = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
            if cfg.train.save_float:
                torch.save(weights, run_dir / "model_fp32.pt")  # plain tensors: loads with weights_only
            qm, report = quantize_to_fit(weights, cfg, hessians, code_bytes, encode, log.line, act_rms)
            quant_report.update(report)
        with clock.phase("compression"):
            data = encode(qm)
            atomic_write_bytes(path, data)
        tag = f"{cfg.quant.scheme}+{cfg.quant.codec}"
        log.line(f"quantization: {clock.seconds['quantization']:.1f}s compression: "
                 f"{clock.seconds['compression']:.1f}s")
        wall = wallclock_record(cfg, state.train_ms, clock, calibration if hessians else None)
        log.line(f"artifact_seconds: {wall['artifact_seconds']['total']:.2f} training+calibration_seconds: "
                 f"{wall['train_plus_calibration_seconds']:.2f}")
        log.line(f"Serialized model {tag}: {len(data)} bytes")
        log.line(f"Code size: {code_bytes} bytes ({method})")  # the official script's line, then how it was counted
        log.line(f"Total submission size {tag}: {len(data) + code_bytes} bytes")
        log.metric(step=steps, artifact_bytes=len(data), code_bytes=code_bytes, total_bytes=len(data) + code_bytes,
                   stored_bytes=stored_bytes_by_group(qm))
    ctx.barrier()
    report_modes = [m.strip() for m in cfg.eval.report_modes.split(",") if m.strip()]
    max_tokens = final_score_tokens(cfg.eval.max_tokens, ctx.device)
    if max_tokens and max_tokens < data_manifest["splits"]["val"]["tokens"]:
        log.line(f"final score on the first {max_tokens:,} of {data_manifest['splits']['val']['tokens']:,} val tokens "
                 f"(eval.max_tokens={cfg.eval.max_tokens}; eval.max_tokens=0 scores the whole split)")
    scored = score_artifact(path, data_dir, device=ctx.device, ctx=ctx, clock=clock, code_bytes=code_bytes,
                            enforce_cap=False, report_modes=report_modes, log=log.line, max_tokens=max_tokens,
                            progress=ctx.is_main)
    name = f"final_{cfg.quant.scheme}_{cfg.quant.codec}_roundtrip"
    eval_ms = 1000 * clock.seconds.get("scoring", 0.0)
    log.line(f"{name} val_loss:{scored['val_loss']:.4f} val_bpb:{scored['val_bpb']:.4f} eval_time:{eval_ms:.0f}ms")
    log.line(f"{name}_exact val_loss:{scored['val_loss']:.8f} val_bpb:{scored['val_bpb']:.8f}")
    log.line(describe_split(scored["val_split"]))
    for entry in scored["evals"]:  # every scored mode (eval.report_modes, then eval.mode)
        log.metric(step=steps, eval_mode=entry["mode"], val_loss=entry["val_loss"], val_bpb=entry["val_bpb"],
                   eval_time_ms=entry["eval_time_ms"])
    log.metric(step=steps, val_loss=scored["val_loss"], val_bpb=scored["val_bpb"], roundtrip=True)
    log.line("phases: " + " ".join(f"{k}:{v:.1f}s" for k, v in clock.seconds.items()))
    if started is not None and cfg.train.max_total_seconds > 0:
        used, budget = time.perf_counter() - started, cfg.train.max_total_seconds
        log.line(f"command_budget: {used:.1f}s of {budget:.0f}s (train.max_total_seconds)"
                 + (f", over by {used - budget:.1f}s" if used > budget else ""))
    result = None
    if ctx.is_main:
        quant = quant_report | ({"calibration": calibration} if hessians else {})
        result = result_record(scored, state, quant, code_bytes, method, cfg=cfg, ctx=ctx, data_dir=data_dir,
                               data_manifest=data_manifest, clock=clock, n_params=n_params)
        atomic_write_json(run_dir / "result.json", result)
    log.close()
    total = scored["total_bytes"]
    if total > CAP_BYTES:
        raise PgolfError(f"{path}: artifact over the cap: {scored['artifact_bytes']:,} + code {code_bytes:,} = "
                         f"{total:,} bytes > {CAP_BYTES:,} (result.json records within_cap: false)")
    return result


def result_record(scored: dict, state: RunState, quant: dict, code_bytes: int, code_bytes_method: str, *,
                  cfg: Config, ctx: DistContext, data_dir: Path, data_manifest: dict, clock: PhaseClock,
                  n_params: int) -> dict:
    """result.json: the artifact's score, its bytes against the cap, the run's steps, time and phases, and every
    version and data fact `pgolf verify` checks."""
    from pgolf.artifact.format import CAP_BYTES

    manifest, steps, train_ms = data_manifest, state.step, state.train_ms
    total = scored["total_bytes"]
    return {
        "artifact": ARTIFACT_NAME,
        "val_loss": scored["val_loss"],
        "val_bpb": scored["val_bpb"],
        "eval_mode": scored["mode"],
        "final_eval": scored["final_eval"],
        "evals": scored["evals"],
        "val_tokens": scored["val_tokens"],
        "val_bytes": scored["val_bytes"],
        "val_split": scored["val_split"],
        **({"no_op": scored["no_op"]} if "no_op" in scored else {}),
        "pre_quant": state.pre_quant,
        "quant": quant,
        "artifact_bytes": scored["artifact_bytes"],
        "code_bytes": code_bytes,
        "code_bytes_method": code_bytes_method,
        "total_bytes": total,
        "cap_bytes": CAP_BYTES,
        "within_cap": total <= CAP_BYTES,
        "steps": steps,
        "resumed_from": state.resumes,
        "train_seconds": round(train_ms / 1000, 4),
        "train_tokens": steps * cfg.train.train_batch_tokens,
        "step_avg_ms": round(train_ms / max(steps, 1), 4),
        "phases": clock.as_dict(),
        "wallclock": wallclock_record(cfg, train_ms, clock, quant.get("calibration")),
        "seed": cfg.train.seed,
        "preset": cfg.preset,
        "params": n_params,
        "world_size": ctx.world_size,
        "device": ctx.device.type,
        "data": {"dir": str(data_dir.resolve()), "tokenizer": dict(manifest["tokenizer"]),
                 "train_tokens": manifest["splits"]["train"]["tokens"],
                 "val_tokens": manifest["splits"]["val"]["tokens"],
                 "val_bytes": manifest["splits"]["val"]["bytes"]},
        "versions": {"pgolf": pgolf.__version__, "python": platform.python_version(),
                     "torch": torch.__version__, "numpy": np.__version__},
    }


def wallclock_record(cfg: Config, train_ms: float, clock: PhaseClock, calibration: dict | None) -> dict:
    """result.json's `wallclock` block (module docstring). Calibration on training data counts against the cap;
    self-generated calibration runs after the clock and reads no data, so it does not."""
    from pgolf.train.calibration import calibrates_on_train

    seconds = clock.seconds
    made = {phase: round(seconds.get(phase, 0.0), 4) for phase in ("calibration", "quantization", "compression")}
    made["total"] = round(sum(seconds.get(phase, 0.0) for phase in ("calibration", "quantization", "compression")), 4)
    train_s = train_ms / 1000
    counted = calibration is not None and calibrates_on_train(cfg.quant)
    cap = cfg.train.max_wallclock_seconds
    inside = train_s + (seconds.get("calibration", 0.0) if counted else 0.0)
    out = {"cap_seconds": cap, "train_seconds": round(train_s, 4),
           "calibration_seconds": made["calibration"], "calibration_counts": counted,
           "train_plus_calibration_seconds": round(train_s + seconds.get("calibration", 0.0), 4),
           "artifact_seconds": made, "within_cap": inside <= cap if cap > 0 else None}
    if calibration is not None and "reserve" in calibration:
        out["reserve"] = calibration["reserve"]
    return out
