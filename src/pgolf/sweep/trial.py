"""One trial of a sweep: one ordinary run directory, `STUDY_DIR/trials/NNNN` (NNNN: the trial's number), trained
by one `pgolf train` child on the worker's slot (pgolf/train/pool.py).

While the child trains, the worker reads the periodic validations it appends to metrics.jsonl (`train.val_loss_every`;
on `train.val_max_tokens` of val when set) and reports each val_bpb to Optuna at its share of the training budget,
in thousandths (`progress_per_mille`: of `train.iterations`, or of the wall-clock cap when that ends training
first). When the pruner says the trial is losing, the worker sends the child SIGTERM: the trainer finishes its step,
writes a checkpoint and exits, so the directory holds config, log, metrics and a resumable checkpoint, and never an
artifact or a result.json; then `pruned.json` (written atomically, after the child is gone) says where and why it
stopped. A trial that fails says why in `failed.json` and in its `error` user attribute.

The objective is the run's final score: result.json's val_bpb, the BPB of the artifact FILE after the quantize and
compress roundtrip (`artifact`), or, as a cheaper proxy, the last periodic validation of the float model before
quantization (`pre-quant`: result.json's pre_quant.val_bpb, on `train.val_max_tokens` of val when set).

A trial queued again after its worker died (pgolf/sweep/study.py) copies the dead trial's checkpoint, when it has one
of the same config, and continues it with `pgolf train --resume`: the steps already paid for are not trained twice.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from pgolf.config import Config
from pgolf.errors import PgolfError
from pgolf.fileio import atomic_write_json
from pgolf.options import resolve_config
from pgolf.train.pool import CONSOLE, Slot, exit_reason, last_error, launch, stop, train_argv
from pgolf.sweep.space import Space
from pgolf.sweep.study import ERROR, RESOURCE, TRIALS_DIR

TRIAL_FILE = "trial.json"  # which study and trial a run directory is, and its parameters
PRUNED = "pruned.json"
FAILED = "failed.json"
OBJECTIVES = ("artifact", "pre-quant")


def trial_dir(study_dir: Path, number: int) -> Path:
    return study_dir / TRIALS_DIR / f"{number:04d}"


@dataclass(frozen=True)
class Plan:
    """What every trial of a study shares: the preset and fixed `--set`s, the space, the data, the objective."""

    study: str
    study_dir: Path
    preset: str
    sets: tuple[str, ...]
    space: Space
    base: Config
    data: Path
    objective: str = "artifact"
    nproc_per_node: int = 1
    poll_s: float = 0.5


@dataclass(frozen=True)
class Outcome:
    """How a trial ended: `state` complete, pruned, failed or interrupted (this worker was asked to stop)."""

    state: str
    value: float | None
    message: str


def progress_per_mille(record: dict, cfg: Config) -> int:
    """A validation's share of the training budget, 0..1000: steps of `iterations`, or seconds of the wall-clock
    cap when that is the nearer end (as the trainer's own schedule measures progress)."""
    t = cfg.train
    share = record["step"] / max(t.iterations, 1)
    if t.max_wallclock_seconds > 0 and "time_s" in record:
        share = max(share, float(record["time_s"]) / t.max_wallclock_seconds)
    return min(RESOURCE, round(RESOURCE * share))


def read_validations(run_dir: Path) -> list[dict]:
    """The periodic validations in metrics.jsonl so far (whole lines only: the trainer may be writing the last)."""
    try:
        text = (run_dir / "metrics.jsonl").read_text(encoding="utf-8")
    except OSError:
        return []
    records = []
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "val_bpb" in record and not record.get("roundtrip") and record.get("step", 0) > 0:
            records.append(record)
    return records


def objective_value(result: dict, objective: str) -> float:
    if objective == "pre-quant":
        pre = result.get("pre_quant") or {}
        if "val_bpb" not in pre:
            raise PgolfError("result.json has no pre_quant.val_bpb (the run validated nothing: train.val_loss_every)")
        return float(pre["val_bpb"])
    return float(result["val_bpb"])


def retry_of(trial) -> int | None:
    """The number of the trial this one is a retry of (Optuna's retry history of a queued copy), or None."""
    frozen = trial.study.get_trials(deepcopy=False)[trial.number]  # numbers are 0, 1, ... in order
    history = frozen.system_attrs.get("retry_history") or []
    return int(history[-1]) if history else None


def _resume_source(number: int | None, plan: Plan, cfg: Config) -> Path | None:
    """The run directory of trial `number` (retried by this one), when it holds a checkpoint of this very config."""
    from pgolf.train.checkpoint import MANIFEST, read_manifest

    if number is None:
        return None
    source = trial_dir(plan.study_dir, number)
    if not (source / MANIFEST).is_file():
        return None
    try:
        theirs = read_manifest(source)["config"]
    except PgolfError:
        return None
    return source if theirs == json.loads(json.dumps(cfg.to_dict())) else None


def _copy_checkpoint(source: Path, run_dir: Path) -> bool:
    """Copy the checkpoint of `source` (its manifest, the step files it names, config, log and metrics) into the new
    `run_dir`, whole or not at all; False when a file is missing (the dead run was still writing one)."""
    from pgolf.train.checkpoint import MANIFEST, read_manifest

    tmp = run_dir.with_name(f".{run_dir.name}.copy")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        manifest = read_manifest(source)
        for name in ("config.json", "log.txt", "metrics.jsonl", *manifest["files"]):
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, tmp / name)
        atomic_write_json(tmp / MANIFEST, manifest)  # the manifest as read: it names exactly the files copied
        tmp.rename(run_dir)
        return True
    except (OSError, PgolfError):
        shutil.rmtree(tmp, ignore_errors=True)
        return False


