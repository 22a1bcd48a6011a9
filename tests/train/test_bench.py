"""`pgolf bench`: its figures exist, are consistent with each other, and reach JSON and a markdown row."""

from __future__ import annotations

import json

import pytest

from pgolf.cli import main
from tests.conftest import TINY_MODEL_SETS

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bench_reports_training_eval_and_ttt(tmp_path, capsys):
    out, md = tmp_path / "bench.json", tmp_path / "BENCH.md"
    sets = [a for s in TINY_MODEL_SETS for a in ("--set", s)]
    sets += ["--set", "train.loader=packed", "--set", "eval.mode=lora-ttt", "--set", "eval.ttt_batch_docs=4",
             "--set", "eval.ttt_chains=1", "--set", "eval.ttt_chunk=16"]
    code = main(["bench", "--preset", "cpu-smoke", *sets, "--steps", "2", "--warmup", "1", "--eval-tokens", "1024",
                 "--device", "cpu", "--json", str(out), "--markdown", str(md)])
    assert code == 0
    result = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    train, ev = result["train"], result["eval"]
    assert train["tokens_per_s"] == pytest.approx(train["micro_batch_tokens"] / (train["ms_per_step"] / 1000), rel=0.01)
    # forward + backward of the matrices alone is 6 FLOPs per weight per token; the counted total includes them
    matrices = 2 * (32 * 32 * 2 + 32 * 16 * 2 + 2 * 32 * 64)   # 2 layers: q, o; k, v; MLP up and down (2x)
    assert train["flops_per_step"] >= 6 * matrices * train["micro_batch_tokens"]
    assert train["mfu"] is None  # no known peak for a CPU
    assert ev["flat_tokens_per_s"] > 0 and ev["ttt_mode"] == "lora-ttt" and ev["ttt_tokens_per_s"] > 0
    row = md.read_text().strip()
    assert row.startswith("| cpu-smoke |") and row.count("|") == 13


def test_bench_refuses_bad_counts(capsys):
    assert main(["bench", "--preset", "cpu-smoke", "--steps", "0"]) == 2
    assert "bench:" in capsys.readouterr().err
