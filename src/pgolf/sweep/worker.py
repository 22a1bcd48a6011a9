"""The workers of one `pgolf sweep` process: K threads, each with its own slot of the machine (a GPU or G of them,
or a share of the cores: pgolf/train/pool.py), each asking the study for trials until it has `--trials` of them.

`--trials N` is the study's total, not this process's: every worker of every process stops once the study holds N
finished trials (complete, pruned, or failed by the run itself; a trial failed because its worker died does not
count: its retry does). A worker whose N are all finished or running waits for the running ones rather than leave,
so that if one of them turns out dead (no heartbeat for `grace` seconds) it is this worker that runs its retry. Two
workers that ask for the study's last trial at the same moment may both get one: a study can end a trial or two
over N.
"""

from __future__ import annotations

import threading
from typing import TextIO

from pgolf.errors import PgolfError
from pgolf.sweep.study import ERROR, Heartbeat, fail_stale_trials, optuna, progress
from pgolf.sweep.trial import Plan, mark_stale, run_trial
from pgolf.train.pool import Slot, run_threads

MAX_FAILURES_IN_A_ROW = 5  # a worker whose every run fails (a wrong data directory) stops instead of spinning


class Workers:
    """The shared state of one process's workers: the study, what to run, when to stop, one lock for output."""

    def __init__(self, study, plan: Plan, target: int, *, heartbeat_s: float, grace_s: float,
                 echo: TextIO | None) -> None:
        self.study, self.plan, self.target = study, plan, target
        self.heartbeat_s, self.grace_s = heartbeat_s, grace_s
        self.echo = echo
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.errors: list[str] = []

    def say(self, text: str) -> None:
        if self.echo is not None:
            with self.lock:
                print(text, file=self.echo, flush=True)

    def work(self, slot: Slot) -> None:
        try:
            self._work(slot)
        except PgolfError as exc:
            with self.lock:
                self.errors.append(str(exc))
            self.stopping.set()
        except Exception as exc:  # a bug, or the storage failing: the traceback is printed, the others stop
            with self.lock:
                self.errors.append(f"sweep: {slot.describe()} stopped: {type(exc).__name__}: {exc}")
            self.stopping.set()
            raise

    def _work(self, slot: Slot) -> None:
        state = optuna().trial.TrialState
        failures = 0
        while not self.stopping.is_set():
            for number in fail_stale_trials(self.study, self.grace_s):
                mark_stale(self.plan.study_dir, number)
                self.say(f"trial {number}: no heartbeat for over {self.grace_s:.0f} s (its worker died): marked "
                         "failed and queued again")
            now = progress(self.study)
            if now.done >= self.target:
                return
            if now.done + now.running >= self.target:
                self.stopping.wait(min(self.heartbeat_s, 2.0))  # the others are on the last trials
                continue
            trial = self.study.ask()
            with Heartbeat(trial, self.heartbeat_s):
                outcome = run_trial(trial, self.plan, slot, self.stopping, echo=self.echo)
            failures = failures + 1 if outcome.state == "failed" else 0
            try:
                if outcome.state == "complete":
                    self.study.tell(trial, outcome.value)
                elif outcome.state == "pruned":
                    self.study.tell(trial, state=state.PRUNED)
                else:
                    self.study.tell(trial, state=state.FAIL)
            except (ValueError, RuntimeError):  # failed as stale by another worker meanwhile: its retry runs it
                self.say(f"trial {trial.number}: another worker had already marked it failed (no heartbeat for "
                         f"{self.grace_s:.0f} s); its retry counts instead")
                continue
            if outcome.state == "interrupted":
                retry = optuna().storages.RetryHeartbeatStaleTrialCallback()
                retry(self.study, self.study.get_trials(deepcopy=True)[trial.number])
                self.say(f"trial {trial.number}: {outcome.message}; queued again, to resume from its checkpoint")
                return
            self.say(f"trial {trial.number}: {outcome.message}" + self._best())
            if failures >= MAX_FAILURES_IN_A_ROW:
                raise PgolfError(f"sweep: {failures} trials in a row failed on {slot.describe()}; the last: "
                                 f"{trial.user_attrs.get(ERROR) or outcome.message}")

    def _best(self) -> str:
        try:
            best = self.study.best_trial
        except ValueError:
            return ""
        return f"  [best: trial {best.number}, {best.value:.6f}]"


def run_workers(workers: Workers, slots: list[Slot]) -> None:
    """Run one worker thread per slot until the study is done; Ctrl-C or SIGTERM stops every running trial through
    its checkpoint and queues it again (KeyboardInterrupt is raised once they are stopped)."""
    # staggered: the first asks of a fresh study create its first trials one after another
    run_threads([lambda slot=slot: workers.work(slot) for slot in slots], "pgolf-sweep", workers.stopping.set,
                stagger_s=0.2)
    if workers.errors:
        raise PgolfError(workers.errors[0])
