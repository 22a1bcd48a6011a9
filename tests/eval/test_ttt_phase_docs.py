"""Which scored documents a global phase of phased TTT trains on (`ttt.phase_docs`): the first scored (pgolf's
`scored-order`, the default) or the record's rule (`batch-index`, PR #1855), checked against a spelled-out reference
of the 1.0611 record's `eval_val_ttt_phased`."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from pgolf.config import TTTConfig
from pgolf.errors import PgolfError
from pgolf.eval.ttt_lora import PHASE_DOCS, PhasedLoRAMode, make_schedule, phase_documents
from pgolf.model.lora import LORA_TARGETS

pytestmark = pytest.mark.usefixtures("one_thread")

BOS = 1
CPU = torch.device("cpu")


def _tokens(lengths: list[int]) -> np.ndarray:
    """Documents with `lengths` targets each: BOS then length - 1 tokens; the stream's final BOS is the last target."""
    rng = np.random.default_rng(len(lengths))
    return np.concatenate([[BOS, *rng.integers(2, 60, size=n - 1)] for n in lengths] + [[BOS]]).astype(np.int64)


def record_phases(tokens: np.ndarray, bos: int, batch_docs: int, num_phases: int, prefix_docs: int):
    """The record's choice, one process, written from its train_gpt.py (PR #1855's `_find_docs`,
    `_build_ttt_global_batches` and the phase step of `eval_val_ttt_phased`): [(queue position of the batch after
    which the phase runs, document indices it trains on, in order)]."""
    bos_at = [i for i, t in enumerate(tokens) if t == bos]
    docs = []  # (start, length): a document runs to and includes the next BOS (the last: to the stream's end)
    for k, start in enumerate(bos_at):
        end = bos_at[k + 1] + 1 if k + 1 < len(bos_at) else len(tokens)
        docs.append((start, end - start))
    if docs and docs[-1][1] < 2:  # the record asserts every document has a target: the final BOS is none
        docs.pop()
    entries = list(enumerate(docs))
    by_length = sorted(entries, key=lambda e: e[1][1])
    batches = [by_length[i:i + batch_docs] for i in range(0, len(by_length), batch_docs)]
    queue = list(enumerate(batches))  # (original batch index, batch): numbered by ascending length
    queue.sort(key=lambda ib: -max(length for _, (_, length) in ib[1]))  # processed longest first
    prefix = max(0, min(len(entries), prefix_docs))
    boundaries = [prefix * (p + 1) // num_phases for p in range(num_phases)]
    phase, done, scored, out = 0, 0, [], []
    for q, (orig, batch) in enumerate(queue):
        if phase >= num_phases:
            break
        scored.extend((orig, pos, doc) for pos, (doc, _) in enumerate(batch))
        done += len(batch)
        if done >= boundaries[phase]:
            chosen = sorted(scored, key=lambda x: (x[0], x[1]))[:boundaries[phase]]
            out.append((q, [doc for _, _, doc in chosen]))
            phase += 1
    return out


def _check_against_record(lengths, batch_docs, phases, prefix):
    tokens = _tokens(lengths)
    sched = make_schedule(tokens, BOS, batch_docs, phases, prefix)
    want = record_phases(tokens, BOS, batch_docs, phases, prefix)
    # pgolf leaves out a phase after the last batch (it could help no score); the record runs it
    want = [(q, docs) for q, docs in want if q < len(sched.batches) - 1]
    assert want and sorted(sched.phase_after) == [q for q, _ in want]
    for q, docs in want:
        assert phase_documents(sched, q, "batch-index").tolist() == docs, q
    return sched, want


def test_batch_index_is_the_records_rule_on_a_spelled_out_schedule():
    # 11 documents with ties; by ascending length (stable) batches of 3 are, by index, 0: docs 7,1,5 (2,3,3 targets),
    # 1: 3,10,8 (4,4,5), 2: 4,0,9 (6,7,7), 3: 6,2 (9,12); they run longest first: 3, 2, 1, 0
    lengths = [7, 3, 12, 4, 6, 3, 9, 2, 5, 7, 4]
    sched, want = _check_against_record(lengths, batch_docs=3, phases=3, prefix=9)
    assert [b.tolist() for b in sched.batches] == [[6, 2], [4, 0, 9], [3, 10, 8], [7, 1, 5]]
    assert sched.batch_index.tolist() == [3, 2, 1, 0]
    assert sched.phase_after == {1: 3, 2: 6}  # boundaries 3, 6, 9; the one after the last batch is left out
    # phase 1 (5 scored): the 3 of the lowest batch index, 2, in batch order; phase 2 (8 scored): index 1 then 2
    assert want == [(1, [4, 0, 9]), (2, [3, 10, 8, 4, 0, 9])]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("batch_docs,phases,prefix", [(2, 3, 9), (3, 2, 12), (4, 3, 12), (3, 1, 7), (5, 3, 30)])
def test_batch_index_matches_the_record_on_random_schedules(seed, batch_docs, phases, prefix):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 9, size=int(rng.integers(14, 24))).tolist()  # many ties
    _check_against_record(lengths, batch_docs, phases, prefix)