def run_trial(trial, plan: Plan, slot: Slot, stopping: threading.Event, echo: TextIO | None = None) -> Outcome:
    """Sample the trial's parameters, train them in its run directory on `slot`, report and prune; its outcome."""
    values = plan.space.sample(trial, plan.base)
    sets = [*plan.sets, *plan.space.sets(values)]
    shown = plan.space.shown(values)
    run_dir = trial_dir(plan.study_dir, trial.number)
    trial.set_user_attr("run_dir", str(run_dir))
    try:
        cfg = resolve_config(plan.preset, sets)
    except PgolfError as exc:  # a combination the config refuses (e.g. heads that do not divide the width)
        return _failed(trial, run_dir, f"config refused: {exc}", write=False)
    if run_dir.exists():
        return _failed(trial, run_dir, f"{run_dir} already exists (a folder of another study?); not touched",
                       write=False)
    again = retry_of(trial)
    source = _resume_source(again, plan, cfg)
    resumed = source is not None and _copy_checkpoint(source, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / TRIAL_FILE, {"study": plan.study, "trial": trial.number, "params": values,
                                             "sets": sets, "preset": plan.preset, "retry_of": again,
                                             "resumed_from": str(source) if resumed else None})
    if resumed:
        args = ["--resume", str(run_dir), "--data", str(plan.data)]
    else:
        args = ["--preset", plan.preset, *(f"--set={s}" for s in sets), "--data", str(plan.data),
                "--run-dir", str(run_dir), "--overwrite"]
    if echo is not None:
        note = "" if again is None else f" (retry of trial {again}" + (
            ", resuming its checkpoint)" if resumed else ")")
        print(f"trial {trial.number}{note} on {slot.describe()}: {shown}", file=echo, flush=True)
    started = time.perf_counter()
    proc = launch(train_argv(args, plan.nproc_per_node), slot, run_dir / CONSOLE)
    how, code, pruned_at = _watch(trial, proc, run_dir, cfg, stopping, plan.poll_s)
    if how == "interrupted":
        _write(run_dir / FAILED, {"trial": trial.number, "reason": "interrupted: its worker was stopped",
                                  "exit": exit_reason(code), "checkpoint": (run_dir / "checkpoint.json").is_file(),
                                  "retried": True})
        return Outcome("interrupted", None, f"interrupted ({exit_reason(code)})")
    if how == "pruned" and not (run_dir / "result.json").is_file():  # (a run that ended meanwhile is complete)
        return _pruned(trial, plan, run_dir, *pruned_at, code)
    seconds = time.perf_counter() - started
    result_path = run_dir / "result.json"
    if not result_path.is_file() or (code != 0 and how != "pruned"):  # (stopped after its result: complete)
        return _failed(trial, run_dir, f"{last_error(run_dir / CONSOLE)} ({exit_reason(code)})", code=code)
    result = json.loads(result_path.read_text(encoding="utf-8"))
    try:
        value = objective_value(result, plan.objective)
    except PgolfError as exc:
        return _failed(trial, run_dir, str(exc), code=code)
    trial.set_user_attr("steps", result.get("steps"))
    trial.set_user_attr("total_bytes", result.get("total_bytes"))
    if isinstance(result.get("pre_quant"), dict) and "val_bpb" in result["pre_quant"]:
        trial.set_user_attr("pre_quant_val_bpb", result["pre_quant"]["val_bpb"])
    return Outcome("complete", value, f"val_bpb {value:.6f} ({plan.objective}), {result.get('steps')} steps, "
                                      f"{seconds:.1f} s")


