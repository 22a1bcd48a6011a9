"""Disk full while a checkpoint is written (docs/RELIABILITY.md#disk-full-during-a-checkpoint): the previous
checkpoint stays intact and resumable, no temporary file is left, the error is one line naming the file, saying "no
space left" and what to do, and the run stops with exit code 2.

The disk is filled by injection, without root: the checkpoint module's `open` returns files that raise
OSError(ENOSPC) part way through a rank file (`enospc_after` of test_disk_faults.py, or a count of opens in a
subprocess), and `Path.write_bytes` raises it part way through the manifest; a real kernel refusal comes from
RLIMIT_FSIZE (EFBIG).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY_MODEL_SETS
from test_disk_faults import enospc_after, file_size_limit, leftovers

from pgolf.errors import PgolfError
from pgolf.options import resolve_config
from pgolf.train import checkpoint as ckpt
from pgolf.train.trainer import train

RUN_SETS = ["train.iterations=8", "train.checkpoint_every=2", "train.save_float=true"]
STATE = {"w": torch.arange(4096, dtype=torch.float32), "opt": {"m": torch.ones(1000)}}


def _commit(run: Path, step: int, state: dict = STATE) -> Path:
    """A checkpoint of `step` as the trainer writes one with one rank: the rank file, then the manifest."""
    name = ckpt.rank_file(step, 0)
    ckpt.write_state(run / name, state, meta={"step": step, "rank": 0})
    ckpt.write_manifest(run, {"step": step, "world_size": 1, "files": [name], "config": {}})
    return run / name


def _fail_manifest_write(monkeypatch, after: int = 10) -> None:
    """`Path.write_bytes` of a checkpoint.json temporary writes `after` bytes, then the disk is full."""
    real = Path.write_bytes

    def full(self, data):
        if not self.name.startswith(f".{ckpt.MANIFEST}."):
            return real(self, data)
        with open(self, "wb") as f:
            f.write(data[:after])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)


def _assert_intact(run: Path, step: int) -> None:
    """checkpoint.json names `step`, its rank file loads (SHA-256 checked), nothing temporary is left."""
    manifest = ckpt.read_manifest(run)
    assert manifest["step"] == step
    state, meta = ckpt.read_state(run / manifest["files"][0])
    assert meta["step"] == step and torch.equal(state["w"], STATE["w"])
    assert leftovers(run) == []


# ------------------------------------------------------------------------------------------------- in-process
def test_disk_full_while_writing_a_rank_file(tmp_path, monkeypatch):
    run = tmp_path / "run"
    _commit(run, 2)
    with enospc_after(monkeypatch, ckpt, 5000):  # the header and part of the tensors fit
        with pytest.raises(PgolfError) as info:
            ckpt.write_state(run / ckpt.rank_file(4, 0), STATE, meta={"step": 4, "rank": 0})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(run / ckpt.rank_file(4, 0))) and "no space left on device" in message
    assert "step 4 was not written" in message and "the last checkpoint, step 2" in message
    assert "free disk space" in message and f"pgolf train --resume {run}" in message
    assert not (run / ckpt.rank_file(4, 0)).exists()
    _assert_intact(run, 2)


def test_disk_full_while_writing_the_manifest(tmp_path, monkeypatch):
    run = tmp_path / "run"
    _commit(run, 2)
    new = run / ckpt.rank_file(4, 0)
    ckpt.write_state(new, STATE, meta={"step": 4, "rank": 0})
    _fail_manifest_write(monkeypatch)
    with pytest.raises(PgolfError) as info:
        ckpt.write_manifest(run, {"step": 4, "world_size": 1, "files": [ckpt.rank_file(4, 0)], "config": {}})
    monkeypatch.undo()
    message = str(info.value)
    assert message.startswith(str(run / ckpt.MANIFEST)) and "no space left on device" in message
    assert "rank files were removed" in message and "the last checkpoint, step 2" in message
    assert not new.exists()  # the uncommitted step's file would only take the space the disk lacks
    _assert_intact(run, 2)


def test_disk_full_at_the_first_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    with enospc_after(monkeypatch, ckpt, 100):
        with pytest.raises(PgolfError, match="no earlier checkpoint exists.*--overwrite"):
            ckpt.write_state(run / ckpt.rank_file(2, 0), STATE, meta={"step": 2, "rank": 0})
    assert not (run / ckpt.MANIFEST).exists() and leftovers(run) == []


def test_file_size_limit_while_writing_a_rank_file(tmp_path):
    """The kernel's own refusal (EFBIG) on the real write path: the same outcome, worded for what it is."""
    run = tmp_path / "run"
    _commit(run, 2)
    size = (run / ckpt.rank_file(2, 0)).stat().st_size
    big = {**STATE, "more": torch.zeros(100_000)}
    with file_size_limit(size + 1000):
        with pytest.raises(PgolfError, match=r"rank0\.pgck: File too large: the checkpoint of step 4 was not"):
            ckpt.write_state(run / ckpt.rank_file(4, 0), big, meta={"step": 4, "rank": 0})
    assert not (run / ckpt.rank_file(4, 0)).exists()
    _assert_intact(run, 2)


