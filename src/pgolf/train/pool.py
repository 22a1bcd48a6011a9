"""A pool of training workers on one machine: K runs at once, each `pgolf train` in its own process, pinned to its
own GPU(s) or its own share of the CPU cores (`pgolf seeds --workers K`, `pgolf ablate --workers K`, `pgolf sweep`).

Each run is a child process (`python -m pgolf train ...`, or `torchrun --nproc_per_node=G` for G GPUs per worker), so
that a run stopped from outside stops through the trainer's own SIGTERM path (finish the step, write a checkpoint,
exit 143) and never leaves a half-written run directory. A child runs under a small keeper process (`_LAUNCHER`) in a
session of its own (a Ctrl-C at the terminal reaches the pool, which stops its runs once, not the runs directly);
the keeper asks Linux for a parent-death signal (prctl(2) PR_SET_PDEATHSIG), so that a worker killed with SIGKILL
still stops its run through the checkpoint path instead of leaving it orphaned, and passes on exactly one SIGTERM.
The keeper pins itself, and so the run and every thread torch starts, to the slot's cores (sched_setaffinity);
OMP_NUM_THREADS says how many there are.

A slot is where a worker runs: GPUs by CUDA_VISIBLE_DEVICES (the visible ones, split G per worker) and the cores
this process may use, split evenly; on CPU a worker with more than one core gets OMP_NUM_THREADS of them. Note that
CPU results depend on the thread count (a matrix product sums in another order), so compare runs at a fixed
`train.threads`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, TextIO

from pgolf.errors import PgolfError

CONSOLE = "console.txt"  # a child's stdout and stderr, in its run directory

# The child's keeper: argv is [ppid, cores, program, args...]. It pins itself (and so the run) to `cores`, asks for
# SIGTERM when its parent dies, starts the run and passes it ONE SIGTERM, however many arrive: the kernel repeats the
# parent-death signal each time the child is handed to another thread of the dying parent, and a second SIGTERM
# stops the trainer at once, without its checkpoint. Its exit status is the run's (128 + N for a signal N).
_LAUNCHER = """\
import ctypes, os, signal, subprocess, sys
ppid, cores = int(sys.argv[1]), sys.argv[2]
if cores and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {int(c) for c in cores.split(",")})
child, asked, sent = None, False, False
def forward(signum, frame):
    global asked, sent
    asked = True
    if child is not None and not sent:
        sent = True
        child.send_signal(signal.SIGTERM)
signal.signal(signal.SIGTERM, forward)
signal.signal(signal.SIGINT, forward)
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != ppid:
    sys.exit(143)
child = subprocess.Popen(sys.argv[3:])
if asked:
    forward(signal.SIGTERM, None)
