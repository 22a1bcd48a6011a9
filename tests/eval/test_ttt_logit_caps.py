"""AsymLogit's caps under phased TTT: PR #2135 never moves them (its global phases use the symmetric softcap), so
by default pgolf's phases leave them alone and train on the symmetric cap; with `ttt.train_logit_caps` the global
SGD phases train them through the asymmetric cap (PRs #1923/#1945). The per-document adapters never do."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pgolf.config import TTTConfig
from pgolf.eval.legality import check_mode
from pgolf.eval.ttt_lora import BatchedLoRAMode, PhasedLoRAMode
from pgolf.model.gpt import GPT
from pgolf.model.lora import LORA_TARGETS

pytestmark = pytest.mark.usefixtures("one_thread")

BOS = 1
CPU = torch.device("cpu")
CAPS = ("logit_cap_pos", "logit_cap_neg")


def _stream(docs: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    phrase = rng.integers(2, 60, size=7)
    out = []
    for _ in range(docs):
        out += [BOS] + list(np.tile(phrase, int(rng.integers(4, 9))))
    return np.array(out, dtype=np.int64)


def _model(asym: bool = True) -> GPT:
    from conftest import TINY_MODEL_SETS
    from pgolf.options import resolve_config

    sets = [*TINY_MODEL_SETS, "model.vocab_size=64", "model.logit_softcap=4.0", f"model.asym_logit={asym}"]
    cfg = resolve_config("cpu-smoke", sets, environ={})
    torch.manual_seed(0)
    net = GPT(cfg.model)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.ndim == 2:
                p.normal_(0, 1.0 if name == "tok_emb.weight" else 0.3)
    return net.eval()


def _settings(**kw) -> TTTConfig:
    base = dict(chunk=16, rank=4, alpha=8.0, targets=",".join(LORA_TARGETS), lr=0.05, beta1=0.0, beta2=0.99,
                weight_decay=0.5, batch_docs=2, chains=2, chunk_tokens=64, phases=2, prefix_docs=6, phase_lr=0.05)
    return TTTConfig(**{**base, **kw})


class _Watching(PhasedLoRAMode):
    """Records the caps' values after every adapter step and every global phase, and whether that step gave them
    a gradient."""

    def _chunk_step(self, *args):
        self._clear()
        super()._chunk_step(*args)
        self.events.append(("chunk", *self._caps()))

    def _phase_sgd(self, model, docs, values):
        self._clear()
        super()._phase_sgd(model, docs, values)
        self.events.append(("phase", *self._caps()))

    def run(self, model, tokens, **kw):
        self._model, self.events = model, []
        return super().run(model, tokens, **kw)

    def _clear(self):
        self._model.logit_cap_pos.grad = self._model.logit_cap_neg.grad = None

    def _caps(self):
        m = self._model
        return float(m.logit_cap_pos), float(m.logit_cap_neg), m.logit_cap_pos.grad is not None


def _run(mode, model, tokens) -> float:
    total = 0.0
    with torch.no_grad():
        for chunk in mode.run(model, tokens, device=CPU, batch_tokens=4096):
            total += float(chunk.nats[chunk.mask].double().sum())
    return total


@pytest.mark.parametrize("train", [False, True], ids=["default", "train_logit_caps"])
def test_only_the_global_phases_with_train_logit_caps_move_the_caps(train):
    net = _model()
    mode = _Watching(32, _settings(train_logit_caps=train), BOS)
    _run(mode, net, _stream())
    kinds = [e[0] for e in mode.events]
    assert kinds.count("phase") == 2 and kinds.count("chunk") > 4 and kinds[-1] == "chunk"
    caps = (4.0, 4.0)
    for kind, pos, neg, grad in mode.events:
        if kind == "phase" and train:  # a gradient, and the caps move (then stay through the adapters' steps)
            assert grad and pos != caps[0] and neg != caps[1]
            caps = (pos, neg)
        else:  # the adapters' steps, and the default phases: no gradient, no move
            assert (pos, neg, grad) == (*caps, False), kind
    assert (caps != (4.0, 4.0)) == train
    assert not net.logit_cap_pos.requires_grad and not net.logit_cap_neg.requires_grad  # flags restored


def test_lora_ttt_never_trains_the_caps():
    net = _model()
    _run(BatchedLoRAMode(32, _settings(train_logit_caps=True), BOS), net, _stream())
    assert float(net.logit_cap_pos) == float(net.logit_cap_neg) == 4.0 and net.logit_cap_pos.grad is None


def test_default_phases_train_on_the_symmetric_softcap():
    """With the caps moved off the softcap (as an artifact could carry them) and train_logit_caps off, the global
    phases train the base weights exactly as on the model without AsymLogit: their loss is the symmetric cap, as
    PR #2135's global TTT. The scores differ: they use the caps."""
    asym, sym = _model(True), _model(False)
    with torch.no_grad():
        asym.logit_cap_pos.fill_(2.5)
        asym.logit_cap_neg.fill_(7.0)
    nats = {}
    for name, net in (("asym", asym), ("sym", sym)):
        nats[name] = _run(PhasedLoRAMode(32, _settings(), BOS), net, _stream())
    weights = sym.state_dict()
    assert all(torch.equal(v, weights[k]) for k, v in asym.state_dict().items() if k not in CAPS)
    assert not torch.equal(weights["tok_emb.weight"], _model(False).state_dict()["tok_emb.weight"])  # phases ran
    assert nats["asym"] != nats["sym"]
    assert (float(asym.logit_cap_pos), float(asym.logit_cap_neg)) == (2.5, 7.0)


def test_training_the_caps_changes_the_score():
    nats = [_run(PhasedLoRAMode(32, _settings(train_logit_caps=train), BOS), _model(), _stream())
            for train in (False, True)]
    assert nats[0] != nats[1]
    describe = PhasedLoRAMode(32, _settings(train_logit_caps=True), BOS).describe()
    assert "logit caps trained" in describe


def test_phased_ttt_training_the_caps_passes_the_legality_checker():
    model = _model()
    report = check_mode(lambda: PhasedLoRAMode(32, _settings(train_logit_caps=True), BOS), model,
                        _stream(docs=5), device=CPU, batch_tokens=4096, perturbations=3, tolerance=1e-4, seed=0)
    assert report.passed, report.table()
    assert float(model.logit_cap_pos) == 4.0  # the checker runs copies
