"""Flat, sliding and document-isolated scoring with the real model: exact agreements, isolation, ranks, budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import perturbed_tiny_gpt
from pgolf.errors import PgolfError
from pgolf.eval.evaluate import score_stream
from pgolf.eval.modes import DocumentMode, FlatMode, SlidingMode, make_mode
from pgolf.model.gpt import GPT

pytestmark = pytest.mark.usefixtures("one_thread")

BOS = 1
CPU = torch.device("cpu")




@pytest.fixture(scope="module")
def model():
    return perturbed_tiny_gpt("model.smear_gate=true", "model.bigram_rows=64", "model.xsa_last_n=1")


def _stream(n: int, bos_at: list[int], seed: int = 0) -> np.ndarray:
    tokens = np.random.default_rng(seed).integers(2, 512, size=n).astype(np.uint16)
    tokens[[b for b in bos_at if b < n]] = BOS
    return tokens


def _per_position_nats(mode, model, tokens, batch_tokens=512, rank=0, world=1) -> np.ndarray:
    """nats[p] for every scored position p (NaN elsewhere); fails if a position is scored twice."""
    out = np.full(len(tokens), np.nan)
    with torch.no_grad():
        for chunk in mode.run(model, tokens, device=CPU, batch_tokens=batch_tokens, rank=rank, world_size=world):
            pos = chunk.positions[chunk.mask].numpy()
            assert np.isnan(out[pos]).all()
            out[pos] = chunk.nats[chunk.mask].double().numpy()
    return out


def _direct_nats(model, tokens, a: int, e: int) -> np.ndarray:
    """nats of targets a..e-1 from one forward pass over inputs tokens[a:e] alone."""
    x = torch.from_numpy(tokens[a:e].astype(np.int64))[None]
    y = torch.from_numpy(tokens[a + 1:e + 1].astype(np.int64))[None]
    with torch.no_grad():
        return model(x, y, reduction="none")[0].double().numpy()


@pytest.mark.parametrize("n", [640, 700, 65, 30])
def test_sliding_with_stride_seq_len_equals_flat_exactly(model, n):
    tokens = _stream(n, [0, 200])
    target_bytes = np.ones(n - 1, dtype=np.int64)
    flat = score_stream(model, tokens, target_bytes, FlatMode(64), batch_tokens=256, device=CPU)
    sliding = score_stream(model, tokens, target_bytes, SlidingMode(64, 64), batch_tokens=256, device=CPU)
    assert flat.nats == sliding.nats and flat.tokens == sliding.tokens == n - 1


def test_sliding_scores_each_target_in_its_own_window(model):
    tokens = _stream(333, [0, 100])
    nats = _per_position_nats(SlidingMode(64, 16), model, tokens)
    assert not np.isnan(nats[1:]).any()
    # target j (position j + 1) of a later window is scored from the window starting at the last multiple of 16
    # that still gives >= 48 tokens of context; check a few against a direct forward pass
    for j in (63, 64, 79, 200, 331):
        start = 0 if j < 64 else ((j - 64) // 16 + 1) * 16
        direct = _direct_nats(model, tokens, start, min(start + 64, 332))
        assert nats[j + 1] == pytest.approx(direct[j - start], abs=1e-5)
    flat = _per_position_nats(FlatMode(64), model, tokens)
    assert not np.allclose(flat[65:], nats[65:])  # more context changes later scores


def test_doc_mode_equals_scoring_each_document_alone(model):
    bos_at = [0, 37, 90, 91, 150, 210]
    tokens = _stream(260, bos_at)
    nats = _per_position_nats(DocumentMode(64, 16, BOS), model, tokens)
    bounds = [*bos_at, len(tokens) - 1]
    for a, e in zip(bounds, bounds[1:]):  # every document (plus its closing BOS target) fits one window
        assert np.allclose(nats[a + 1:e + 1], _direct_nats(model, tokens, a, e), atol=1e-5, rtol=0)


def test_doc_mode_slides_inside_long_documents(model):
    tokens = _stream(340, [0, 300])
    doc = _per_position_nats(DocumentMode(64, 16, BOS), model, tokens)
    sliding_doc0 = _per_position_nats(SlidingMode(64, 16), model, tokens[:301])
    assert np.allclose(doc[1:301], sliding_doc0[1:301], atol=1e-5, rtol=0)
    assert np.allclose(doc[301:], _direct_nats(model, tokens, 300, 339), atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode_name, isolated", [("doc", True), ("flat", False), ("sliding", False)])
def test_last_token_of_a_document_never_reaches_the_next(model, mode_name, isolated):
    bos_at = [0, 40, 100, 170]
    tokens = _stream(240, bos_at)
    changed = tokens.copy()
    changed[99] = 7 if tokens[99] != 7 else 8  # last token of document 1 (its BOS is at 40, the next at 100)
    mode = make_mode(mode_name, seq_len=64, stride=16, bos_id=BOS)
    before = _per_position_nats(mode, model, tokens)
    after = _per_position_nats(mode, model, changed)
    next_doc = slice(101, 171)  # targets whose inputs are document 2 (tokens 100..169)
    assert np.array_equal(before[1:99], after[1:99])  # scores before the changed token never move (causality)
    if isolated:
        assert np.array_equal(before[next_doc], after[next_doc])
    else:  # the control: without isolation the change does leak, so the assertion above can fail
        assert np.abs(before[next_doc] - after[next_doc]).max() > 1e-4


@pytest.mark.parametrize("mode_name", ["flat", "sliding", "doc"])
@pytest.mark.parametrize("world", [2, 3])
def test_ranks_together_score_what_one_rank_scores(model, mode_name, world):
    tokens = _stream(500, [0, 33, 34, 200, 480])
    mode = make_mode(mode_name, seq_len=64, stride=32, bos_id=BOS)
    one = _per_position_nats(mode, model, tokens)
    shares = [_per_position_nats(mode, model, tokens, rank=r, world=world) for r in range(world)]
    stacked = np.stack(shares)
    assert (np.sum(~np.isnan(stacked[:, 1:]), axis=0) == 1).all()  # every position on exactly one rank
    assert np.allclose(np.nansum(stacked, axis=0)[1:], one[1:], atol=1e-5, rtol=0)


def test_score_stream_charges_bytes_and_checks_coverage(model):
    tokens = _stream(300, [0, 120])
    target_bytes = np.random.default_rng(1).integers(0, 4, size=299)
    res = score_stream(model, tokens, target_bytes, DocumentMode(64, 16, BOS), batch_tokens=256, device=CPU)
    nats = _per_position_nats(DocumentMode(64, 16, BOS), model, tokens)
    assert res.tokens == 299 and res.bytes == int(target_bytes.sum())
    assert res.nats == pytest.approx(float(np.sum(nats[1:])), rel=1e-9)

    class Skipping(SlidingMode):  # drops one window: the coverage check must refuse it
        def plan(self, toks):
            return super().plan(toks).take(slice(1, None))

    with pytest.raises(PgolfError, match="scored"):
        score_stream(model, tokens, target_bytes, Skipping(64, 16), batch_tokens=256, device=CPU)


def test_eval_time_budget_fails_loudly(model):
    tokens = _stream(2000, [0])
    target_bytes = np.ones(1999, dtype=np.int64)
    with pytest.raises(PgolfError, match="time budget"):
        score_stream(model, tokens, target_bytes, SlidingMode(64, 8), batch_tokens=128, device=CPU,
                     max_seconds=1e-6)
    res = score_stream(model, tokens, target_bytes, SlidingMode(64, 8), batch_tokens=4096, device=CPU,
                       max_seconds=600)
    assert res.tokens == 1999


def test_make_mode_defaults_and_errors():
    assert make_mode("sliding", seq_len=256).stride == 64
    assert make_mode("doc", seq_len=32).stride == 32
    assert make_mode("flat", seq_len=128, stride=8).stride == 128
    with pytest.raises(PgolfError, match="unknown eval mode"):
        make_mode("broken-peek", seq_len=64)
    with pytest.raises(PgolfError, match="stride"):
        make_mode("sliding", seq_len=64, stride=65)


def test_events_are_position_and_full_distribution(model):
    tokens = _stream(150, [0, 70])
    events = [e for chunk in DocumentMode(64, 16, BOS).run(model, tokens, device=CPU, batch_tokens=10_000)
              for e in chunk.events()]
    assert sorted(e[0] for e in events) == list(range(1, 150))
    for position, target, nats, logp in events:
        assert target == tokens[position] and logp.shape == (512,)
        assert float(torch.logsumexp(logp.double(), 0)) == pytest.approx(0.0, abs=1e-5)
        assert nats == pytest.approx(-float(logp[target]), abs=1e-6)


@pytest.mark.parametrize("name", ["flat", "sliding", "doc"])
def test_fixed_shape_compiled_scoring_equals_eager(name):
    """`eval.compile`'s path: batches padded to one row count and seq_len, scored columns to stride or seq_len; the
    scores are the eager ones and the compiled forward sees at most one graph per width."""
    from torch._dynamo.testing import CompileCounter

    from pgolf.config import ModelConfig
    from pgolf.eval.evaluate import build_mode, score_stream
    from pgolf.model.gpt import GPT

    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=64, num_layers=2, model_dim=16, num_heads=2, num_kv_heads=1)).eval()
    tokens = np.random.default_rng(0).integers(2, 64, size=301).astype(np.int64)
    tokens[[0, 40, 41, 170]] = 1
    ones = np.ones(300, dtype=np.int64)
    eager = score_stream(model, tokens, ones, build_mode(name, seq_len=32, stride=8), batch_tokens=100,
                         device=torch.device("cpu"))
    mode = build_mode(name, seq_len=32, stride=8, compile="on")
    counter = CompileCounter()
    torch._dynamo.reset()
    mode.compile_fixed(model, torch.device("cpu"), rows=3, backend=counter)
    fixed = score_stream(model, tokens, ones, mode, batch_tokens=100, device=torch.device("cpu"))
    torch._dynamo.reset()
    assert fixed.nats == pytest.approx(eager.nats, rel=1e-6) and fixed.tokens == eager.tokens == 300
    assert counter.frame_count <= len(mode.widths())


def test_scoring_shows_progress_when_asked(capsys, monkeypatch):
    """Off by default; on, stderr here is not a terminal, so progress comes as lines (every 0 s for the test)."""
    from pgolf.config import ModelConfig
    from pgolf.eval.evaluate import build_mode, score_stream
    from pgolf.model.gpt import GPT

    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=64, num_layers=1, model_dim=16, num_heads=2, num_kv_heads=1)).eval()
    tokens = np.random.default_rng(1).integers(2, 64, size=201).astype(np.int64)
    ones = np.ones(200, dtype=np.int64)
    score_stream(model, tokens, ones, build_mode("flat", seq_len=32), batch_tokens=64, device=torch.device("cpu"))
    assert "scoring flat" not in capsys.readouterr().err  # off by default (the trainer and the CLI turn it on)
    monkeypatch.setenv("PGOLF_PROGRESS_SECONDS", "0")
    score_stream(model, tokens, ones, build_mode("flat", seq_len=32), batch_tokens=64, device=torch.device("cpu"),
                 progress=True)
    err = capsys.readouterr().err
    assert "scoring flat: 200/200 tok (100%)" in err and "\r" not in err