code = child.wait()
sys.exit(code if code >= 0 else 128 - code)
"""


@dataclass(frozen=True)
class Slot:
    """Where one worker runs its trainings: `gpus` (device ids, empty on CPU) and `cores` (empty: unpinned)."""

    index: int
    gpus: tuple[int, ...] = ()
    cores: tuple[int, ...] = ()

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, self.gpus))
        if self.cores:
            threads = len(self.cores) // max(len(self.gpus), 1)
            env["OMP_NUM_THREADS"] = str(max(threads, 1))
        return env

    def describe(self) -> str:
        where = f"gpu {','.join(map(str, self.gpus))}" if self.gpus else "cpu"
        if self.cores:
            where += f" cores {_ranges(self.cores)}"
        return f"worker {self.index} ({where})"


def _ranges(values: tuple[int, ...]) -> str:
    """(0, 1, 2, 5) -> "0-2,5"."""
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ",".join(parts)


def usable_cores() -> tuple[int, ...]:
    if hasattr(os, "sched_getaffinity"):
        return tuple(sorted(os.sched_getaffinity(0)))
    return tuple(range(os.cpu_count() or 1))


def cpu_threads(requested: int, local_world_size: int | None = None,
                load: float | None = None) -> tuple[int, str]:
    """(torch CPU threads, why) for `pgolf run`'s demo: a positive request as given; 0 = the cores this process can
    have: the machine's cores less the 1-minute load average (other jobs), shared among the local ranks, at least 1.
    On a busy 2-core machine torch's default of one thread per core is an order of magnitude slower than one thread
    (its threads wait for each other while the scheduler runs someone else: 1.0 s against 9-14 s per cpu-smoke step
    at load 4.8, docs/BENCHMARKS.md). Not `pgolf train`'s default: the thread count changes float sums (gradients
    differ by ~5e-9 between 1 and 2 threads), and a run's result must not depend on the machine's load."""
    if requested > 0:
        return requested, "train.threads"
    cores = len(usable_cores())
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if local_world_size is None:
        local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)  # torchrun sets it
    free = max(1, int(cores - load + 0.5))
    threads = max(1, min(cores, free) // max(local_world_size, 1))
    return threads, f"auto: {cores} cores, load average {load:.1f}, {local_world_size} local rank(s)"


def visible_gpus(environ: Mapping[str, str] | None = None) -> tuple[int, ...]:
    """The GPU ids this process may hand out: CUDA_VISIBLE_DEVICES when set, else every device torch sees."""
    environ = os.environ if environ is None else environ
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        ids = [p.strip() for p in listed.split(",") if p.strip()]
        if not all(p.isdigit() for p in ids):
            raise PgolfError(f"CUDA_VISIBLE_DEVICES={listed!r}: the pool hands out GPUs by number; list numbers")
        return tuple(int(p) for p in ids)
    import torch

    return tuple(range(torch.cuda.device_count())) if torch.cuda.is_available() else ()


def plan_slots(workers: int, *, device: str = "auto", nproc_per_node: int = 1, gpus: tuple[int, ...] | None = None,
               cores: tuple[int, ...] | None = None, warn: TextIO | None = sys.stderr) -> list[Slot]:
    """`workers` slots: on CUDA (`device` auto with a GPU, or cuda) `nproc_per_node` GPUs each, refused when there
    are not that many; on CPU the cores split evenly (a worker per core at most; more share, with a note)."""
    if workers < 1 or nproc_per_node < 1:
        raise PgolfError("workers: --workers and --nproc-per-node must be at least 1")
    cores = usable_cores() if cores is None else cores
    if device == "cpu":
        gpus = ()
    elif gpus is None:
        gpus = visible_gpus()
    if device == "cuda" and not gpus:
        raise PgolfError("workers: train.device=cuda, but this machine shows no GPU")
    if gpus:
        need = workers * nproc_per_node
        if need > len(gpus):
            raise PgolfError(f"workers: --workers {workers} x --nproc-per-node {nproc_per_node} needs {need} GPU(s); "
                             f"this process sees {len(gpus)} ({','.join(map(str, gpus))})")
        gpu_sets = [tuple(gpus[i * nproc_per_node:(i + 1) * nproc_per_node]) for i in range(workers)]
    else:
        gpu_sets = [()] * workers
    if workers == 1:
        return [Slot(0, gpu_sets[0], ())]  # one worker: the whole machine, as a plain `pgolf train` would have it
    if workers > len(cores):
        if warn is not None:
            print(f"pgolf: note: {workers} workers share {len(cores)} core(s); each gets one core, some the same one",
                  file=warn)
        core_sets = [(cores[i % len(cores)],) for i in range(workers)]
    else:
        core_sets = [cores[i * len(cores) // workers:(i + 1) * len(cores) // workers] for i in range(workers)]
    return [Slot(i, gpu_sets[i], core_sets[i]) for i in range(workers)]


def train_argv(args: list[str], nproc_per_node: int = 1) -> list[str]:
    """The command of one training: `python -m pgolf train ARGS`, under torchrun for more than one process."""
    if nproc_per_node > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
                "-m", "pgolf", "train", *args]
    return [sys.executable, "-m", "pgolf", "train", *args]


def launch(argv: list[str], slot: Slot, console: Path) -> subprocess.Popen:
    """Start `argv` on `slot`, its output appended to `console`; it gets SIGTERM if this process dies."""
    console.parent.mkdir(parents=True, exist_ok=True)
    with open(console, "ab") as out:
        out.write(f"$ {' '.join(argv)}  # {slot.describe()}\n".encode())
        out.flush()
        return subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(os.getpid()), ",".join(map(str, slot.cores)),
                                 *argv], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=slot.env(), start_new_session=True)


def stop(proc: subprocess.Popen, grace_s: float = 600.0) -> int:
    """SIGTERM a `launch`ed run (the trainer writes a checkpoint and exits), SIGKILL to its whole process group
    after `grace_s`; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the keeper and the run: launch starts a session of their own
            except ProcessLookupError:
                pass
    return proc.wait()


