"""The bf16 body (pgolf/model/precision.py): which parameters change dtype, and the loss it gives."""

from __future__ import annotations

import pytest
import torch

from pgolf.config import ModelConfig
from pgolf.model.gpt import GPT
from pgolf.model.precision import body_dtype, cast_body

pytestmark = pytest.mark.usefixtures("one_thread")


def _model() -> GPT:
    cfg = ModelConfig(vocab_size=128, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1, bigram_rows=32,
                      bigram_dim=8, value_embed_last_n=1, value_embed_dim=8, smear_gate=True)
    torch.manual_seed(0)
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_only_embedding_tables_become_bf16():
    model = _model()
    cast = cast_body(model, torch.bfloat16)
    assert set(cast) == {"tok_emb.weight", "bigram.table.weight", "value_embed.weight"}
    for name, p in model.named_parameters():
        assert p.dtype == (torch.bfloat16 if name in cast else torch.float32), name


def test_bf16_body_loss_matches_fp32():
    model = _model()
    x, y = torch.randint(0, 128, (2, 32)), torch.randint(0, 128, (2, 32))
    with torch.no_grad():
        reference = model(x, y)
    cast_body(model, torch.bfloat16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x, y)
    assert loss.dtype == torch.float32
    assert abs(float(loss) - float(reference)) < 0.02 * float(reference)
    loss_grad = model(x, y)
    loss_grad.backward()
    assert model.tok_emb.weight.grad.dtype == torch.bfloat16 and torch.isfinite(model.tok_emb.weight.grad).all()


def test_body_dtype_choice():
    assert body_dtype("auto", torch.device("cpu")) == torch.float32
    assert body_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert body_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert body_dtype("fp32", torch.device("cuda")) == torch.float32
