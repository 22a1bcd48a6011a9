"""Checkpoints and resume (pgolf/train/checkpoint.py, docs/RELIABILITY.md): a run killed at any point continues
bit for bit on CPU; signals write a checkpoint; damaged checkpoints, diverged runs and taken run directories each
end with one clear line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_MODEL_SETS
from pgolf.cli import main
from pgolf.errors import PgolfError
from pgolf.options import resolve_config
from pgolf.train import checkpoint as ckpt
from pgolf.train.trainer import Trainer, TrainingDiverged, train

pytestmark = pytest.mark.usefixtures("one_thread")

RUN_SETS = ["train.iterations=10", "train.checkpoint_every=2", "train.save_float=true"]
# A run whose steps sleep first, so that a signal can be sent while it trains (the numbers are unchanged).
SLOW_CLI = """import sys, time
from pgolf.train import trainer
step = trainer.Trainer._step
def slow(self, *args, **kwargs):
    time.sleep(float(sys.argv[1]))
    return step(self, *args, **kwargs)
trainer.Trainer._step = slow
from pgolf.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _config(*extra: str):
    return resolve_config("cpu-smoke", [*TINY_MODEL_SETS, *RUN_SETS, *extra], environ={})


def _cli_sets(*extra: str) -> list[str]:
    return [f"--set={s}" for s in [*TINY_MODEL_SETS, *RUN_SETS, *extra]]


def _train_records(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "train_loss" in r]


def _assert_same_run(a: Path, b: Path) -> None:
    """Bitwise: the float weights, the artifact's bytes, the score, and every logged training loss."""
    wa = torch.load(a / "model_fp32.pt", weights_only=True)
    wb = torch.load(b / "model_fp32.pt", weights_only=True)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name
    ra, rb = (json.loads((p / "result.json").read_text()) for p in (a, b))
    if ra["code_bytes"] == rb["code_bytes"]:  # the artifact records code_bytes: equal unless pgolf's source changed
        assert (a / "artifact.pgolf").read_bytes() == (b / "artifact.pgolf").read_bytes()
    assert (ra["val_loss"], ra["val_bpb"], ra["steps"]) == (rb["val_loss"], rb["val_bpb"], rb["steps"])
    assert [(r["step"], r["train_loss"]) for r in _train_records(a)] == \
        [(r["step"], r["train_loss"]) for r in _train_records(b)]


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory) -> Path:
    """The uninterrupted run every resumed run must reproduce."""
    run = tmp_path_factory.mktemp("reference") / "run"
    train(_config(), tiny_data, run, echo=None)
    return run


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path.name} appeared: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < end, f"no {path.name} after {timeout}s"
        time.sleep(0.01)


def _slow_train(run: Path, data: Path, seconds: float = 0.3) -> subprocess.Popen:
    cmd = [sys.executable, "-c", SLOW_CLI, str(seconds), "train", "--preset", "cpu-smoke", "--data", str(data),
           "--run-dir", str(run), *_cli_sets()]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


