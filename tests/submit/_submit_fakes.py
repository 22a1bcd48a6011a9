"""Finished-looking run directories for the submission-command tests: result.json, config.json, log.txt and an
artifact file of the stated size, mutually consistent, written without training (fast)."""

from __future__ import annotations

import json
import os
from pathlib import Path

VAL_TOKENS, VAL_BYTES = 60_000, 150_000


def fake_run(root: Path, seed: int, val_bpb: float, *, artifact_bytes: int = 5_000, code_bytes: int = 40_000,
             train_ms: float = 590_000.0, eval_ms: float = 300_000.0, steps: int = 4_000, preset: str = "cpu-smoke",
             sets: tuple[str, ...] = (), calibration: str | None = None) -> Path:
    """A run directory `root/seedS` whose files all tell the same story."""
    from pgolf.options import resolve_config

    run = root / f"seed{seed}"
    run.mkdir(parents=True)
    cfg = resolve_config(preset, [*sets, f"train.seed={seed}"], environ={})
    val_loss = val_bpb * 0.6931471805599453 * VAL_BYTES / VAL_TOKENS
    (run / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    (run / "artifact.pgolf").write_bytes(os.urandom(artifact_bytes))
    name = "final_int8_zlib_roundtrip"
    lines = [f"pgolf 0.1.0 preset:{preset} params:1000 world_size:8 grad_accum_steps:1 device:cuda seed:{seed}",
             "data:/data train_tokens:1000000 val_tokens:60001",
             f"step:1/20000 train_loss:6.9000 train_time:{train_ms / steps:.0f}ms step_avg:{train_ms / steps:.2f}ms",
             f"step:{steps}/20000 val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} train_time:{train_ms:.0f}ms "
             f"step_avg:{train_ms / steps:.2f}ms",
             f"stopping_early: wallclock_cap train_time:{train_ms:.0f}ms step:{steps}/20000"]
    if calibration:
        lines.append(calibration)
    lines += [f"Serialized model int8+zlib: {artifact_bytes} bytes",
              f"Code size (size of the bundle): {code_bytes} bytes",
              f"Total submission size int8+zlib: {artifact_bytes + code_bytes} bytes",
              f"{name} val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} eval_time:{eval_ms:.0f}ms",
              f"{name}_exact val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f}"]
    (run / "log.txt").write_text("\n".join(lines) + "\n")
    result = {"artifact": "artifact.pgolf", "val_loss": val_loss, "val_bpb": val_bpb, "eval_mode": "flat",
              "val_tokens": VAL_TOKENS, "val_bytes": VAL_BYTES, "artifact_bytes": artifact_bytes,
              "code_bytes": code_bytes, "code_bytes_method": "test", "total_bytes": artifact_bytes + code_bytes,
              "cap_bytes": 16_000_000, "within_cap": artifact_bytes + code_bytes <= 16_000_000, "steps": steps,
              "train_seconds": train_ms / 1000, "train_tokens": steps * 1000, "step_avg_ms": train_ms / steps,
              "phases": {"startup": 1.0, "warmup": 5.0, "training": train_ms / 1000, "scoring": eval_ms / 1000},
              "seed": seed, "preset": preset, "params": 1000, "world_size": 8, "device": "cuda",
              "quant": {"scheme": "int8", "codec": "zlib"},
              "versions": {"pgolf": "0.1.0", "python": "3.11.7", "torch": "2.13.0+cu128", "numpy": "2.4.6"}}
    (run / "result.json").write_text(json.dumps(result, indent=2))
    return run
