"""Where a study lives and how its workers cooperate: storage, sampler, pruner, heartbeats and retries.

Storage (`--storage`): nothing given is SQLite in the study's folder (`STUDY_DIR/study.db`: nothing to start, fine
for the workers of one machine); `journal:PATH` is Optuna's journal file (an append-only log with a file lock: the
workers of several machines sharing a file system); any other URL (`postgresql://...`, `mysql://...`,
`sqlite:///...`) goes to Optuna's RDBStorage (a database server).

Any number of `pgolf sweep` processes pointed at one storage and study share its trials: each asks Optuna for the
next trial, so the sampler (TPE with the constant liar, for trials still running) and the pruner see every worker's
results. A worker's trial proves it is alive with a heartbeat (a time stamp in the trial's user attributes every
`heartbeat` seconds); a RUNNING trial whose heartbeat is older than `grace` seconds belongs to a worker that died (a
SIGKILL, a lost machine): the next worker to look marks it FAIL and queues a copy of it (Optuna's
RetryHeartbeatStaleTrialCallback), which then resumes from the dead trial's checkpoint (pgolf/sweep/trial.py). This
is Optuna's own heartbeat design (optuna.storages.RDBStorage heartbeat_interval / grace_period), kept in the
trial's attributes because JournalStorage has no heartbeat of its own in Optuna 5.1, so that one mechanism serves
every storage. Heartbeats compare time stamps from different machines: their clocks must agree to within `grace`.
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pgolf.errors import PgolfError
from pgolf.fileio import atomic_write_json

STUDY_FILE = "sweep.json"  # what a study folder says about its study: storage, name, preset, space
TRIALS_DIR = "trials"
HEARTBEAT = "heartbeat"  # user attribute: the time (s since the epoch) of the worker's last sign of life
ERROR = "error"  # user attribute: why a trial failed (the run's own last error line)
PRUNERS = ("sha", "hyperband", "median", "none")
SAMPLERS = ("tpe", "random")


def optuna():
    """Optuna, or one line saying how to install it (it is the optional `sweep` extra)."""
    try:
        import optuna as module
    except ImportError:
        raise PgolfError("pgolf sweep needs optuna, which is not installed (pip install 'pgolf[sweep]', or "
                         "pip install optuna)") from None
    module.logging.set_verbosity(module.logging.WARNING)
    warnings.filterwarnings("ignore", category=module.exceptions.ExperimentalWarning)
    return module


def default_storage(study_dir: Path) -> str:
    return f"sqlite:///{(study_dir / 'study.db').resolve()}"


def shown_storage(spec: str) -> str:
    """`spec` safe to print and to write down: a database URL's password masked."""
    if spec.startswith("journal:") or "://" not in spec:
        return spec
    parts = urlsplit(spec)
    if parts.password is None:
        return spec
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def open_storage(spec: str | None, study_dir: Path):
    """The Optuna storage `spec` names (module docstring); None: SQLite in `study_dir`."""
    opt = optuna()
    if spec is None:
        study_dir.mkdir(parents=True, exist_ok=True)
        spec = default_storage(study_dir)
    if spec.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(spec[len("journal:"):]).expanduser()
        if not path.name:
            raise PgolfError(f"--storage {spec}: journal:PATH needs a file path, e.g. journal:/shared/study.log")
        if path.is_dir():
            raise PgolfError(f"--storage {spec}: {path} is a directory; name the journal file inside it")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return opt.storages.JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise PgolfError(f"--storage {spec}: cannot open the journal: {exc.strerror or exc}") from None
    if "://" not in spec:
        raise PgolfError(f"--storage {spec!r}: expected journal:PATH or a database URL (sqlite:///FILE, "
                         "postgresql://USER@HOST/DB, ...)")
    if spec.startswith("sqlite:///"):
        Path(spec[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"connect_args": {"timeout": 60}} if spec.startswith("sqlite") else {}
    try:
        return opt.storages.RDBStorage(spec, engine_kwargs=kwargs)
    except ImportError as exc:
        raise PgolfError(f"--storage {shown_storage(spec)}: its database driver is not installed ({exc})") from None
    except Exception as exc:  # sqlalchemy's errors (a bad URL, a server that does not answer): one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PgolfError(f"--storage {shown_storage(spec)}: cannot open it: {first}") from None


def make_sampler(name: str, startup_trials: int, seed: int | None = None):
    opt = optuna()
    if name == "random":
        return opt.samplers.RandomSampler(seed=seed)
    # multivariate + group: conditional parameters are modelled per group of trials that searched them
    return opt.samplers.TPESampler(n_startup_trials=startup_trials, multivariate=True, group=True,
                                   constant_liar=True, seed=seed)


RESOURCE = 1000  # the pruner's steps: thousandths of the training budget (trial.py's `progress_per_mille`)


def make_pruner(name: str, prune_from: float, reduction_factor: int = 3):
    """`name` of PRUNERS, deciding from `prune_from` of the budget on (0.2: a trial losing at 20% stops)."""
    opt = optuna()
    first = max(1, round(prune_from * RESOURCE))
    if name == "sha":
        return opt.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=reduction_factor)
    if name == "hyperband":
        return opt.pruners.HyperbandPruner(min_resource=first, max_resource=RESOURCE,
                                           reduction_factor=reduction_factor)
    if name == "median":
        return opt.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=first)
    return opt.pruners.NopPruner()


