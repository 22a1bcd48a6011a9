"""Experiment tracking: the run's metrics as TensorBoard event files (`train.tensorboard`, under RUN_DIR/tensorboard)
and as a Weights & Biases run (`train.wandb_project`), both off by default and written by rank 0 only.

Nothing here is called by the trainer directly: `RunLog.metric` hands every metrics.jsonl record to `Tracking`, which
turns it into tagged scalars (`record_scalars`: `train/loss`, `val/bpb`, `eval/<mode>/bpb`, `final/bpb`,
`bytes/<what>`, ...) at the record's step, adds the step time and tokens/s between two training records, and passes
them to every `Tracker`. So the trackers see exactly what metrics.jsonl holds, and a tracker can never change the
training: it only reads numbers already computed.

Both libraries are optional (`pip install pgolf[tensorboard]`, `pip install pgolf[wandb]`) and imported only when
enabled, inside the trackers; this module itself is imported by the trainer only when tracking is on, so the
submission bundle (`pgolf bundle`) leaves it out. A missing package stops the run before training with one line
naming the extra to install (`check_installed`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Protocol

from pgolf.config import Config
from pgolf.errors import PgolfError

TENSORBOARD_DIR = "tensorboard"  # under the run directory
EVENT_FILE_PREFIX = "events.out.tfevents."  # TensorBoard's event file names


class Tracker(Protocol):
    """Where a run's scalars go besides metrics.jsonl."""

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Record `values` (tag -> number) at training step `step` (non-decreasing from call to call)."""

    def close(self, failed: bool = False) -> None:
        """Flush and finish; `failed`: the run ended with an error."""


def _needed(cfg: Config) -> list[tuple[str, str, str]]:
    """(config setting, importable package, pgolf extra) for each tracker `cfg` turns on."""
    t = cfg.train
    return ([("train.tensorboard=true", "tensorboard", "tensorboard")] if t.tensorboard else []) + \
        ([(f"train.wandb_project={t.wandb_project!r}", "wandb", "wandb")] if t.wandb_project else [])


def _missing(setting: str, extra: str) -> PgolfError:
    return PgolfError(f"{setting} needs the {extra} package, which is not installed: pip install 'pgolf[{extra}]'")


def check_installed(cfg: Config) -> None:
    """Raise one PgolfError naming the extra to install when an enabled tracker's package is missing. Cheap (finds
    the package without importing it), so every rank can call it before anything is written."""
    for setting, package, extra in _needed(cfg):
        try:
            found = importlib.util.find_spec(package) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise _missing(setting, extra)


class TensorBoardTracker:
    """Scalars into TensorBoard event files with torch's SummaryWriter. `purge_step` (a resumed run's checkpoint
    step) hides the events the interrupted process wrote from that step on, so each step has one point."""

    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("train.tensorboard=true", "tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step, flush_secs=10)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=step)

    def close(self, failed: bool = False) -> None:
        self.writer.close()


class WandbTracker:
    """Scalars into one Weights & Biases run named after the run directory, with the resolved config; its files go
    under RUN_DIR/wandb (`WANDB_MODE=offline` keeps them there for a later `wandb sync`)."""

    def __init__(self, project: str, name: str, config: dict, run_dir: Path) -> None:
        try:
            import wandb
        except ImportError:
            raise _missing(f"train.wandb_project={project!r}", "wandb") from None
        self.run = wandb.init(project=project, name=name, config=config, dir=str(run_dir))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


def make_trackers(cfg: Config, run_dir: Path, resume_step: int | None = None) -> list[Tracker]:
    """The trackers `cfg` turns on (none by default). A fresh run first removes the event files an earlier run left
    in RUN_DIR/tensorboard (TensorBoard would draw both); a resumed run (`resume_step`) keeps them."""
    trackers: list[Tracker] = []
    if cfg.train.tensorboard:
        log_dir = run_dir / TENSORBOARD_DIR
        if resume_step is None and log_dir.is_dir():
            for old in log_dir.glob(EVENT_FILE_PREFIX + "*"):
                old.unlink()
        trackers.append(TensorBoardTracker(log_dir, purge_step=resume_step))
    if cfg.train.wandb_project:
        try:
            trackers.append(WandbTracker(cfg.train.wandb_project, run_dir.resolve().name, cfg.to_dict(), run_dir))
        except BaseException:
            for tracker in trackers:
                tracker.close(failed=True)
            raise
    return trackers


def record_scalars(record: dict[str, Any]) -> dict[str, float]:
    """The tagged scalars of one metrics.jsonl record (what the trainer and the export log; docs/training.md)."""
    if "train_loss" in record:
        out = {"train/loss": record["train_loss"]}
        if "lr_mul" in record:
            out["train/lr_mul"] = record["lr_mul"]
        return out
    if "eval_mode" in record:  # one scored mode of the artifact (eval.report_modes and eval.mode)
        mode = record["eval_mode"]
        return {f"eval/{mode}/bpb": record["val_bpb"], f"eval/{mode}/loss": record["val_loss"],
                f"eval/{mode}/time_ms": record["eval_time_ms"]}
    if record.get("roundtrip"):  # the artifact file's score: result.json's val_bpb
        return {"final/bpb": record["val_bpb"], "final/loss": record["val_loss"]}
    if "val_bpb" in record:  # periodic validation of the in-memory model (pre-quantization)
        return {"val/bpb": record["val_bpb"], "val/loss": record["val_loss"]}
    if "artifact_bytes" in record:
        out = {f"bytes/{key.removesuffix('_bytes')}": record[key]
               for key in ("artifact_bytes", "code_bytes", "total_bytes") if key in record}
        out.update({f"bytes/stored/{group}": n for group, n in record.get("stored_bytes", {}).items()})
        return out
    return {f"metrics/{key}": value for key, value in record.items()  # a record kind added later still shows
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)}


class Tracking:
    """The trackers of one run, fed metrics.jsonl's records by `RunLog.metric`."""

    def __init__(self, trackers: list[Tracker], batch_tokens: int, resumed: bool = False) -> None:
        """`batch_tokens`: tokens per optimizer step (for tokens/s). A resumed run has no earlier training record,
        so its first one gets no step time."""
        self.trackers = trackers
        self.batch_tokens = batch_tokens
        self._last_train: tuple[int, float] | None = None if resumed else (0, 0.0)

    def metric(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        values = {tag: float(v) for tag, v in record_scalars(record).items()}
        if "train_loss" in record and "time_s" in record:
            values.update(self._speed(step, float(record["time_s"])))
        if values:
            for tracker in self.trackers:
                tracker.scalars(step, values)

    def _speed(self, step: int, time_s: float) -> dict[str, float]:
        """ms per step and tokens/s since the previous training record (the clock excludes validation)."""
        last, self._last_train = self._last_train, (step, time_s)
        if last is None or step <= last[0] or time_s <= last[1]:
            return {}
        steps, seconds = step - last[0], time_s - last[1]
        return {"train/step_ms": 1000 * seconds / steps, "train/tokens_per_s": self.batch_tokens * steps / seconds}

    def close(self, failed: bool = False) -> None:
        """Close every tracker, even when one of them fails to (the first error is raised after)."""
        error = None
        for tracker in self.trackers:
            try:
                tracker.close(failed=failed)
            except Exception as exc:  # noqa: BLE001 - the others still get closed
                error = error or exc
        self.trackers = []
        if error is not None:
            raise error


def open_tracking(cfg: Config, run_dir: Path, resume_step: int | None = None) -> Tracking | None:
    """`Tracking` for the trackers `cfg` turns on, or None when it turns on none."""
    trackers = make_trackers(cfg, run_dir, resume_step)
    return Tracking(trackers, cfg.train.train_batch_tokens, resumed=resume_step is not None) if trackers else None
