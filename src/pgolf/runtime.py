"""Where and how a process runs: device, process group, autocast and phase timers, shared by training and eval.

Under `torchrun` every process gets RANK/WORLD_SIZE/LOCAL_RANK; we start NCCL on CUDA and gloo on CPU. Without
torchrun nothing is initialised and the collectives below become no-ops, so the trainer and the evaluator have one
code path. Every second of a run is attributed to a named phase (`PhaseClock`) and written to result.json: the
challenge's budget covers training only (compile warm-up excluded, as in modded-nanogpt issue #19 and the baseline)
and evaluation has its own, so recording every phase makes the accounting auditable.

When a rank dies or hangs (docs/RELIABILITY.md#dead-and-hung-ranks) the run must end in bounded time with one line
that names the rank and says what to do (resume from the last checkpoint). On gloo a dead peer closes its sockets,
so the survivors' next collective raises at once and `DistContext._collective` turns that into the line. On NCCL a
dead peer is not noticed by the collective itself: the survivors' kernels wait, and three things bound the wait:

* torchrun: when any worker exits, its agent (polling every 0.1 s) sends SIGTERM to the others and SIGKILL 30 s
  later (torch.distributed.elastic `PContext.close(death_sig, timeout=30)`); a survivor blocked in CUDA never runs a
  Python signal handler, so it ends by SIGKILL, and torchrun's summary names the rank that failed first;
* the NCCL watchdog: a collective that takes longer than the process group's timeout ($PGOLF_DIST_TIMEOUT, default
  30 minutes) tears the process down when TORCH_NCCL_ASYNC_ERROR_HANDLING is 1 (torchrun's default for its workers)
  or 3 (torch's own default): this bounds a rank that hangs while alive;
* the heartbeat monitor (TORCH_NCCL_ENABLE_MONITORING, TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC, default 480 s) kills a
  process whose watchdog thread is itself stuck.

`nccl_env_defaults` fixes the settings pgolf relies on before the NCCL group starts (a user's own value always
wins): teardown on timeout, and no flight-recorder dump on timeout (a user report shows the process ending 8 minutes
after the watchdog's error, spent preparing that dump), so the bound is the timeout itself. Errors that do reach Python
(an aborted communicator's DistBackendError, gloo's connection errors, also in collectives pgolf does not wrap:
DDP's buckets, Muon's reductions, the trainer's flag group) become the same line through `collective_failure`, which
the CLI applies to any RuntimeError that escapes a command. None of the NCCL behaviour is measured yet: it needs a
machine with two GPUs (tests/reliability/test_rank_death_nccl.py, marked gpu).
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable, Iterator, Mapping

import torch
import torch.distributed as dist

from pgolf.errors import PgolfError
from pgolf.runtime_choices import COMPILE_MODES, DEVICES  # noqa: F401  (re-exported; defined torch-free there)



@dataclass(frozen=True)
class LaunchEnv:
    """What torchrun tells each process (RANK, WORLD_SIZE, LOCAL_RANK); world size 1 without torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launch_env(environ: Mapping[str, str] | None = None) -> LaunchEnv:
    """Read torchrun's variables; the only place outside overrides where pgolf looks at the environment."""
    environ = os.environ if environ is None else environ
    try:
        return LaunchEnv(rank=int(environ.get("RANK", 0)), world_size=int(environ.get("WORLD_SIZE", 1)),
                         local_rank=int(environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise PgolfError("environment: RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None


# Test hook (tests/reliability/test_rank_death.py), not a user setting: "RANK:N" makes rank RANK leave with
# os._exit(1) at its N-th collective through DistContext, as a crashed or killed process would.
RANK_EXIT_HOOK = "PGOLF_TEST_RANK_EXIT"
# Seconds a collective may wait for the other ranks before the process group gives up (init_process_group's
# timeout); torchrun stops the other ranks as soon as one exits, this bounds a rank that hangs without exiting.
DIST_TIMEOUT_ENV = "PGOLF_DIST_TIMEOUT"
DEFAULT_DIST_TIMEOUT_S = 1800
# What pgolf sets for NCCL unless the environment already has a value (module docstring; torch's names,
# docs: pytorch.org/docs/stable/torch_nccl_environment_variables.html).
NCCL_ENV_DEFAULTS = {
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "3",  # a timed-out collective ends the process (torch's documented default)
    "TORCH_NCCL_DUMP_ON_TIMEOUT": "0",  # no debug dump first: the process ends at the timeout, not minutes later
}
# Text of the errors gloo and NCCL raise as plain RuntimeError when a peer is gone (DistError is recognised by type).
_COLLECTIVE_MARKERS = ("gloo/transport", "Connection closed by peer", "Connection reset by peer", "NCCL error",
                       "ProcessGroupNCCL", "NCCL communicator was aborted")


def nccl_env_defaults(environ=None) -> dict[str, str]:
    """Set each of NCCL_ENV_DEFAULTS in `environ` (default os.environ) that is not set yet; returns what was set.
    Must run before the NCCL process group is created: ProcessGroupNCCL reads these when it starts."""
    environ = os.environ if environ is None else environ
    applied = {k: v for k, v in NCCL_ENV_DEFAULTS.items() if k not in environ}
    environ.update(applied)
    return applied


def collective_failure(exc: BaseException) -> PgolfError | None:
    """The one line for an exception that means a collective failed because another rank exited or hung (a
    torch.distributed DistError, or gloo/NCCL's RuntimeError text), in a distributed run; None for anything else
    (a bug keeps its traceback)."""
    try:
        env = launch_env()
    except PgolfError:
        return None
    if not env.distributed or not isinstance(exc, RuntimeError):
        return None
    text = str(exc)
    if not (isinstance(exc, dist.DistError) or any(marker in text for marker in _COLLECTIVE_MARKERS)):
        return None
    first = (text.strip().splitlines() or [type(exc).__name__])[0][:200]
    return PgolfError(f"rank {env.rank}/{env.world_size}: a collective failed: another rank exited or stopped "
                      f"answering ({first}); {_WHAT_TO_DO}")


_WHAT_TO_DO = ("the run stops; the last checkpoint is intact: once every rank can run, continue with "
               "pgolf train --resume RUN_DIR --data DATA_DIR")


@dataclass
class DistContext:
    """Rank, world size and device of this process."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    _collectives: int = field(default=0, repr=False, compare=False)
    _failed: bool = field(default=False, repr=False, compare=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def _collective(self, op: str, run: Callable[[], None]) -> None:
        """Run one collective; a peer that died or hung turns into one PgolfError line naming this rank."""
        self._collectives += 1
        hook = os.environ.get(RANK_EXIT_HOOK, "")
        if hook and hook == f"{self.rank}:{self._collectives}":
            print(f"pgolf: rank {self.rank}: {RANK_EXIT_HOOK}={hook}: exiting at collective "
                  f"{self._collectives} ({op})", file=sys.stderr, flush=True)
            os._exit(1)
        try:
            run()
        except (RuntimeError, dist.DistError) as exc:  # gloo: connection closed or timed out; NCCL: watchdog
            raise self._failure(op, exc) from None

    def _failure(self, op: str, exc: BaseException) -> PgolfError:
        self._failed = True
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return PgolfError(f"rank {self.rank}/{self.world_size}: {op} failed: another rank exited or stopped "
                          f"answering ({first}); {_WHAT_TO_DO}")

    def wait(self, work, op: str) -> None:
        """Wait for an async collective's handle (`dist.all_reduce(..., async_op=True)`, e.g. on a side group): a
        peer that died or hung is the same one line as in `_collective`. (Not counted by the test hook.)"""
        try:
            work.wait()
        except (RuntimeError, dist.DistError) as exc:
            raise self._failure(op, exc) from None

    def barrier(self) -> None:
        if self.distributed:
            self._collective("barrier", dist.barrier)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` across ranks in place (identity with one process)."""
        if self.distributed:
            self._collective("all_reduce", lambda: dist.all_reduce(tensor, op=dist.ReduceOp.SUM))
        return tensor

    def all_reduce_max(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            self._collective("all_reduce", lambda: dist.all_reduce(tensor, op=dist.ReduceOp.MAX))
        return tensor

    def any(self, flag: bool) -> bool:
        """True on every rank if `flag` is true on any rank (the wall-clock stop decision)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        return bool(self.all_reduce_max(t).item() > 0)

    def shutdown(self) -> None:
        """Destroy the process group, except after a collective failed (here or, in flight, anywhere): tearing down
        communicators whose peer is gone can block (NCCL) and the process is about to exit anyway."""
        in_flight = sys.exc_info()[1]
        if self._failed or (in_flight is not None and collective_failure(in_flight) is not None):
            return
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA (as the records train and score), plain float32 on CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def should_compile(mode: str, device: torch.device) -> bool:
    """Whether `train.compile=mode` compiles the model on `device` (compiling on CPU is slow to start)."""
    return mode == "on" or (mode == "auto" and device.type == "cuda")


def choose_device(preference: str, local_rank: int = 0, setting: str = "train.device") -> torch.device:
    """`auto` picks CUDA when present, else CPU; `setting` names the option the preference came from (errors)."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise PgolfError(f"{setting}=cuda but CUDA is not available on this machine")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(env: LaunchEnv, device_preference: str = "auto", setting: str = "train.device") -> DistContext:
    """Start the process group when launched by torchrun (NCCL on CUDA, gloo on CPU)."""
    device = choose_device(device_preference, env.local_rank, setting)
    if env.distributed and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        if backend == "nccl":
            nccl_env_defaults()
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=dist_timeout_s()), **kwargs)
    return DistContext(rank=env.rank, world_size=env.world_size, local_rank=env.local_rank, device=device)


def dist_timeout_s() -> float:
    """The process group's collective timeout: $PGOLF_DIST_TIMEOUT seconds, else 30 minutes."""
    raw = os.environ.get(DIST_TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_DIST_TIMEOUT_S
    except ValueError:
        raise PgolfError(f"{DIST_TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if not value > 0:
        raise PgolfError(f"{DIST_TIMEOUT_ENV}={raw!r} must be positive")
    return value


class PhaseClock:
    """Accumulates wall-clock seconds per phase; `sync` (e.g. torch.cuda.synchronize) runs at phase edges."""

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self._sync = sync or (lambda: None)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.seconds.items()}

