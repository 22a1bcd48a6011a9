"""GPTQ calibration on training data inside the wall clock: `quant.calib_reserve = measured` keeps what the run's own
calibration takes, and result.json says how long producing the artifact took and whether the run fit the cap."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from pgolf.train.calibration import RESERVE_MARGIN, probe_calibration, reserve_seconds
from pgolf.train.trainer import train

CAP = 4.0
HEAVY_CALIBRATION = ["train.iterations=100000", f"train.max_wallclock_seconds={CAP}", "train.val_loss_every=0",
                     "quant.scheme=mixed", "quant.gptq=true", "quant.calib=train", "quant.calib_batches=120",
                     "quant.passthrough_numel=1024", "quant.codec=lzma"]


def test_reserve_seconds():
    q = SimpleNamespace(calib_reserve="fixed", gptq_reserve_seconds=2.0)
    assert reserve_seconds(q, None) == 2.0 and reserve_seconds(q, 10.0) == 2.0
    q.calib_reserve = "measured"
    assert reserve_seconds(q, 10.0) == RESERVE_MARGIN * 10.0 and reserve_seconds(q, 0.1) == 2.0


def test_the_probe_puts_the_loader_back(tiny_config, tiny_data):
    from pgolf.data.loader import make_loader
    from pgolf.model.gpt import GPT
    from pgolf.runtime import DistContext

    cfg = tiny_config("quant.scheme=mixed", "quant.gptq=true", "quant.calib_batches=3")
    model = GPT(cfg.model)
    a, b = (make_loader(cfg, tiny_data, 0, 1) for _ in range(2))
    probe = probe_calibration(model, a, cfg, DistContext(0, 1, 0, torch.device("cpu")))
    assert probe["estimate"] >= probe["first"] > 0 and probe["next"] > 0 and model.training
    args = (cfg.train.train_batch_tokens, cfg.train.train_seq_len, 2)
    assert torch.equal(a.next_batch(*args).x, b.next_batch(*args).x)


def test_measured_reserve_keeps_training_plus_calibration_inside_the_cap(tiny_data, tiny_config, tmp_path):
    """With a calibration of about a second (120 batches) under a 4 s cap: a fixed reserve of 0 runs past the
    cap, the measured one stops training early enough, and both say so in result.json and log.txt."""
    fixed = train(tiny_config(*HEAVY_CALIBRATION, "quant.gptq_reserve_seconds=0"), tiny_data, tmp_path / "fixed",
                  echo=None)
    measured = train(tiny_config(*HEAVY_CALIBRATION, "quant.calib_reserve=measured"), tiny_data,
                     tmp_path / "measured", echo=None)
    for result in (fixed, measured):
        wall = result["wallclock"]
        assert wall["calibration_counts"] and wall["cap_seconds"] == CAP
        assert wall["train_seconds"] == result["train_seconds"]
        assert wall["train_plus_calibration_seconds"] == pytest.approx(
            wall["train_seconds"] + wall["calibration_seconds"], abs=1e-3)
        made = wall["artifact_seconds"]
        assert made["total"] == pytest.approx(made["calibration"] + made["quantization"] + made["compression"],
                                              abs=1e-3)
        assert made["calibration"] == result["quant"]["calibration"]["seconds"] > 0
        assert wall["reserve"] == result["quant"]["calibration"]["reserve"]
    # Training stops after the step that crosses its budget: allow two steps and some timing noise.
    tolerance = 2 * measured["step_avg_ms"] / 1000 + 0.1
    assert fixed["wallclock"]["calibration_seconds"] > tolerance  # big enough for the reserve to matter
    assert fixed["wallclock"]["train_plus_calibration_seconds"] > CAP and not fixed["wallclock"]["within_cap"]
    assert fixed["wallclock"]["reserve"]["seconds"] == 0 and not fixed["wallclock"]["reserve"]["fits"]

    wall, reserve = measured["wallclock"], measured["wallclock"]["reserve"]
    estimate = reserve["probe"]["estimate"]
    assert reserve["mode"] == "measured" and reserve["seconds"] == pytest.approx(RESERVE_MARGIN * estimate, abs=1e-3)
    assert wall["calibration_seconds"] / 4 < estimate < 4 * wall["calibration_seconds"]  # a shared CPU is noisy
    assert wall["train_seconds"] <= CAP - reserve["seconds"] + tolerance
    assert wall["train_plus_calibration_seconds"] <= CAP + tolerance
    log = (tmp_path / "measured" / "log.txt").read_text()
    assert "calib_reserve: measured, keeping" in log and "s used: " in log
    assert "artifact_seconds:" in log
    on_disk = json.loads((tmp_path / "measured" / "result.json").read_text())
    assert on_disk["wallclock"] == json.loads(json.dumps(wall))


def test_a_run_without_calibration_reports_its_artifact_time(tiny_data, tiny_config, tmp_path):
    result = train(tiny_config("train.val_loss_every=0"), tiny_data, tmp_path / "run", echo=None)
    wall = result["wallclock"]
    assert wall["calibration_seconds"] == 0 and not wall["calibration_counts"] and wall["within_cap"] is None
    assert wall["artifact_seconds"]["quantization"] > 0 and "reserve" not in wall
    assert wall["train_plus_calibration_seconds"] == wall["train_seconds"]
