"""Where and how a process runs: device, process group, autocast and phase timers, shared by training and eval.

Under `torchrun` every process gets RANK/WORLD_SIZE/LOCAL_RANK; we start NCCL on CUDA and gloo on CPU. Without
torchrun nothing is initialised and the collectives below become no-ops, so the trainer and the evaluator have one
code path. Every second of a run is attributed to a named phase (`PhaseClock`) and written to result.json: the
challenge's budget covers training only (compile warm-up excluded, as in modded-nanogpt issue #19 and the baseline)
and evaluation has its own, so recording every phase makes the accounting auditable.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable, Iterator

import torch
import torch.distributed as dist

from pgolf.config import LaunchEnv
from pgolf.errors import PgolfError


# Test hook (tests/reliability/test_rank_death.py), not a user setting: "RANK:N" makes rank RANK leave with
# os._exit(1) at its N-th collective through DistContext, as a crashed or killed process would.
RANK_EXIT_HOOK = "PGOLF_TEST_RANK_EXIT"
# Seconds a collective may wait for the other ranks before the process group gives up (init_process_group's
# timeout); torchrun stops the other ranks as soon as one exits, this bounds a rank that hangs without exiting.
DIST_TIMEOUT_ENV = "PGOLF_DIST_TIMEOUT"
DEFAULT_DIST_TIMEOUT_S = 1800


@dataclass
class DistContext:
    """Rank, world size and device of this process."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    _collectives: int = field(default=0, repr=False, compare=False)

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
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise PgolfError(f"rank {self.rank}/{self.world_size}: {op} failed: another rank exited or stopped "
                             f"answering ({first}); the run stops, the last checkpoint is intact") from None

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
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA (as the records train and score), plain float32 on CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


DEVICES = ("auto", "cpu", "cuda")  # `train.device`: auto picks CUDA when present
COMPILE_MODES = ("auto", "on", "off")  # `train.compile`: auto compiles on CUDA only


def should_compile(mode: str, device: torch.device) -> bool:
    """Whether `train.compile=mode` compiles the model on `device` (compiling on CPU is slow to start)."""
    return mode == "on" or (mode == "auto" and device.type == "cuda")


def choose_device(preference: str, local_rank: int = 0) -> torch.device:
    """`auto` picks CUDA when present, else CPU."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise PgolfError("train.device=cuda but CUDA is not available on this machine")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(env: LaunchEnv, device_preference: str = "auto") -> DistContext:
    """Start the process group when launched by torchrun (NCCL on CUDA, gloo on CPU)."""
    device = choose_device(device_preference, env.local_rank)
    if env.distributed and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
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