@dataclass(frozen=True)
class StudySpec:
    """What every worker of a study must agree on (kept in the study's user attributes and STUDY_DIR/sweep.json)."""

    preset: str
    sets: tuple[str, ...]
    space: str  # the space file's text
    objective: str

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "sets": list(self.sets), "space": self.space, "objective": self.objective}


def open_study(storage, name: str, spec: StudySpec | None, *, sampler=None, pruner=None):
    """Create or load study `name`; with `spec`, refuse a study that was started with another one (a worker with
    another preset, --set or space file would mix two searches in one)."""
    opt = optuna()
    if spec is None:
        try:
            study = opt.load_study(study_name=name, storage=storage)
        except KeyError:
            names = [s.study_name for s in opt.get_all_study_summaries(storage)]
            raise PgolfError(f"no study {name!r} in this storage (it has: {', '.join(names) or 'none'})") from None
        return study
    study = opt.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                             direction="minimize", load_if_exists=True)
    theirs = study.user_attrs.get("pgolf")
    if theirs is None:
        study.set_user_attr("pgolf", spec.to_dict())
    elif theirs != spec.to_dict():
        what = [key for key in ("preset", "sets", "space", "objective") if theirs.get(key) != spec.to_dict()[key]]
        raise PgolfError(f"study {name!r} was started with another {', '.join(what)} ({what[0]}: "
                         f"{_short(theirs.get(what[0]))}); continue it with the same, or name a new --study")
    return study


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def write_study_file(study_dir: Path, storage: str, name: str, spec: StudySpec) -> None:
    atomic_write_json(study_dir / STUDY_FILE, {"study": name, "storage": shown_storage(storage), **spec.to_dict()})


def read_study_file(study_dir: Path) -> dict:
    path = study_dir / STUDY_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PgolfError(f"{study_dir}: not a sweep folder ({STUDY_FILE} is missing; pgolf sweep writes it)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise PgolfError(f"{path}: cannot read it ({exc})") from None


# ---------------------------------------------------------------------------------------------- liveness
class Heartbeat:
    """While a trial runs: its HEARTBEAT attribute set now and every `interval` seconds, in a thread."""

    def __init__(self, trial, interval: float) -> None:
        self.trial, self.interval = trial, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"pgolf-heartbeat-{trial.number}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self.trial.set_user_attr(HEARTBEAT, time.time())
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.trial.set_user_attr(HEARTBEAT, time.time())
            except Exception:  # the trial was finished meanwhile (by this worker, or failed as stale): stop beating
                return


def last_sign_of_life(trial) -> float:
    """When a RUNNING trial last showed life: its heartbeat, or its start. A retried trial inherits its original's
    attributes, so a beat from before its own start does not count."""
    start = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
    beat = trial.user_attrs.get(HEARTBEAT)
    return max(start, float(beat)) if isinstance(beat, (int, float)) else start


def fail_stale_trials(study, grace: float, now: float | None = None) -> list[int]:
    """Mark FAIL every RUNNING trial silent for more than `grace` seconds and queue its retry; returns their numbers
    (only those this worker marked: two workers never retry one trial twice)."""
    opt = optuna()
    now = time.time() if now is None else now
    retry = opt.storages.RetryHeartbeatStaleTrialCallback()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(opt.trial.TrialState.RUNNING,)):
        if now - last_sign_of_life(trial) <= grace:
            continue
        try:
            study.tell(trial.number, state=opt.trial.TrialState.FAIL)
        except (ValueError, RuntimeError):  # finished meanwhile, or another worker failed it first
            continue
        retry(study, study.get_trials(deepcopy=True)[trial.number])  # numbers are 0, 1, ... in order
        failed.append(trial.number)
    return failed


def retried_numbers(trials) -> set[int]:
    """The failed trials that were queued again (Optuna's retry history, kept in the copies' system attributes)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


@dataclass(frozen=True)
class Progress:
    """A study's trials by state; `done` counts what `--trials` counts: complete, pruned, failed and not retried."""

    complete: int
    pruned: int
    failed: int
    retried: int
    running: int
    waiting: int

    @property
    def done(self) -> int:
        return self.complete + self.pruned + self.failed

    def __str__(self) -> str:
        return (f"{self.complete} complete, {self.pruned} pruned, {self.failed} failed"
                + (f" (+{self.retried} retried)" if self.retried else "") + f", {self.running} running"
                + (f", {self.waiting} waiting" if self.waiting else ""))


def progress(study) -> Progress:
    state = optuna().trial.TrialState
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    count = lambda s: sum(t.state == s for t in trials)  # noqa: E731
    failed = sum(t.state == state.FAIL and t.number not in retried for t in trials)
    return Progress(count(state.COMPLETE), count(state.PRUNED), failed, count(state.FAIL) - failed,
                    count(state.RUNNING), count(state.WAITING))
