"""Parameter grouping and the baseline's schedules."""

from __future__ import annotations

import pytest
import torch

from pgolf.config import ModelConfig, OptimConfig
from pgolf.model.gpt import GPT
from pgolf.optim.groups import build_optimizers, parameter_roles
from pgolf.optim.muon import Muon
from pgolf.optim.schedule import muon_momentum, warmdown_multiplier


def test_every_parameter_in_exactly_one_group():
    model = GPT(ModelConfig(vocab_size=128, num_layers=4, model_dim=32, num_heads=4, num_kv_heads=2))
    opts = build_optimizers(model, OptimConfig())
    seen = [id(p) for o in opts for g in o.param_groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())
    roles = parameter_roles(model)
    assert roles["tok_emb.weight"] == "embed"
    assert roles["blocks.0.attn.c_q.weight"] == "matrix" and roles["blocks.3.mlp.proj.weight"] == "matrix"
    for name in ("blocks.0.attn_scale", "blocks.0.resid_mix", "blocks.0.attn.q_gain", "skip_weights"):
        assert roles[name] == "scalar"
    muon = next(o for o in opts if isinstance(o, Muon))
    adam = next(o for o in opts if isinstance(o, torch.optim.Adam))
    assert muon.param_groups[0]["base_lr"] == 0.04
    assert {g["base_lr"] for g in adam.param_groups} == {0.05, 0.04}
    assert adam.defaults["betas"] == (0.9, 0.95)


def test_untied_head_gets_head_lr():
    model = GPT(ModelConfig(vocab_size=64, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1,
                            tie_embeddings=False))
    adam = build_optimizers(model, OptimConfig())[0]
    lrs = {id(p): g["lr"] for g in adam.param_groups for p in g["params"]}
    assert lrs[id(model.lm_head.weight)] == 0.008 and lrs[id(model.tok_emb.weight)] == 0.6


def test_momentum_warmup():
    cfg = OptimConfig()
    assert muon_momentum(0, cfg) == pytest.approx(0.85)
    assert muon_momentum(250, cfg) == pytest.approx(0.90)
    assert muon_momentum(500, cfg) == muon_momentum(5000, cfg) == pytest.approx(0.95)


def test_time_based_warmdown():
    # 100 steps in 10 s: 0.1 s/step; warmdown of 20 steps = 2 s. With a 600 s cap, flat until 598 s.
    assert warmdown_multiplier(100, 10.0, 600.0, 20, 10_000) == 1.0
    assert warmdown_multiplier(5000, 599.0, 600.0, 20, 10_000) == pytest.approx(1.0 / (20 * 599 / 5000))
    assert warmdown_multiplier(5000, 600.0, 600.0, 20, 10_000) == 0.0


def test_step_based_warmdown_without_cap():
    assert warmdown_multiplier(79, 0.0, 0.0, 20, 100) == 1.0
    assert warmdown_multiplier(90, 0.0, 0.0, 20, 100) == pytest.approx(0.5)
    assert warmdown_multiplier(100, 0.0, 0.0, 20, 100) == 0.0


def test_adam_betas_per_group(tiny_config):
    from pgolf.errors import PgolfError
    from pgolf.model.gpt import GPT
    from pgolf.optim.groups import build_optimizers

    cfg = tiny_config("optim.embed_betas=0.8,0.99", "optim.scalar_betas=0.9,0.999")
    adam = next(o for o in build_optimizers(GPT(cfg.model), cfg.optim) if isinstance(o, torch.optim.Adam))
    assert [g["betas"] for g in adam.param_groups] == [(0.8, 0.99), (0.9, 0.999)]
    with pytest.raises(PgolfError, match="beta1,beta2"):
        tiny_config("optim.head_betas=0.9")


def test_progressive_sequence_length_schedule():
    from pgolf.errors import PgolfError
    from pgolf.optim.schedule import parse_seq_len_schedule, seq_len_at

    stages = parse_seq_len_schedule("0:256,0.2:512", 1024)
    assert [seq_len_at(p, stages, 1024, 0.5) for p in (0.0, 0.1, 0.2, 0.49, 0.5, 0.9)] == [256, 256, 512, 512,
                                                                                        1024, 1024]
    for bad in ("0:300", "0.5:256,0.2:512", "x", "1.0:256", "0:2048"):
        with pytest.raises(PgolfError):
            parse_seq_len_schedule(bad, 1024, 65536)


def test_training_with_progressive_sequence_length(tiny_data, tiny_config, tmp_path):
    from pgolf.train.trainer import train
    result = train(tiny_config("train.seq_len_schedule=0:16,0.2:32", "train.seq_len_full_frac=0.6",
                               "train.iterations=10"), tiny_data, tmp_path / "r", echo=None)
    assert result["steps"] == 10


def test_adam_groups_decay_their_own_weights():
    """embed/scalar weight decay is decoupled (AdamW: param *= 1 - lr * wd before the Adam update), per group, and
    with zero gradients the update is exactly that shrink; with no decay the weights do not move."""
    model = GPT(ModelConfig(vocab_size=64, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1))
    opts = build_optimizers(model, OptimConfig(embed_weight_decay=0.5, scalar_weight_decay=0.25))
    adam = next(o for o in opts if isinstance(o, torch.optim.AdamW))
    emb, scale = model.tok_emb.weight, model.blocks[0].attn_scale
    before = {"emb": emb.detach().clone(), "scale": scale.detach().clone(), "q": model.blocks[0].attn.q_gain.detach().clone()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    adam.step()
    assert torch.allclose(emb, before["emb"] * (1 - 0.05 * 0.5))        # tied_embed_lr 0.05
    assert torch.allclose(scale, before["scale"] * (1 - 0.04 * 0.25))   # scalar_lr 0.04
    plain = GPT(ModelConfig(vocab_size=64, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1))
    adam0 = build_optimizers(plain, OptimConfig())[0]
    start = plain.tok_emb.weight.detach().clone()
    for p in plain.parameters():
        p.grad = torch.zeros_like(p)
    adam0.step()
    assert torch.equal(plain.tok_emb.weight, start)
