"""The trainer end to end: run directory contract, warm-up restore, wall clock, exact re-scoring, torchrun."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_MODEL_SETS
from pgolf.train.trainer import train


def _train_losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train_loss"]) for r in rows if "train_loss" in r]


def test_run_directory_contract(tiny_data, tiny_config, tmp_path):
    cfg = tiny_config()
    result = train(cfg, tiny_data, tmp_path / "run", echo=None)
    run = tmp_path / "run"
    for name in ("config.json", "log.txt", "metrics.jsonl", "artifact.pgolf", "result.json"):
        assert (run / name).is_file(), name
    on_disk = json.loads((run / "result.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    for key in ("artifact", "val_loss", "val_bpb", "artifact_bytes", "code_bytes", "total_bytes", "steps",
                "train_seconds", "phases", "seed", "preset", "data", "versions"):
        assert key in on_disk, key
    assert on_disk["steps"] == 6
    assert on_disk["total_bytes"] == on_disk["artifact_bytes"] + on_disk["code_bytes"]
    assert on_disk["artifact_bytes"] == (run / "artifact.pgolf").stat().st_size
    assert on_disk["val_bytes"] == on_disk["data"]["val_bytes"]  # every val token scored, denominator exact
    for phase in ("startup", "warmup", "training", "validation", "quantization", "compression", "decompression",
                  "scoring"):
        assert phase in on_disk["phases"], phase
    log = (run / "log.txt").read_text()
    assert "step:6/6 train_loss:" in log and "step_avg:" in log
    assert f"final_int8_zlib_roundtrip_exact val_loss:{on_disk['val_loss']:.8f} val_bpb:{on_disk['val_bpb']:.8f}" in log
    assert json.loads((run / "config.json").read_text())["model"]["num_layers"] == 2
    losses = _train_losses(run)
    assert [s for s, _ in losses] == [1, 2, 3, 4, 5, 6]
    assert losses[-1][1] < losses[0][1]  # it learns


RECORD_OPTIONS = ["model.mlp_activation=leaky_relu2", "model.rope_dims=8", "model.ln_scale=true",
                  "model.xsa_last_n=1", "model.ortho_init=true", "model.skip_gates=true",
                  "optim.muon_ns=polar_express", "optim.muon_row_norm=true", "optim.muon_weight_decay=0.095",
                  "optim.muon_wd_taper=true",
                  "optim.ema_decay=0.9", "train.warmdown_frac=0.5", "train.min_lr=0.1", "model.smear_gate=true",
                  "model.num_loops=1", "model.loop_start=0", "model.loop_end=0", "model.loop_start_frac=0.5",
                  "model.attn_gate=sparse", "model.attn_gate_scale=0.5", "model.parallel_mode=two_lane",
                  "model.parallel_start=1"]


@pytest.mark.parametrize("options", [[], RECORD_OPTIONS], ids=["baseline", "record-options"])
def test_warmup_is_restored_exactly(tiny_data, tiny_config, tmp_path, options):
    """Warm-up steps compile and then restore weights, optimizer state, EMA and loader: the run is unchanged."""
    a = train(tiny_config("train.warmup_steps=0", *options), tiny_data, tmp_path / "a", echo=None)
    b = train(tiny_config("train.warmup_steps=3", *options), tiny_data, tmp_path / "b", echo=None)
    assert _train_losses(tmp_path / "a") == _train_losses(tmp_path / "b")
    assert a["val_bpb"] == b["val_bpb"]


def test_wallclock_cap_stops_early(tiny_data, tiny_config, tmp_path):
    result = train(tiny_config("train.iterations=100000", "train.max_wallclock_seconds=1.0",
                               "train.val_loss_every=0"), tiny_data, tmp_path / "run", echo=None)
    assert 0 < result["steps"] < 100000
    assert "stopping_early: wallclock_cap" in (tmp_path / "run" / "log.txt").read_text()
    assert result["train_seconds"] < 5.0


def test_eval_in_a_new_process_reproduces_the_score(tiny_data, tiny_config, tmp_path):
    result = train(tiny_config(), tiny_data, tmp_path / "run", echo=None)
    out = subprocess.run([sys.executable, "-m", "pgolf", "eval", str(tmp_path / "run" / "artifact.pgolf"),
                          "--data", str(tiny_data), "--json", "--threads", "1"],
                         capture_output=True, text=True, check=True)
    scored = json.loads(out.stdout)
    assert scored["val_bpb"] == result["val_bpb"]
    assert scored["val_loss"] == result["val_loss"]
    assert scored["total_bytes"] == result["total_bytes"]


def _torchrun(nproc: int, data: Path, run_dir: Path, extra: list[str]) -> None:
    sets = [f"--set={s}" for s in TINY_MODEL_SETS + extra]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "pgolf", "train", "--preset", "cpu-smoke", "--data", str(data), "--run-dir", str(run_dir), *sets]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("clip", [[], ["optim.grad_clip_norm=1e9", "optim.grad_clip_scope=rank"],
                                  ["optim.muon_sharded=true"]], ids=["ddp", "per-rank-reduction", "sharded-muon"])
def test_two_processes_match_one_process(tiny_data, tmp_path, clip):
    """Same global batch and seed: 2 gloo ranks x 1 micro-step log the same losses as 1 rank x 2 micro-steps. With
    per-rank clipping (at a norm that never binds) the ranks reduce their gradients themselves instead of DDP, and
    must still agree; with sharded Muon the matrices' gradients travel in bf16 (close, not equal)."""
    extra = ["train.iterations=20", "train.val_loss_every=0", "train.warmup_steps=0", *clip]
    _torchrun(1, tiny_data, tmp_path / "one", extra)
    _torchrun(2, tiny_data, tmp_path / "two", extra)
    one, two = _train_losses(tmp_path / "one"), _train_losses(tmp_path / "two")
    assert [s for s, _ in one] == list(range(1, 21)) == [s for s, _ in two]
    assert "world_size:2 grad_accum_steps:1" in (tmp_path / "two" / "log.txt").read_text()
    assert "world_size:1 grad_accum_steps:2" in (tmp_path / "one" / "log.txt").read_text()
    tolerance = 2e-3 if "optim.muon_sharded=true" in clip else 1e-5
    for (_, a), (_, b) in zip(one, two):
        assert a == pytest.approx(b, rel=tolerance, abs=1e-6)


