"""`pgolf ablate`: flips techniques both ways and tabulates real runs."""

from __future__ import annotations

import pytest

from conftest import TINY_MODEL_SETS
from pgolf.cli import main
from pgolf.options import resolve_config
from pgolf.errors import PgolfError
from pgolf.train.ablate import TOGGLES, flip


def test_flip_turns_techniques_off_in_the_record_and_on_in_the_baseline():
    record = resolve_config("record", environ={})
    baseline = resolve_config("baseline", environ={})
    for name in TOGGLES:
        off, label = flip(record, name)
        on, label_on = flip(baseline, name)
        assert label_on == f"+ {name}"
        flipped = resolve_config("baseline", on, environ={})
        assert TOGGLES[name].is_on(flipped)
        if TOGGLES[name].is_on(record):
            assert label == f"- {name}"
            assert not TOGGLES[name].is_on(resolve_config("record", off, environ={}))
    with pytest.raises(PgolfError, match="unknown technique"):
        flip(record, "warp_drive")


def test_ablate_writes_a_table_of_real_runs(tiny_data, tmp_path, capsys):
    sets = [f"--set={s}" for s in TINY_MODEL_SETS] + ["--set=train.val_loss_every=0"]
    assert main(["ablate", "--preset", "cpu-smoke", "--toggle", "xsa,ema", "--data", str(tiny_data), "--run-dir",
                 str(tmp_path / "ab"), "--max-steps", "3", *sets]) == 0
    table = (tmp_path / "ab" / "ablation.md").read_text()
    assert "| preset |" in table and "| + xsa |" in table and "| + ema |" in table
    assert (tmp_path / "ab" / "01-with-xsa" / "result.json").is_file()
    assert table in capsys.readouterr().out


@pytest.mark.slow  # four real trainings, two of them as `pgolf train` processes (torch import each): ~20-40 s
def test_ablate_with_two_workers_gives_the_same_table(tiny_data, tmp_path):
    """--workers 2: each variant a `pgolf train` child on its own core; at a fixed thread count (train.threads=1
    in TINY_MODEL_SETS) the table's scores are those of one process, bit for bit."""
    from pgolf.train.ablate import ablate

    sets = [*TINY_MODEL_SETS, "train.val_loss_every=0", "train.iterations=3"]
    one = ablate("cpu-smoke", ["xsa"], tiny_data, tmp_path / "one", sets=sets, echo=None)
    two = ablate("cpu-smoke", ["xsa"], tiny_data, tmp_path / "two", sets=sets, echo=None, workers=2)
    rows = lambda table: [line.split("|")[1:5] for line in table.splitlines() if line.startswith("| ")]  # noqa: E731
    assert rows(one) == rows(two) and len(rows(one)) == 3  # header, preset, + xsa: label, settings, val_bpb, delta
    assert (tmp_path / "two" / "01-with-xsa" / "console.txt").is_file()