# ------------------------------------------------------------------------------------------------- a real run
def _config():
    return resolve_config("cpu-smoke", [*TINY_MODEL_SETS, *RUN_SETS], environ={})


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    torch.set_num_threads(1)
    train(_config(), tiny_data, run, echo=None)
    return run


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = (torch.load(p / "model_fp32.pt", weights_only=True) for p in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ra, rb = (json.loads((p / "result.json").read_text()) for p in (a, b))
    assert (ra["val_bpb"], ra["steps"]) == (rb["val_bpb"], rb["steps"])


def test_training_stops_when_the_manifest_does_not_fit_and_resumes(tiny_data, uninterrupted, tmp_path,
                                                                   monkeypatch):
    """In-process: the 2nd manifest write (step 4) meets a full disk; the run stops; resuming from step 2 ends
    exactly where the uninterrupted run does."""
    run = tmp_path / "run"
    real, calls = Path.write_bytes, []

    def full_at_second(self, data):
        if self.name.startswith(f".{ckpt.MANIFEST}."):
            calls.append(self)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_at_second)
    with pytest.raises(PgolfError, match="checkpoint.json: no space left on device: the checkpoint of step 4"):
        train(_config(), tiny_data, run, echo=None)
    monkeypatch.undo()
    assert ckpt.read_manifest(run)["step"] == 2 and leftovers(run) == []
    assert not (run / ckpt.rank_file(4, 0)).exists() and not (run / "result.json").exists()
    result = train(_config(), tiny_data, run, echo=None, existing="resume")
    assert result["resumed_from"] == [2]
    _same_weights(run, uninterrupted)


# Runs `pgolf train` with a disk that fills during the 2nd checkpoint's rank file (step 4): the file's open gives a
# file that takes 3000 bytes and then raises ENOSPC, as a full disk would.
FULL_DISK_CLI = """import errno, sys
from pgolf.train import checkpoint
opened = []
class Full:
    def __init__(self, f): self.f, self.room = f, 3000
    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.f.write(data)
    def __getattr__(self, name): return getattr(self.f, name)
    def __enter__(self): return self
    def __exit__(self, *exc): self.f.close()
def fake_open(path, mode="r", *args, **kwargs):
    f = open(path, mode, *args, **kwargs)
    opened.append(path)
    return Full(f) if "w" in mode and len(opened) == 2 else f
checkpoint.open = fake_open
from pgolf.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_pgolf_train_on_a_full_disk_stops_with_one_line(tiny_data, uninterrupted, tmp_path):
    run = tmp_path / "run"
    argv = ["train", "--preset", "cpu-smoke", "--data", str(tiny_data), "--run-dir", str(run),
            *(f"--set={s}" for s in [*TINY_MODEL_SETS, *RUN_SETS])]
    proc = subprocess.run([sys.executable, "-c", FULL_DISK_CLI, *argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = err[0]
    assert line.startswith(f"pgolf: error: {run / ckpt.rank_file(4, 0)}: no space left on device"), line
    assert "the last checkpoint, step 2" in line and f"pgolf train --resume {run}" in line
    assert line.removeprefix("pgolf: error: ") in (run / "log.txt").read_text()  # the run's log says it too
    assert leftovers(run) == [] and not (run / ckpt.rank_file(4, 0)).exists()
    assert not (run / "result.json").exists() and not (run / "artifact.pgolf").exists()
    assert ckpt.read_manifest(run)["step"] == 2
    code = subprocess.run([sys.executable, "-m", "pgolf", "train", "--resume", str(run), "--data", str(tiny_data)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert code.returncode == 0, code.stderr[-2000:]
    _same_weights(run, uninterrupted)
