"""Defining properties of the record techniques that are options of the one model
(docs/techniques.md#record-techniques).

Module-level properties and start-as-identity checks. Every technique is also checked through the whole model with
random (non-identity) weights against a spelled-out reference in test_techniques_reference.py, and
scripts/mutation_check.py confirms that breaking any technique's defining line fails a test (docs/mutation.md).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pgolf.config import ModelConfig
from pgolf.errors import PgolfError
from pgolf.model.gpt import GPT, Rotary, exclude_self_value


def _cfg(**kw) -> ModelConfig:
    base = dict(vocab_size=128, num_layers=4, model_dim=64, num_heads=4, num_kv_heads=2)
    return ModelConfig(**{**base, **kw})


def test_xsa_output_has_no_component_along_its_own_value():
    torch.manual_seed(0)
    y, v = torch.randn(2, 4, 10, 16), torch.randn(2, 2, 10, 16)
    out = exclude_self_value(y, v)
    v_for_head = v.repeat_interleave(2, dim=1)
    assert (out * F.normalize(v_for_head, dim=-1)).sum(-1).abs().max() < 1e-5
    # and it removes nothing else: the difference is parallel to v
    diff = y - out
    assert torch.allclose(diff, (diff * F.normalize(v_for_head, dim=-1)).sum(-1, keepdim=True)
                          * F.normalize(v_for_head, dim=-1), atol=1e-5)


@pytest.mark.parametrize("last_n, expected", [(0, []), (2, [2, 3]), (99, [0, 1, 2, 3])])
def test_xsa_layer_selection(last_n, expected):
    model = GPT(_cfg(xsa_last_n=last_n))
    assert [i for i, b in enumerate(model.blocks) if b.attn.xsa] == expected


def test_partial_rope_leaves_other_dims_position_free():
    rot = Rotary(64, 10000.0, rope_dims=16)
    x = torch.randn(1, 1, 1, 64).expand(1, 1, 30, 64).contiguous()
    out = rot(x)
    assert torch.equal(out[..., 16:], x[..., 16:])            # position-independent
    assert not torch.allclose(out[0, 0, 3, :16], out[0, 0, 9, :16])  # rotated dims do depend on position
    assert torch.allclose(out[..., :16].norm(dim=-1), x[..., :16].norm(dim=-1), atol=1e-5)  # a rotation


def test_leaky_relu_squared():
    """The MLP module computes LeakyReLU(0.5)(x W1)^2 W2, written out here; relu^2 on the same weights differs."""
    torch.manual_seed(0)
    leaky = GPT(_cfg(mlp_activation="leaky_relu2")).blocks[0].mlp
    plain = GPT(_cfg()).blocks[0].mlp
    with torch.no_grad():
        torch.nn.init.eye_(leaky.fc.weight[:64])
        torch.nn.init.eye_(leaky.proj.weight[:, :64])
        x = torch.tensor([[-2.0, 3.0] + [0.0] * 62])
        assert leaky(x)[0, 0].item() == pytest.approx(1.0) and leaky(x)[0, 1].item() == pytest.approx(9.0)
        leaky.fc.weight.normal_(0, 0.125)
        leaky.proj.weight.normal_(0, 0.1)
        plain.load_state_dict(leaky.state_dict())
        x = torch.randn(2, 5, 64)
        h = x @ leaky.fc.weight.T
        assert torch.allclose(leaky(x), torch.where(h > 0, h, 0.5 * h).square() @ leaky.proj.weight.T, atol=1e-5)
        assert torch.allclose(plain(x), torch.where(h > 0, h, 0.0 * h).square() @ leaky.proj.weight.T, atol=1e-5)
        assert not torch.allclose(leaky(x), plain(x), atol=1e-2)


def test_ln_scale_multiplies_norm_outputs():
    model = GPT(_cfg(ln_scale=True))
    seen = {}
    for i, block in enumerate(model.blocks):
        block.attn.register_forward_hook(lambda m, args, out, i=i: seen.__setitem__(i, args[0]))
    model(torch.randint(0, 128, (1, 8)))
    for i, x in seen.items():
        assert x.pow(2).mean(-1).sqrt().mean().item() == pytest.approx(1 / math.sqrt(i + 1), rel=1e-3)


def test_skip_gates_lerp_between_skip_and_stream():
    """x <- s + sigmoid(g) (x - s) with s = w * skip, checked on the hidden states (before the final norm's head) of
    a model whose blocks are not the identity (random weights everywhere; the full reference is in
    test_techniques_reference.py)."""
    torch.manual_seed(0)
    gated = GPT(_cfg(skip_gates=True))
    assert gated.skip_gates is not None and not gated.skip_gates.any()
    with torch.no_grad():
        for name, p in gated.named_parameters():
            if p.ndim == 2 and "resid_mix" not in name and "skip_" not in name:
                p.normal_(0, p.size(1) ** -0.5)
            else:
                p.add_(0.3 * torch.randn_like(p))
    plain = GPT(_cfg())
    plain.load_state_dict({k: v for k, v in gated.state_dict().items() if k != "skip_gates"})
    x = torch.randint(0, 128, (1, 8))
    with torch.no_grad():
        gated.skip_gates.zero_()  # sigmoid = 0.5: the mean of stream and skip, not the plain add
        assert not torch.allclose(gated.hidden(x), plain.hidden(x), atol=1e-3)
        gated.skip_gates.fill_(30.0)  # sigmoid -> 1: x <- x, the skip is ignored
        plain.skip_weights.zero_()
        assert torch.allclose(gated.hidden(x), plain.hidden(x), atol=1e-5)


def test_invalid_technique_settings():
    from pgolf.options import resolve_config
    with pytest.raises(PgolfError, match="rope_dims"):
        resolve_config("baseline", ["model.rope_dims=7"], environ={})
    with pytest.raises(PgolfError, match="mlp_activation"):
        resolve_config("baseline", ["model.mlp_activation=gelu"], environ={})


def test_recurrence_virtual_order_and_unet_split():
    """The record's loop 3-5 twice: 17 applications of 11 layers, split 8 encoder / 9 decoder."""
    from pgolf.model.recurrence import max_skips, unet_split, virtual_layers

    order = virtual_layers(11, 3, 5, 2, looping=True)
    assert order == [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]
    enc, dec = unet_split(order)
    assert enc == [0, 1, 2, 3, 4, 5, 3, 4] and dec == [5, 3, 4, 5, 6, 7, 8, 9, 10]
    assert virtual_layers(11, 3, 5, 2, looping=False) == list(range(11))
    assert max_skips(11, 3, 5, 2) == 8
    assert virtual_layers(11, 4, 5, 1, looping=True) == [0, 1, 2, 3, 4, 5, 4, 5, 6, 7, 8, 9, 10]


def test_model_runs_blocks_in_virtual_order():
    model = GPT(_cfg(num_layers=5, num_loops=1, loop_start=1, loop_end=2))
    calls = []
    for i, block in enumerate(model.blocks):
        block.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
    model(torch.randint(0, 128, (1, 4)))
    assert calls == [0, 1, 2, 1, 2, 3, 4] and model.skip_weights.shape[0] == 3
    calls.clear()
    model.set_looping(False)
    model(torch.randint(0, 128, (1, 4)))
    assert calls == [0, 1, 2, 3, 4]


def test_smear_gate_bos_fix_blocks_leaks_across_documents():
    """With the BOS fix, changing the last token of document N cannot change document N+1's embeddings."""
    from pgolf.model.smear import SmearGate

    torch.manual_seed(0)
    smear = SmearGate(32, bos_id=1)
    with torch.no_grad():
        smear.smear_gate.normal_()
        smear.smear_lambda.fill_(0.7)
    emb = torch.nn.Embedding(50, 32)
    ids = torch.tensor([[1, 7, 8, 9, 1, 20, 21, 22]])  # doc N = [1, 7, 8, 9], doc N+1 = [1, 20, 21, 22]
    changed = ids.clone()
    changed[0, 3] = 30
    a, b = smear(emb(ids), ids), smear(emb(changed), changed)
    assert torch.equal(a[0, 4:], b[0, 4:])
    assert not torch.equal(a[0, 3], b[0, 3])
    unfixed = SmearGate(32, bos_id=-1)  # no BOS in the stream: the same change leaks into the next position
    unfixed.load_state_dict(smear.state_dict())
    assert not torch.equal(unfixed(emb(ids), ids)[0, 4], unfixed(emb(changed), changed)[0, 4])
    as_2135 = SmearGate(32, bos_id=1, bos_fix=False)  # PR #2135's setting: the BOS is mixed with the token before it
    as_2135.load_state_dict(smear.state_dict())
    leaked, clean = as_2135(emb(ids), ids), as_2135(emb(changed), changed)
    assert not torch.equal(leaked[0, 4], clean[0, 4])
    assert torch.equal(leaked[0, :4], a[0, :4]) and torch.equal(leaked[0, 5:], a[0, 5:])  # only the BOS differs


def test_smear_bos_fix_option_reaches_the_model():
    assert GPT(_cfg(smear_gate=True)).smear.bos_fix
    assert not GPT(_cfg(smear_gate=True, smear_bos_fix=False)).smear.bos_fix


def test_smear_gate_starts_as_identity():
    model = GPT(_cfg(smear_gate=True))
    plain = GPT(_cfg())
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("smear")})
    x = torch.randint(0, 128, (2, 10))
    assert torch.allclose(model(x), plain(x))


