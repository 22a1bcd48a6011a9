"""What a training checkpoint holds and how a run is put back from one (docs/RELIABILITY.md).

pgolf/train/checkpoint.py is the container (files, manifest, checksums); this module decides the content: the
model, every optimizer's state, the weight average, the loader position, the RNG states, the clock and schedule
position of a pgolf.train.trainer.Trainer, so that `pgolf train --resume` takes the steps the uninterrupted run
would have taken. A checkpoint is resumed only by the same config, data and world size (`check_resume`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

import pgolf
from pgolf.config import Config
from pgolf.errors import PgolfError
from pgolf.train import checkpoint as ckpt


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
    if manifest["config"] != ours:
        diff = sorted(f"{section}.{key}" for section, values in ours.items() if isinstance(values, dict)
                      for key, value in values.items()
                      if manifest["config"].get(section, {}).get(key, object()) != value)
        raise PgolfError(f"{where}: resuming needs the run's own config; these settings differ: "
                         f"{', '.join(diff) or 'preset'}")
    if manifest.get("data") != data_identity(data_manifest):
        raise PgolfError(f"{where}: {data_dir} is not the data this run trained on (its tokenizer or train "
                         "split differs); pass the run's --data")
    return manifest


def save_checkpoint(run, step: int, train_ms: float, stop_after: int | None, pre_quant: dict | None) -> None:
    """Each rank writes its file, then rank 0 points checkpoint.json at them (the commit), then prunes.
    `run` is the Trainer; its `last_checkpoint` becomes this one."""
    cfg, ctx = run.cfg, run.ctx
    start = time.perf_counter()
    state = {
        "step": step, "train_ms": train_ms, "stop_after": stop_after, "pre_quant": pre_quant,
        "seq_len": run.seq_len, "looping": bool(getattr(run.base_model, "looping", False)),
        "clock": dict(run.clock.seconds), "resumes": list(run.resumes),
        "model": run.base_model.state_dict(),
        "optimizers": [opt.state_dict() for opt in run.optimizers],
        "weight_average": run.ema.state_dict() if run.ema is not None else None,
        "loader": run.loader.state_dict(),
        "rng": ckpt.rng_state(),
    }
    name = ckpt.rank_file(step, ctx.rank)
    files = [ckpt.rank_file(step, r) for r in range(ctx.world_size)]
    try:
        size = ckpt.write_state(run.run_dir / name, state,
                                meta={"step": step, "rank": ctx.rank, "world_size": ctx.world_size,
                                      "pgolf_version": pgolf.__version__})
        ctx.barrier()
        if ctx.is_main:
            ckpt.write_manifest(run.run_dir, {
                "step": step, "world_size": ctx.world_size, "files": files, "train_ms": train_ms,
                "metrics_lines": run.log.metric_records, "pgolf_version": pgolf.__version__,
                "config": cfg.to_dict(), "data": data_identity(run.manifest)})
            ckpt.prune(run.run_dir, files)
        ctx.barrier()
    except PgolfError as exc:  # e.g. disk full: log.txt says it too (if it still can be written), then the run stops
        try:
            run.log.line(str(exc))
        except OSError:
            pass
        raise
    seconds = time.perf_counter() - start
    run.clock.add("checkpoint", seconds)
    run.last_checkpoint = (step, run.run_dir / name)
    run.log.line(f"checkpoint: step:{step}/{cfg.train.iterations} {run.run_dir / name} ({size} bytes, "
                 f"{seconds:.2f}s, not counted as training time)")


def load_checkpoint(run) -> tuple[int, float, int | None, dict | None]:
    """Restore into `run` (the Trainer) everything `save_checkpoint` wrote, from the checkpoint `run.resume_from`
    names; called after the warm-up, so that its steps change nothing. Returns (step, train_ms, stop_after,
    pre_quant) for the training loop."""
    manifest, ctx = run.resume_from, run.ctx
    path = run.run_dir / manifest["files"][ctx.rank]
    start = time.perf_counter()
    state, meta = ckpt.read_state(path)
    if meta.get("step") != manifest["step"] or meta.get("rank") != ctx.rank:
        raise PgolfError(f"{path}: holds step {meta.get('step')} of rank {meta.get('rank')}, but "
                         f"{ckpt.MANIFEST} names step {manifest['step']} of rank {ctx.rank}; nothing was resumed")
    device = ctx.device

    def to_device(tree):
        if isinstance(tree, torch.Tensor):
            return tree.to(device)
        if isinstance(tree, dict):
            return {k: to_device(v) for k, v in tree.items()}
        return tree

    try:
        run.base_model.load_state_dict(state["model"], strict=True)
        for opt, opt_state in zip(run.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
        if run.ema is not None:
            run.ema.load_state_dict(to_device(state["weight_average"]))
        run.loader.load_state_dict(state["loader"])
        ckpt.set_rng_state(state["rng"])
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise PgolfError(f"{path}: does not fit this model/optimizer ({str(exc).splitlines()[0]}); "
                         "nothing was resumed") from None
    for phase, seconds in state["clock"].items():
        run.clock.add(phase, float(seconds))
    run.seq_len = int(state["seq_len"])
    if hasattr(run.base_model, "looping"):
        run.base_model.looping = bool(state["looping"])
    step, train_ms = int(state["step"]), float(state["train_ms"])
    run.resumes = [*state["resumes"], step]
    run.last_checkpoint = (step, path)
    run.clock.add("resume", time.perf_counter() - start)
    run.log.line(f"resumed: step:{step}/{run.cfg.train.iterations} from {path} (train_time:{train_ms:.0f}ms "
                 "already charged; metrics.jsonl cut back to the checkpoint)")
    return step, train_ms, state["stop_after"], state["pre_quant"]
