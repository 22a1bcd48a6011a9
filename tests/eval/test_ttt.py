"""Score-first TTT: every target once, no adaptation before scoring, adaptation that actually helps, the record's
batching and phases, and ranks that together score what one process scores."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pgolf.config import TTTConfig
from pgolf.errors import PgolfError
from pgolf.eval.evaluate import score_stream
from pgolf.eval.legality import check_mode
from pgolf.eval.modes import DocumentMode
from pgolf.eval.ttt_lora import BatchedLoRAMode, PhasedLoRAMode, make_schedule
from pgolf.eval.ttt_sgd import SGDTTTMode
from pgolf.model.lora import LORA_TARGETS

pytestmark = pytest.mark.usefixtures("one_thread")

BOS = 1
CPU = torch.device("cpu")


def _stream(docs: int = 6, seed: int = 0) -> np.ndarray:
    """Documents that repeat one short random phrase: unknown to a fresh model, easy to learn at test time."""
    rng = np.random.default_rng(seed)
    phrase = rng.integers(2, 60, size=7)
    out = []
    for _ in range(docs):
        out += [BOS] + list(np.tile(phrase, int(rng.integers(6, 12))))
    return np.array(out, dtype=np.int64)


@pytest.fixture(scope="module")
def model():
    """A tiny looped GPT (2 layers, 3 virtual layers) with random, "trained-looking" weights (zero-initialised
    output projections would block LoRA)."""
    from conftest import random_matrix_gpt

    return random_matrix_gpt("model.num_loops=1", "model.loop_start=0", "model.loop_end=0")


def _score(model, tokens, mode, **kw):
    return score_stream(copy.deepcopy(model), tokens, np.ones(len(tokens) - 1, dtype=np.int64), mode,
                        batch_tokens=4096, device=CPU, **kw)


def _settings(lr=0.05, **kw):
    base = dict(chunk=16, rank=4, alpha=8.0, targets=",".join(LORA_TARGETS), lr=lr, beta1=0.0, beta2=0.99,
                weight_decay=0.5, warm_start_a=True, batch_docs=2, chains=2, chunk_tokens=64,
                sgd_lr=0.05 if lr else 0.0, epochs=1, phases=2, prefix_docs=4, phase_lr=0.02 if lr else 0.0)
    return TTTConfig(**{**base, **kw})


def _modes(lr=0.05, seq_len=32, compile="auto", **kw):
    s = _settings(lr, **kw)
    return [BatchedLoRAMode(seq_len, s, BOS, compile), SGDTTTMode(seq_len, s, BOS, stride=16),
            PhasedLoRAMode(seq_len, s, BOS, compile)]


def _per_position(mode, model, tokens, rank=0, world=1) -> np.ndarray:
    out = np.full(len(tokens), np.nan)
    with torch.no_grad():
        for chunk in mode.run(copy.deepcopy(model), tokens, device=CPU, batch_tokens=4096, rank=rank,
                              world_size=world):
            pos = chunk.positions[chunk.mask].numpy()
            assert np.isnan(out[pos]).all()
            out[pos] = chunk.nats[chunk.mask].double().numpy()
    return out


@pytest.mark.parametrize("index", [0, 1, 2])
def test_every_target_is_scored_once(model, index):
    tokens = _stream()
    res = _score(model, tokens, _modes()[index])  # score_stream checks count and position sum
    assert res.tokens == len(tokens) - 1


@pytest.mark.parametrize("pad", [0, 64])
def test_without_learning_lora_ttt_is_document_isolated_scoring(model, pad):
    """Every document fits one window: frozen adapters score exactly as `doc` mode, with or without the padding
    to fixed shapes that the compiled path uses."""
    tokens = _stream()
    doc = _score(model, tokens, DocumentMode(128, 128, BOS))
    for index in (0, 2):
        frozen = _score(model, tokens, _modes(lr=0.0, seq_len=128, pad_multiple=pad)[index])
        assert frozen.nats == pytest.approx(doc.nats, rel=1e-6)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_adaptation_lowers_the_loss_on_repetitive_text(model, index):
    tokens = _stream()
    base = _score(model, tokens, _modes(lr=0.0)[index])
    adapted = _score(model, tokens, _modes()[index])
    assert adapted.nats < 0.97 * base.nats


def test_learners_cannot_receive_unscored_tokens(model):
    tokens = _stream()
    net = copy.deepcopy(model)
    mode = _modes()[0]
    run = mode.run(net, tokens, device=CPU, batch_tokens=4096)
    next(run)  # the first chunk is scored; nothing beyond it is released
    with pytest.raises(PgolfError, match="not yet scored"):
        mode.adapt(net, np.arange(1, 200), tokens[1:200])
    run.close()


def test_lora_leaves_the_model_as_it_was(model):
    tokens = _stream()
    net = copy.deepcopy(model)
    net.tok_emb.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    score_stream(net, tokens, np.ones(len(tokens) - 1, dtype=np.int64), _modes()[0], batch_tokens=4096, device=CPU)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert [p.requires_grad for p in net.parameters()] == [p is not net.tok_emb.weight for p in net.parameters()]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_ttt_modes_pass_the_legality_checker(model, index):
    tokens = _stream(docs=5)
    report = check_mode(lambda: _modes()[index], model, tokens, device=CPU, batch_tokens=4096, perturbations=3,
                        tolerance=1e-4, seed=0)
    assert report.passed, report.table()
    assert "adapt calls" in report.results[2].detail


class _TrainsFirst(BatchedLoRAMode):
    """Broken on purpose: before scoring a batch, one step on its documents' whole text, bypassing `adapt`."""

    def _load_adapters(self, chains, j, phase, device):
        super()._load_adapters(chains, j, phase, device)
        batch = self._sched.batches[j]
        with torch.enable_grad():
            for row, doc in enumerate(batch):
                a, e = self._sched.starts[doc], self._sched.ends[doc]
                x = torch.zeros(self.s.batch_docs, e - a, dtype=torch.int64)
                x[row] = self._stream[a:e]
                logits = self._model.head(self._model.hidden(x, self.lora), self.lora)[row]
                F.cross_entropy(logits, self._stream[a + 1:e + 1]).backward()
        self.opt.step()

    def run(self, model, tokens, **kw):
        self._model = model
        return super().run(model, tokens, **kw)