def _attn_out(model: GPT, x: torch.Tensor) -> torch.Tensor:
    return model.blocks[0].attn(x)


@pytest.mark.parametrize("kind, factor", [("out", 1.0), ("sparse", 0.5)])
def test_zero_init_gates_start_at_their_documented_value(kind, factor):
    torch.manual_seed(0)
    gated = GPT(_cfg(attn_gate=kind, attn_gate_scale=0.5))
    plain = GPT(_cfg())
    plain.load_state_dict({k: v for k, v in gated.state_dict().items() if "attn_gate" not in k})
    with torch.no_grad():
        gated.blocks[0].attn.proj.weight.normal_()
        plain.blocks[0].attn.proj.weight.copy_(gated.blocks[0].attn.proj.weight)
    x = torch.randn(2, 6, 64)
    assert torch.allclose(_attn_out(gated, x), factor * _attn_out(plain, x), atol=1e-5)


def test_gates_read_only_their_inputs():
    torch.manual_seed(0)
    for kind in ("out", "sparse"):
        gate = GPT(_cfg(attn_gate=kind)).blocks[0].attn.gate
        with torch.no_grad():
            gate.attn_gate_w.normal_()
        x = torch.randn(1, 5, 64)
        y = x.clone()
        y[..., 12:] += 3.0
        assert torch.equal(gate(x), gate(y)) and gate(x).shape == (1, 4, 5, 1)
    gated = GPT(_cfg(attn_gate="gated")).blocks[0].attn.gate
    g = gated(torch.randn(1, 5, 64))
    assert ((g > 0.4) & (g < 0.6)).all()  # N(0, 0.005) weights: about 0.5 at start
    from pgolf.optim.groups import parameter_roles
    assert parameter_roles(GPT(_cfg(attn_gate="gated")))["blocks.0.attn.gate.attn_gate_w"] == "scalar"


