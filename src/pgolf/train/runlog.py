"""Run logs: an official-style human log (log.txt) and structured metrics (metrics.jsonl), written by rank 0.

The human log keeps the line formats reviewers grep for (`step:S/N train_loss:... step_avg:...ms`,
`final_int8_zlib_roundtrip_exact val_loss:... val_bpb:...`); metrics.jsonl has one JSON object per record.

A resumed run (`pgolf train --resume`) appends to log.txt, which thus keeps the interrupted process's lines too, and
cuts metrics.jsonl back to the records written up to the checkpoint, so every step has exactly one record.

Every metric record also goes to the run's trackers (`tracking`: TensorBoard, W&B; pgolf/train/tracking.py) when
`train.tensorboard` or `train.wandb_project` turns them on, so they show exactly what metrics.jsonl holds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

from pgolf.config import Config
from pgolf.errors import PgolfError


class _Stdout:
    """Whatever `sys.stdout` is when a line is written: the default echo. (A default of `sys.stdout` itself is bound
    at import time and keeps a stream that may since have been replaced and closed, as under pytest's capture.)"""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


STDOUT: TextIO = _Stdout()  # type: ignore[assignment]


class RunLog:
    """Writes log lines and metric records; silent on ranks other than 0."""

    def __init__(self, run_dir: Path | None, enabled: bool = True, echo: TextIO | None = STDOUT,
                 keep_metrics: int | None = None) -> None:
        """`keep_metrics=None` starts both files afresh; a number (resuming) appends to log.txt and keeps only
        the first `keep_metrics` records of metrics.jsonl."""
        self.enabled = enabled
        self.echo = echo
        self.metric_records = 0
        self.tracking = None  # a pgolf.train.tracking.Tracking once `track` opened trackers
        self._log = self._metrics = None
        if enabled and run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            resume = keep_metrics is not None
            self._log = open(run_dir / "log.txt", "a" if resume else "w", encoding="utf-8")
            if resume:
                from pgolf.fileio import atomic_write_text

                path = run_dir / "metrics.jsonl"
                kept = path.read_text(encoding="utf-8").splitlines()[:keep_metrics] if path.is_file() else []
                atomic_write_text(path, "".join(line + "\n" for line in kept))
                self.metric_records = len(kept)
            self._metrics = open(run_dir / "metrics.jsonl", "a" if resume else "w", encoding="utf-8")

    def track(self, cfg: Config, run_dir: Path, resume_step: int | None = None) -> None:
        """Open the trackers `cfg` turns on (none by default), on the logging rank only; `resume_step`: the step a
        resumed run continues from."""
        if self.enabled and _tracked(cfg):
            from pgolf.train.tracking import open_tracking

            self.tracking = open_tracking(cfg, run_dir, resume_step)

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        if self.echo is not None:
            print(text, file=self.echo, flush=True)
        if self._log is not None:
            self._write("_log", text)

    def metric(self, **record: Any) -> None:
        if self.enabled and self._metrics is not None:
            self._write("_metrics", json.dumps(record))
            self.metric_records += 1
            if self.tracking is not None:
                self.tracking.metric(record)

    def _write(self, which: str, text: str) -> None:
        """Append one line; a full disk (or any write error) is one PgolfError naming the file, raised once: the
        file is dropped, so the lines written on the way out (the error itself) do not fail a second time."""
        f = getattr(self, which)
        try:
            f.write(text + "\n")
            f.flush()
        except OSError as exc:
            setattr(self, which, None)
            _close_quietly(f)
            raise PgolfError(f"{f.name}: cannot write ({exc.strerror or exc}); the run stops; a checkpoint written "
                             "before this is intact: free space, then continue with pgolf train --resume") from None

    def close(self, failed: bool = False) -> None:
        """Close the files and finish the trackers (`failed`: the run ends with an error); a second call does
        nothing."""
        for f in (self._log, self._metrics):
            if f is not None:
                _close_quietly(f)
        self._log = self._metrics = None
        tracking, self.tracking = self.tracking, None
        if tracking is not None:
            tracking.close(failed=failed)


def _tracked(cfg: Config) -> bool:
    return cfg.train.tensorboard or bool(cfg.train.wandb_project)


def check_tracking(cfg: Config) -> None:
    """One PgolfError naming the extra to install when a tracker `cfg` turns on lacks its package. The tracking
    module is imported only when one is on, so a run without (and the submission bundle) never loads it."""
    if _tracked(cfg):
        from pgolf.train.tracking import check_installed

        check_installed(cfg)


def _close_quietly(f) -> None:
    """Close a log file; on a full disk its last buffered bytes cannot be flushed, which is already reported."""
    try:
        f.close()
    except OSError:
        pass