def test_the_checker_flags_a_batched_mode_that_trains_before_scoring(model):
    tokens = _stream(docs=5)
    report = check_mode(lambda: _TrainsFirst(32, _settings(), BOS), model, tokens, device=CPU, batch_tokens=4096,
                        perturbations=3, tolerance=1e-4, seed=0)
    assert report.violated == ["C1"], report.table()


def test_schedule_sorts_documents_by_length_and_places_the_phases():
    lengths = [5, 9, 3, 7, 9, 2, 4]  # targets per document
    tokens = np.concatenate([[BOS] + [7] * (n - 1) for n in lengths] + [[BOS]])
    sched = make_schedule(tokens, BOS, batch_docs=2, phases=2, prefix_docs=5)
    got = [[int(sched.ends[d] - sched.starts[d]) for d in b] for b in sched.batches]
    assert got == [[7, 9], [9], [4, 5], [2, 3]]  # ascending inside a batch, the longest batch first
    assert [list(b) for b in sched.batches] == [[3, 1], [4], [6, 0], [5, 2]]
    assert sched.phase_after == {0: 2, 2: 5}  # boundaries 5 // 2 and 5: after the batches that reach them
    assert make_schedule(tokens, BOS, 2, 1, 7).phase_after == {}  # a phase after the last batch helps nothing


def test_documents_of_a_batch_adapt_independently(model):
    """Changing every token of one document (keeping its length) moves no score of the other document of its
    batch; with warm-start A and phases, documents scored later do move (adaptation carries forward only)."""
    tokens = _stream(docs=6, seed=1)
    sched = make_schedule(tokens, BOS, batch_docs=2, phases=2, prefix_docs=4)
    first, partner = sched.batches[0]
    changed = tokens.copy()
    a, e = sched.starts[first], sched.ends[first]
    changed[a + 1:e] = (changed[a + 1:e] + 5) % 60 + 2
    for mode, later_moves in ((_modes(warm_start_a=False)[0], False), (_modes()[2], True)):
        before, after = _per_position(mode, model, tokens), _per_position(mode, model, changed)
        b0, b1 = sched.starts[partner] + 1, sched.ends[partner] + 1
        assert np.array_equal(before[b0:b1], after[b0:b1])
        later = np.concatenate([np.arange(sched.starts[d] + 1, sched.ends[d] + 1)
                                for d in np.concatenate(sched.batches[1:])])
        assert (np.abs(before[later] - after[later]).max() > 1e-6) == later_moves