def _mlp_inputs(model: GPT, x: torch.Tensor) -> dict[int, torch.Tensor]:
    seen = {}
    hooks = [b.mlp.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, a[0].detach().clone()))
             for i, b in enumerate(model.blocks)]
    model(x)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("mode, independent", [("none", False), ("gptj", True), ("two_lane", True)])
def test_parallel_mlp_does_not_see_its_own_blocks_attention(mode, independent):
    torch.manual_seed(0)
    model = GPT(_cfg(parallel_mode=mode, parallel_start=2))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2 and not p.any():
                p.normal_(0, 0.05)
    x = torch.randint(0, 128, (1, 8))
    before = _mlp_inputs(model, x)
    with torch.no_grad():
        model.blocks[2].attn.proj.weight.mul_(3.0)
    after = _mlp_inputs(model, x)
    assert torch.equal(before[1], after[1])
    assert torch.allclose(before[2], after[2]) == independent
    assert not torch.allclose(before[3], after[3])  # later blocks do see it


def test_two_lane_parameters_and_init():
    model = GPT(_cfg(parallel_mode="two_lane", parallel_start=3))
    assert not hasattr(model.blocks[2], "lane_rho")
    assert torch.equal(model.blocks[3].lane_rho.data, torch.full((2,), 1.1))
    assert torch.equal(model.blocks[3].lane_mix.data, torch.ones(2, 2))


