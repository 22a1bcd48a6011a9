"""`pgolf leaderboard`: configurations of run directories and packed records folders, sorted by mean val_bpb, with
the significance rule against the row above; bad input as one error line (exit 2)."""

from __future__ import annotations

import json

from _submit_fakes import VAL_BYTES, VAL_TOKENS, fake_run, fake_val_split

from pgolf.cli import main
from pgolf.submit.leaderboard import build_leaderboard

LN2 = 0.6931471805599453


def _records(folder, name, bpbs, total=1_234_567):
    folder.mkdir(parents=True)
    seeds = [{"seed": i, "val_bpb": b, "val_loss": b * LN2 * VAL_BYTES / VAL_TOKENS, "val_tokens": VAL_TOKENS,
              "val_bytes": VAL_BYTES, "bytes_total": total, "log": f"train_seed{i}.log",
              "val_split": fake_val_split()} for i, b in enumerate(bpbs)]
    (folder / "submission.json").write_text(json.dumps({"name": name, "bytes_total": total, "seed_results": seeds}))
    return folder


def _rows(text):
    return [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]


def test_sorted_with_rule_against_row_above(tmp_path, capsys):
    # config A: ~1.100 (3 seeds); config B: ~1.110 (3 seeds, 0.01 BPB = 0.026 nats worse); records: ~1.1005
    a = [fake_run(tmp_path / "runs" / "a", s, b) for s, b in ((1, 1.1000), (2, 1.1010), (3, 1.0990))]
    b = [fake_run(tmp_path / "runs" / "b", s, v, sets=("train.iterations=9",))
         for s, v in ((1, 1.1100), (2, 1.1110), (3, 1.1090))]
    rec = _records(tmp_path / "records" / "2026_X", "My record", [1.1004, 1.1006])
    out = tmp_path / "lb.md"
    assert main(["leaderboard", *map(str, b), *map(str, a), str(rec), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    rows = _rows(out.read_text())
    assert len(rows) == 3
    assert rows[0].startswith("| 1 | cpu-smoke train.iterations=") and "| 3: 1, 2, 3 | 1.100000 |" in rows[0]
    assert rows[1].startswith("| 2 | My record | 2: 0, 1 | 1.100500 | 0.000141 | 1,234,567 |")
    assert "| no: " in rows[1] and "p = " in rows[1]  # 0.0005 BPB above: not 0.005 nats
    assert rows[2].startswith("| 3 | cpu-smoke train.iterations=9 |") and "| **yes**:" in rows[2]
    assert "| 45,000 |" in rows[2]


def test_runs_on_different_val_splits_are_ranked_apart(tmp_path, capsys):
    """The #1854 / #2127 situation: a score on a smaller val set is not better, only different."""
    official = [fake_run(tmp_path / "official", s, 1.10 + s / 1000) for s in (1, 2)]
    small = [fake_run(tmp_path / "small", s, 1.05 + s / 1000, val_split=fake_val_split(False, "77" * 32))
             for s in (1, 2)]
    assert main(["leaderboard", *map(str, official + small)]) == 0
    text = capsys.readouterr().out
    assert "scored on 2 different val splits" in text
    assert "### val split 5a5a5a5a5a5a (official)" in text and "### val split 777777777777" in text
    rows = _rows(text)
    assert len(rows) == 2 and all(r.startswith("| 1 |") for r in rows)  # each ranked first in its own table
    assert "val split: 5 docs" in text or "777777777777" in text
    assert main(["stats", *map(str, small), "--against", *map(str, official)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 different val splits" in err[0]
    assert main(["compare", *map(str, official + small)]) == 0
    out = capsys.readouterr().out
    assert out.count("*") >= 2 and "Scored on 2 different val splits" in out  # a best per split


def test_one_seed_cannot_be_tested_and_parent_folders_expand(tmp_path, capsys):
    fake_run(tmp_path / "runs", 1, 1.2)
    fake_run(tmp_path / "runs", 2, 1.3, sets=("train.iterations=9",))
    assert main(["leaderboard", str(tmp_path / "runs")]) == 0
    rows = _rows(capsys.readouterr().out)
    assert len(rows) == 2 and "1.200000" in rows[0] and "n/a (needs 2+ seeds" in rows[1]
    entries = build_leaderboard([tmp_path / "runs"], group_by="preset")
    assert len(entries) == 1 and len(entries[0].runs) == 2


def test_bad_input_is_one_error_line(tmp_path, capsys):
    def one_error(args, *words):
        assert main(["leaderboard", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("pgolf: error:"), err
        for w in words:
            assert w in err[0]

    one_error([str(tmp_path / "missing")], "missing", "no such")
    (tmp_path / "empty").mkdir()
    one_error([str(tmp_path / "empty")], "neither a run directory nor a records folder")
    run = fake_run(tmp_path / "r", 1, 1.2)
    (run / "result.json").unlink()
    (run / "log.txt").unlink()
    (run / "log.txt").write_text("no score here\n")
    one_error([str(run)], "no final score")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "submission.json").write_text('{"name": "x"}')
    one_error([str(bad)], "seed_results")


def test_records_folder_of_logs_is_one_entry(tmp_path, capsys):
    official = tmp_path / "official"
    official.mkdir()
    for seed, bpb in ((1, 1.05), (2, 1.06)):
        run = fake_run(tmp_path / "src", seed, bpb)
        (official / f"train_seed{seed}.log").write_text((run / "log.txt").read_text())
    fake_run(tmp_path / "mine", 7, 1.2)
    assert main(["leaderboard", str(tmp_path / "mine" / "seed7"), str(official)]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows[0].startswith("| 1 | official | 2: 1, 2 | 1.055000 |") and "| 45,000 |" in rows[0]
    assert rows[1].startswith("| 2 | cpu-smoke | 1: 7 | 1.200000 | n/a |")
