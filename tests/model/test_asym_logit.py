"""AsymLogit (`model.asym_logit`, PR #1923, as PRs #1945/#2135 run it): two fp32 caps, one for positive and one for
negative logits, on the logits the evaluation scores; the training loss keeps the symmetric softcap, no optimizer
holds the caps, and every export keeps them in fp32."""

from __future__ import annotations

import copy

import pytest
import torch

from pgolf.config import ModelConfig, OptimConfig
from pgolf.errors import PgolfError
from pgolf.model.gpt import GPT
from pgolf.model.roles import Role, is_control, keeps_fp32, param_role
from pgolf.optim.groups import UNTRAINED, build_optimizers, parameter_roles
from pgolf.quant.schemes import dequantize_state_dict, quantize_state_dict

pytestmark = pytest.mark.usefixtures("one_thread")

CAPS = ("logit_cap_pos", "logit_cap_neg")


def _cfg(**kw) -> ModelConfig:
    base = dict(vocab_size=128, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1, logit_softcap=5.0)
    return ModelConfig(**{**base, **kw})


def _model(seed: int = 0, **kw) -> GPT:
    """Weights off their init (zero-initialised projections would leave every block the identity), logits large
    enough that the cap bends them (softcap 5)."""
    torch.manual_seed(seed)
    model = GPT(_cfg(**kw))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2:
                p.normal_(0, 1.0 if name == "tok_emb.weight" else p.size(1) ** -0.5)
    return model.eval()


def _ids(t: int = 24, rows: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 128, (rows, t), generator=torch.Generator().manual_seed(seed))


def _set_caps(model: GPT, pos: float, neg: float) -> None:
    with torch.no_grad():
        model.logit_cap_pos.fill_(pos)
        model.logit_cap_neg.fill_(neg)


def test_caps_are_fp32_scalars_at_the_softcap_and_off_by_default():
    model = GPT(_cfg(asym_logit=True))
    for name in CAPS:
        p = getattr(model, name)
        assert p.dtype == torch.float32 and p.ndim == 0 and float(p) == 5.0 and not p.requires_grad
    assert GPT(_cfg()).logit_cap_pos is None and not set(CAPS) & set(GPT(_cfg()).state_dict())
    with pytest.raises(PgolfError, match="logit_softcap > 0"):
        GPT(_cfg(asym_logit=True, logit_softcap=0.0))


def test_eval_logits_are_the_symmetric_softcap_while_the_caps_sit_at_their_init():
    sym, asym = _model(), _model(asym_logit=True)  # the caps draw no random numbers: the same weights
    ids = _ids()
    with torch.no_grad():
        want = sym(ids)
        assert torch.equal(asym(ids), want)  # bit for bit
        assert torch.equal(asym.logits(ids), want) and torch.equal(asym.head(asym.hidden(ids)), want)
        assert want.abs().max() > 4.0  # the cap bends these logits


def test_eval_logits_follow_the_two_caps_once_they_differ():
    model = _model(asym_logit=True)
    _set_caps(model, 3.0, 8.0)
    ids = _ids()
    with torch.no_grad():
        z = model._head_matmul(model.hidden(ids)).float()
        want = torch.where(z > 0, 3.0 * torch.tanh(z / 3.0), 8.0 * torch.tanh(z / 8.0))  # PR #1923's formula
        got = model(ids)
        assert torch.allclose(got, want, rtol=1e-6, atol=1e-6)
        symmetric = 5.0 * torch.tanh(z / 5.0)
        # a lower positive cap pulls positive logits down, a higher negative cap lets negative ones fall further
        assert (got - symmetric)[z > 0].min() < -0.1 and (got - symmetric)[z < 0].min() < -0.1
        assert got.max() < 3.0 and got.min() < -5.0


def test_the_caps_reach_the_lora_head_path():
    """The TTT forward (`head(h, lora)`) is an evaluation path: it uses the caps too."""
    from pgolf.model.lora import BatchedLoRA

    model = _model(asym_logit=True)
    lora = BatchedLoRA(model.cfg, rows=2, rank=2, slots=model.slots, targets=("q", "head"))
    ids = _ids()
    with torch.no_grad():
        for b in lora.b.values():
            b.normal_(0, 0.5)
        h = model.hidden(ids, lora)
        at_init = model.head(h, lora)
        assert torch.equal(at_init, model.head(h, lora, symmetric=True))
        _set_caps(model, 2.0, 9.0)
        assert not torch.allclose(model.head(h, lora), at_init, atol=1e-2)


@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
def test_the_training_loss_is_unchanged_by_asym_logit(fused):
    """The same loss with asym_logit on and off at the same seed, even with the caps moved: the training loss keeps
    the symmetric softcap (and the fused kernel); no gradient reaches the caps."""
    ids, targets = _ids(seed=2), _ids(seed=3)
    losses = {}
    for on in (False, True):
        model = _model(asym_logit=on).train()
        model.use_kernels(fused)
        if on:
            _set_caps(model, 2.0, 11.0)
        loss = model(ids, targets)
        loss.backward()
        losses[on] = loss.detach()
        if on:
            assert all(getattr(model, name).grad is None for name in CAPS)
            per_token = model(ids, targets, reduction="none")
            assert torch.allclose(per_token.mean(), loss.detach(), rtol=1e-6)
    assert torch.equal(losses[False], losses[True])


def test_no_optimizer_group_holds_the_caps():
    model = _model(asym_logit=True)
    groups = parameter_roles(model)
    assert {groups[name] for name in CAPS} == {UNTRAINED}
    held = {id(p) for opt in build_optimizers(model, OptimConfig()) for g in opt.param_groups for p in g["params"]}
    assert not {id(getattr(model, name)) for name in CAPS} & held
    assert held == {id(p) for name, p in model.named_parameters() if name not in CAPS}


def test_the_caps_have_their_role_count_as_control_and_keep_fp32():
    model = _model(asym_logit=True)
    for name in CAPS:
        assert param_role(name, getattr(model, name)) is Role.LOGIT_CAP
        assert is_control(name) and keeps_fp32(name)
    assert not keeps_fp32("blocks.0.attn_scale") and not keeps_fp32("not_a_parameter")


def test_state_dict_and_int8_export_round_trips_keep_the_caps():
    model = _model(asym_logit=True)
    _set_caps(model, 29.123457, 31.987654)  # not representable in fp16
    state = model.state_dict()
    fresh = GPT(model.cfg)
    fresh.load_state_dict(copy.deepcopy(state))
    assert float(fresh.logit_cap_pos) == float(model.logit_cap_pos)
    assert float(fresh.logit_cap_neg) == float(model.logit_cap_neg)
    assert fresh.logit_cap_pos.dtype == torch.float32 and not fresh.logit_cap_pos.requires_grad
    qm = quantize_state_dict(state, "int8")
    assert {qt.name: qt.scheme for qt in qm if qt.name in CAPS} == {name: "fp32" for name in CAPS}
    back = dequantize_state_dict(qm)
    for name in CAPS:
        assert torch.equal(back[name], state[name])
