"""`pgolf seeds`: train one configuration under several seeds, each in its own run directory (`OUT/seedS`), then
summarize them with `pgolf stats`. One after another in this process, or with `workers` > 1 (or `nproc_per_node` > 1)
as `pgolf train` children of the worker pool (pgolf/train/pool.py), K at once, each on its own GPU(s) or cores.

Every seed's config is resolved (and checked) before the first run starts. A seed whose run directory already
holds a finished run (result.json) of the very same config is not trained again, so an interrupted series resumes
where it stopped; a finished run of another config there is an error, never overwritten. An unfinished seed with a
checkpoint of the same config (train.checkpoint_every, or a run stopped by SIGINT/SIGTERM) continues from it, as
`pgolf train --resume` would (the trainer then also checks the data and the world size); any other unfinished
seed starts afresh.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

from pgolf.errors import PgolfError
from pgolf.train.runlog import STDOUT


def seed_dir(out: Path, seed: int) -> Path:
    return out / f"seed{seed}"


def _as_json(obj):
    """`obj` as it reads back from JSON (tuples become lists), to compare with a config.json."""
    return json.loads(json.dumps(obj))


def _checkpoint_config(run_dir: Path) -> dict | None:
    """The config of the checkpoint in `run_dir`, or None when there is none (or none that can be read)."""
    from pgolf.train.checkpoint import MANIFEST, read_manifest

    if not (run_dir / MANIFEST).is_file():
        return None
    try:
        return read_manifest(run_dir)["config"]
    except PgolfError:
        return None


def run_seeds(preset: str, seeds: list[int], sets: list[str], data: str | Path, out: str | Path, *,
              echo: TextIO | None = STDOUT, workers: int = 1, nproc_per_node: int = 1) -> list[Path]:
    """Train `preset` with `sets` once per seed into `out/seedS`; returns the run directories in seed order.
    `workers` > 1 or `nproc_per_node` > 1: through the worker pool (module docstring)."""
    from pgolf.options import resolve_config
    from pgolf.train import trainer

    if not seeds:
        raise PgolfError("seeds: no seeds given")
    if len(set(seeds)) != len(seeds):
        raise PgolfError(f"seeds: a seed is listed twice ({', '.join(map(str, seeds))})")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PgolfError(f"{out}: is a file, not a directory")
    configs = [resolve_config(preset, [*sets, f"train.seed={seed}"]) for seed in seeds]
    todo = []
    for seed, cfg in zip(seeds, configs):
        run_dir = seed_dir(out, seed)
        if (run_dir / "result.json").is_file():
            try:
                done = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                done = None
            if done != _as_json(cfg.to_dict()):
                raise PgolfError(f"{run_dir}: holds a finished run of another config; choose another --out")
        else:
            todo.append((seed, cfg, run_dir))
    dirs = [seed_dir(out, seed) for seed in seeds]
    if workers > 1 or nproc_per_node > 1:
        _train_in_pool(preset, sets, data, todo, echo, workers, nproc_per_node)
        _say_skipped(seeds, todo, echo)
        return dirs
    from tqdm import tqdm

    bar = tqdm(todo, desc="seeds", unit="run", file=sys.stderr, disable=not sys.stderr.isatty())
    for index, (seed, cfg, run_dir) in enumerate(bar, 1):
        existing = "resume" if _checkpoint_config(run_dir) == _as_json(cfg.to_dict()) else "overwrite"
        if echo is not None:
            print(f"== seed {seed} ({index}/{len(todo)}): {run_dir}"
                  + (" (resuming from its checkpoint)" if existing == "resume" else ""), file=echo, flush=True)
        trainer.train(cfg, data, run_dir, echo=echo, existing=existing)
    _say_skipped(seeds, todo, echo)
    return dirs


def _say_skipped(seeds: list[int], todo: list, echo: TextIO | None) -> None:
    if echo is not None and len(todo) < len(seeds):
        skipped = [str(s) for s in seeds if s not in {t[0] for t in todo}]
        print(f"== already finished, not retrained: seed {', '.join(skipped)}", file=echo, flush=True)


def _train_in_pool(preset: str, sets: list[str], data: str | Path, todo: list, echo: TextIO | None, workers: int,
                   nproc_per_node: int) -> None:
    """Train the unfinished seeds as `pgolf train` children, `workers` at once; a failed seed is one PgolfError
    naming it and its own last error line, after the others have finished."""
    from pgolf.train.pool import Job, exit_reason, last_error, plan_slots, run_jobs, CONSOLE

    jobs = []
    for seed, cfg, run_dir in todo:
        if _checkpoint_config(run_dir) == _as_json(cfg.to_dict()):
            args, label = ["--resume", str(run_dir), "--data", str(data)], f"seed {seed} (resuming its checkpoint)"
        else:
            args = ["--preset", preset, *(f"--set={s}" for s in [*sets, f"train.seed={seed}"]), "--data", str(data),
                    "--run-dir", str(run_dir), "--overwrite"]
            label = f"seed {seed}"
        jobs.append(Job(label, args, run_dir))
    if not jobs:
        return
    slots = plan_slots(min(workers, len(jobs)), device=todo[0][1].train.device, nproc_per_node=nproc_per_node)

    def done(job: Job) -> None:
        if echo is not None:
            result = job.run_dir / "result.json"
            what = (f"val_bpb {json.loads(result.read_text(encoding='utf-8'))['val_bpb']:.8f}" if job.code == 0
                    and result.is_file() else f"failed ({exit_reason(job.code)}): {last_error(job.run_dir / CONSOLE)}")
            print(f"   {job.label}: {what}", file=echo, flush=True)

    run_jobs(jobs, slots, nproc_per_node=nproc_per_node, echo=echo, on_done=done)
    failed = [job for job in jobs if job.code != 0 or not (job.run_dir / "result.json").is_file()]
    if failed:
        job = failed[0]
        raise PgolfError(f"seeds: {len(failed)} of {len(jobs)} run(s) failed; {job.label} ({job.run_dir}): "
                         f"{last_error(job.run_dir / CONSOLE)} ({exit_reason(job.code)}; see {job.run_dir / CONSOLE})")
