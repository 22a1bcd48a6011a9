"""Flat scoring: every target scored exactly once, sums equal a direct per-token computation, ranks partition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pgolf.errors import PgolfError
from pgolf.eval.bpb import bpb_from_sums
from pgolf.eval.evaluate import flat_windows, score_flat, score_windows


class Bigram(torch.nn.Module):
    """A tiny causal model with the GPT's forward, hidden and head contract, to test the scorer in isolation."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=gen))

    def hidden(self, x):  # the scorers' contract: hidden states, then the head on the scored positions only
        return self.table[x].float()

    def head(self, h):
        return h

    def forward(self, x, y=None, reduction="mean"):
        logits = self.table[x].float()
        if y is None:
            return logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction=reduction)
        return loss.reshape(y.shape) if reduction == "none" else loss


def _direct(model, tokens, target_bytes):
    x = torch.from_numpy(tokens[:-1].astype(np.int64))
    y = torch.from_numpy(tokens[1:].astype(np.int64))
    logp = torch.log_softmax(model.table.detach()[x].double(), dim=-1)
    nats = float(-logp[torch.arange(len(y)), y].sum())
    return nats, int(target_bytes.sum())


@pytest.mark.parametrize("n_tokens, seq_len, batch_tokens", [(1001, 64, 256), (65, 64, 64), (64, 64, 1000),
                                                              (2, 16, 16), (500, 7, 21)])
def test_flat_scores_every_target_once(n_tokens, seq_len, batch_tokens):
    rng = np.random.default_rng(n_tokens)
    tokens = rng.integers(0, 50, size=n_tokens).astype(np.uint16)
    target_bytes = rng.integers(0, 5, size=n_tokens - 1)
    target_bytes[0] = max(1, target_bytes[0])
    model = Bigram(50)
    res = score_flat(model, tokens, target_bytes, seq_len=seq_len, batch_tokens=batch_tokens,
                     device=torch.device("cpu"))
    nats, nbytes = _direct(model, tokens, target_bytes)
    assert res.tokens == n_tokens - 1
    assert res.bytes == nbytes
    assert res.nats == pytest.approx(nats, rel=1e-6)
    assert res.val_bpb == pytest.approx(nats / (math.log(2) * nbytes), rel=1e-6)


@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_rank_windows_partition_the_stream(world):
    tokens = np.arange(1000, dtype=np.uint16) % 40
    target_bytes = np.ones(999, dtype=np.int64)
    model = Bigram(40)
    total_scored = 0
    total_nats = 0.0
    ranges = [flat_windows(999, 64, r, world) for r in range(world)]
    assert ranges[0][0] == 0 and all(ranges[i][1] == ranges[i + 1][0] for i in range(world - 1))
    for first, last in ranges:
        nats, scored, nbytes = score_windows(model, tokens, target_bytes, first, last, seq_len=64, per_batch=3,
                                             device=torch.device("cpu"))
        total_scored += scored
        total_nats += float(nats)
    assert total_scored == 999
    assert total_nats == pytest.approx(_direct(model, tokens, target_bytes)[0], rel=1e-6)


def test_bpb_formula_and_errors():
    loss, bpb = bpb_from_sums(100.0, 50, 200)
    assert loss == 2.0 and bpb == pytest.approx(100.0 / (math.log(2) * 200))
    with pytest.raises(PgolfError):
        bpb_from_sums(1.0, 0, 10)
    with pytest.raises(PgolfError):
        score_flat(Bigram(4), np.array([1], dtype=np.uint16), np.zeros(0), seq_len=4, batch_tokens=4,
                   device=torch.device("cpu"))


def test_scoring_time_overrides_reach_eval_and_ttt_only(capsys):
    """`pgolf eval --set`: eval.* and ttt.* (the old eval.ttt_* names too, with one note); never the model."""
    from pgolf.config import Config
    from pgolf.eval.evaluate import apply_eval_overrides

    cfg = Config()
    apply_eval_overrides(cfg, ["eval.stride=32", "ttt.lr=0.005", "eval.ttt_rank=4"])
    assert (cfg.eval.stride, cfg.ttt.lr, cfg.ttt.rank) == (32, 0.005, 4)
    assert capsys.readouterr().err.count("pgolf: note:") == 1
    with pytest.raises(PgolfError, match="only eval.* and ttt.* settings can change"):
        apply_eval_overrides(cfg, ["model.num_layers=3"])
    with pytest.raises(PgolfError, match="ttt.chunk, ttt.rank"):
        apply_eval_overrides(cfg, ["ttt.rank=0"])
