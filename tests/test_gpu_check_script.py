"""benchmarks/gpu_check.sh rehearsed on the CPU (GPU_CHECK_SMOKE=1): every stage runs the same commands, flags and
`--set` fields as on the GPU, on the CPU presets, so a mistake in the script shows here and not in the one GPU run."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STAGES = ("pytest-gpu", "bench-baseline", "bench-record", "synthetic-shards", "official-baseline", "profile-record")


def _stage_limits(text: str) -> dict[str, int]:
    return {name: int(limit) for name, limit in re.findall(r"^\s*stage (\S+) (\d+) ", text, flags=re.M)}


def test_gpu_stage_timeouts_fit_in_eight_minutes():
    limits = _stage_limits(SCRIPT.read_text())
    assert set(limits) == set(STAGES) - {"synthetic-shards"}
    assert sum(limits.values()) <= 450, limits  # + env.txt and the shards: under the 480 s the GPU run has


@pytest.mark.slow
def test_gpu_check_smoke_mode_runs_every_stage(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGOLF_")}
    env.update(GPU_CHECK_SMOKE="1", OUT=str(tmp_path / "out"))
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = (tmp_path / "out" / "summary.txt").read_text()
    lines = dict(line.split(": ", 1) for line in summary.splitlines())
    assert set(lines) == set(STAGES), summary
    for name, outcome in lines.items():
        if name == "official-baseline":
            assert outcome.startswith("skipped"), summary  # CUDA-only
        else:
            assert outcome.startswith("ok"), (name, (tmp_path / "out" / f"{name}.txt").read_text()[-3000:]
                                              if (tmp_path / "out" / f"{name}.txt").exists() else summary)
    for name in ("bench-baseline", "bench-record"):
        assert (tmp_path / "out" / f"{name}.json").exists() and (tmp_path / "out" / f"{name}.md").exists()
    assert "aten::" in (tmp_path / "out" / "profile-record.txt").read_text()
    record = json.loads((tmp_path / "out" / "bench-record.json").read_text())
    assert record["eval"]["ttt_mode"] == "phased-ttt" and record["eval"]["ttt_tokens_per_s"] > 0
