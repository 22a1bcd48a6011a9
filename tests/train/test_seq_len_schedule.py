"""Progressive training context with stage lengths that divide the micro-batch, not train_seq_len: PR #2014's
1,024 -> 2,048 -> 3,072 (98,304 tokens per micro-batch), here scaled to 32 -> 64 -> 96 with 192."""

from __future__ import annotations

import pytest

from pgolf.errors import PgolfError
from pgolf.optim.schedule import parse_seq_len_schedule, seq_len_at

SCHEDULE = ["train.train_seq_len=96", "train.micro_batch_tokens=192", "train.train_batch_tokens=384",
            "train.seq_len_schedule=0:32,0.1:64", "train.seq_len_full_frac=0.7", "train.iterations=10",
            "train.val_loss_every=0", "train.warmup_steps=1"]


def test_stages_need_only_divide_the_micro_batch():
    stages = parse_seq_len_schedule("0:1024,0.1:2048", 3072, 98_304)
    assert stages == [(0.0, 1024), (0.1, 2048)]
    assert [seq_len_at(p, stages, 3072, 0.7) for p in (0.0, 0.09, 0.1, 0.69, 0.7, 1.0)] == [1024, 1024, 2048,
                                                                                          2048, 3072, 3072]
    assert parse_seq_len_schedule("0:40", 96) == [(0.0, 40)]  # no micro-batch given: only the ranges are checked
    for bad, words in (("0:40", "length 40 does not divide train.micro_batch_tokens=192"),
                       ("0:192", "0 < length <= train_seq_len=96")):
        with pytest.raises(PgolfError, match=words) as err:
            parse_seq_len_schedule(bad, 96, 192)
        assert "\n" not in str(err.value)


def test_a_length_that_does_not_divide_the_micro_batch_is_refused_before_training(tiny_config, tiny_data, tmp_path):
    from pgolf.train.trainer import train

    with pytest.raises(PgolfError, match="does not divide train.micro_batch_tokens=192"):
        train(tiny_config(*SCHEDULE, "train.seq_len_schedule=0:40,0.1:64"), tiny_data, tmp_path / "r", echo=None)


@pytest.mark.parametrize("loader", ["sequential", "packed"])
def test_training_follows_a_schedule_whose_stages_do_not_divide_train_seq_len(tiny_config, tiny_data, tmp_path,
                                                                            monkeypatch, loader):
    """Every step's rows (sequential) or segment cut (packed) have the stage's length: 32 at step 0 (progress 0),
    64 from 10%, 96 from 70%; the warm-up compiles all three first. The shuffled loader refuses schedules."""
    import pgolf.train.trainer as trainer

    seen = []
    make = trainer.make_loader

    def recording(*args, **kw):
        inner = make(*args, **kw)
        next_batch = inner.next_batch

        def record(global_tokens, seq_len, accum):
            batch = next_batch(global_tokens, seq_len, accum)
            rows = batch.x.shape if batch.segments is None else (1, batch.segments.max_seqlen)
            seen.append((seq_len, tuple(rows)))
            return batch
        inner.next_batch = record
        return inner

    monkeypatch.setattr(trainer, "make_loader", recording)
    run = tmp_path / loader
    result = trainer.train(tiny_config(*SCHEDULE, f"train.loader={loader}"), tiny_data, run, echo=None)
    assert result["steps"] == 10
    lengths = [32] + [64] * 6 + [96] * 3  # progress = step / 10 without a wall clock
    steps = seen[-2 * len(lengths):][::2]  # two micro-batches per step; the warm-up's come first
    assert [s for s, _ in steps] == lengths
    assert {s for s, _ in seen[:-2 * len(lengths)]} == {32, 64, 96}
    for seq_len, shape in steps:
        assert shape == ((192 // seq_len, seq_len) if loader == "sequential" else (1, seq_len))
    log = (run / "log.txt").read_text()
    assert "seq_len:32 step:0 " in log and "seq_len:64 step:1 " in log and "seq_len:96 step:7 " in log
    with pytest.raises(PgolfError, match="shuffled loader"):
        tiny_config(*SCHEDULE, "train.loader=shuffled")


def test_rewarm_multiplier_matches_pr_2014s_rule():
    """PR #2014: from the step the length switched at (k = 0), scale *= min(max((k + 1) / N, 0), 1)."""
    from pgolf.optim.schedule import rewarm_multiplier

    def reference(step, start, n):
        if start is None or n <= 0:
            return 1.0
        return min(max((step - start + 1) / max(n, 1), 0.0), 1.0)

    for start in (None, 0, 5, 40):
        for n in (0, 1, 4, 32):
            for step in range(0, 80, 3):
                assert rewarm_multiplier(step, start, n) == reference(step, start, n)
    assert [rewarm_multiplier(s, 5, 4) for s in range(5, 10)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_the_lr_rewarms_after_each_switch(tiny_config, tiny_data, tmp_path):
    """Switches at steps 1 and 7 (the schedule above); with a 3-step re-warm the LR multiplier of steps 1-3 and
    7-9 is 1/3, 2/3, 1 of the same run's without it; the switch at step 0 (the first length) re-warms nothing."""
    import json

    from pgolf.train.trainer import train

    def lr_muls(*extra):
        run = tmp_path / str(len(list(tmp_path.iterdir())))
        train(tiny_config(*SCHEDULE, "train.train_log_every=1", *extra), tiny_data, run, echo=None)
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [r["lr_mul"] for r in rows if "train_loss" in r]

    plain, rewarmed = lr_muls(), lr_muls("train.seq_change_warmup_steps=3")
    assert len(plain) == len(rewarmed) == 10
    ratios = [r / p for r, p in zip(rewarmed, plain)]
    assert ratios == pytest.approx([1, 1 / 3, 2 / 3, 1, 1, 1, 1, 1 / 3, 2 / 3, 1])