# ---------------------------------------------------------------------------------------------- the container
def test_container_round_trips_every_kind_of_state(tmp_path):
    state = {
        "f32": torch.randn(3, 4), "bf16": torch.randn(5).to(torch.bfloat16), "scalar": torch.tensor(7.5),
        "empty": torch.zeros(0, 3), "flags": torch.tensor([True, False]), "i64": torch.arange(4),
        "opt": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"betas": (0.9, 0.95), "lr": 1e-3}]},
        "numpy": np.random.get_state(), "pcg": np.random.Generator(np.random.PCG64([1, 2])).bit_generator.state,
        "perms": [np.arange(5, dtype=np.int64)[::-1]], "none": None, "__reserved": 1, "nan": float("inf"),
    }
    ckpt.write_state(tmp_path / "c.pgck", state, meta={"step": 3})
    back, meta = ckpt.read_state(tmp_path / "c.pgck")
    assert meta == {"step": 3}
    for key in ("f32", "bf16", "scalar", "empty", "flags", "i64"):
        assert back[key].dtype == state[key].dtype and torch.equal(back[key], state[key]), key
    assert back["opt"]["state"][0]["step"].item() == 3.0 and back["opt"]["param_groups"][0]["betas"] == (0.9, 0.95)
    assert back["numpy"][0] == "MT19937" and np.array_equal(back["numpy"][1], state["numpy"][1])
    assert back["pcg"] == state["pcg"] and np.array_equal(back["perms"][0], state["perms"][0])
    assert back["none"] is None and back["__reserved"] == 1 and back["nan"] == float("inf")
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary name, nothing left behind


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "magic"])
def test_container_refuses_damaged_files(tmp_path, damage):
    path = tmp_path / "c.pgck"
    ckpt.write_state(path, {"w": torch.randn(64)})
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[:len(raw) // 2]
    elif damage == "flip":
        raw[len(raw) // 2] ^= 0x40
    elif damage == "empty":
        raw = bytearray()
    else:
        raw[:8] = b"PK\x03\x04xxxx"
    path.write_bytes(bytes(raw))
    with pytest.raises(PgolfError, match="checkpoint is damaged") as err:
        ckpt.read_state(path)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------- resume = uninterrupted
class Crash(Exception):
    """Stands in for SIGKILL in-process: the run dies between two steps, after some checkpoint."""


def _crash_after(monkeypatch, calls: int) -> None:
    step, count = Trainer._step, [0]

    def dying(self, *args, **kwargs):
        count[0] += 1
        if count[0] > calls:
            raise Crash
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_step", dying)


RECORD_LIKE = ["model.mlp_activation=leaky_relu2", "model.xsa_last_n=1", "model.skip_gates=true",
               "optim.muon_ns=polar_express", "optim.muon_row_norm=true", "optim.muon_weight_decay=0.095",
               "optim.muon_wd_taper=true", "optim.ema_decay=0.9", "train.warmdown_frac=0.5", "train.min_lr=0.1",
               "model.num_loops=1", "model.loop_start=0", "model.loop_end=0", "model.loop_start_frac=0.5",
               "train.loader=shuffled", "quant.qat_bits=6", "quant.qat_start_frac=0.6"]
SWA_STAGES = ["optim.swa_every=2", "optim.swa_lr_below=0.9", "train.seq_len_schedule=0:32",
              "train.seq_len_full_frac=0.5", "train.loader=packed", "optim.grad_clip_norm=0.5"]


@pytest.mark.parametrize("options", [[], RECORD_LIKE, SWA_STAGES], ids=["baseline", "record-like", "swa-stages"])
def test_resume_after_a_crash_is_bitwise_the_uninterrupted_run(tiny_data, tmp_path, monkeypatch, options):
    """Killed after step 5 (checkpoint at 4): the resumed run repeats step 5 and ends with the same bytes, with EMA
    or SWA, looping, QAT, the shuffled or packed loader and a sequence-length schedule all mid-flight."""
    whole = tmp_path / "whole"
    train(_config(*options), tiny_data, whole, echo=None)
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        _crash_after(m, calls=2 + 5)  # 2 warm-up steps, then 5 training steps
        with pytest.raises(Crash):
            train(_config(*options), tiny_data, run, echo=None)
    assert json.loads((run / "checkpoint.json").read_text())["step"] == 4
    assert not (run / "artifact.pgolf").exists()
    result = train(_config(*options), tiny_data, run, echo=None, existing="resume")
    assert result["resumed_from"] == [4]
    _assert_same_run(whole, run)
    assert "resumed: step:4/10" in (run / "log.txt").read_text()


def test_a_run_resumed_twice_is_still_the_uninterrupted_run(tiny_data, reference, tmp_path, monkeypatch):
    run = tmp_path / "run"
    for calls, existing in ((2 + 3, "overwrite"), (2 + 3, "resume")):  # dies at step 3, then at step 5
        with monkeypatch.context() as m:
            _crash_after(m, calls=calls)
            with pytest.raises(Crash):
                train(_config(), tiny_data, run, echo=None, existing=existing)
    result = train(_config(), tiny_data, run, echo=None, existing="resume")
    assert result["resumed_from"] == [2, 4]
    _assert_same_run(reference, run)


def test_sigkill_then_cli_resume_matches_the_uninterrupted_run(tiny_data, reference, tmp_path, capsys):
    run = tmp_path / "run"
    proc = _slow_train(run, tiny_data)
    _wait_for(run / "checkpoint.json", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    step = json.loads((run / "checkpoint.json").read_text())["step"]
    assert 2 <= step < 10 and not (run / "result.json").exists()
    assert main(["train", "--resume", str(run), "--data", str(tiny_data)]) == 0
    assert "val_bpb:" in capsys.readouterr().out
    _assert_same_run(reference, run)


CRASH_CLI = """import os, sys
from pgolf.train import trainer
step, calls = trainer.Trainer._step, [0]
def dying(self, *args, **kwargs):
    calls[0] += 1
    if calls[0] > int(os.environ["CRASH_AFTER_CALLS"]):
        os._exit(9)
    return step(self, *args, **kwargs)
trainer.Trainer._step = dying
from pgolf.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_two_ranks_crash_and_resume_bitwise(tiny_data, tmp_path):
    """torchrun, 2 gloo ranks (each holds its own Muon momentum shard): every rank dies after step 5, the run is
    resumed under torchrun, and ends bitwise equal to an uninterrupted 2-rank run."""
    script = tmp_path / "crash.py"
    script.write_text(CRASH_CLI)

    def torchrun(run: Path, *args: str, crash_after: int = 10**9) -> int:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
               "train", "--data", str(tiny_data), *args]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "CRASH_AFTER_CALLS": str(crash_after)}
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600).returncode

    fresh = ["--preset", "cpu-smoke", *_cli_sets()]
    assert torchrun(tmp_path / "whole", *fresh, "--run-dir", str(tmp_path / "whole")) == 0
    run = tmp_path / "run"
    assert torchrun(run, *fresh, "--run-dir", str(run), crash_after=2 + 5) != 0
    manifest = json.loads((run / "checkpoint.json").read_text())
    assert manifest["step"] == 4 and manifest["world_size"] == 2 and len(manifest["files"]) == 2
    assert torchrun(run, "--resume", str(run)) == 0
    _assert_same_run(tmp_path / "whole", run)
    assert "world_size:2" in (run / "log.txt").read_text()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_writes_a_checkpoint_and_exits_nonzero(tiny_data, reference, tmp_path, signum):
    run = tmp_path / "run"
    proc = _slow_train(run, tiny_data)
    _wait_for(run / "checkpoint.json", proc)  # training has started; the handler is in place
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    manifest = json.loads((run / "checkpoint.json").read_text())
    name = signal.Signals(signum).name
    line = f"interrupted by {name} at step:{manifest['step']}/10"
    assert line in (run / "log.txt").read_text() and line in err
    assert f"pgolf train --resume {run}" in err and "Traceback" not in err
    assert not (run / "artifact.pgolf").exists()
    if signum == signal.SIGINT:  # the step the signal came in is the checkpoint, and resuming still matches
        assert main(["train", "--resume", str(run), "--data", str(tiny_data)]) == 0
        _assert_same_run(reference, run)


def test_resume_charges_the_wall_clock_already_spent(tiny_data, tmp_path, monkeypatch):
    cfg = ("train.iterations=100000", "train.max_wallclock_seconds=2.0", "train.val_loss_every=0")
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        _crash_after(m, calls=2 + 5)
        with pytest.raises(Crash):
            train(_config(*cfg), tiny_data, run, echo=None)
    charged = json.loads((run / "checkpoint.json").read_text())["train_ms"] / 1000
    assert charged > 0
    result = train(_config(*cfg), tiny_data, run, echo=None, existing="resume")
    assert 4 < result["steps"] < 100000 and result["resumed_from"] == [4]
    assert 2.0 <= result["train_seconds"] < 2.0 + 5  # the clock carried on from `charged`, it did not restart
    log = (run / "log.txt").read_text()
    assert f"train_time:{1000 * charged:.0f}ms already charged" in log and "stopping_early: wallclock_cap" in log


# ---------------------------------------------------------------------------------------------- refusals
def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pgolf: error: "), err
    return err[0]


def test_a_non_empty_run_directory_needs_resume_or_overwrite(tiny_data, reference, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    argv = ["train", "--preset", "cpu-smoke", "--data", str(tiny_data), "--run-dir", str(run), *_cli_sets()]
    assert main(argv) == 2
    line = _error_line(capsys)
    assert "is not empty" in line and "--resume" in line and "--overwrite" in line
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
    assert main([*argv, "--overwrite", "--resume", str(run)]) == 2
    assert "not allowed with" in _error_line(capsys)
    assert main(["train", "--resume", str(run), "--data", str(tiny_data)]) == 2
    assert "no checkpoint to resume" in _error_line(capsys)
    assert main(["train", "--resume", str(reference), "--data", str(tiny_data), "--seed", "3"]) == 2
    assert "drop --seed" in _error_line(capsys)


def test_overwrite_replaces_the_earlier_run_and_its_checkpoints(tiny_data, reference, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (run / "notes.txt").write_text("mine")
    assert main(["train", "--preset", "cpu-smoke", "--data", str(tiny_data), "--run-dir", str(run), "--overwrite",
                 *_cli_sets("train.iterations=3", "train.checkpoint_every=0")]) == 0
    assert json.loads((run / "result.json").read_text())["steps"] == 3
    assert not (run / "checkpoint.json").exists() and not (run / "checkpoints").exists()
    assert (run / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("damage", ["truncate", "flip", "missing", "manifest"])
def test_a_damaged_checkpoint_is_one_clear_error_on_resume(tiny_data, reference, tmp_path, capsys, damage):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (run / "artifact.pgolf").unlink()
    (run / "result.json").unlink()
    manifest = json.loads((run / "checkpoint.json").read_text())
    rank0 = run / manifest["files"][0]
    if damage == "truncate":
        rank0.write_bytes(rank0.read_bytes()[:-100])
    elif damage == "flip":
        raw = bytearray(rank0.read_bytes())
        raw[len(raw) // 3] ^= 1
        rank0.write_bytes(bytes(raw))
    elif damage == "missing":
        rank0.unlink()
    else:
        (run / "checkpoint.json").write_text((run / "checkpoint.json").read_text()[:50])
    assert main(["train", "--resume", str(run), "--data", str(tiny_data)]) == 2
    line = _error_line(capsys)
    words = {"truncate": "checksum mismatch", "flip": "checksum mismatch", "missing": "is missing",
             "manifest": "not a pgolf checkpoint manifest"}[damage]
    assert words in line and "Traceback" not in line
    assert not (run / "artifact.pgolf").exists() and not (run / "result.json").exists()


def test_resume_refuses_other_data(tiny_data, reference, tmp_path):
    import shutil

    other = tmp_path / "data"
    shutil.copytree(tiny_data, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["splits"]["train"]["files"] = manifest["splits"]["train"]["files"][:-1]
    manifest["splits"]["train"]["tokens"] -= 1
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PgolfError):
        train(_config(), other, reference, echo=None, existing="resume")


# ---------------------------------------------------------------------------------------------- NaN guard
def test_a_non_finite_parameter_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    step = Trainer._step
    calls = [0]

    def poisoned(self, *args, **kwargs):
        calls[0] += 1
        loss = step(self, *args, **kwargs)
        if calls[0] == 2 + 6:  # after training step 6 (a checkpoint step) one Muon matrix holds an Inf
            with torch.no_grad():
                self.base_model.blocks[1].mlp.proj.weight[0, 0] = float("inf")
        return loss

    monkeypatch.setattr(Trainer, "_step", poisoned)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as err:
        train(_config(), tiny_data, run, echo=None)
    message = str(err.value)
    assert "non-finite parameters after step:6/10" in message
    assert "non-finite parameters in group matrix: blocks.1.mlp.proj.weight;" in message
    assert "last good checkpoint is step 4" in message and "no artifact written" in message
    assert json.loads((run / "checkpoint.json").read_text())["step"] == 4  # the poisoned state was never saved
    assert not (run / "artifact.pgolf").exists() and not (run / "result.json").exists()
    assert message in (run / "log.txt").read_text()
    state, _ = ckpt.read_state(run / json.loads((run / "checkpoint.json").read_text())["files"][0])
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_a_learning_rate_that_overflows_exits_2_with_one_line(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--preset", "cpu-smoke", "--data", str(tiny_data), "--run-dir", str(run),
                 *_cli_sets("optim.matrix_lr=1e30", "optim.scalar_lr=1e30")]) == 2
    line = _error_line(capsys)
    assert "training diverged: non-finite train_loss at step:2/10" in line and "group matrix" in line
    assert not (run / "artifact.pgolf").exists() and not (run / "result.json").exists()
