"""The n-gram tilt (pgolf/eval/tilt.py): the closed form is the renormalised boost, only gated slots move, it is
legal under `pgolf legality` while its broken twin (the hint is the target) is flagged, it keeps an adaptive mode's
adaptation visible to the checker, and on a repetitive stream it lowers the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import perturbed_tiny_gpt
from pgolf.eval.evaluate import score_stream
from pgolf.eval.fixtures import FIXTURES, UnigramCacheMode
from pgolf.eval.legality import check_mode
from pgolf.eval.modes import FlatMode, ScoredChunk, SlidingMode, make_mode
from pgolf.eval.tilt import NgramTiltMode, TiltSettings, tilt_chunk, with_tilt

pytestmark = pytest.mark.usefixtures("one_thread")

BOS = 1


@pytest.fixture(scope="module")
def model():
    return perturbed_tiny_gpt("model.smear_gate=true", seed=1)


@pytest.fixture(scope="module")
def repetitive():
    """Phrases repeated in random order: order-3 contexts recur, so hints fire (and are right most of the time)."""
    rng = np.random.default_rng(5)
    phrases = [rng.integers(2, 512, size=int(rng.integers(4, 9))) for _ in range(6)]
    out = np.concatenate([phrases[i] for i in rng.integers(0, len(phrases), size=60)])
    out[0] = BOS
    return out.astype(np.uint16)


def _chunk(logits: torch.Tensor, targets: torch.Tensor) -> ScoredChunk:
    logp = F.log_softmax(logits, dim=-1)
    b, t = targets.shape
    return ScoredChunk(positions=torch.arange(1, b * t + 1).reshape(b, t), targets=targets, log_probs=logp,
                       nats=-logp.gather(-1, targets[..., None]).squeeze(-1), mask=torch.ones(b, t, dtype=torch.bool))


@pytest.mark.parametrize("gamma", [0.0, 1.5])
def test_the_closed_form_is_the_renormalised_boost(gamma):
    torch.manual_seed(0)
    logits = 3 * torch.randn(2, 5, 11)
    targets = torch.randint(0, 11, (2, 5))
    chunk = _chunk(logits, targets)
    n = 11
    hint = torch.randint(0, 11, (n,))
    hint[1:6] = targets[0]  # some hints are right
    share = torch.ones(n)
    settings = TiltSettings(order=3, threshold=0.8, boost=2.625, gamma=gamma)
    out = tilt_chunk(chunk, hint, share, settings)
    h = hint[chunk.positions]
    p_hint = F.softmax(logits, -1).gather(-1, h[..., None]).squeeze(-1)
    boost = 2.625 * (1 - p_hint) ** gamma
    direct = F.log_softmax(logits + boost[..., None] * F.one_hot(h, 11), dim=-1)
    torch.testing.assert_close(out.log_probs, direct, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.nats, -direct.gather(-1, targets[..., None]).squeeze(-1), atol=1e-5, rtol=0)
    assert torch.allclose(out.log_probs.logsumexp(-1), torch.zeros(2, 5), atol=1e-5)


def test_only_gated_slots_move():
    torch.manual_seed(1)
    chunk = _chunk(torch.randn(1, 6, 7), torch.randint(0, 7, (1, 6)))
    share = torch.tensor([0.0, 0.9, 0.5, 0.8, 0.79, 1.0, 0.0])  # positions 1..6
    out = tilt_chunk(chunk, torch.zeros(7, dtype=torch.long), share, TiltSettings(order=3))
    moved = (out.nats != chunk.nats)[0].tolist()
    assert moved == [True, False, True, False, True, False]  # share >= 0.8 at positions 1, 3, 5


def _checked(make, model, tokens):
    made = []

    def build():
        made.append(make())
        return made[-1]

    report = check_mode(build, model, tokens, batch_tokens=256, perturbations=6)
    return report, made[0]


def test_the_tilt_is_legal_and_fires(model, repetitive):
    report, mode = _checked(lambda: make_mode("ngram-tilt", seq_len=64, stride=16, bos_id=BOS, extra=FIXTURES),
                            model, repetitive)
    assert report.passed, report.table()
    assert mode.tilt_report["hinted"] > len(repetitive) // 4
    assert "n-gram tilt (order 3" in mode.describe()


def test_a_tilt_whose_hint_is_the_target_is_flagged(model, repetitive):
    report, _ = _checked(lambda: make_mode("broken-ngram-target", seq_len=64, stride=16, bos_id=BOS,
                                           extra=FIXTURES), model, repetitive)
    assert "C1" in report.violated, report.table()


def test_an_adaptive_mode_still_adapts_where_the_checker_sees_it(model, repetitive):
    settings = TiltSettings(order=3)
    alone, _ = _checked(lambda: UnigramCacheMode(64, 16), model, repetitive)
    tilted, mode = _checked(lambda: NgramTiltMode(UnigramCacheMode(64, 16), settings), model, repetitive)
    assert tilted.passed, tilted.table()
    assert mode.adaptive and "adapt calls" in tilted.results[2].detail
    assert tilted.results[2].detail == alone.results[2].detail  # the same adaptation, seen through the wrapper
    assert mode.inner.counts is not None and int(mode.inner.counts.sum()) > 0


def test_on_a_repetitive_stream_the_tilt_lowers_the_loss(model, repetitive):
    n = len(repetitive) - 1
    target_bytes = np.ones(n, dtype=np.int64)
    kwargs = dict(batch_tokens=256, device=torch.device("cpu"))
    plain = score_stream(model, repetitive, target_bytes, FlatMode(64), **kwargs)
    tilted_mode = NgramTiltMode(FlatMode(64), TiltSettings(order=3))
    tilted = score_stream(model, repetitive, target_bytes, tilted_mode, **kwargs)
    assert tilted.tokens == plain.tokens == n
    assert tilted.val_loss < plain.val_loss - 0.5  # a random model, hints right on most repeats
    report = tilted.report["ngram_tilt"]
    assert report["positions"] == len(repetitive) and report["hits_this_rank"] > 0


def test_with_tilt_is_off_by_default():
    from pgolf.config import EvalConfig

    mode = SlidingMode(64, 16)
    assert with_tilt(mode, EvalConfig()) is mode
    cfg = EvalConfig(ngram_order=16, ngram_gamma=1.0)
    wrapped = with_tilt(mode, cfg)
    assert isinstance(wrapped, NgramTiltMode) and wrapped.settings == TiltSettings(16, 0.8, 2.625, 1.0, False)
