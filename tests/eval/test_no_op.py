"""No silent no-ops (issue 23): a TTT mode that adapted zero times, or ran fewer global phases than configured,
says so in its report (and so on its log line and in result.json) instead of passing a fixed score off as TTT."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from pgolf.config import TTTConfig
from pgolf.eval.evaluate import score_stream
from pgolf.eval.modes import SlidingMode
from pgolf.eval.ttt_lora import BatchedLoRAMode, PhasedLoRAMode
from pgolf.eval.ttt_sgd import SGDTTTMode

pytestmark = pytest.mark.usefixtures("one_thread")

BOS = 1
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model():
    from conftest import random_matrix_gpt

    return random_matrix_gpt()


def _stream(docs: int, length: int = 24) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.concatenate([[BOS, *rng.integers(2, 60, size=length - 1)] for _ in range(docs)]).astype(np.int64)


def _score(model, tokens, mode):
    return score_stream(copy.deepcopy(model), tokens, np.ones(len(tokens) - 1, dtype=np.int64), mode,
                        batch_tokens=4096, device=CPU)


def _settings(**kw):
    base = dict(chunk=8, rank=2, targets="q,v", lr=0.05, batch_docs=2, chains=2, chunk_tokens=64, sgd_lr=0.05,
                epochs=1, phases=2, prefix_docs=4, phase_lr=0.02)
    return TTTConfig(**{**base, **kw})


def test_sgd_ttt_on_a_split_shorter_than_one_chunk_says_it_scored_as_sliding(model):
    tokens = _stream(2)  # 48 tokens: one chunk of 64 targets, and the last chunk is never trained on
    result = _score(model, tokens, SGDTTTMode(32, _settings(), BOS, stride=16))
    sliding = _score(model, tokens, SlidingMode(32, 16))
    assert result.val_bpb == pytest.approx(sliding.val_bpb, abs=1e-12)
    assert result.report["no_op"] == ("sgd-ttt adapted 0 times: the val split is shorter than one adaptation unit, "
                                      "so it scored as a fixed model")
    longer = _score(model, _stream(8), SGDTTTMode(32, _settings(chunk_tokens=32), BOS, stride=16))
    assert "no_op" not in longer.report


def test_phased_ttt_with_too_few_documents_says_how_many_phases_ran(model):
    result = _score(model, _stream(2), PhasedLoRAMode(32, _settings(), BOS, "off"))  # one batch: no phase fits
    assert result.report["no_op"] == ("phased-ttt ran 0 of 2 global phases: too few documents for the phase "
                                      "boundaries")
    full = _score(model, _stream(8), PhasedLoRAMode(32, _settings(), BOS, "off"))
    assert len(full.report["phases"]) == 2 and "no_op" not in full.report


def test_lora_ttt_that_adapts_reports_nothing(model):
    assert "no_op" not in _score(model, _stream(4, 40), BatchedLoRAMode(32, _settings(), BOS, "off")).report
    short = _score(model, _stream(4, 6), BatchedLoRAMode(32, _settings(), BOS, "off"))  # every document < 1 chunk
    assert short.report["no_op"].startswith("lora-ttt adapted 0 times")
