"""The GPT against an independent, spelled-out reference of the official naive baseline
(docs/techniques.md#baseline-model-and-training).

The reference below is written from the spec's prose, not from pgolf's modules: its own RMSNorm, RoPE as a complex
rotation, GQA by repeating K/V heads, and attention as an explicit masked softmax. Comparing the two on a model whose
zero-initialised projections have been given random values checks every wiring detail at once: resid_mix, branch
scales, q_gain, the U-Net skip order (LIFO) and weights, the final norm, the tied/untied head and the softcap.
"""

from __future__ import annotations

import math

import pytest
import torch

from pgolf.config import ModelConfig
from pgolf.model.gpt import GPT


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + torch.finfo(x.dtype).eps)


def _rope(x: torch.Tensor, base: float) -> torch.Tensor:
    """x [B, H, T, D]: pair dim i with dim i + D/2 as a complex number and rotate it by -t * base^(-2i/D)."""
    d, t = x.size(-1), x.size(-2)
    theta = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angle = torch.arange(t, dtype=torch.float64)[:, None] * theta
    z = torch.complex(x[..., : d // 2].double(), x[..., d // 2:].double()) * torch.polar(torch.ones_like(angle),
                                                                                        -angle)
    return torch.cat((z.real, z.imag), dim=-1).to(x.dtype)


def _attention(block, x: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    a = block.attn
    b, t, _ = x.shape
    hd = cfg.model_dim // cfg.num_heads
    q = (x @ a.c_q.weight.T).view(b, t, cfg.num_heads, hd).transpose(1, 2)
    k = (x @ a.c_k.weight.T).view(b, t, cfg.num_kv_heads, hd).transpose(1, 2)
    v = (x @ a.c_v.weight.T).view(b, t, cfg.num_kv_heads, hd).transpose(1, 2)
    q = _rope(_rms(q), cfg.rope_base) * a.q_gain[None, :, None, None]
    k = _rope(_rms(k), cfg.rope_base)
    group = cfg.num_heads // cfg.num_kv_heads
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    y = scores.softmax(-1) @ v
    return y.transpose(1, 2).reshape(b, t, -1) @ a.proj.weight.T


def reference_logits(model: GPT, ids: torch.Tensor, fifo: bool = False) -> torch.Tensor:
    """The baseline's logits; `fifo=True` pops the oldest skip instead (a wrong wiring, for the guard test)."""
    cfg = model.cfg
    x = _rms(model.tok_emb.weight[ids])
    x0 = x
    n_enc = cfg.num_layers // 2
    stack = []
    for i, block in enumerate(model.blocks):
        if i >= n_enc and stack:
            x = x + model.skip_weights[i - n_enc] * stack.pop(0 if fifo else -1)
        x = block.resid_mix[0] * x + block.resid_mix[1] * x0
        x = x + block.attn_scale * _attention(block, _rms(x), cfg)
        h = torch.relu(_rms(x) @ block.mlp.fc.weight.T).square()
        x = x + block.mlp_scale * (h @ block.mlp.proj.weight.T)
        if i < n_enc:
            stack.append(x)
    head = model.tok_emb.weight if cfg.tie_embeddings else model.lm_head.weight
    z = _rms(x) @ head.T
    return cfg.logit_softcap * torch.tanh(z / cfg.logit_softcap)


def _randomised(cfg: ModelConfig, seed: int = 0) -> GPT:
    """Every parameter moved away from its init, so zero-init and unit-init tensors carry signal and asymmetry."""
    torch.manual_seed(seed)
    model = GPT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("tok_emb") or name.startswith("lm_head"):
                p.normal_(0, 0.5)
            elif p.ndim == 2 and "resid_mix" not in name and "skip_weights" not in name:
                p.normal_(0, 1.0 / math.sqrt(p.size(1)))
            else:
                p.add_(0.3 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("layers, heads, kv, tied", [(2, 4, 2, True), (5, 4, 1, True), (4, 2, 2, False),
                                                     (1, 4, 4, True)])
def test_matches_the_spelled_out_baseline(layers, heads, kv, tied):
    cfg = ModelConfig(vocab_size=96, num_layers=layers, model_dim=32, num_heads=heads, num_kv_heads=kv,
                      tie_embeddings=tied)
    model = _randomised(cfg)
    ids = torch.randint(0, 96, (2, 12))
    with torch.no_grad():
        got, want = model(ids), reference_logits(model, ids)
    assert got.dtype == torch.float32 and got.shape == (2, 12, 96)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    assert want.std() > 0.5  # the comparison is not between two near-constant tensors


def test_skips_pop_last_in_first_out():
    """With three skips the LIFO and FIFO wirings differ; the model agrees with LIFO only."""
    cfg = ModelConfig(vocab_size=96, num_layers=6, model_dim=32, num_heads=4, num_kv_heads=2)
    model = _randomised(cfg)
    ids = torch.randint(0, 96, (1, 10))
    with torch.no_grad():
        got = model(ids)
        assert torch.allclose(got, reference_logits(model, ids), atol=1e-4, rtol=1e-4)
        assert not torch.allclose(got, reference_logits(model, ids, fifo=True), atol=1e-2)


def test_control_tensor_names_and_shapes():
    """The quantizer and the optimizer grouping find control tensors by these names."""
    cfg = ModelConfig(vocab_size=64, num_layers=3, model_dim=32, num_heads=4, num_kv_heads=2)
    shapes = {n: tuple(p.shape) for n, p in GPT(cfg).named_parameters()}
    assert shapes["blocks.0.attn_scale"] == shapes["blocks.0.mlp_scale"] == (32,)
    assert shapes["blocks.0.resid_mix"] == (2, 32)
    assert shapes["blocks.0.attn.q_gain"] == (4,)
    assert shapes["skip_weights"] == (1, 32)  # min(3 // 2, 3 - 3 // 2) = 1
    model = GPT(cfg)
    assert torch.equal(model.blocks[1].resid_mix, torch.stack((torch.ones(32), torch.zeros(32))))
    assert torch.all(model.blocks[2].attn.q_gain == cfg.qk_gain_init)


def test_tiny_config_trains_every_parameter():
    """A preset-sized model: forward and backward run, and once the zero-init projections are non-zero every
    parameter receives a finite, non-zero gradient."""
    cfg = ModelConfig(vocab_size=256, num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2)
    model = _randomised(cfg).train()
    ids = torch.randint(0, 256, (2, 16))
    model(ids, torch.roll(ids, -1, 1)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_forward_has_no_graph_breaks():
    """torch.compile(fullgraph=True) traces the whole forward (eager backend: checks Dynamo, not codegen)."""
    cfg = ModelConfig(vocab_size=256, num_layers=3, model_dim=64, num_heads=4, num_kv_heads=2)
    model = _randomised(cfg)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    ids = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        assert torch.allclose(compiled(ids), model(ids), atol=1e-6)
        assert torch.allclose(compiled(ids, ids, reduction="none"), model(ids, ids, reduction="none"), atol=1e-6)
