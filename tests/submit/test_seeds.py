"""`pgolf seeds`: one run directory per seed, trained in order (or by the worker pool), resumable, then the stats
table."""

from __future__ import annotations

import json
import shutil
import sys
from types import SimpleNamespace

import pytest
from _submit_fakes import fake_run

from pgolf.cli import main
from pgolf.errors import PgolfError
from pgolf.submit.seeds import run_seeds


@pytest.fixture
def fake_train(monkeypatch):
    """Replaces the trainer: records each call (and its `existing`) and writes a finished-looking run with the config
    it was given."""
    import pgolf.train.trainer

    calls, existing_calls = [], []

    def train(cfg, data_dir, run_dir, echo=None, existing="overwrite"):
        calls.append((cfg.train.seed, cfg.model.num_layers, str(data_dir), run_dir.name))
        existing_calls.append(existing)
        if run_dir.exists():
            shutil.rmtree(run_dir)
        made = fake_run(run_dir.parent / "made", cfg.train.seed, 1.1 + cfg.train.seed / 1000)
        made.rename(run_dir)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict()))
        return json.loads((run_dir / "result.json").read_text())

    monkeypatch.setattr(pgolf.train.trainer, "train", train)
    return SimpleNamespace(calls=calls, existing=existing_calls)


def test_seeds_trains_each_seed_then_prints_stats(tmp_path, capsys, fake_train):
    out = tmp_path / "series"
    code = main(["seeds", "--preset", "cpu-smoke", "--seeds", "3,1,2", "--set", "model.num_layers=3",
                 "--data", "DATA", "--out", str(out)])
    assert code == 0
    assert fake_train.calls == [(3, 3, "DATA", "seed3"), (1, 3, "DATA", "seed1"), (2, 3, "DATA", "seed2")]
    assert fake_train.existing == ["overwrite"] * 3
    text = capsys.readouterr().out
    assert "== seed 3 (1/3)" in text and "3 seed(s) of cpu-smoke" in text
    assert "| **mean** (n=3) | | " in text and "1.10200000" in text  # mean of 1.103, 1.101, 1.102
    # a second call trains nothing: every seed is finished with the same config
    fake_train.calls.clear()
    assert main(["seeds", "--preset", "cpu-smoke", "--seeds", "1,2,3,4", "--set", "model.num_layers=3",
                 "--data", "DATA", "--out", str(out), "--json"]) == 0
    assert fake_train.calls == [(4, 3, "DATA", "seed4")]
    captured = capsys.readouterr()
    assert [r["seed"] for r in json.loads(captured.out)["runs"]] == [1, 2, 3, 4]
    assert "already finished, not retrained: seed 1, 2, 3" in captured.err


def test_seeds_refuses_another_config_and_bad_lists(tmp_path, capsys, fake_train):
    out = tmp_path / "series"
    run_seeds("cpu-smoke", [1], [], "DATA", out, echo=None)
    with pytest.raises(PgolfError, match="seed1: holds a finished run of another config"):
        run_seeds("cpu-smoke", [1, 2], ["model.num_layers=5"], "DATA", out, echo=None)
    assert len(fake_train.calls) == 1  # checked before anything trains
    assert main(["seeds", "--preset", "cpu-smoke", "--seeds", "1,x", "--data", "D", "--out", str(out)]) == 2
    assert main(["seeds", "--preset", "cpu-smoke", "--seeds", "1,1", "--data", "D", "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "comma-separated seeds" in err[0] and "listed twice" in err[1]


@pytest.mark.slow
def test_seeds_trains_for_real(tiny_data, tmp_path, capsys):
    from conftest import TINY_MODEL_SETS

    sets = [a for s in TINY_MODEL_SETS for a in ("--set", s)]
    out = tmp_path / "series"
    assert main(["seeds", "--preset", "cpu-smoke", "--seeds", "5,6", *sets, "--max-steps", "2",
                 "--data", str(tiny_data), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for seed in (5, 6):
        result = json.loads((out / f"seed{seed}" / "result.json").read_text())
        assert result["seed"] == seed and result["steps"] == 2
        assert f"| {out / f'seed{seed}'} | {seed} | {result['val_loss']:.8f} | {result['val_bpb']:.8f} | 2 |" in text


def test_seeds_resume_an_interrupted_seed_from_its_checkpoint(tmp_path, capsys, fake_train):
    from pgolf.options import resolve_config
    from pgolf.train.checkpoint import FORMAT

    out = tmp_path / "series"
    for seed, num_layers in ((1, 4), (2, 9)):  # seed 1: a checkpoint of this config; seed 2: of another one
        run_dir = out / f"seed{seed}"
        run_dir.mkdir(parents=True)
        cfg = resolve_config("cpu-smoke", [f"train.seed={seed}", f"model.num_layers={num_layers}"])
        (run_dir / "checkpoint.json").write_text(json.dumps({"format": FORMAT, "step": 3,
                                                             "world_size": 1, "config": cfg.to_dict(), "files": []}))
    assert main(["seeds", "--preset", "cpu-smoke", "--seeds", "1,2", "--set", "model.num_layers=4",
                 "--data", "DATA", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "== seed 1 (1/2): " in text and text.count("(resuming from its checkpoint)") == 1
    assert fake_train.existing == ["resume", "overwrite"]


@pytest.mark.slow  # four real trainings, two of them as `pgolf train` processes (torch import each): ~20-40 s
def test_seeds_with_two_workers_give_the_same_runs_as_one(tiny_data, tmp_path, capsys):
    """--workers 2 trains each seed as a `pgolf train` child pinned to its own core; at a fixed thread count
    (TINY_MODEL_SETS has train.threads=1) every seed's score is the same, bit for bit, as in one process."""
    from conftest import TINY_MODEL_SETS

    sets = [*TINY_MODEL_SETS, "train.iterations=3"]
    one = run_seeds("cpu-smoke", [5, 6], sets, tiny_data, tmp_path / "one", echo=None)
    two = run_seeds("cpu-smoke", [5, 6], sets, tiny_data, tmp_path / "two", echo=sys.stdout, workers=2)
    assert [d.name for d in two] == ["seed5", "seed6"]
    for a, b in zip(one, two):
        ra, rb = (json.loads((d / "result.json").read_text()) for d in (a, b))
        assert (ra["seed"], ra["steps"], ra["val_bpb"]) == (rb["seed"], rb["steps"], rb["val_bpb"])
        assert json.loads((a / "config.json").read_text()) == json.loads((b / "config.json").read_text())
    text = capsys.readouterr().out
    assert "== seed 5: " in text and " on worker 1 (cpu" in text and "   seed 6: val_bpb " in text
    # a second call finds both finished: nothing is trained
    assert run_seeds("cpu-smoke", [5, 6], sets, tiny_data, tmp_path / "two", echo=sys.stdout, workers=2) == two
    assert "already finished, not retrained: seed 5, 6" in capsys.readouterr().out


def test_a_seed_that_fails_in_the_pool_is_one_error_naming_it(tmp_path):
    with pytest.raises(PgolfError, match=r"seeds: 2 of 2 run\(s\) failed; seed 1 .*seed1.*console.txt") as info:
        run_seeds("cpu-smoke", [1, 2], [], tmp_path / "no-data", tmp_path / "out", echo=None, workers=2)
    assert "\n" not in str(info.value) and "no-data" in str(info.value)