def _rows_and_scores(mode, model, tokens, trim: bool) -> tuple[list[int], np.ndarray]:
    """Rows of every yielded chunk, and every position's nats, with the CPU's row trimming on or off."""
    setup = mode._setup

    def set_up(model_, device):
        setup(model_, device)
        mode._trim = trim

    mode._setup = set_up
    rows, out = [], np.full(len(tokens), np.nan)
    with torch.no_grad():
        for chunk in mode.run(copy.deepcopy(model), tokens, device=CPU, batch_tokens=4096):
            rows.append(chunk.mask.size(0))
            out[chunk.positions[chunk.mask].numpy()] = chunk.nats[chunk.mask].double().numpy()
    return rows, out


@pytest.mark.parametrize("index,warm", [(0, False), (0, True), (2, False)],
                         ids=["lora-ttt", "lora-ttt-warm-start-a", "phased-ttt"])
def test_leaving_finished_documents_out_changes_no_score(model, index, warm):
    """On the CPU the forward and the AdamW step run only on the rows of documents with chunks left: every score
    is bit for bit the whole batch's (one thread), also with warm-start A, momentum and weight decay carried from
    a batch with an empty row and rows whose documents ended early into the batch that continues its A."""
    tokens = _stream(docs=7, seed=4)  # 3 batches of 3 documents (the longest alone) of 3-5 chunks of 16
    kw = dict(batch_docs=3, warm_start_a=warm, beta1=0.9, chains=2)  # batch 2 continues the A of batch 0
    trimmed_rows, trimmed = _rows_and_scores(_modes(**kw)[index], model, tokens, True)
    whole_rows, whole = _rows_and_scores(_modes(**kw)[index], model, tokens, False)
    assert set(whole_rows) == {3} and min(trimmed_rows) == 1 and sum(trimmed_rows) < sum(whole_rows)
    assert not np.isnan(whole[1:]).any() and np.array_equal(trimmed[1:], whole[1:])


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_split_the_batches(model, world):
    """Without phases no rank talks to another: the shares of `world` ranks are one process's scores."""
    tokens = _stream(docs=7, seed=2)
    mode = _modes(chains=6)[0]
    one = _per_position(mode, model, tokens)
    shares = np.stack([_per_position(_modes(chains=6)[0], model, tokens, rank=r, world=world) for r in range(world)])
    assert (np.sum(~np.isnan(shares[:, 1:]), axis=0) == 1).all()
    assert np.array_equal(np.nansum(shares, axis=0)[1:], one[1:])
    with pytest.raises(PgolfError, match="multiple of the world size"):
        next(_modes(chains=2)[0].run(copy.deepcopy(model), tokens, device=CPU, batch_tokens=4096, rank=0,
                                     world_size=3))


def test_phases_are_reported_and_timed(model):
    tokens = _stream(docs=8, seed=3)
    lines = []
    mode = _modes(prefix_docs=6, chunk_tokens=32)[2]
    mode.log = lines.append
    res = _score(model, tokens, mode)
    phases = res.report["phases"]
    assert [p["docs"] for p in phases] == [3, 6]
    assert all(p["steps"] >= 1 and p["seconds"] > 0 for p in phases)
    assert res.report["batches"] == 4 and res.report["seconds"] > 0
    assert [line.split()[0] for line in lines] == ["ttt_phased:", "ttpp:", "ttpr:", "ttpp:", "ttpr:"]


