"""Whole studies on a journal storage: workers at once, pruning, a restart that continues the study, the report and
its best preset, and a worker killed mid-trial whose trial is retried from its checkpoint.

Slow (each about 20-60 s on 2 shared cores): every trial is its own `pgolf train` process, which pays for importing
torch and scoring the whole val split of the tiny data once more; the fast tests of the same parts are in
test_space.py, test_study.py and test_trial.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY_MODEL_SETS
from pgolf.cli import main as sweep_main
from pgolf.options import resolve_config
from pgolf.sweep.study import open_storage, open_study, progress

pytestmark = pytest.mark.slow

SPACE = """
[optim.matrix_lr]
low = 0.005
high = 0.2
log = true

[optim.scalar_lr]
low = 0.005
high = 0.2
log = true
"""


def _args(tmp_path, data, trials: int, *extra: str) -> list[str]:
    space = tmp_path / "space.toml"
    space.write_text(SPACE, encoding="utf-8")
    sets = [a for s in (*TINY_MODEL_SETS, "train.val_loss_every=4", "train.warmdown_iters=6") for a in ("--set", s)]
    return ["sweep", "--preset", "cpu-smoke", "--space", str(space), "--trials", str(trials), "--data", str(data),
            *sets, "--max-steps", "24", "--study", "tiny", "--out", str(tmp_path / "study"),
            "--storage", f"journal:{tmp_path / 'study.log'}", "--startup-trials", "2", *extra]


def test_a_study_with_two_workers_continues_after_a_restart(tiny_data, tmp_path, capsys):
    assert sweep_main(_args(tmp_path, tiny_data, 3, "--workers", "2")) == 0
    out = capsys.readouterr().out
    assert "2 worker(s) here: worker 0 (cpu" in out
    study = open_study(open_storage(f"journal:{tmp_path / 'study.log'}", tmp_path), "tiny", None)
    first = progress(study)
    assert first.done >= 3 and first.running == 0
    trials = tmp_path / "study" / "trials"
    for t in study.trials:  # every finished trial is a run directory that says how it ended
        run = trials / f"{t.number:04d}"
        assert (run / "result.json").is_file() != (run / "pruned.json").is_file(), t
        if t.state.name == "COMPLETE":
            assert t.value == json.loads((run / "result.json").read_text())["val_bpb"]
    before = {p.name: (p / "trial.json").stat().st_mtime_ns for p in trials.iterdir()}
    # the same command with one more trial: the study goes on, its earlier trials untouched
    assert sweep_main(_args(tmp_path, tiny_data, first.done + 1)) == 0
    study = open_study(open_storage(f"journal:{tmp_path / 'study.log'}", tmp_path), "tiny", None)
    assert progress(study).done == first.done + 1
    assert f"trial {first.done} on worker 0" in capsys.readouterr().out
    assert {p.name: (p / "trial.json").stat().st_mtime_ns for p in trials.iterdir() if p.name in before} == before
    # the report: a table, figures, and the best config as a preset that loads
    assert sweep_main(["sweep", "report", str(tmp_path / "study")]) == 0
    text = capsys.readouterr().out
    best = study.best_trial
    assert f"| {best.number} | {best.value:.6f} |" in text
    assert (tmp_path / "study" / "report" / "history.png").stat().st_size > 1000
    preset = tmp_path / "study" / "best.toml"
    cfg = resolve_config(str(preset), [], environ={})
    trained = json.loads((trials / f"{best.number:04d}" / "config.json").read_text())
    assert {k: v for k, v in cfg.to_dict().items() if k != "preset"} == \
        {k: v for k, v in trained.items() if k != "preset"}


def test_a_killed_workers_trial_is_retried_from_its_checkpoint(tiny_data, tmp_path, capsys):
    args = _args(tmp_path, tiny_data, 2, "--pruner", "none", "--heartbeat", "0.5", "--grace", "3",
                 "--set", "train.iterations=60", "--max-steps", "60")
    tests = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tests / "sweep"), str(tests),
                                                       os.environ.get("PYTHONPATH", "")]))
    worker = subprocess.Popen([sys.executable, "-c", f"import sys; from pgolf.cli import main as sweep_main; "
                                                     f"sys.exit(sweep_main({args!r}))"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "study" / "trials" / "0000" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and '"step": 4, "val_loss"' not in (metrics.read_text() if metrics.is_file() else ""):
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)  # mid-trial: its run gets SIGTERM (parent death) and checkpoints
    worker.wait()
    assert sweep_main(args) == 0  # another worker: waits out the grace, fails trial 0, retries it, finishes
    out = capsys.readouterr().out
    assert "trial 0: no heartbeat for over 3 s (its worker died): marked failed and queued again" in out
    study = open_study(open_storage(f"journal:{tmp_path / 'study.log'}", tmp_path), "tiny", None)
    now = progress(study)
    assert (now.complete, now.failed, now.retried) == (2, 0, 1)
    # the retry is trial 1, or trial 2 when the new worker started trial 1 before trial 0 fell silent long enough
    retry = next(t for t in study.trials if t.system_attrs.get("retry_history") == [0])
    assert f"trial {retry.number} (retry of trial 0, resuming its checkpoint)" in out
    assert retry.params == study.trials[0].params and retry.state.name == "COMPLETE"
    trials = tmp_path / "study" / "trials"
    run = trials / f"{retry.number:04d}"
    assert json.loads((trials / "0000" / "failed.json").read_text())["retried"] is True
    assert (trials / "0000" / "checkpoint.json").is_file() and not (trials / "0000" / "result.json").exists()
    assert json.loads((run / "trial.json").read_text())["resumed_from"] == str(trials / "0000")
    assert "resumed: step:" in (run / "log.txt").read_text()
    assert json.loads((run / "result.json").read_text())["steps"] == 60
