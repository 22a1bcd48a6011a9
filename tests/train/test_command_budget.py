"""`--max-seconds` bounds the whole command (train.max_total_seconds) and a run's final score on CPU covers a bounded
val subset unless the whole split is asked for (eval.max_tokens)."""

from __future__ import annotations

import json

import pytest
import torch

from pgolf.eval.evaluate import CPU_FINAL_TOKENS, final_score_tokens

pytestmark = pytest.mark.usefixtures("one_thread")


def test_final_score_tokens_auto_is_the_whole_split_on_cuda_and_bounded_on_cpu():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert final_score_tokens(-1, cpu) == CPU_FINAL_TOKENS == 131_072
    assert final_score_tokens(-1, cuda) == 0
    assert final_score_tokens(0, cpu) == 0 and final_score_tokens(5000, cuda) == 5000


def test_a_spent_command_budget_stops_training_and_says_so(tiny_config, tiny_data, tmp_path):
    """A budget already spent when training starts: one step, then calibration, export and scoring still run (the
    score is what the budget was for), and the log says the command went over."""
    from pgolf.train.trainer import train

    cfg = tiny_config("train.max_total_seconds=0.001", "train.max_wallclock_seconds=0", "train.iterations=50")
    result = train(cfg, tiny_data, tmp_path / "r", echo=None)
    log = (tmp_path / "r" / "log.txt").read_text()
    assert result["steps"] == 1
    assert "stopping_early: command_budget" in log
    assert "command_budget: 0s (train.max_total_seconds): training stops 0s after the start" in log
    last = [line for line in log.splitlines() if line.startswith("command_budget:")][-1]
    assert "of 0s (train.max_total_seconds), over by" in last


def test_no_budget_no_budget_lines(tiny_config, tiny_data, tmp_path):
    from pgolf.train.trainer import train

    train(tiny_config("train.max_total_seconds=0", "train.iterations=2"), tiny_data, tmp_path / "r", echo=None)
    assert "command_budget" not in (tmp_path / "r" / "log.txt").read_text()


def test_the_final_score_covers_the_first_max_tokens(tiny_config, tiny_data, tmp_path):
    from pgolf.train.trainer import train

    result = train(tiny_config("train.iterations=2", "eval.max_tokens=1000"), tiny_data, tmp_path / "r", echo=None)
    log = (tmp_path / "r" / "log.txt").read_text()
    total = json.loads((tiny_data / "manifest.json").read_text())["splits"]["val"]["tokens"]
    assert f"final score on the first 1,000 of {total:,} val tokens (eval.max_tokens=1000;" in log
    assert result["val_split"]["tokens"] == 1000 and result["val_split"]["full"] is False
    with pytest.raises(Exception, match="eval.max_tokens=-2 must be -1"):
        tiny_config("eval.max_tokens=-2")


def test_the_demo_takes_one_thread_per_free_core(monkeypatch):
    """pgolf run's thread count: cores less the load average, shared by local ranks, at least 1; a request wins."""
    from pgolf.train.pool import cpu_threads

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert cpu_threads(0, local_world_size=1, load=0.1)[0] == 4
    assert cpu_threads(0, local_world_size=1, load=2.6)[0] == 1
    assert cpu_threads(0, local_world_size=1, load=9.0)[0] == 1
    assert cpu_threads(0, local_world_size=2, load=0.0)[0] == 2
    assert cpu_threads(3, local_world_size=2, load=9.0) == (3, "train.threads")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert cpu_threads(0, load=0.0) == (1, "auto: 4 cores, load average 0.0, 4 local rank(s)")
