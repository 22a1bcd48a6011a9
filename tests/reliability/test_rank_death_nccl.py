"""A rank that dies or hangs under torchrun on NCCL (two CUDA devices; skipped otherwise): the run must end in bounded
time, non-zero, with a line naming the rank that failed, and no worker traceback
(docs/RELIABILITY.md#dead-and-hung-ranks). The gloo version is test_rank_death.py; what pgolf fixes before NCCL
starts is test_nccl_policy.py.

Not yet run on a machine with two GPUs: the bounds below are what pgolf's design promises (torchrun stops the
survivors within its 30 s SIGTERM-to-SIGKILL grace; the NCCL watchdog ends a hung collective at PGOLF_DIST_TIMEOUT
without a debug dump first), so a failure here is a measurement to write down in docs/RELIABILITY.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import TINY_MODEL_SETS
from test_rank_death import torchrun, worker_tracebacks

pytestmark = [
    pytest.mark.gpu, pytest.mark.slow,
    pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices (NCCL between two ranks)"),
]
DEAD_BOUND_S = 90  # torchrun: 0.1 s to notice, then SIGTERM and SIGKILL 30 s later; plus start-up
HANG_TIMEOUT_S = 10
HANG_BOUND_S = HANG_TIMEOUT_S + 80

SCRIPT = r'''
import os, sys, time
import torch
from pgolf.runtime import launch_env
from pgolf.errors import PgolfError
from pgolf.runtime import NCCL_ENV_DEFAULTS, init_distributed

ctx = init_distributed(launch_env(), "cuda")
print(f"rank {ctx.rank}: " + " ".join(f"{k}={os.environ.get(k)}" for k in NCCL_ENV_DEFAULTS), flush=True)
try:
    for i in range(20):
        if ctx.rank == 1 and os.environ.get("HANG_AT") == str(i):
            time.sleep(600)  # alive, but never joins the collective
        t = ctx.all_reduce_sum(torch.ones(4, device=ctx.device))
        assert float(t[0].item()) == ctx.world_size  # waits for the collective, as a training step's sync does
    print(f"rank {ctx.rank}: finished", flush=True)
except PgolfError as exc:
    print(f"pgolf: error: {exc}", file=sys.stderr, flush=True)
    os._exit(2)
'''


def _names_failed_rank(err: str, rank: int) -> bool:
    """pgolf's own line from a survivor, or torchrun's summary of the first failure."""
    return (any(line.startswith("pgolf: error: rank ") for line in err.splitlines())
            or f"rank: {rank} (local_rank: {rank})" in err)


def test_nccl_dead_rank_ends_the_run(tmp_path):
    (tmp_path / "job.py").write_text(SCRIPT)
    code, out, err, seconds = torchrun(["job.py"], {"PGOLF_TEST_RANK_EXIT": "1:3"}, tmp_path)
    print(f"dead rank on NCCL: exit {code} after {seconds:.1f} s")  # the measurement (pytest -s shows it)
    assert seconds < DEAD_BOUND_S and code != 0, (code, seconds, err[-3000:])
    assert "rank 1: PGOLF_TEST_RANK_EXIT=1:3: exiting at collective 3" in err
    assert "TORCH_NCCL_DUMP_ON_TIMEOUT=0" in out  # pgolf's default reached the process group
    assert _names_failed_rank(err, 1), err[-3000:]
    assert "finished" not in out
    assert worker_tracebacks(err) == 0, err[-3000:]


def test_nccl_hung_rank_times_out(tmp_path):
    (tmp_path / "job.py").write_text(SCRIPT)
    code, out, err, seconds = torchrun(["job.py"], {"HANG_AT": "2", "PGOLF_DIST_TIMEOUT": str(HANG_TIMEOUT_S)},
                                       tmp_path)
    print(f"hung rank on NCCL: exit {code} after {seconds:.1f} s")
    assert seconds < HANG_BOUND_S and code != 0, (code, seconds, err[-3000:])
    assert _names_failed_rank(err, 0), err[-3000:]  # rank 0's watchdog ends rank 0 first
    assert "finished" not in out


def test_pgolf_train_on_nccl_with_a_dead_rank_stops(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    sets = [a for s in TINY_MODEL_SETS for a in ("--set", s)]
    args = ["-m", "pgolf", "train", "--preset", "cpu-smoke", *sets, "--set", "train.iterations=50",
            "--set", "train.device=cuda", "--set", "train.compile=off", "--data", str(tiny_data),
            "--run-dir", str(run_dir)]
    code, out, err, seconds = torchrun(args, {"PGOLF_TEST_RANK_EXIT": "1:6"}, Path.cwd())
    print(f"pgolf train, dead rank on NCCL: exit {code} after {seconds:.1f} s")
    assert seconds < DEAD_BOUND_S and code != 0, (code, seconds, err[-3000:])
    assert "rank 1: PGOLF_TEST_RANK_EXIT=1:6: exiting at collective 6" in err
    assert _names_failed_rank(err, 1), err[-3000:]
    assert worker_tracebacks(err) == 0, err[-3000:]
    assert not (run_dir / "result.json").exists() and not (run_dir / "artifact.pgolf").exists()