def test_the_two_rules_differ_where_they_should():
    lengths = [7, 3, 12, 4, 6, 3, 9, 2, 5, 7, 4]
    tokens = _tokens(lengths)
    sched = make_schedule(tokens, BOS, batch_docs=3, phases=3, prefix_docs=9)
    n = sched.ends - sched.starts
    for j, boundary in sched.phase_after.items():
        scored = np.concatenate(sched.batches[:j + 1])
        first, record = phase_documents(sched, j, "scored-order"), phase_documents(sched, j, "batch-index")
        assert first.tolist() == sched.order[:boundary].tolist()  # the default: what pgolf did before
        assert len(first) == len(record) == boundary and set(record) <= set(scored)
        # batch-index: the shortest scored documents, shortest first; scored-order: the first scored, which come
        # from the longest batches
        assert n[record].tolist() == sorted(n[scored].tolist())[:boundary]
        assert set(first) != set(record) and n[first].sum() > n[record].sum()
    assert phase_documents(sched, 1, "scored-order").tolist() == [6, 2, 4]
    # where a phase takes every scored document the two rules take the same ones, in another order
    full = make_schedule(tokens, BOS, batch_docs=3, phases=1, prefix_docs=5)
    assert full.phase_after == {1: 5}
    assert phase_documents(full, 1, "scored-order").tolist() == [6, 2, 4, 0, 9]
    assert phase_documents(full, 1, "batch-index").tolist() == [4, 0, 9, 6, 2]
    with pytest.raises(PgolfError, match="phase_docs"):
        phase_documents(full, 1, "longest")


class _Recording(PhasedLoRAMode):
    """Records the documents each global phase trains on."""

    def _phase_sgd(self, model, docs, values):
        self.trained.append(docs.tolist())
        super()._phase_sgd(model, docs, values)


@pytest.fixture(scope="module")
def model():
    from conftest import random_matrix_gpt

    return random_matrix_gpt()


def _settings(**kw) -> TTTConfig:
    base = dict(chunk=16, rank=4, alpha=8.0, targets=",".join(LORA_TARGETS), lr=0.05, beta1=0.0, beta2=0.99,
                weight_decay=0.5, batch_docs=3, chains=2, chunk_tokens=32, phases=3, prefix_docs=9, phase_lr=0.05)
    return TTTConfig(**{**base, **kw})


def test_the_phased_mode_trains_on_the_documents_the_rule_picks(model):
    lengths = [27, 13, 52, 14, 26, 13, 39, 12, 25, 37, 24]
    tokens = _tokens(lengths)
    nats = {}
    for rule in PHASE_DOCS:
        mode = _Recording(32, _settings(phase_docs=rule), BOS)
        mode.trained = []
        total = 0.0
        with torch.no_grad():
            for chunk in mode.run(copy.deepcopy(model), tokens, device=CPU, batch_tokens=4096):
                total += float(chunk.nats[chunk.mask].double().sum())
        sched = mode._sched
        assert mode.trained == [phase_documents(sched, j, rule).tolist() for j in sorted(sched.phase_after)]
        assert [p["docs"] for p in mode.report["phases"]] == [3, 6]
        nats[rule] = total
    assert nats["scored-order"] != nats["batch-index"]  # other documents, other weights, other later scores
    assert "phase docs batch-index" in PhasedLoRAMode(32, _settings(phase_docs="batch-index"), BOS).describe()
    with pytest.raises(PgolfError, match="phase_docs"):
        PhasedLoRAMode(32, _settings(phase_docs="longest"), BOS)