def last_error(console: Path) -> str:
    """The child's own account of why it failed: its last `pgolf: error:` line, else its last line."""
    try:
        lines = [ln.strip() for ln in console.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no output)"
    errors = [ln for ln in lines if ln.startswith("pgolf: error:")]
    line = errors[-1] if errors else (lines[-1] if lines else "(no output)")
    return line.removeprefix("pgolf: error: ")


def exit_reason(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    if code > 128 and code - 128 in signal.Signals._value2member_map_:
        return f"stopped by {signal.Signals(code - 128).name}"
    return f"exit code {code}"


@dataclass
class Job:
    """One training of a pool: `args` of `pgolf train`, writing into `run_dir`; `code` is its exit status."""

    label: str
    args: list[str]
    run_dir: Path
    code: int | None = None
    slot: Slot | None = field(default=None, repr=False)


def run_jobs(jobs: list[Job], slots: list[Slot], *, nproc_per_node: int = 1, echo: TextIO | None = None,
             on_done: Callable[[Job], None] | None = None) -> list[Job]:
    """Run every job, as many at once as there are slots, each on the next free slot; returns `jobs` with their exit
    codes. Ctrl-C (or SIGTERM to this process) stops the running ones through their checkpoint path, then raises
    KeyboardInterrupt: they continue with `pgolf train --resume`."""
    lock, queue = threading.Lock(), list(reversed(jobs))
    running: dict[int, subprocess.Popen] = {}
    stopping = threading.Event()

    def worker(slot: Slot) -> None:
        while True:
            with lock:
                if not queue or stopping.is_set():
                    return
                job = queue.pop()
                job.slot = slot
                if echo is not None:
                    print(f"== {job.label}: {job.run_dir} on {slot.describe()}", file=echo, flush=True)
                running[slot.index] = launch(train_argv(job.args, nproc_per_node), slot, job.run_dir / CONSOLE)
            job.code = running[slot.index].wait()
            with lock:
                running.pop(slot.index, None)
            if on_done is not None:
                on_done(job)

    def interrupted() -> None:
        with lock:
            stopping.set()
            procs = list(running.values())
        for proc in procs:
            stop(proc)

    run_threads([lambda slot=slot: worker(slot) for slot in slots], "pgolf-worker", interrupted)
    return jobs


def run_threads(targets: list[Callable[[], None]], name: str, on_interrupt: Callable[[], None],
                stagger_s: float = 0.0) -> None:
    """Run each target in a thread of its own and wait for all of them. Ctrl-C, or SIGTERM to this process, calls
    `on_interrupt` (which stops them), waits for them to finish, then raises KeyboardInterrupt. The wait is on an
    event per thread, not Thread.join: in Python 3.11 a join interrupted by KeyboardInterrupt can mark a thread that
    is still running as stopped (its lock released by the interrupted join, bpo-45274's fix), and the process would
    then leave without it."""
    done = [threading.Event() for _ in targets]

    def wrapped(target: Callable[[], None], finished: threading.Event) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            finally:
                finished.set()
        return run

    threads = [threading.Thread(target=wrapped(t, e), name=f"{name}-{i}", daemon=True)
               for i, (t, e) in enumerate(zip(targets, done))]

    def wait_all() -> None:
        for finished in done:
            while not finished.wait(0.5):
                pass

    with sigterm_as_interrupt():
        try:
            for i, t in enumerate(threads):
                t.start()
                if stagger_s and i + 1 < len(threads):
                    time.sleep(stagger_s)
            wait_all()
        except KeyboardInterrupt:
            on_interrupt()
            wait_all()
            raise
    for t in threads:
        t.join()


class sigterm_as_interrupt:
    """In the main thread, SIGTERM raises KeyboardInterrupt like Ctrl-C, so the pool stops its children cleanly."""

    def __enter__(self) -> None:
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, _raise_interrupt)

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
