"""`pgolf seeds`: train one configuration under several seeds, one after another, each in its own run directory
(`OUT/seedS`), then summarize them with `pgolf stats`.

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
              echo: TextIO | None = STDOUT) -> list[Path]:
    """Train `preset` with `sets` once per seed into `out/seedS`; returns the run directories in seed order."""
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
    from tqdm import tqdm

    bar = tqdm(todo, desc="seeds", unit="run", file=sys.stderr, disable=not sys.stderr.isatty())
    for index, (seed, cfg, run_dir) in enumerate(bar, 1):
        existing = "resume" if _checkpoint_config(run_dir) == _as_json(cfg.to_dict()) else "overwrite"
        if echo is not None:
            print(f"== seed {seed} ({index}/{len(todo)}): {run_dir}"
                  + (" (resuming from its checkpoint)" if existing == "resume" else ""), file=echo, flush=True)
        trainer.train(cfg, data, run_dir, echo=echo, existing=existing)
    if echo is not None and len(todo) < len(seeds):
        skipped = [str(s) for s in seeds if s not in {t[0] for t in todo}]
        print(f"== already finished, not retrained: seed {', '.join(skipped)}", file=echo, flush=True)
    return dirs
