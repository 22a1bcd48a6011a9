"""Score-first TTT: every target once, no adaptation before scoring, and adaptation that actually helps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pgolf.errors import PgolfError
from pgolf.eval.evaluate import score_stream
from pgolf.eval.modes import DocumentMode
from pgolf.eval.ttt import LoRATTTMode, PhasedTTTMode, SGDTTTMode, TTTSettings
from pgolf.model.gpt import GPT

BOS = 1


def _stream(docs: int = 6, seed: int = 0) -> np.ndarray:
    """Documents that repeat one short random phrase: unknown to a fresh model, easy to learn at test time."""
    rng = np.random.default_rng(seed)
    phrase = rng.integers(2, 60, size=7)
    out = []
    for _ in range(docs):
        out += [BOS] + list(np.tile(phrase, int(rng.integers(6, 12))))
    return np.array(out, dtype=np.int64)


def _model(tiny_config):
    torch.manual_seed(0)
    cfg = tiny_config("model.vocab_size=64")
    model = GPT(cfg.model)
    with torch.no_grad():  # a "trained-looking" model: zero-initialised output projections would block LoRA
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.2)
    return model


def _score(model, tokens, mode):
    return score_stream(model, tokens, np.ones(len(tokens) - 1, dtype=np.int64), mode, batch_tokens=4096,
                        device=torch.device("cpu"))


def _modes(lr=0.05, **kw):
    s = TTTSettings(chunk=16, rank=4, lr=lr, chunk_tokens=64, sgd_lr=0.05 if lr else 0.0, epochs=1, phases=2,
                    prefix_docs=4, phase_lr=0.02 if lr else 0.0, **kw)
    return [LoRATTTMode(32, s, BOS), SGDTTTMode(32, s, BOS, stride=16), PhasedTTTMode(32, s, BOS)]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_every_target_is_scored_once(tiny_config, index):
    tokens = _stream()
    res = _score(_model(tiny_config), tokens, _modes()[index])  # score_stream checks count and position sum
    assert res.tokens == len(tokens) - 1


def test_without_learning_lora_ttt_is_document_isolated_scoring(tiny_config):
    tokens = _stream()
    model = _model(tiny_config)
    frozen = _score(model, tokens, _modes(lr=0.0)[0])
    doc = _score(model, tokens, DocumentMode(32, 16, BOS))
    assert frozen.nats == pytest.approx(doc.nats, rel=1e-6)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_adaptation_lowers_the_loss_on_repetitive_text(tiny_config, index):
    tokens = _stream()
    base = _score(_model(tiny_config), tokens, _modes(lr=0.0)[index])
    adapted = _score(_model(tiny_config), tokens, _modes()[index])
    assert adapted.nats < 0.97 * base.nats


def test_learners_cannot_receive_unscored_tokens(tiny_config):
    tokens = _stream()
    model = _model(tiny_config)
    mode = _modes()[0]
    run = mode.run(model, tokens, device=torch.device("cpu"), batch_tokens=4096)
    next(run)  # the first chunk is scored; nothing beyond it is released
    with pytest.raises(PgolfError, match="not yet scored"):
        mode.adapt(model, np.arange(1, 200), tokens[1:200])
    run.close()


def test_lora_leaves_the_model_as_it_was(tiny_config):
    tokens = _stream()
    model = _model(tiny_config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _score(model, tokens, _modes()[0])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.blocks[0].attn.c_q._forward_hooks


@pytest.mark.parametrize("index", [0, 1, 2])
def test_ttt_modes_pass_the_legality_checker(tiny_config, index):
    from pgolf.eval.legality import check_mode

    tokens = _stream(docs=4)
    model = _model(tiny_config)
    report = check_mode(lambda: _modes()[index], model, tokens, device=torch.device("cpu"), batch_tokens=4096,
                        perturbations=3, tolerance=1e-4, seed=0)
    assert report.passed, report.table()