def test_bigram_hash_index_and_locality():
    from pgolf.model.bigram import BigramHash, bigram_index

    ids = torch.tensor([[5, 9, 9, 1000]])
    idx = bigram_index(ids, 4096)
    assert idx[0, 0] == 4095
    assert idx[0, 1] == (36313 * 9 ^ 27191 * 5) % 4095 and idx[0, 3] == (36313 * 1000 ^ 27191 * 9) % 4095
    assert (idx[0, 1:] < 4095).all()
    torch.manual_seed(0)
    bigram = BigramHash(64, 8, 32)
    with torch.no_grad():
        bigram.table.weight.normal_()
        bigram.proj.weight.normal_()
    x = torch.randint(0, 100, (1, 10))
    y = x.clone()
    y[0, 4] = (y[0, 4] + 1) % 100
    diff = (bigram(x) - bigram(y)).abs().sum(-1)[0]
    assert (diff[[0, 1, 2, 3, 6, 7, 8, 9]] == 0).all()   # only positions 4 and 5 read token 4
    assert diff[4] > 0 and diff[5] > 0


def test_bigram_hash_starts_as_identity():
    model = GPT(_cfg(bigram_rows=64, bigram_dim=8))
    plain = GPT(_cfg())
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("bigram")})
    x = torch.randint(0, 128, (2, 10))
    assert torch.allclose(model(x), plain(x))
    assert model.bigram.scale.item() == pytest.approx(0.05)


def test_value_embeddings_enter_only_the_last_layers_and_start_as_identity():
    torch.manual_seed(0)
    model = GPT(_cfg(value_embed_last_n=2, value_embed_dim=16))
    assert [b.uses_value_embed for b in model.blocks] == [False, False, True, True]
    plain = GPT(_cfg())
    plain.load_state_dict({k: v for k, v in model.state_dict().items()
                           if not k.startswith("value_embed") and "ve_layer_scale" not in k})
    x = torch.randint(0, 128, (2, 10))
    assert torch.allclose(model(x), plain(x))  # zero-init projection
    seen = {}
    for i, block in enumerate(model.blocks):
        block.attn.c_v.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, o))
    values = {}
    for i, block in enumerate(model.blocks):
        block.attn.register_forward_hook(lambda m, a, o, i=i: values.__setitem__(i, a[1] if len(a) > 1 else None))
    with torch.no_grad():
        model.value_embed_proj.weight.normal_()
    model(x)
    assert values[0] is None and values[1] is None
    assert values[2] is not None and values[3] is not None and values[2].shape == (2, 10, 32)


def test_ntk_rope_scaling_only_beyond_the_training_length():
    plain, ntk = Rotary(16, 10000.0), Rotary(16, 10000.0, ntk_train_len=8)
    x = torch.randn(1, 1, 8, 16)
    assert torch.equal(plain(x), ntk(x))  # up to the training length nothing changes
    long = torch.randn(1, 1, 32, 16)
    scaled = ntk(long)
    assert not torch.allclose(plain(long), scaled)
    # The base grows by (32/8)^(d/(d-2)): the lowest frequency slows down by exactly that factor^((d-2)/d) = 4.
    manual = Rotary(16, 10000.0 * 4 ** (16 / 14))
    assert torch.allclose(scaled, manual(long))
    assert manual.inv_freq[-1].item() == pytest.approx(plain.inv_freq[-1].item() / 4, rel=1e-5)


def test_value_residual_mixes_the_first_layers_values():
    torch.manual_seed(0)
    model = GPT(_cfg(value_residual=True, num_layers=3))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.2)
    x = torch.randint(0, 64, (1, 10))
    base = model(x)
    with torch.no_grad():
        model.blocks[0].attn.vres_alpha.fill_(5.0)  # layer 0 provides v_first; its own alpha is unused
    assert torch.equal(model(x), base)
    with torch.no_grad():
        model.blocks[2].attn.vres_alpha.fill_(-30.0)  # sigmoid ~ 0: layer 2 ignores v_first
        model.blocks[1].attn.vres_alpha.fill_(-30.0)
    off = GPT(_cfg(num_layers=3))
    off.load_state_dict({k: v for k, v in model.state_dict().items() if "vres_alpha" not in k})
    assert torch.allclose(model(x), off(x), atol=1e-5)
