"""Every parameter has one declared role (pgolf/model/roles.py), and the optimizer groups, the export policies,
GPTQ's shared inputs and the LoRA targets all act on that role (issue 21)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pgolf.config import ModelConfig, OptimConfig
from pgolf.model.gpt import GPT
from pgolf.model.lora import LORA_TARGET_ROLES, LORA_TARGETS, BatchedLoRA, lora_shapes
from pgolf.model.precision import cast_body
from pgolf.model.roles import Role, RoleError, is_control, param_role
from pgolf.optim.groups import build_optimizers
from pgolf.optim.muon import Muon
from pgolf.quant.gptq import HessianCollector
from pgolf.quant.groups import tensor_group
from pgolf.quant.schemes import quantize_state_dict

pytestmark = pytest.mark.usefixtures("one_thread")

# Every technique that creates a parameter: value residual, BigramHash, value embeddings, two lanes, a loop (more
# skips), gates, SmearGate, XSA, skip gates, AsymLogit's caps.
ALL_ON = dict(vocab_size=128, num_layers=6, model_dim=64, num_heads=4, num_kv_heads=2, value_residual=True,
              bigram_rows=64, bigram_dim=16, value_embed_last_n=2, value_embed_dim=16, parallel_mode="two_lane",
              parallel_start=3, num_loops=1, loop_start=1, loop_end=2, attn_gate="gated", smear_gate=True,
              xsa_last_n=6, skip_gates=True, ln_scale=True, rope_dims=8, mlp_activation="leaky_relu2",
              asym_logit=True)


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def model(request) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(**ALL_ON, tie_embeddings=request.param))


def _roles(model: nn.Module) -> dict[str, Role]:
    return {name: param_role(name, t) for name, t in model.state_dict().items()}


def test_every_state_dict_entry_has_a_role(model):
    roles = _roles(model)  # raises RoleError for a name no rule covers
    assert set(roles) == {n for n, _ in model.named_parameters()}  # no persistent buffers to forget
    tied = model.lm_head is None
    assert set(roles.values()) == set(Role) - {Role.LORA} - ({Role.HEAD} if tied else set())


def test_a_parameter_without_a_role_fails():
    model = GPT(ModelConfig(vocab_size=64, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1))
    model.blocks[1].foo = nn.Parameter(torch.zeros(3))
    with pytest.raises(RoleError, match="'blocks.1.foo' has no role"):
        _roles(model)
    with pytest.raises(RoleError, match="blocks.1.foo"):
        build_optimizers(model, OptimConfig())
    with pytest.raises(RoleError, match="'foo' has no role"):
        param_role("foo")
    assert not is_control("foo") and is_control("bigram.scale")  # hand-built state dicts: unknown is not control
    with pytest.raises(RoleError, match="1 dimensions, but its role ATTN_Q needs 2"):  # a matrix name, not a matrix
        param_role("blocks.0.attn.c_q.weight", torch.zeros(3))


def test_the_bf16_body_keeps_every_control_tensor_in_fp32(model):
    import copy

    from pgolf.model.precision import cast_body

    body = copy.deepcopy(model)
    cast = set(cast_body(body, torch.bfloat16))
    params = dict(body.named_parameters())
    for name, role in _roles(model).items():
        if role.control:
            assert name not in cast and params[name].dtype == torch.float32, (name, role)
    assert "tok_emb.weight" in cast  # the embedding table is body


def params_require_grad(model: nn.Module) -> dict[str, bool]:
    return {n: p.requires_grad for n, p in model.named_parameters()}


def test_optimizer_groups_follow_the_roles(model):
    cfg = OptimConfig()
    opts = build_optimizers(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    where = {names[id(p)]: (isinstance(o, Muon), g["lr"]) for o in opts for g in o.param_groups for p in g["params"]}
    tied = model.lm_head is None
    for name, role in _roles(model).items():
        if role is Role.LOGIT_CAP:  # in no optimizer: training never moves AsymLogit's caps (PR #2135)
            assert name not in where and not params_require_grad(model)[name], name
            continue
        lr = {Role.EMBED: cfg.tied_embed_lr if tied else cfg.embed_lr, Role.HEAD: cfg.head_lr}.get(role, None)
        want = (True, cfg.matrix_lr) if role.matrix else (False, lr if lr is not None else cfg.scalar_lr)
        assert where[name] == want, (name, role)


def test_int8_export_keeps_every_control_tensor_in_fp32(model):
    state = model.state_dict()
    schemes = {qt.name: qt.scheme for qt in quantize_state_dict(state, "int8")}
    for name, role in _roles(model).items():
        assert schemes[name] == ("fp32" if role.control else "fp16"), (name, role)  # every tensor here is small
    # the fix of issue 21: both steer the network, both were fp16 before
    assert schemes["blocks.2.attn.vres_alpha"] == schemes["bigram.scale"] == "fp32"


GROUP = {Role.EMBED: "embed", Role.HEAD: "head", Role.BIGRAM_TABLE: "bigram", Role.VALUE_EMBED: "value_embed",
         Role.EMBED_PROJ: "embed_proj", Role.ATTN_Q: "attn.q", Role.ATTN_K: "attn.k", Role.ATTN_V: "attn.v",
         Role.ATTN_PROJ: "attn.proj", Role.MLP_FC: "mlp.fc", Role.MLP_PROJ: "mlp.proj", Role.GATE: "gate",
         Role.CONTROL: "other", Role.LOGIT_CAP: "other"}


def test_mixed_export_groups_and_gates_follow_the_roles(model):
    from pgolf.options import resolve_config
    from pgolf.quant.recipe import quantize_mixed

    q = resolve_config("record-1.0611-cpu", [], environ={}).quant
    assert q.int8_gates
    qm, _ = quantize_mixed(model.state_dict(), q)
    roles = _roles(model)
    for qt in qm:
        role = roles[qt.name]
        assert tensor_group(qt.name) == GROUP[role], qt.name
        if role is Role.GATE:
            assert qt.scheme == "int8_row"
        elif role is Role.CONTROL:
            assert qt.scheme == "fp16"  # passthrough: the mixed recipe stores small tensors as fp16
        elif role is Role.LOGIT_CAP:
            assert qt.scheme == "fp32"  # ... except AsymLogit's caps (`keeps_fp32`)


def test_gptq_shares_one_hessian_between_q_k_and_v_only(model):
    with HessianCollector(model) as hc:
        hc.collect(torch.randint(0, 128, (1, 8), generator=torch.Generator().manual_seed(0)))
    h = hc.hessians
    roles = _roles(model)
    for name, t in h.items():
        sharing = {n for n, u in h.items() if u is t}
        block = name.rsplit(".", 2)[0]
        if roles[name] in (Role.ATTN_Q, Role.ATTN_K, Role.ATTN_V):
            assert sharing == {f"{block}.c_{p}.weight" for p in "qkv"}
        else:
            assert sharing == {name}
    assert {n for n, r in roles.items() if r.matrix or r in (Role.EMBED_PROJ, Role.HEAD)} <= set(h)


def test_lora_targets_and_adapters_follow_the_roles(model):
    cfg = model.cfg
    lora = BatchedLoRA(cfg, rows=2, rank=3, slots=model.slots, targets=LORA_TARGETS)
    assert len(lora.a) == 5 * model.slots + 1
    assert all(param_role(n, p) is Role.LORA for n, p in lora.named_parameters())
    weights = {role: t for name, t in model.state_dict().items() for role in [param_role(name)]}
    weights.setdefault(Role.HEAD, weights[Role.EMBED])  # tied: the embedding is the head
    for target, (fan_in, fan_out) in lora_shapes(cfg).items():
        assert fan_in == cfg.model_dim and fan_out == weights[LORA_TARGET_ROLES[target]].shape[0], target


def test_bf16_body_casts_only_embedding_tables(model):
    cast = cast_body(GPT(model.cfg), torch.bfloat16)
    assert {param_role(n) for n in cast} == {Role.EMBED, Role.BIGRAM_TABLE, Role.VALUE_EMBED}
