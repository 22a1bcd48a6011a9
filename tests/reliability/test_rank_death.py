"""A rank that dies or hangs under torchrun (issue 15): the whole run ends within a bounded time with a clear message.

Two CPU gloo ranks under `python -m torch.distributed.run`. The death is injected with pgolf.runtime's test hook
(PGOLF_TEST_RANK_EXIT=RANK:N: that rank leaves with os._exit(1) at its N-th collective), so the trainer is
unmodified; a hang (a rank alive but silent) is bounded by the process group's timeout (PGOLF_DIST_TIMEOUT).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY_MODEL_SETS

pytestmark = pytest.mark.slow
BOUND_S = 60

SCRIPT = r'''
import os, sys, time
import torch
from pgolf.runtime import launch_env
from pgolf.errors import PgolfError
from pgolf.runtime import init_distributed

torch.set_num_threads(1)
ctx = init_distributed(launch_env(), "cpu")
try:
    for i in range(20):
        if ctx.rank == 1 and os.environ.get("HANG_AT") == str(i):
            time.sleep(300)  # alive, but never joins the collective
        t = ctx.all_reduce_sum(torch.ones(4))
        assert float(t[0]) == ctx.world_size
    print(f"rank {ctx.rank}: finished", flush=True)
except PgolfError as exc:
    print(f"pgolf: error: {exc}", file=sys.stderr, flush=True)
    os._exit(2)
'''


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], env_extra: dict[str, str], cwd: Path) -> tuple[int, str, str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGOLF_")}
    env.update(env_extra, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_port()), *args]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=BOUND_S + 60)
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start


def worker_tracebacks(stderr: str) -> int:
    """Tracebacks in stderr other than torchrun's own (its launcher raises ChildFailedError when a worker fails)."""
    lines = stderr.splitlines()
    return sum(1 for i, line in enumerate(lines) if "Traceback" in line
               and not any("torch/distributed/run.py" in nxt for nxt in lines[i + 1:i + 8]))


def test_dead_rank_ends_the_collectives_with_one_line(tmp_path):
    (tmp_path / "job.py").write_text(SCRIPT)
    code, out, err, seconds = torchrun(["job.py"], {"PGOLF_TEST_RANK_EXIT": "1:3"}, tmp_path)
    assert seconds < BOUND_S and code != 0, (code, seconds, err[-2000:])
    assert "rank 1: PGOLF_TEST_RANK_EXIT=1:3: exiting at collective 3" in err
    survivor = [line for line in err.splitlines() if line.startswith("pgolf: error: rank 0/2:")]
    assert len(survivor) == 1 and "another rank exited or stopped answering" in survivor[0], err[-3000:]
    assert "finished" not in out
    assert worker_tracebacks(err) == 0, err[-3000:]


def test_hung_rank_times_out(tmp_path):
    (tmp_path / "job.py").write_text(SCRIPT)
    code, out, err, seconds = torchrun(["job.py"], {"HANG_AT": "2", "PGOLF_DIST_TIMEOUT": "4"}, tmp_path)
    assert seconds < BOUND_S and code != 0, (code, seconds, err[-2000:])
    survivor = [line for line in err.splitlines() if line.startswith("pgolf: error: rank 0/2:")]
    assert len(survivor) == 1 and "failed" in survivor[0], err[-3000:]


@pytest.fixture(scope="module")
def dead_rank_training(tiny_data, tmp_path_factory):
    """`pgolf train` (tiny model, 50 steps) under torchrun, rank 1 dying at its 6th collective (step 3 or so)."""
    run_dir = tmp_path_factory.mktemp("rank_death") / "run"
    sets = [a for s in TINY_MODEL_SETS for a in ("--set", s)]
    args = ["-m", "pgolf", "train", "--preset", "cpu-smoke", *sets, "--set", "train.iterations=50",
            "--data", str(tiny_data), "--run-dir", str(run_dir)]
    code, out, err, seconds = torchrun(args, {"PGOLF_TEST_RANK_EXIT": "1:6"}, Path.cwd())
    return run_dir, code, out, err, seconds


def test_pgolf_train_with_a_dead_rank_stops(dead_rank_training):
    run_dir, code, out, err, seconds = dead_rank_training
    assert seconds < BOUND_S and code != 0, (code, seconds, err[-3000:])
    assert "rank 1: PGOLF_TEST_RANK_EXIT=1:6: exiting at collective 6" in err
    assert "rank 0/2: all_reduce failed: another rank exited or stopped answering" in err, err[-3000:]
    assert not (run_dir / "result.json").exists() and not (run_dir / "artifact.pgolf").exists()


def test_pgolf_train_survivor_prints_no_traceback(dead_rank_training):
    run_dir, code, out, err, seconds = dead_rank_training
    assert worker_tracebacks(err) == 0, err[-3000:]
