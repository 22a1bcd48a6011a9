"""One trial: what the pruner is told, and what a pruned trial leaves in its run directory (a real `pgolf train`
child, stopped by the pruner)."""

from __future__ import annotations

import json
import threading

import optuna
import pytest
from conftest import TINY_MODEL_SETS

from pgolf.options import resolve_config
from pgolf.sweep.space import parse_space
from pgolf.sweep.study import open_storage, open_study, StudySpec
from pgolf.sweep.trial import PRUNED, TRIAL_FILE, Plan, progress_per_mille, read_validations, run_trial
from pgolf.train.pool import Slot


def test_read_validations_takes_whole_periodic_lines_only(tmp_path):
    lines = [{"step": 0, "val_bpb": 4.0, "time_s": 0.0}, {"step": 2, "train_loss": 5.0},
             {"step": 4, "val_bpb": 3.5, "time_s": 1.0}, {"step": 8, "val_bpb": 3.1, "roundtrip": True}]
    text = "".join(json.dumps(r) + "\n" for r in lines) + '{"step": 6, "val_b'  # the trainer is writing this one
    (tmp_path / "metrics.jsonl").write_text(text)
    assert read_validations(tmp_path) == [lines[2]]  # not step 0 (every trial is the same there), not the score
    assert read_validations(tmp_path / "absent") == []


def test_progress_is_the_nearer_end_of_the_budget():
    steps = resolve_config("cpu-smoke", ["train.iterations=100", "train.max_wallclock_seconds=0"], environ={})
    assert progress_per_mille({"step": 20, "time_s": 50.0}, steps) == 200
    clock = resolve_config("cpu-smoke", ["train.iterations=100000", "train.max_wallclock_seconds=10"], environ={})
    assert progress_per_mille({"step": 20, "time_s": 2.5}, clock) == 250
    assert progress_per_mille({"step": 99999, "time_s": 12.0}, clock) == 1000


def _plan(tmp_path, data, *extra: str, poll_s: float = 0.1) -> Plan:
    sets = (*TINY_MODEL_SETS, "train.iterations=60", "train.val_loss_every=6", "train.warmdown_iters=10", *extra)
    return Plan(study="s", study_dir=tmp_path / "study", preset="cpu-smoke", sets=sets,
                space=parse_space("[optim.matrix_lr]\nlow = 0.01\nhigh = 0.1\n"),
                base=resolve_config("cpu-smoke", list(sets), environ={}), data=data, poll_s=poll_s)


def test_a_pruned_trial_leaves_a_resumable_run_and_nothing_half_written(tiny_data, tmp_path):
    plan = _plan(tmp_path, tiny_data)
    storage = open_storage(f"journal:{tmp_path / 's.log'}", tmp_path)
    # a pruner that stops every trial at its first report: the trial is pruned at 10% of its budget
    study = open_study(storage, "s", StudySpec("cpu-smoke", plan.sets, plan.space.text, "artifact"),
                       pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    trial = study.ask()
    outcome = run_trial(trial, plan, Slot(0), threading.Event())
    assert outcome.state == "pruned", outcome
    run_dir = tmp_path / "study" / "trials" / "0000"
    marker = json.loads((run_dir / PRUNED).read_text())
    assert marker["trial"] == 0 and marker["pruned_at"]["step"] == 6 and marker["pruned_at"]["progress"] == 0.1
    assert marker["exit"] == "stopped by SIGTERM" and marker["checkpoint"] is True
    assert json.loads((run_dir / TRIAL_FILE).read_text())["params"] == trial.params
    # the trainer stopped through its checkpoint path: config, log, metrics and a checkpoint, never a score
    assert not (run_dir / "artifact.pgolf").exists() and not (run_dir / "result.json").exists()
    assert (run_dir / "checkpoint.json").is_file() and (run_dir / "config.json").is_file()
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        json.loads(line)  # every line whole
    assert trial.study.trials[0].intermediate_values == {100: pytest.approx(marker["pruned_at"]["val_bpb"])}
    manifest = json.loads((run_dir / "checkpoint.json").read_text())
    assert 6 <= manifest["step"] < 60  # stopped a step or a few after the validation, far from the end