def _watch(trial, proc, run_dir: Path, cfg: Config, stopping: threading.Event, poll_s: float):
    """Report each new periodic validation of the running child and stop it when the pruner says so; returns
    ("exited", code, None), ("pruned", code, (record, at)) or ("interrupted", code, None)."""
    reported: set[int] = set()
    while True:
        code = proc.poll()
        records = read_validations(run_dir)
        # Prune only while the child is still inside its training loop, where SIGTERM means a checkpoint: its latest
        # validation is not the final one (after that comes the export, where a signal just ends the process).
        training = (code is None and bool(records) and records[-1]["step"] < cfg.train.iterations
                    and progress_per_mille(records[-1], cfg) < RESOURCE)
        for record in records:
            at = progress_per_mille(record, cfg)
            if at in reported:
                continue
            reported.add(at)
            trial.report(float(record["val_bpb"]), at)
            if training and trial.should_prune():
                return "pruned", stop(proc), (record, at)
        if code is not None:
            return "exited", code, None
        if stopping.wait(poll_s):
            return "interrupted", stop(proc), None


def _write(path: Path, content: dict[str, Any]) -> None:
    if path.parent.is_dir():
        atomic_write_json(path, content)


def _pruned(trial, plan: Plan, run_dir: Path, record: dict, at: int, code: int) -> Outcome:
    from pgolf.train.checkpoint import MANIFEST
    from pgolf.train.export import ARTIFACT_NAME

    resumable = (run_dir / MANIFEST).is_file()
    unscored = run_dir / ARTIFACT_NAME
    removed = unscored.is_file()  # stopped between writing its artifact and scoring it (a wall-clock end): no score
    unscored.unlink(missing_ok=True)
    _write(run_dir / PRUNED, {
        "trial": trial.number, "study": plan.study,
        "pruned_at": {"step": record["step"], "progress": at / RESOURCE, "val_bpb": record["val_bpb"]},
        "pruner": type(trial.study.pruner).__name__, "exit": exit_reason(code), "checkpoint": resumable,
        **({"unscored_artifact_removed": True} if removed else {}),
        "continue_with": f"pgolf train --resume {run_dir} --data {plan.data}" if resumable else None})
    return Outcome("pruned", float(record["val_bpb"]),
                   f"pruned at {at / RESOURCE:.0%} of its budget (step {record['step']}, val_bpb "
                   f"{record['val_bpb']:.4f})")


def _failed(trial, run_dir: Path, reason: str, code: int | None = None, write: bool = True) -> Outcome:
    trial.set_user_attr(ERROR, reason)
    if write:
        _write(run_dir / FAILED, {"trial": trial.number, "reason": reason,
                                  "exit": exit_reason(code) if code is not None else None, "retried": False})
    return Outcome("failed", None, reason)


def mark_stale(study_dir: Path, number: int) -> None:
    """failed.json in the run directory of a trial whose worker died (if this machine sees the folder)."""
    _write(trial_dir(study_dir, number) / FAILED, {
        "trial": number, "reason": "its worker stopped sending heartbeats (killed, or its machine was lost)",
        "retried": True})
