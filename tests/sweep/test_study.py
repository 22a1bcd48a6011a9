"""Storage selection, the study's identity check, and what happens to a trial whose worker died (no training: the
trials here are asked and told by hand)."""

from __future__ import annotations

import time

import optuna
import pytest

from pgolf.errors import PgolfError
from pgolf.sweep.study import (HEARTBEAT, Heartbeat, StudySpec, default_storage, fail_stale_trials, open_storage,
                               open_study, progress, shown_storage)
from pgolf.sweep.trial import retry_of

SPEC = StudySpec("cpu-smoke", ("train.iterations=10",), "[optim.matrix_lr]\nlow = 0.01\nhigh = 0.1\n", "artifact")


def test_the_default_storage_is_sqlite_in_the_study_folder(tmp_path):
    storage = open_storage(None, tmp_path / "study")
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert (tmp_path / "study" / "study.db").is_file()
    assert default_storage(tmp_path / "study") == f"sqlite:///{(tmp_path / 'study' / 'study.db').resolve()}"


def test_journal_and_database_urls(tmp_path):
    journal = open_storage(f"journal:{tmp_path / 'shared' / 'study.log'}", tmp_path / "study")
    assert isinstance(journal, optuna.storages.JournalStorage)
    open_study(journal, "s", SPEC)
    assert (tmp_path / "shared" / "study.log").stat().st_size > 0  # the journal file holds the study
    url = f"sqlite:///{tmp_path / 'elsewhere' / 'x.db'}"
    assert isinstance(open_storage(url, tmp_path / "study"), optuna.storages.RDBStorage)
    assert (tmp_path / "elsewhere" / "x.db").is_file()


@pytest.mark.parametrize("spec, expected", [
    ("study.db", "expected journal:PATH or a database URL"),
    ("journal:", "journal:PATH needs a file path"),
    ("nosuchdb://host/db", "cannot open it"),
])
def test_a_bad_storage_is_one_line(tmp_path, spec, expected):
    with pytest.raises(PgolfError, match=expected) as info:
        open_storage(spec, tmp_path)
    assert "\n" not in str(info.value)


def test_a_journal_path_that_is_a_directory_is_refused(tmp_path):
    with pytest.raises(PgolfError, match="is a directory"):
        open_storage(f"journal:{tmp_path}", tmp_path)


def test_a_password_is_never_shown():
    assert shown_storage("postgresql://me:secret@db.example/sweeps") == "postgresql://me:***@db.example/sweeps"
    assert shown_storage("journal:/shared/s.log") == "journal:/shared/s.log"


def test_a_study_refuses_workers_with_another_space_or_preset(tmp_path):
    storage = open_storage(f"journal:{tmp_path / 's.log'}", tmp_path)
    open_study(storage, "s", SPEC)
    assert open_study(storage, "s", SPEC).user_attrs["pgolf"] == SPEC.to_dict()  # the same: joins
    other = StudySpec("baseline", SPEC.sets, SPEC.space, SPEC.objective)
    with pytest.raises(PgolfError, match="study 's' was started with another preset"):
        open_study(storage, "s", other)
    with pytest.raises(PgolfError, match="no study 'nope' in this storage"):
        open_study(storage, "nope", None)


def _study(tmp_path):
    storage = open_storage(f"journal:{tmp_path / 's.log'}", tmp_path)
    return open_study(storage, "s", SPEC, sampler=optuna.samplers.RandomSampler(seed=0))


def test_a_silent_running_trial_is_failed_once_and_queued_again(tmp_path):
    study = _study(tmp_path)
    done = study.ask()
    done.suggest_float("optim.matrix_lr", 0.01, 0.1)
    study.tell(done, 3.0)
    dead = study.ask()
    lr = dead.suggest_float("optim.matrix_lr", 0.01, 0.1)
    dead.set_user_attr(HEARTBEAT, time.time())
    assert fail_stale_trials(study, grace=60) == []  # beating recently: alive
    later = time.time() + 61
    assert fail_stale_trials(study, grace=60, now=later) == [dead.number]
    assert fail_stale_trials(study, grace=60, now=later) == []  # failed once, retried once
    now = progress(study)
    assert (now.complete, now.failed, now.retried, now.waiting, now.done) == (1, 0, 1, 1, 1)
    # the queued copy is what the next ask gets: same parameters, and it knows which trial it repeats
    retry = study.ask()
    assert retry.number == 2 and retry.params == {"optim.matrix_lr": lr}
    assert retry_of(retry) == dead.number
    study.tell(retry, 2.5)
    assert progress(study).done == 2


def test_a_retry_does_not_inherit_its_original_heartbeat(tmp_path):
    """The copy carries the dead trial's user attributes (its old heartbeat among them): its own start counts."""
    study = _study(tmp_path)
    dead = study.ask()
    dead.suggest_float("optim.matrix_lr", 0.01, 0.1)
    dead.set_user_attr(HEARTBEAT, time.time() - 1000)
    assert fail_stale_trials(study, grace=60, now=time.time() + 100) == [dead.number]
    retry = study.ask()
    assert study.trials[retry.number].user_attrs[HEARTBEAT] < time.time() - 900  # inherited, old
    assert fail_stale_trials(study, grace=60, now=time.time() + 30) == []  # but it started just now: alive


def test_the_heartbeat_keeps_a_slow_trial_alive(tmp_path):
    study = _study(tmp_path)
    trial = study.ask()
    with Heartbeat(trial, interval=0.1):
        time.sleep(0.5)
        assert fail_stale_trials(study, grace=0.3) == []
    assert fail_stale_trials(study, grace=0.3, now=time.time() + 1) == [trial.number]


def test_a_failed_trial_cannot_then_be_told_complete(tmp_path):
    """A worker that was only slow, not dead, finds its trial failed by another one: telling it is refused, which
    the worker reports (pgolf/sweep/worker.py) instead of counting the trial twice."""
    study = _study(tmp_path)
    trial = study.ask()
    assert fail_stale_trials(study, grace=0, now=time.time() + 1) == [trial.number]
    with pytest.raises((ValueError, RuntimeError)):
        study.tell(trial, 1.0)


def test_without_optuna_a_sweep_is_one_line_naming_the_extra(monkeypatch):
    import sys

    from pgolf.sweep.study import optuna as load_optuna

    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` fails as if it were not installed
    with pytest.raises(PgolfError, match=r"pgolf sweep needs optuna, which is not installed \(pip install "
                                         r"'pgolf\[sweep\]'"):
        load_optuna()
