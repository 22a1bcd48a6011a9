"""What a training checkpoint holds and how a run is put back from one (docs/RELIABILITY.md).

pgolf/train/checkpoint.py is the container (files, manifest, checksums); this module decides the content: the
components' own state (model, every optimizer's state, the weight average, the loader position; RunParts), the RNG
states, and the clock and schedule position of the run (RunState; both in pgolf/train/state.py), so that
`pgolf train --resume` takes the steps the uninterrupted run would have taken. A checkpoint is resumed only by the
same config, data and world size (`check_resume`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pgolf
from pgolf.config import Config
from pgolf.errors import PgolfError
from pgolf.runtime import DistContext, PhaseClock
from pgolf.train import checkpoint as ckpt
from pgolf.train.runlog import RunLog
from pgolf.train.state import RunParts, RunState


def data_identity(manifest: dict) -> dict:
    """The part of a data directory's manifest a checkpoint must match: the tokenizer and the train split."""
    return json.loads(json.dumps({"tokenizer": manifest["tokenizer"], "train": manifest["splits"]["train"]}))


def check_resume(run_dir: Path, cfg: Config, world_size: int, data_dir: Path, data_manifest: dict) -> dict:
    """The manifest of the checkpoint to resume, once it is known to belong to this config, data and world."""
    manifest = ckpt.read_manifest(run_dir)
    where = run_dir / ckpt.MANIFEST
    if manifest["world_size"] != world_size:
        raise PgolfError(f"{where}: the run was checkpointed with {manifest['world_size']} process(es); resume it "
                         f"with as many (this launch has {world_size})")
    ours = json.loads(json.dumps(cfg.to_dict()))
    # Read back through Config, so a checkpoint written under older setting names (eval.ttt_* before [ttt]) compares
    # in today's layout.
    theirs = json.loads(json.dumps(Config.from_dict(manifest["config"]).to_dict()))
    if theirs != ours:
        diff = sorted(f"{section}.{key}" for section, values in ours.items() if isinstance(values, dict)
                      for key, value in values.items()
                      if theirs.get(section, {}).get(key, object()) != value)
        raise PgolfError(f"{where}: resuming needs the run's own config; these settings differ: "
                         f"{', '.join(diff) or 'preset'}")
    if manifest.get("data") != data_identity(data_manifest):
        raise PgolfError(f"{where}: {data_dir} is not the data this run trained on (its tokenizer or train "
                         "split differs); pass the run's --data")
    return manifest


def save_checkpoint(state: RunState, parts: RunParts, *, cfg: Config, ctx: DistContext, run_dir: Path,
                    data_manifest: dict, clock: PhaseClock, log: RunLog) -> None:
    """Each rank writes its file, then rank 0 points checkpoint.json at them (the commit), then prunes; `state`'s
    `last_checkpoint` becomes this one. `state` and `parts` are the run (pgolf/train/state.py); the rest says where
    it runs and writes."""
    start = time.perf_counter()
    step = state.step
    content = {
        "step": step, "train_ms": state.train_ms, "stop_after": state.stop_after, "pre_quant": state.pre_quant,
        "seq_len": state.seq_len, "seq_changed_at": state.seq_changed_at, "looping": bool(parts.model.looping),
        "clock": dict(clock.seconds), "resumes": list(state.resumes),
        **parts.state_dict(),
        "rng": ckpt.rng_state(),
    }
    name = ckpt.rank_file(step, ctx.rank)
    files = [ckpt.rank_file(step, r) for r in range(ctx.world_size)]
    try:
        size = ckpt.write_state(run_dir / name, content,
                                meta={"step": step, "rank": ctx.rank, "world_size": ctx.world_size,
                                      "pgolf_version": pgolf.__version__})
        ctx.barrier()
        if ctx.is_main:
            ckpt.write_manifest(run_dir, {
                "step": step, "world_size": ctx.world_size, "files": files, "train_ms": state.train_ms,
                "metrics_lines": log.metric_records, "pgolf_version": pgolf.__version__,
                "config": cfg.to_dict(), "data": data_identity(data_manifest)})
            ckpt.prune(run_dir, files)
        ctx.barrier()
    except PgolfError as exc:  # e.g. disk full: log.txt says it too (if it still can be written), then the run stops
        try:
            log.line(str(exc))
        except OSError:
            pass
        raise
    seconds = time.perf_counter() - start
    clock.add("checkpoint", seconds)
    state.last_checkpoint = (step, run_dir / name)
    log.line(f"checkpoint: step:{step}/{cfg.train.iterations} {run_dir / name} ({size} bytes, "
             f"{seconds:.2f}s, not counted as training time)")


def load_checkpoint(manifest: dict, state: RunState, parts: RunParts, *, cfg: Config, ctx: DistContext,
                    run_dir: Path, clock: PhaseClock, log: RunLog) -> None:
    """Restore into `state` and `parts` everything `save_checkpoint` wrote, from the checkpoint `manifest`
    (`check_resume`'s) names; called after the warm-up, so that its steps change nothing."""
    path = run_dir / manifest["files"][ctx.rank]
    start = time.perf_counter()
    content, meta = ckpt.read_state(path)
    if meta.get("step") != manifest["step"] or meta.get("rank") != ctx.rank:
        raise PgolfError(f"{path}: holds step {meta.get('step')} of rank {meta.get('rank')}, but "
                         f"{ckpt.MANIFEST} names step {manifest['step']} of rank {ctx.rank}; nothing was resumed")
    try:
        parts.load_state_dict(content, ctx.device)
        ckpt.set_rng_state(content["rng"])
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise PgolfError(f"{path}: does not fit this model/optimizer ({str(exc).splitlines()[0]}); "
                         "nothing was resumed") from None
    for phase, seconds in content["clock"].items():
        clock.add(phase, float(seconds))
    state.seq_len = int(content["seq_len"])
    state.seq_changed_at = content.get("seq_changed_at")  # absent from checkpoints written before the re-warm
    parts.model.set_looping(bool(content["looping"]))
    state.step, state.train_ms = int(content["step"]), float(content["train_ms"])
    state.stop_after, state.pre_quant = content["stop_after"], content["pre_quant"]
    state.resumes = [*content["resumes"], state.step]
    state.last_checkpoint = (state.step, path)
    clock.add("resume", time.perf_counter() - start)
    log.line(f"resumed: step:{state.step}/{cfg.train.iterations} from {path} (train_time:{state.train_ms:.0f}ms "
             "already charged; metrics.jsonl cut back to the checkpoint)")
