"""The worker pool: how the machine is split into slots, and the keeper that gives a run exactly one SIGTERM, also
when its worker is killed with SIGKILL (no training here: the children are small Python scripts)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pgolf.errors import PgolfError
from pgolf.train.pool import Slot, exit_reason, launch, plan_slots, stop

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the keeper's parent-death signal is Linux's prctl")


def test_cpu_slots_split_the_cores_evenly():
    slots = plan_slots(2, device="cpu", cores=(0, 1, 2, 3, 4), warn=None)
    assert [s.cores for s in slots] == [(0, 1), (2, 3, 4)] and all(not s.gpus for s in slots)
    assert slots[1].env({})["OMP_NUM_THREADS"] == "3" and "CUDA_VISIBLE_DEVICES" not in slots[1].env({})
    assert slots[1].describe() == "worker 1 (cpu cores 2-4)"
    assert plan_slots(1, device="cpu", cores=(0, 1), warn=None) == [Slot(0)]  # one worker: the machine, unpinned


def test_more_workers_than_cores_share_them_with_a_note(capsys):
    slots = plan_slots(3, device="cpu", cores=(0, 1), warn=sys.stderr)
    assert [s.cores for s in slots] == [(0,), (1,), (0,)]
    assert "3 workers share 2 core(s)" in capsys.readouterr().err


def test_gpu_slots_hand_out_g_gpus_each_and_refuse_too_many():
    slots = plan_slots(4, device="auto", nproc_per_node=2, gpus=(0, 1, 2, 3, 4, 5, 6, 7), cores=tuple(range(16)))
    assert [s.gpus for s in slots] == [(0, 1), (2, 3), (4, 5), (6, 7)]
    env = slots[1].env({})
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3" and env["OMP_NUM_THREADS"] == "2"  # 4 cores, 2 processes
    with pytest.raises(PgolfError, match=r"--workers 3 x --nproc-per-node 2 needs 6 GPU\(s\); this process sees 4"):
        plan_slots(3, nproc_per_node=2, gpus=(0, 1, 2, 3))
    with pytest.raises(PgolfError, match="shows no GPU"):
        plan_slots(1, device="cuda", gpus=())


# A stand-in for the trainer: counts the SIGTERMs it gets (a second one would stop it without a checkpoint).
COUNTER = textwrap.dedent("""
    import signal, sys, time
    out = sys.argv[1]
    got = []
    signal.signal(signal.SIGTERM, lambda *a: got.append(1))
    open(out + ".ready", "w").close()
    deadline = time.time() + 30
    while not got and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)  # more signals would arrive now
    open(out, "w").write(str(len(got)))
    sys.exit(143 if got else 0)
""")


def _wait_for(path, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_the_keeper_passes_on_one_sigterm_and_its_exit_status(tmp_path):
    out = tmp_path / "count"
    proc = launch([sys.executable, "-c", COUNTER, str(out)], Slot(0), tmp_path / "console.txt")
    _wait_for(tmp_path / "count.ready")
    for _ in range(3):
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.02)
    code = stop(proc)
    assert out.read_text() == "1" and code == 143 and exit_reason(code) == "stopped by SIGTERM"
    assert (tmp_path / "console.txt").read_text().startswith("$ ")


def test_a_run_gets_sigterm_when_its_worker_is_killed(tmp_path):
    """A worker process (with threads, as the pool's are) launches a run and is SIGKILLed: the run still gets one
    SIGTERM, its cue to checkpoint and stop, instead of running on as an orphan."""
    out = tmp_path / "count"
    worker = textwrap.dedent(f"""
        import sys, threading, time
        from pathlib import Path
        from pgolf.train.pool import Slot, launch
        def run():
            launch([sys.executable, "-c", {COUNTER!r}, {str(out)!r}], Slot(0), Path({str(tmp_path)!r}) / "c.txt").wait()
        threads = [threading.Thread(target=run)] + [threading.Thread(target=time.sleep, args=(60,)) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", worker], env=dict(os.environ))
    _wait_for(tmp_path / "count.ready")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _wait_for(out, timeout=10)
    assert out.read_text() == "1"
