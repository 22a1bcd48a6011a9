"""GPTQ Hessians in float32, one per attention for Q, K and V: the same matrices and the same GPTQ integers as the
separate float64 ones they replace."""

from __future__ import annotations

import pytest
import torch

from pgolf.errors import PgolfError
from pgolf.quant.gptq import HessianCollector, gptq_quantize
from pgolf.quant.grid import row_scales

pytestmark = pytest.mark.usefixtures("one_thread")

# Layers 1 and 2 looped (three applications each) and two-lane blocks from layer 3, as in the record.
LOOPED = ("model.num_layers=4", "model.num_loops=2", "model.loop_start=1", "model.loop_end=2",
          "model.parallel_mode=two_lane", "model.parallel_start=3", "model.xsa_last_n=4")


def _collect(model, batches, **kw) -> HessianCollector:
    with HessianCollector(model, **kw) as hc:
        for tokens in batches:
            hc.collect(tokens)
    return hc


@pytest.fixture(scope="module")
def pair(one_thread):
    """A looped tiny model with random weights (zero-init projections would leave half the inputs at zero) and its
    Hessians both ways."""
    from pgolf.model.gpt import GPT
    from pgolf.options import resolve_config
    from conftest import TINY_MODEL_SETS
    cfg = resolve_config("cpu-smoke", [*TINY_MODEL_SETS, *LOOPED], environ={})
    torch.manual_seed(0)
    model = GPT(cfg.model).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim == 2 else 0.1) + (1.0 if p.ndim < 2 else 0.0))
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, cfg.model.vocab_size, (2, 32), generator=g) for _ in range(3)]
    return model, _collect(model, batches), _collect(model, batches, dtype=torch.float64, share_inputs=False)


def test_qkv_share_one_float32_matrix_per_attention(pair):
    _, new, old = pair
    h = new.hessians
    assert set(h) == set(old.hessians) and all(t.dtype == torch.float32 for t in h.values())
    for i in range(4):
        q, k, v = (h[f"blocks.{i}.attn.c_{p}.weight"] for p in "qkv")
        assert q is k is v
    assert len(new.distinct()) == len(h) - 2 * 4
    moved = new.hessians_on("cpu")
    assert moved["blocks.0.attn.c_q.weight"] is moved["blocks.0.attn.c_v.weight"]


def test_float32_shared_hessians_equal_the_separate_float64_ones(pair):
    _, new, old = pair
    assert new.tokens_seen == old.tokens_seen == 3 * 64
    for name, ref in old.hessians.items():
        assert float((new.hessians[name].double() - ref).abs().max()) <= 1e-5 * float(ref.abs().max()), name


def test_looped_layers_accumulate_every_application(pair):
    """A looped layer's Hessian is the sum over its applications: three here, so more than one pass's."""
    model, new, _ = pair
    model.set_looping(False)
    try:
        g = torch.Generator().manual_seed(1)
        once = _collect(model, [torch.randint(0, 512, (2, 32), generator=g) for _ in range(3)])
    finally:
        model.set_looping(True)
    looped = "blocks.1.attn.c_q.weight"
    assert float(new.hessians[looped].trace()) > 2 * float(once.hessians[looped].trace())


def test_gptq_on_the_shared_float32_hessians_matches_float64(pair):
    model, new, old = pair
    state = model.state_dict()
    for name in ("blocks.0.attn.c_k.weight", "blocks.1.attn.c_v.weight", "blocks.2.mlp.fc.weight", "tok_emb.weight"):
        w = state[name].float()
        s = row_scales(w, 6, "sdclip", 12.85)
        a, b = gptq_quantize(w, new.hessians[name], s, 6), gptq_quantize(w, old.hessians[name], s, 6)
        differ = (a != b).float().mean()
        assert differ < 0.01 and int((a.int() - b.int()).abs().max()) <= 1, name


def test_projections_reading_different_inputs_are_refused(pair):
    """If an attention ever fed K a different tensor than Q, sharing their Hessian would be wrong: refused."""
    model, *_ = pair
    copy = model.blocks[0].attn.c_k.register_forward_pre_hook(lambda mod, args: (args[0].clone(),))
    try:
        with pytest.raises(PgolfError, match="did not read the input"):
            _collect(model, [torch.randint(0, 512, (1, 8))])
        assert _collect(model, [torch.randint(0, 512, (1, 8))], share_inputs=False).hessians
    finally:
        copy.remove()
