"""Progress where people look: periodic lines when stderr is not a terminal, a tqdm bar when it is."""

from __future__ import annotations

import io

import pytest

from pgolf.progress import LineProgress, progress_bar, track


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_every_period_with_rate_and_eta_then_a_last_line():
    out, clock = io.StringIO(), Clock()
    bar = LineProgress(1000, "scoring flat", "tok", out, every=30.0, clock=clock)
    clock.now += 10
    bar.update(100)  # before the period: nothing
    assert out.getvalue() == ""
    clock.now += 30
    bar.update(300)  # 400 tokens in 40 s: 10 tok/s, 600 left: 60 s
    clock.now += 10
    bar.update(100)  # within the next period: nothing
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines == ["scoring flat: 400/1,000 tok (40%), 40s elapsed, 10.0 tok/s, ETA 60s",
                     "scoring flat: 500/1,000 tok (50%), 50s elapsed, 10.0 tok/s, done"]


def test_a_short_phase_prints_nothing_and_an_unknown_total_prints_counts():
    out, clock = io.StringIO(), Clock()
    bar = LineProgress(10, "quick", "doc", out, every=30.0, clock=clock)
    bar.update(10)
    bar.close()
    assert out.getvalue() == ""
    bar = LineProgress(None, "ranks", "tok", out, every=0.0, clock=clock)
    clock.now += 4
    bar.update(8)
    assert out.getvalue() == "ranks: 8 tok, 4s elapsed, 2.0 tok/s\n"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_tqdm_a_file_gets_lines_and_disabled_gets_nothing(monkeypatch):
    from tqdm import tqdm

    bar = progress_bar(5, "x", "it", file=Terminal())
    assert isinstance(bar, tqdm)
    bar.close()
    monkeypatch.setenv("PGOLF_PROGRESS_SECONDS", "7")
    bar = progress_bar(5, "x", "it", file=io.StringIO())
    assert isinstance(bar, LineProgress) and bar.every == 7.0
    out = io.StringIO()
    silent = progress_bar(5, "x", "it", enabled=False, file=out)
    silent.update(5)
    silent.close()
    assert out.getvalue() == ""


def test_track_yields_every_item_and_reports_them(monkeypatch):
    monkeypatch.setenv("PGOLF_PROGRESS_SECONDS", "0")
    out = io.StringIO()
    assert list(track(["a", "b", "c"], "files", "file", file=out)) == ["a", "b", "c"]
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("files: 1/3 file (33%)") and lines[-1].startswith("files: 3/3 file (100%)")
    assert lines[-1].endswith("done")


def test_scoring_reports_progress_lines_when_stderr_is_a_file(tiny_config, monkeypatch, capsys):
    """score_stream with progress on: with stderr captured (not a terminal), plain lines, the last one at 100%."""
    import numpy as np
    import torch

    from pgolf.eval.evaluate import FlatMode, score_stream
    from pgolf.model.gpt import GPT

    monkeypatch.setenv("PGOLF_PROGRESS_SECONDS", "0")
    cfg = tiny_config()
    model = GPT(cfg.model)
    tokens = np.random.default_rng(0).integers(2, cfg.model.vocab_size, 2049).astype(np.uint16)
    res = score_stream(model, tokens, np.ones(2048, dtype=np.int64), FlatMode(256), batch_tokens=512,
                       device=torch.device("cpu"), progress=True)
    err = capsys.readouterr().err.splitlines()
    assert res.tokens == 2048
    assert err and all(line.startswith("scoring flat: ") for line in err)
    assert err[-1].startswith("scoring flat: 2,048/2,048 tok (100%)") and err[-1].endswith("done")
    assert "\r" not in "".join(err)


@pytest.mark.parametrize("bad", ["soon", "-3"])
def test_a_bad_period_falls_back_or_clamps(monkeypatch, bad):
    monkeypatch.setenv("PGOLF_PROGRESS_SECONDS", bad)
    bar = progress_bar(1, "x", "it", file=io.StringIO())
    assert bar.every == (30.0 if bad == "soon" else 0.0)


def test_the_period_variable_is_not_a_config_override():
    from pgolf.config_sources import env_overrides

    assert env_overrides({"PGOLF_PROGRESS_SECONDS": "5", "PGOLF_TRAIN_SEED": "7"}) == [("train", "seed", "7")]

