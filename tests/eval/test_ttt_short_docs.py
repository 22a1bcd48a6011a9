"""Short-document TTT chunks (`ttt.short_doc_chunks`, PR #2014's TTT_SHORT_SCORE_FIRST_STEPS): which chunk size a
batch gets, that the modes use it and stay score-first, and that the empty setting changes nothing."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from pgolf.config import TTTConfig
from pgolf.errors import PgolfError
from pgolf.eval.legality import check_mode
from pgolf.eval.ttt_lora import BatchedLoRAMode, PhasedLoRAMode, batch_chunk, make_schedule, short_doc_chunks
from pgolf.model.lora import LORA_TARGETS

pytestmark = pytest.mark.usefixtures("one_thread")

BOS = 1
CPU = torch.device("cpu")
RULES = "50:4,70:8"  # with chunk 16: batches whose longest document has < 50 targets: 4, < 70: 8, else 16


def _reference_chunk(max_doc_len: int, steps: str, default: int) -> int:
    """PR #2014's rule spelled out on its own terms: documents are [BOS .. next BOS] (doc_len = targets + 1), the
    batch's longest decides, the steps are tried by increasing limit and the first with max_doc_len <= limit wins."""
    pairs = sorted(((int(a), int(b)) for a, b in (item.split(":") for item in steps.split(",") if item)),
                   key=lambda x: x[0])  # stable: of equal limits the first listed wins
    for limit, chunk in pairs:
        if max_doc_len <= limit:
            return chunk
    return default


def _stream(docs: int = 7, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    phrase = rng.integers(2, 60, size=7)
    out = []
    for _ in range(docs):
        out += [BOS] + list(np.tile(phrase, int(rng.integers(5, 12))))
    return np.array(out, dtype=np.int64)


def _settings(**kw) -> TTTConfig:
    base = dict(chunk=16, rank=4, alpha=8.0, targets=",".join(LORA_TARGETS), lr=0.05, beta1=0.0, beta2=0.99,
                weight_decay=0.5, warm_start_a=True, batch_docs=2, chains=2, chunk_tokens=64, phases=2,
                prefix_docs=4, phase_lr=0.02)
    return TTTConfig(**{**base, **kw})


def _per_position(mode, model, tokens) -> tuple[np.ndarray, list[int]]:
    """Each target's nats, and the chunk width of every yielded chunk."""
    out, widths = np.full(len(tokens), np.nan), []
    with torch.no_grad():
        for chunk in mode.run(copy.deepcopy(model), tokens, device=CPU, batch_tokens=4096):
            pos = chunk.positions[chunk.mask].numpy()
            assert np.isnan(out[pos]).all()
            out[pos] = chunk.nats[chunk.mask].double().numpy()
            widths.append(chunk.mask.shape[1])
    return out, widths


@pytest.fixture(scope="module")
def model():
    from conftest import random_matrix_gpt

    return random_matrix_gpt("model.num_loops=1", "model.loop_start=0", "model.loop_end=0")


def test_the_setting_is_parsed_as_pr_2014_parses_it():
    assert short_doc_chunks("") == ()
    assert short_doc_chunks("2000:24, 256:8,") == ((256, 8), (2000, 24))
    for bad in ("256", "256:x", "0:8", "256:0", "256:-8", "8=256"):
        with pytest.raises(PgolfError, match="LENGTH:CHUNK pairs of positive integers") as err:
            short_doc_chunks(bad)
        assert "\n" not in str(err.value)


def test_the_chunk_of_a_batch_follows_the_spelled_out_rule():
    rules = short_doc_chunks("256:8,2000:24")
    assert [batch_chunk(n, rules, 48) for n in (1, 254, 255, 256, 1998, 1999, 2000, 50_000)] == [8, 8, 8, 24, 24,
                                                                                                 24, 48, 48]
    rng = np.random.default_rng(0)
    for _ in range(200):
        steps = ",".join(f"{int(rng.integers(2, 300))}:{int(rng.integers(1, 50))}"
                         for _ in range(int(rng.integers(0, 4))))
        longest = int(rng.integers(1, 320))
        assert batch_chunk(longest, short_doc_chunks(steps), 48) == _reference_chunk(longest + 1, steps, 48), steps
    assert batch_chunk(10, (), 48) == 48


@pytest.mark.parametrize("phased", [False, True])
def test_each_batch_is_scored_in_its_chunks(model, phased):
    """Batches in scoring order (longest first) get their chunk from their longest document; every chunk of a batch
    has that width and the batch yields ceil(longest / chunk) of them."""
    tokens = _stream()
    s = _settings(short_doc_chunks=RULES)
    sched = make_schedule(tokens, BOS, s.batch_docs, s.phases if phased else 0, s.prefix_docs)
    longest = [int((sched.ends[b] - sched.starts[b]).max()) for b in sched.batches]
    sizes = [batch_chunk(n, short_doc_chunks(RULES), s.chunk) for n in longest]
    assert set(sizes) == {4, 8, 16}  # the stream exercises all three
    mode = (PhasedLoRAMode if phased else BatchedLoRAMode)(32, s, BOS, "off")
    lines = []
    mode.log = lines.append
    nats, widths = _per_position(mode, model, tokens)
    assert widths == [size for n, size in zip(longest, sizes) for _ in range(-(-n // size))]
    assert not np.isnan(nats[1:]).any()
    assert mode.report["chunk_batches"] == {str(c): sizes.count(c) for c in sorted(set(sizes))}
    assert lines[0].startswith("ttt_chunks: ")
    assert "short-doc chunks 50:4,70:8" in mode.describe()


@pytest.mark.parametrize("cls", [BatchedLoRAMode, PhasedLoRAMode])
def test_short_document_chunks_stay_score_first(model, cls):
    """The legality checker (C1-C4, `pgolf legality`) passes the modes with the smaller chunks."""
    tokens = _stream(docs=5)
    report = check_mode(lambda: cls(32, _settings(short_doc_chunks=RULES), BOS, "off"), model, tokens, device=CPU,
                        batch_tokens=4096, perturbations=3, tolerance=1e-4, seed=0)
    assert report.passed, report.table()
    assert "short-doc chunks" in report.mode


@pytest.mark.parametrize("cls", [BatchedLoRAMode, PhasedLoRAMode])
def test_without_short_chunks_nothing_changes(model, cls):
    """The empty setting, a rule no document meets and a rule that gives the default chunk score bit-identically;
    the smaller chunks adapt more often and do score differently."""
    tokens = _stream()
    base, _ = _per_position(cls(32, _settings(), BOS, "off"), model, tokens)
    for same in ("1:4", "100000:16"):
        other, _ = _per_position(cls(32, _settings(short_doc_chunks=same), BOS, "off"), model, tokens)
        assert np.array_equal(base, other, equal_nan=True), same
    short, _ = _per_position(cls(32, _settings(short_doc_chunks=RULES), BOS, "off"), model, tokens)
    assert not np.array_equal(base, short, equal_nan=True)


def test_chunks_must_fit_the_window_and_compile_only_the_shapes_they_meet():
    with pytest.raises(PgolfError, match="short_doc_chunks='100:64'"):
        BatchedLoRAMode(32, _settings(short_doc_chunks="100:64"), BOS)
    mode = BatchedLoRAMode(3072, _settings(chunk=48, short_doc_chunks="256:8,2000:24"), BOS)
    assert mode._shapes() == {48: 3072, 8: 255, 24: 1999}