def test_training_time_is_counted_without_validation(tiny_data, tiny_config, tmp_path):
    result = train(tiny_config("train.val_loss_every=0"), tiny_data, tmp_path / "run", echo=None)
    assert result["train_seconds"] > 0 and result["phases"]["training"] > 0


@pytest.mark.parametrize("calib", ["train", "self"])
def test_mixed_gptq_export_with_budget_fit(tiny_data, tiny_config, tmp_path, calib):
    """GPTQ calibration, LQER, QAT and the fitter run inside the trainer; the shipped file is what is scored."""
    result = train(tiny_config("quant.scheme=mixed", "quant.gptq=true", f"quant.calib={calib}",
                               "quant.calib_batches=2", "quant.calib_seqs=2", "quant.calib_seq_len=8",
                               "quant.passthrough_numel=1024", "quant.lqer_top=1", "quant.fit=true",
                               "quant.codec=lzma", "quant.qat_bits=6", "quant.qat_start_frac=0.5",
                               "quant.gptq_reserve_seconds=0.5"), tiny_data, tmp_path / "run", echo=None)
    quant = result["quant"]
    assert quant["calibration"]["source"] == calib and quant["calibration"]["matrices"] > 0
    assert quant["fit"]["actual_bytes"] == result["artifact_bytes"] <= quant["fit"]["budget_bytes"]
    assert set(quant["fit"]["plan"]) >= {"embed", "mlp.fc"}
    assert quant["fit"]["kept_plan"] and quant["fit"]["changes"] == []  # a tiny model's plan fits: kept as given
    assert quant["calibration"]["distinct_hessians"] < quant["calibration"]["matrices"]  # Q/K/V share one
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "gptq_calibration:" in log and "budget_fit: kept the explicit plan" in log
    assert math.isfinite(result["val_bpb"])


def test_periodic_validation_on_a_subset_says_so(tiny_data, tiny_config, tmp_path):
    """A periodic val_bpb over train.val_max_tokens is marked on its line; the final score is over the whole split."""
    result = train(tiny_config("train.val_max_tokens=512", "train.val_loss_every=3"), tiny_data, tmp_path / "run",
                   echo=None)
    log = (tmp_path / "run" / "log.txt").read_text()
    periodic = [line for line in log.splitlines() if line.startswith("step:") and " val_bpb:" in line]
    assert periodic and all("val_subset_tokens:" in line for line in periodic)
    assert "periodic validation scores the first 512 val tokens only" in log
    assert result["val_bytes"] == result["data"]["val_bytes"]  # the final score is not a subset
