"""`pgolf compare`: the table's rows in the order given (or sorted), the best marked, configurations grouped up to
the seed, and bad input as one error line (exit 2)."""

from __future__ import annotations

import json

import pytest
from _submit_fakes import fake_run

from pgolf.cli import main
from pgolf.submit.compare import group_runs
from pgolf.submit.runs import load_run


def _runs(tmp_path):
    return [fake_run(tmp_path / "a", 1, 1.2000), fake_run(tmp_path / "a", 2, 1.1000, artifact_bytes=6_000),
            fake_run(tmp_path / "b", 1, 1.3000, steps=3_000)]


def test_markdown_rows_in_order_best_marked(tmp_path, capsys):
    runs = _runs(tmp_path)
    assert main(["compare", *map(str, runs), "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| run | preset | seed | steps | train s | val_bpb |")
    assert "eval mode" in lines[0] and "artifact bytes" in lines[0] and "total bytes" in lines[0]
    body = [line for line in lines[2:] if line.startswith("|")]
    assert len(body) == 3
    assert lines[-1] == "5a5a5a5a5a5a (official): val split: 50,000 docs, 62,021,846 tokens (tail scored), 151,080,891 " \
        "bytes, tokenizer 4f5e8adb109c, digest 5a5a5a5a5a5a; official: the official sp1024 val split (50,000 documents, 62,021,846 tokens, " \
        "every target scored; tokens, bytes, tokenizer as the records' logs)"  # what the runs were scored on
    assert [str(r) in row for r, row in zip(runs, body)] == [True] * 3
    assert "(best)" in body[1] and "**1.10000000**" in body[1]
    assert "(best)" not in body[0] and "(best)" not in body[2]
    assert "| 6,000 | 46,000 | flat |" in body[1]
    assert "| 3000 | 590.0 | 1.30000000 | +0.200000 |" in body[2]


def test_sorted_text_and_json(tmp_path, capsys):
    runs = _runs(tmp_path)
    assert main(["compare", *map(str, runs), "--sort"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("*") and str(runs[1]) in out[2]
    assert str(runs[0]) in out[3] and str(runs[2]) in out[4]
    assert main(["compare", *map(str, runs), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["best"] for r in rows] == [False, True, False]
    assert rows[2]["delta_best"] == pytest.approx(0.2)


def test_groups_by_config_up_to_seed(tmp_path):
    runs = [load_run(fake_run(tmp_path / "x", s, 1.0 + s / 100)) for s in (1, 2)]
    runs += [load_run(fake_run(tmp_path / "y", s, 1.1, sets=("train.iterations=7",))) for s in (1, 2, 3)]
    groups = group_runs(runs)
    assert [len(g.runs) for g in groups] == [2, 3]
    assert groups[0].label.startswith("cpu-smoke train.iterations=")
    assert groups[1].label == "cpu-smoke train.iterations=7"
    assert [len(g.runs) for g in group_runs(runs, by="preset")] == [5]


def test_bad_input_is_one_error_line(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pgolf: error:") and "missing" in err[0]
    run = fake_run(tmp_path / "r", 1, 1.2)
    (run / "result.json").unlink()
    (run / "log.txt").write_text("step:1/10 train_loss:6.9 train_time:10ms step_avg:10ms\n")
    assert main(["compare", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no final score" in err[0] and str(run) in err[0]
