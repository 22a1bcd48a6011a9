"""Experiment tracking (pgolf/train/tracking.py): TensorBoard event files and an offline W&B run hold what
metrics.jsonl and result.json hold, tracking changes no number of the run, and a missing package is one line."""

from __future__ import annotations

import ast
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from pgolf.train.runlog import RunLog
from pgolf.train.tracking import Tracking, record_scalars
from pgolf.train.trainer import train

TRACKED = ["train.tensorboard=true", "train.wandb_project=pgolf-test"]


def _offline_wandb(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """W&B offline, every file it writes under `root`, nothing printed."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(root / name.lower()))


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    """The tiny run twice: with TensorBoard and W&B (offline) on, and with both off."""
    from conftest import TINY_MODEL_SETS
    from pgolf.options import resolve_config

    root = tmp_path_factory.mktemp("tracking")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _offline_wandb(monkeypatch, root)
        tracked = train(resolve_config("cpu-smoke", [*TINY_MODEL_SETS, *TRACKED], environ={}), tiny_data,
                        root / "tracked", echo=None)
    plain = train(resolve_config("cpu-smoke", TINY_MODEL_SETS, environ={}), tiny_data, root / "plain", echo=None)
    return root, tracked, plain


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _train_losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["train_loss"]) for r in _records(run_dir) if "train_loss" in r]


def test_tracking_changes_nothing(runs):
    root, tracked, plain = runs
    assert tracked["val_bpb"] == plain["val_bpb"]
    assert tracked["pre_quant"]["val_bpb"] == plain["pre_quant"]["val_bpb"]
    assert _train_losses(root / "tracked") == _train_losses(root / "plain")
    assert not (root / "plain" / "tensorboard").exists() and not (root / "plain" / "wandb").exists()


def test_tensorboard_events_hold_the_metrics(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, result, _ = runs
    run = root / "tracked"
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()

    def points(tag: str) -> list[tuple[int, float]]:
        return [(e.step, e.value) for e in events.Scalars(tag)]

    f32 = lambda v: float(np.float32(v))  # noqa: E731 - TensorBoard stores float32
    assert points("train/loss") == [(s, f32(v)) for s, v in _train_losses(run)]
    assert [s for s, _ in points("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert points("train/lr_mul") == [(r["step"], f32(r["lr_mul"])) for r in _records(run) if "train_loss" in r]
    assert [s for s, _ in points("train/step_ms")] == [1, 2, 3, 4, 5, 6]
    assert all(v > 0 for _, v in points("train/tokens_per_s"))
    vals = [r for r in _records(run) if "val_bpb" in r and "time_s" in r]
    assert points("val/bpb") == [(r["step"], f32(r["val_bpb"])) for r in vals] and len(vals) == 3
    assert points("final/bpb") == [(6, f32(result["val_bpb"]))]
    for entry in result["evals"]:
        assert points(f"eval/{entry['mode']}/bpb") == [(6, f32(entry["val_bpb"]))]
    assert points("bytes/total") == [(6, f32(result["total_bytes"]))]
    assert points("bytes/code") == [(6, f32(result["code_bytes"]))]
    assert points("bytes/stored/embed")[0][1] > 0


# W&B's run file (run-ID.wandb) is LevelDB's log format after a 7-byte header (":W&B", a 2-byte magic, a version
# byte): 32 KiB blocks of chunks, each a 7-byte header (CRC32, length, type) and a piece of one protobuf `Record`;
# type 1 is a whole record, 2/3/4 its first/middle/last piece. wandb 0.31 ships no Python reader for it.
WANDB_BLOCK = 32 * 1024


def _wandb_records(path: Path):
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pieces = 7, b""
    while pos + 7 <= len(data):
        room = WANDB_BLOCK - pos % WANDB_BLOCK
        if room < 7:  # a block's tail too short for a chunk header is padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            pos += room
            continue
        pieces += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            pieces = b""
            yield record


def _wandb_run(run_dir: Path) -> dict:
    """The offline run's name, config, exit code and history {tag: [(step, value)]}."""
    (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    out: dict = {"history": {}}
    for record in _wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["name"] = record.run.display_name
            out["config"] = {item.key: json.loads(item.value_json) for item in record.run.config.update}
        elif kind == "history":
            step = record.history.step.num
            for item in record.history.item:
                tag = item.key or "/".join(item.nested_key)
                if not tag.startswith("_"):
                    out["history"].setdefault(tag, []).append((step, json.loads(item.value_json)))
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
    return out


def test_wandb_offline_run_holds_the_metrics(runs):
    root, result, _ = runs
    run = root / "tracked"
    wb = _wandb_run(run)
    assert wb["name"] == "tracked" and wb["exit_code"] == 0
    assert wb["config"]["model"]["num_layers"] == 2 and wb["config"]["train"]["wandb_project"] == "pgolf-test"
    history = wb["history"]
    assert history["train/loss"] == _train_losses(run)
    assert history["val/bpb"] == [(r["step"], r["val_bpb"]) for r in _records(run) if "val_bpb" in r and "time_s" in r]
    assert history["final/bpb"] == [(6, result["val_bpb"])]
    assert history["bytes/artifact"] == [(6, result["artifact_bytes"])]


@pytest.mark.parametrize("package", ["tensorboard", "wandb"])
def test_missing_package_is_one_line_before_training(tiny_data, tmp_path, monkeypatch, capsys, package):
    from pgolf.cli import main

    monkeypatch.setitem(sys.modules, package, None)  # `import package` now fails, as when it is not installed
    setting = "train.tensorboard=true" if package == "tensorboard" else "train.wandb_project=p"
    rc = main(["train", "--preset", "cpu-smoke", "--data", str(tiny_data), "--run-dir", str(tmp_path / "run"),
               "--set", setting])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("pgolf: error: ")
    assert f"pip install 'pgolf[{package}]'" in err
    assert not (tmp_path / "run").exists()  # nothing written


class _Recorder:
    def __init__(self) -> None:
        self.points: list[tuple[int, dict]] = []
        self.closed: list[bool] = []

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.points.append((step, values))

    def close(self, failed: bool = False) -> None:
        self.closed.append(failed)


def test_runlog_forwards_records_with_step_time(tmp_path):
    recorder = _Recorder()
    log = RunLog(tmp_path, echo=None)
    log.tracking = Tracking([recorder], batch_tokens=1000)
    log.metric(step=2, train_loss=3.0, time_s=0.5, lr_mul=1.0)
    log.metric(step=4, train_loss=2.0, time_s=1.5, lr_mul=0.5)
    log.metric(step=4, val_loss=1.0, val_bpb=1.5, time_s=1.5, val_tokens=10, full_val=True)
    log.metric(step=4, artifact_bytes=7, code_bytes=3, total_bytes=10, stored_bytes={"embed": 5})
    log.metric(step=4, eval_mode="sliding", val_loss=0.9, val_bpb=1.4, eval_time_ms=12.0)
    log.close(failed=True)
    log.close()  # a second close finishes nothing twice
    assert recorder.points == [
        (2, {"train/loss": 3.0, "train/lr_mul": 1.0, "train/step_ms": 250.0, "train/tokens_per_s": 4000.0}),
        (4, {"train/loss": 2.0, "train/lr_mul": 0.5, "train/step_ms": 500.0, "train/tokens_per_s": 2000.0}),
        (4, {"val/bpb": 1.5, "val/loss": 1.0}),
        (4, {"bytes/artifact": 7.0, "bytes/code": 3.0, "bytes/total": 10.0, "bytes/stored/embed": 5.0}),
        (4, {"eval/sliding/bpb": 1.4, "eval/sliding/loss": 0.9, "eval/sliding/time_ms": 12.0})]
    assert recorder.closed == [True]
    assert record_scalars({"step": 1, "roundtrip": True, "val_loss": 2.0, "val_bpb": 3.0}) == {
        "final/bpb": 3.0, "final/loss": 2.0}
    assert record_scalars({"step": 1, "new_thing": 4, "flag": True}) == {"metrics/new_thing": 4}


def test_a_failed_run_finishes_its_trackers_as_failed(tiny_data, tiny_config, tmp_path, monkeypatch):
    import pgolf.train.tracking as tracking
    from pgolf.errors import PgolfError
    from pgolf.train.trainer import Trainer

    recorder = _Recorder()
    monkeypatch.setattr(tracking, "make_trackers", lambda cfg, run_dir, resume_step=None: [recorder])

    def broken_run(self):
        self.log.metric(step=1, train_loss=1.0, time_s=0.1, lr_mul=1.0)
        raise PgolfError("boom")

    monkeypatch.setattr(Trainer, "run", broken_run)
    with pytest.raises(PgolfError, match="boom"):
        train(tiny_config("train.tensorboard=true"), tiny_data, tmp_path / "run", echo=None)
    assert recorder.closed == [True] and recorder.points[0][0] == 1


def test_tensorboard_resume_hides_the_interrupted_points_and_a_fresh_run_drops_them(tiny_config, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from pgolf.train.tracking import make_trackers

    cfg = tiny_config("train.tensorboard=true")

    def write(resume_step, steps, offset):
        (tracker,) = make_trackers(cfg, tmp_path, resume_step)
        for step in steps:
            tracker.scalars(step, {"train/loss": step + offset})
        tracker.close()

    def points():
        events = EventAccumulator(str(tmp_path / "tensorboard"))
        events.Reload()
        return [(e.step, e.value) for e in events.Scalars("train/loss")]

    write(None, range(1, 7), 0.0)
    write(4, range(4, 7), 10.0)  # resumed from the step-4 checkpoint: steps 4..6 again
    assert points() == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 14.0), (5, 15.0), (6, 16.0)]
    write(None, range(1, 3), 20.0)  # an overwritten run directory starts afresh
    assert points() == [(1, 21.0), (2, 22.0)]


def test_tracking_is_imported_only_inside_functions():
    """The trainer's modules never import tracking, TensorBoard or W&B at module level: a run with tracking off
    (and the submission bundle, which follows imports) never loads them."""
    root = Path(__file__).resolve().parents[2] / "src" / "pgolf" / "train"
    for name in ("trainer.py", "runlog.py", "export.py"):
        tree = ast.parse((root / name).read_text(encoding="utf-8"))
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
        assert not [m for m in names if m.startswith(("pgolf.train.tracking", "wandb", "tensorboard",
                                                      "torch.utils.tensorboard"))], name
