"""benchmarks/gpu_check.sh rehearsed on the CPU (GPU_CHECK_SMOKE=1): every stage runs the same commands, flags and
`--set` fields as on the GPU, on the CPU presets, so a mistake in the script shows here and not in the one GPU run.
The budget: the key stages fit in the script's own clock, which ends before the device call's 540 s.
(benchmarks/gpu_rehearsal.sh runs the same smoke mode under the GPU image's versions; docs/BENCHMARKS.md.)"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
KEY = ("bench-record-train", "bench-baseline-train", "official-baseline", "record-script")
AFTER = ("pytest-gpu", "ngram-hints", "bench-record-eval", "bench-record-nokernels", "profile-record")
NOTES = ("wheels", "synthetic-shards")
CALL_SECONDS = 540  # the device call's timeout the script is run under


def _stage_limits(text: str) -> dict[str, int]:
    return {name: int(limit) for name, limit in re.findall(r"^\s*(?:stage|bench) (\S+) (\d+) ", text, flags=re.M)}


def _image() -> dict[str, str]:
    """benchmarks/gpu_image.txt's assignments (shell syntax, read as `bash` would)."""
    text = (ROOT / "benchmarks" / "gpu_image.txt").read_text()
    return {k: " ".join(shlex.split(v)) for k, v in re.findall(r"^([A-Z_0-9]+)=(.*)$", text, flags=re.M)}


def test_key_numbers_come_first_and_fit_the_budget():
    text = SCRIPT.read_text()
    limits = _stage_limits(text)
    assert list(limits) == [*KEY, *AFTER], limits
    budget = int(re.search(r"GPU_CHECK_BUDGET:-(\d+)", text).group(1))
    assert budget + 10 <= CALL_SECONDS  # the script ends (and writes its summary) before the call is cut
    assert sum(limits[k] for k in KEY) + 30 <= budget, limits  # + env, wheels and shards before them


def test_every_package_the_image_lacks_is_pinned():
    """gpu_check_prepare.sh downloads LACKS at the versions in constraints-dev.txt; a missing pin stops it there."""
    image = _image()
    pins = {line.split("==")[0].lower() for line in (ROOT / "constraints-dev.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    lacks = image["LACKS"].split()
    assert {"brotli", "zstandard", "constriction", "python_minifier", "pytest"} <= set(lacks)
    assert all(p.lower() in pins for p in lacks), set(lacks) - pins
    assert image["TORCH"] and image["TRITON"] and image["PY_TAG"] == image["PYTHON_VERSION"].replace(".", "")[:3]


@pytest.mark.slow
def test_gpu_check_smoke_mode_runs_every_stage(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGOLF_")}
    env.update(GPU_CHECK_SMOKE="1", OUT=str(tmp_path / "out"), PYTHON=sys.executable,
               GPU_CHECK_CARRY=str(tmp_path / "no_carry"))  # CI has no prepared folder: those stages say so
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "out"
    summary = (out / "summary.txt").read_text()
    lines = dict(line.split(": ", 1) for line in summary.splitlines())
    assert set(lines) == {*NOTES, *KEY, *AFTER}, summary
    for name, outcome in lines.items():
        if name in ("wheels", "official-baseline", "record-script"):
            assert outcome.startswith("skipped"), summary  # nothing carried here; CUDA-only scripts
        else:
            log = out / f"{name}.txt"
            assert outcome.startswith("ok"), (name, log.read_text()[-3000:] if log.exists() else summary)
    for name in ("bench-record-train", "bench-baseline-train", "bench-record-eval", "bench-record-nokernels"):
        assert (out / f"{name}.json").exists() and (out / f"{name}.md").exists(), name
        assert (out / f"{name}.txt").read_text().startswith(f"# {name} started "), name
    timeline = (out / "timeline.txt").read_text()
    assert [line.split(":")[0] for line in timeline.splitlines()[:-1]] == [
        n for n in (*KEY, *AFTER) if n not in ("official-baseline", "record-script")], timeline
    assert "aten::" in (out / "profile-record.txt").read_text()
    train = json.loads((out / "bench-record-train.json").read_text())
    assert train["train"]["tokens_per_s"] > 0 and "eval" not in train
    evaluation = json.loads((out / "bench-record-eval.json").read_text())
    assert "train" not in evaluation
    assert evaluation["eval"]["ttt_mode"] == "phased-ttt" and evaluation["eval"]["ttt_tokens_per_s"] > 0
    nokernels = json.loads((out / "bench-record-nokernels.json").read_text())
    assert nokernels["train"]["kernels"] is False
    assert "pgolf paths:" in (out / "env.txt").read_text()


def test_a_spent_budget_skips_the_remaining_stages(tmp_path):
    """With no time left every stage says it was skipped for the budget, and the script still ends cleanly."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGOLF_")}
    env.update(GPU_CHECK_SMOKE="1", OUT=str(tmp_path / "out"), PYTHON=sys.executable, GPU_CHECK_BUDGET="0",
               GPU_CHECK_CARRY=str(tmp_path / "no_carry"))
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = dict(line.split(": ", 1) for line in (tmp_path / "out" / "summary.txt").read_text().splitlines())
    for name in (*KEY, *AFTER):
        if name not in ("official-baseline", "record-script"):
            assert lines[name].startswith("skipped (budget"), (name, lines[name])
