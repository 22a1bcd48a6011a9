"""`pgolf sweep report` on a study of hand-made trials (no training): the table, importances, figures and the best
config as a preset that loads; its bad inputs are one line."""

from __future__ import annotations

import json

import optuna
import pytest

from pgolf.cli import main as sweep_main
from pgolf.options import resolve_config
from pgolf.sweep.study import StudySpec, open_storage, open_study, write_study_file
from pgolf.sweep.trial import trial_dir

SETS = ("train.iterations=30",)
SPEC = StudySpec("cpu-smoke", SETS, "[optim.matrix_lr]\nlow = 0.01\nhigh = 0.1\nlog = true\n[model.num_layers]\n"
                 "low = 2\nhigh = 6\n", "artifact")


def _study(tmp_path, n: int):
    """`n` complete trials whose score falls with the learning rate, one pruned, one failed; each complete one with
    the config.json its run would have written."""
    storage_spec = f"journal:{tmp_path / 'study.log'}"
    study_dir = tmp_path / "study"
    study = open_study(open_storage(storage_spec, study_dir), "s", SPEC)
    write_study_file(study_dir, storage_spec, "s", SPEC)
    dists = {"optim.matrix_lr": optuna.distributions.FloatDistribution(0.01, 0.1, log=True),
             "model.num_layers": optuna.distributions.IntDistribution(2, 6)}
    for i in range(n):
        params = {"optim.matrix_lr": 0.01 + 0.01 * i, "model.num_layers": 2 + i % 5}
        run = trial_dir(study_dir, i)
        run.mkdir(parents=True)
        cfg = resolve_config("cpu-smoke", [*SETS, *(f"{k}={v}" for k, v in params.items())], environ={})
        (run / "config.json").write_text(json.dumps(cfg.to_dict()))
        study.add_trial(optuna.create_trial(params=params, distributions=dists, value=3.0 - 0.1 * i,
                                            user_attrs={"run_dir": str(run), "steps": 30},
                                            intermediate_values={200: 3.5 - 0.1 * i, 500: 3.2 - 0.1 * i}))
    study.add_trial(optuna.create_trial(params={"optim.matrix_lr": 0.05, "model.num_layers": 3}, distributions=dists,
                                        state=optuna.trial.TrialState.PRUNED, intermediate_values={200: 9.0}))
    study.add_trial(optuna.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={"error": "diverged"}))
    return study, study_dir


def test_the_report_ranks_explains_draws_and_writes_the_best_preset(tmp_path, capsys):
    study, study_dir = _study(tmp_path, 8)
    assert sweep_main(["sweep", "report", str(study_dir), "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"study s (journal:{tmp_path / 'study.log'}): 8 complete, 1 pruned, 1 failed, 0 running")
    table = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| trial")]
    assert [line.split("|")[1].strip() for line in table] == ["7", "6", "5"]  # best first, --top 3
    assert "| 7 | 2.300000 | 30 | 4 | 0.08 |" in text
    assert "pruned (1): 8 at 20%" in text and "failed (1): 9: diverged" in text
    assert "parameter importances (PED-ANOVA over 8 complete trials):" in text
    for name in ("history", "curves", "importances"):
        assert (study_dir / "report" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    best = resolve_config(str(study_dir / "best.toml"), [], environ={})
    written = json.loads((trial_dir(study_dir, 7) / "config.json").read_text())
    assert {k: v for k, v in best.to_dict().items() if k != "preset"} == \
        {k: v for k, v in written.items() if k != "preset"}
    assert (best.optim.matrix_lr, best.model.num_layers, best.train.iterations) == (pytest.approx(0.08), 4, 30)


def test_too_few_trials_give_no_importances_and_no_stale_figure(tmp_path, capsys):
    study, study_dir = _study(tmp_path, 1)
    (study_dir / "report").mkdir()
    (study_dir / "report" / "importances.png").write_bytes(b"old")
    assert sweep_main(["sweep", "report", str(study_dir)]) == 0
    assert "parameter importances: too few complete trials" in capsys.readouterr().out
    assert not (study_dir / "report" / "importances.png").exists()


@pytest.mark.parametrize("make, expected", [
    (lambda d: None, "no such sweep folder"),
    (lambda d: d.mkdir(), "not a sweep folder (sweep.json is missing"),
])
def test_report_errors_are_one_line(tmp_path, capsys, make, expected):
    make(tmp_path / "study")
    assert sweep_main(["sweep", "report", str(tmp_path / "study")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err