def test_two_gloo_processes_score_what_one_process_scores(tmp_path):
    """Phased TTT under torchrun with 2 gloo ranks: batches dealt to the ranks, phase gradients all-reduced, sums
    reduced. Equal to one process up to float summation order (the phases' gradient sums)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from conftest import TINY_MODEL_SETS

    script = Path(__file__).with_name("ttt_ranks.py")
    spec = {"sets": [*TINY_MODEL_SETS, "model.vocab_size=64", "model.num_loops=1", "model.loop_start=0",
                     "model.loop_end=0"], "seed": 0, "mode": "phased-ttt", "seq_len": 32, "bos": BOS,
            "settings": {**_settings(prefix_docs=6, chunk_tokens=64, chains=4).__dict__},
            "tokens": _stream(docs=9, seed=4).tolist()}
    results = {}
    for nproc in (1, 2):
        spec["out"] = str(tmp_path / f"{nproc}.json")
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(script), str(tmp_path / "spec.json")]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[nproc] = json.loads(Path(spec["out"]).read_text())
    one, two = results[1], results[2]
    assert two["world_size"] == 2 and one["tokens"] == two["tokens"] == len(spec["tokens"]) - 1
    assert [(p["docs"], p["steps"]) for p in two["report"]["phases"]] == [(3, 3), (6, 5)]  # 1 step per chunk
    print(f"one process {one['nats']!r} nats, two {two['nats']!r}")
    assert two["nats"] == pytest.approx(one["nats"], rel=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_ttt_on_cuda_matches_eager(model):
    """The compiled, fixed-shape forward (padded windows, warm-up before scoring) scores as the eager one, within
    bf16 autocast noise."""
    tokens = _stream(docs=9, seed=5)
    cuda = torch.device("cuda")
    scores = {}
    for compile_mode in ("off", "on"):
        mode = _modes(compile=compile_mode, prefix_docs=6)[2]
        net = copy.deepcopy(model).to(cuda)
        assert (mode.prepare(net, cuda) > 0) == (compile_mode == "on")
        scores[compile_mode] = score_stream(net, tokens, np.ones(len(tokens) - 1, dtype=np.int64), mode,
                                            batch_tokens=4096, device=cuda).nats
    assert scores["on"] == pytest.approx(scores["off"], rel=2e-3)


def test_a_chunk_longer_than_the_window_is_refused():
    """A chunk is scored in one window of at most seq_len tokens (it used to index before the window)."""
    from pgolf.eval.evaluate import build_mode
    with pytest.raises(PgolfError, match=r"ttt\.chunk=256 must be at most the eval window seq_len=64"):
        build_mode("lora-ttt", seq_len=64, ttt=_settings(chunk=256))


def test_adapter_draws_use_a_cpu_generator():
    """`BatchedLoRA.draw_a` draws on the CPU (the same numbers on every device), so its generator must be a CPU one
    on CUDA too: a CUDA generator fails on a CPU tensor. The draw is reproducible from its key alone."""
    from pgolf.eval.ttt_lora import _draw_generator
    from pgolf.model.lora import BatchedLoRA
    from pgolf.config import ModelConfig

    g = _draw_generator(1337, 0, 0, 1)
    assert g.device.type == "cpu"
    cfg = ModelConfig(vocab_size=64, num_layers=2, model_dim=16, num_heads=2, num_kv_heads=1)
    draws = []
    for _ in range(2):
        lora = BatchedLoRA(cfg, rows=2, rank=4, slots=2, targets=("q", "v"), alpha=0.0,
                           device=torch.device("cpu"))
        lora.draw_a(_draw_generator(1337, 0, 0, 1))
        draws.append(torch.cat([a.detach().reshape(-1) for a in lora.a.values()]))
    assert torch.equal(draws[0], draws[1]) and draws[0].abs().sum() > 0


def test_modes_are_built_from_the_ttt_section_and_follow_eval_compile():
    """`build_mode` gives the TTT modes the `[ttt]` settings and `eval.compile` (no second copy of the knobs)."""
    from pgolf.eval.evaluate import build_mode
    from pgolf.options import resolve_config

    cfg = resolve_config("baseline", ["ttt.chunk=16", "ttt.targets=q,attn.c_v,head", "eval.compile=on"], environ={})
    for name in ("lora-ttt", "phased-ttt"):
        mode = build_mode(name, seq_len=32, ttt=cfg.ttt, compile=cfg.eval.compile)
        assert mode.s is cfg.ttt and mode.compile == "on" and mode.targets == ("q", "v", "head")
    assert build_mode("sgd-ttt", seq_len=32, stride=8, ttt=cfg.ttt).s is cfg.ttt
    assert build_mode("lora-ttt", seq_len=32, ttt=cfg.ttt).compile == "off"  # build_mode's default, as windowed modes
