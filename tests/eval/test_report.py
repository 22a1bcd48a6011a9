"""The trainer's final report: every eval the preset names is scored from the artifact file, logged with the
records' labels and eval times, and the last (phased TTT) is the number result.json reports."""

from __future__ import annotations

import json
import re

import pytest

from pgolf.cli import main

PHASED = ["eval.mode=phased-ttt", "eval.report_modes=flat,sliding", "eval.stride=32", "ttt.chunk=64",
          "ttt.batch_docs=10", "ttt.prefix_docs=28", "ttt.phases=2", "ttt.rank=4", "ttt.targets=q,k,v,o,mlp,head",
          "ttt.lr=0.01", "ttt.chunk_tokens=1024", "ttt.warm_start_a=true", "ttt.chains=2", "ttt.alpha=8"]


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory):
    from conftest import TINY_MODEL_SETS
    from pgolf.options import resolve_config
    from pgolf.train.trainer import train

    out = tmp_path_factory.mktemp("phased_run")
    cfg = resolve_config("cpu-smoke", [*TINY_MODEL_SETS, "train.val_loss_every=0", "train.iterations=3", *PHASED],
                         environ={})
    result = train(cfg, tiny_data, out, echo=None)
    return tiny_data, out, result


def test_log_carries_every_eval_with_its_time_and_the_final_is_phased_ttt(run):
    _, out, result = run
    log = (out / "log.txt").read_text()
    pattern = r"^{} val_loss:(\d+\.\d{{8}}) val_bpb:(\d+\.\d{{8}}) eval_time:\d+ms$"
    found = {label: re.search(pattern.format(label), log, re.M)
             for label in ("quantized", "quantized_sliding_window", "quantized_ttt_phased")}
    assert all(found.values()), log
    starts = [found[label].start() for label in ("quantized", "quantized_sliding_window", "quantized_ttt_phased")]
    assert starts == sorted(starts)
    assert float(found["quantized_ttt_phased"].group(2)) == pytest.approx(result["val_bpb"], abs=1e-8)
    assert "ttpp: phase:1/2" in log and "ttpr: phase:2/2" in log
    assert result["eval_mode"] == "phased-ttt" and result["final_eval"] == "quantized_ttt_phased"
    labels = [e["label"] for e in result["evals"]]
    assert labels == ["quantized", "quantized_sliding_window", "quantized_ttt_phased"]
    assert [e["final"] for e in result["evals"]] == [False, False, True]
    assert result["evals"][-1]["val_bpb"] == result["val_bpb"]
    assert all(e["eval_time_ms"] > 0 for e in result["evals"])
    assert {"scoring_flat", "scoring_sliding", "scoring"} <= set(result["phases"])
    phases = result["evals"][-1]["report"]["phases"]
    assert [p["docs"] for p in phases] == [14, 28] and all(p["seconds"] > 0 for p in phases)
    assert result["evals"][-1]["val_bpb"] != result["evals"][0]["val_bpb"]


def test_eval_cli_reproduces_the_final_number(run, capsys):
    data, out, result = run
    assert main(["eval", str(out / "artifact.pgolf"), "--data", str(data), "--json", "--threads", "1"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["mode"] == "phased-ttt" and scored["val_bpb"] == result["val_bpb"]


def test_legality_cli_passes_phased_ttt_on_the_artifact(run, capsys):
    data, out, _ = run
    rc = main(["legality", str(out / "artifact.pgolf"), "--data", str(data), "--mode", "phased-ttt",
               "--tokens", "1200", "--perturbations", "3", "--threads", "1"])
    table = capsys.readouterr().out
    assert rc == 0, table
    assert "adapt calls" in table
