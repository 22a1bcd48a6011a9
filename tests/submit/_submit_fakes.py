"""Finished-looking run directories for the submission-command tests: result.json, config.json, log.txt and an
artifact file of the stated size, mutually consistent, written without training (fast)."""

from __future__ import annotations

import json
import os
from pathlib import Path

VAL_TOKENS, VAL_BYTES = 60_000, 150_000
OFFICIAL = "official"  # fake_run's default val split: the official sp1024 one


def fake_val_split(official: bool = True, digest: str = "5a" * 32) -> dict:
    """result.json's `val_split` of a run scored on the official sp1024 split (or on a 5-document one)."""
    from pgolf.data.val_split import OFFICIAL_SPLITS, ValSplit, official_verdict

    o = OFFICIAL_SPLITS[0]
    docs, tokens = (50_000, o.tokens[0]) if official else (5, 29_714)
    split = ValSplit(docs=docs, tokens=tokens, targets=tokens - 1, tail="scored", bytes=o.bytes if official else 70_000,
                     vocab_size=o.vocab_size, tokenizer_sha256=o.tokenizer_sha256, digest=f"sha256:{digest}",
                     full=True, caseops=False)
    return split.to_dict() | {"verdict": official_verdict(split).to_dict()}


def fake_run(root: Path, seed: int, val_bpb: float, *, artifact_bytes: int = 5_000, code_bytes: int = 40_000,
             train_ms: float = 590_000.0, eval_ms: float = 300_000.0, steps: int = 4_000, preset: str = "cpu-smoke",
             sets: tuple[str, ...] = (), calibration: str | None = None, val_split: dict | str | None = OFFICIAL) -> Path:
    """A run directory `root/seedS` whose files all tell the same story (`val_split`: result.json's, None for a run
    from before pgolf recorded it)."""
    from pgolf.data.val_split import describe
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
    if val_split == OFFICIAL:
        val_split = fake_val_split()
    if val_split is not None:
        lines.append(describe(val_split))
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
    if val_split is not None:
        result["val_split"] = val_split
    (run / "result.json").write_text(json.dumps(result, indent=2))
    return run
