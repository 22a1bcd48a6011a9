"""Late QAT is really active in the compiled training step (the 2026-03-21 record's flag never fired)."""

from __future__ import annotations

import torch

from pgolf.model.gpt import GPT
from pgolf.model.layers import fake_quantize_rows
from pgolf.quant.qat import configure_qat, set_qat_active


def test_qat_switches_inside_a_compiled_step(tiny_config):
    cfg = tiny_config("quant.qat_bits=3")
    torch.manual_seed(0)
    model = GPT(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.1)
    assert configure_qat(model, cfg.quant) > 0
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = torch.randint(0, cfg.model.vocab_size, (2, 16))
    y = torch.randint(0, cfg.model.vocab_size, (2, 16))
    off = compiled(x, y).item()
    set_qat_active(model, True)
    on = compiled(x, y).item()
    # The same compiled callable now computes the fake-quantized model: compare with an eager reference.
    reference = GPT(cfg.model)
    reference.load_state_dict(model.state_dict())
    trained = dict(model.named_modules())
    with torch.no_grad():
        for name, module in reference.named_modules():
            if getattr(trained[name], "qat_bits", 0):
                module.weight.copy_(fake_quantize_rows(module.weight, 3, trained[name].qat_k))
    assert abs(on - off) > 1e-4
    assert abs(on - reference(x, y).item()) < 1e-5
    # Gradients flow straight through to the float weights.
    compiled(x, y).backward()
    assert model.blocks[0].mlp.fc.weight.grad is not None and model.blocks[0].mlp.fc.weight.grad.abs().sum() > 0
