"""Test-time LoRA adapters on the one model: wired where the 1.0611 record wires them (Q/K/V as weight updates, O and
MLP as low-rank paths beside their branch, the head before the softcap), one adapter per virtual-layer slot and per
batch row, and fresh adapters that change nothing."""

from __future__ import annotations

import pytest
import torch

from pgolf.config import ModelConfig
from pgolf.model.gpt import GPT
from pgolf.model.lora import LORA_TARGETS, BatchedLoRA

# 3 layers, layer 1 looped once (virtual order 0, 1, 1, 2: 4 slots), layer 2 two-lane.
CFG = ModelConfig(vocab_size=64, num_layers=3, model_dim=32, num_heads=4, num_kv_heads=2, num_loops=1,
                  loop_start=1, loop_end=1, parallel_mode="two_lane", parallel_start=2, xsa_last_n=3,
                  attn_gate="sparse", smear_gate=True)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = GPT(CFG)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net.eval()


def _lora(model, rows=1, targets=LORA_TARGETS, seed=1, b_scale=0.3, only=None):
    """Random A and B (only the keys in `only`, when given, get a non-zero B)."""
    lora = BatchedLoRA(CFG, rows=rows, rank=3, slots=model.slots, targets=targets, alpha=6.0)
    gen = torch.Generator().manual_seed(seed)
    lora.draw_a(gen)
    with torch.no_grad():
        for key, b in lora.b.items():
            if only is None or key in only:
                b.copy_(b_scale * torch.randn(b.shape, generator=gen))
    return lora


def _logits(model, x, lora=None):
    with torch.no_grad():
        return model.head(model.hidden(x, lora), lora)


X = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(2))


def test_slots_are_virtual_layers(model):
    assert model.slots == 4
    lora = BatchedLoRA(CFG, rows=2, rank=3, slots=model.slots, targets=LORA_TARGETS)
    assert sorted(lora.a) == sorted([f"{t}_{s}" for t in ("q", "k", "v", "o", "mlp") for s in range(4)] + ["head"])
    assert lora.a["head"].shape == (2, 3, 32) and lora.b["head"].shape == (2, 64, 3)
    assert lora.b["k_0"].shape == (2, 16, 3)  # K and V have the KV width


def test_fresh_adapters_change_nothing(model):
    lora = _lora(model, b_scale=0.0)
    assert torch.equal(_logits(model, X, lora), _logits(model, X))


@pytest.mark.parametrize("target", ["q", "k", "v"])
@pytest.mark.parametrize("slot, layer", [(0, 0), (3, 2)])
def test_qkv_adapters_are_low_rank_weight_updates(model, target, slot, layer):
    """For one row, x A^T B^T * scale is x (W + scale * B A)^T - x W^T: the same as updating the weight."""
    key = f"{target}_{slot}"
    lora = _lora(model, only={key})
    merged = GPT(CFG)
    merged.load_state_dict(model.state_dict())
    linear = getattr(merged.blocks[layer].attn, f"c_{target}")
    with torch.no_grad():
        linear.weight += lora.scale * lora.b[key][0] @ lora.a[key][0]
    assert torch.allclose(_logits(model, X, lora), _logits(merged.eval(), X), atol=1e-5)
    assert not torch.allclose(_logits(model, X, lora), _logits(model, X), atol=1e-3)


@pytest.mark.parametrize("target, module", [("o", "attn"), ("mlp", "mlp")])
@pytest.mark.parametrize("slot, layer", [(0, 0), (3, 2)])
def test_o_and_mlp_adapters_run_beside_their_branch(model, target, module, slot, layer):
    """The record's O and MLP adapters read the branch's (normed) input and add to the branch's output."""
    key = f"{target}_{slot}"
    lora = _lora(model, only={key})
    a, b = lora.a[key][0], lora.b[key][0]

    def hook(_, inputs, output):
        return output + lora.scale * inputs[0] @ a.T @ b.T

    handle = getattr(model.blocks[layer], module).register_forward_hook(hook)
    try:
        reference = _logits(model, X)
    finally:
        handle.remove()
    assert torch.allclose(_logits(model, X, lora), reference, atol=1e-5)


def test_head_adapter_adds_to_the_logits_before_the_softcap(model):
    lora = _lora(model, only={"head"})
    with torch.no_grad():
        h = model.hidden(X)
        z = h @ model.tok_emb.weight.T + lora.scale * h @ lora.a["head"][0].T @ lora.b["head"][0].T
        expected = CFG.logit_softcap * torch.tanh(z / CFG.logit_softcap)
    assert torch.allclose(_logits(model, X, lora), expected, atol=1e-5)


def test_a_looped_layer_has_one_adapter_per_application(model):
    base = _logits(model, X)
    first, second = _logits(model, X, _lora(model, only={"q_1"})), _logits(model, X, _lora(model, only={"q_2"}))
    assert not torch.allclose(first, base, atol=1e-3) and not torch.allclose(second, base, atol=1e-3)
    assert not torch.allclose(first, second, atol=1e-3)


def test_rows_adapt_independently(model):
    lora = _lora(model, rows=2)
    with torch.no_grad():
        for b in lora.b.values():
            b[0] = 0  # row 0: fresh adapters; row 1: trained ones
    x = torch.cat([X, X])
    out = _logits(model, x, lora)
    # Row 0 is the base model: equal up to float32 rounding (a batch of 2 may take another matmul blocking than a
    # batch of 1; 3.6e-7 apart on this machine's CPU), far below what row 1's trained adapters move (> 1e-3).
    torch.testing.assert_close(out[0], _logits(model, X)[0], rtol=0, atol=1e-5)
    assert not torch.allclose(out[1], out[0], atol=1e-3)
