"""The mixed recipe: grids, GPTQ, LQER, ternary, and exact storage of every per-row scheme."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf.artifact.format import decode_artifact, encode_artifact
from pgolf.options import resolve_config
from pgolf.errors import PgolfError
from pgolf.quant.gptq import HessianCollector, generate_calibration, gptq_quantize, hessian_error
from pgolf.quant.grid import SEARCH_QUANTILES, round_to_grid, row_scales
from pgolf.quant.lqer import lqer_correction
from pgolf.quant.recipe import parse_group_values, plan_for, quantize_mixed
from pgolf.quant.schemes import QuantizedModel, QuantizedTensor, check_tensor, dequantize_tensor, qmax


def _matrix(rows=64, cols=96, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=g) * 0.05


def _correlated_hessian(cols=96, seed=1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g) / cols ** 0.5 + torch.eye(cols)
    x = torch.randn(4096, cols, generator=g) @ mix * torch.linspace(0.2, 3.0, cols)
    return (x.T @ x).double()


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("method", ["percentile", "search", "sdclip", "absmean"])
def test_grid_integers_stay_in_range_and_scales_are_fp16(bits, method):
    w = _matrix()
    s = row_scales(w, bits, method, k=12.0)
    q = round_to_grid(w, s, bits)
    assert q.abs().max() <= qmax(bits)
    assert torch.equal(s, s.half().float())


def test_search_is_never_worse_than_any_single_quantile():
    from pgolf.quant.schemes import clip_quantile
    w = _matrix() + torch.randn(64, 96) * 0.3 * (torch.rand(64, 96) < 0.01)  # outliers make the choice matter
    s = row_scales(w, 4, "search")
    err = ((round_to_grid(w, s, 4) * s[:, None] - w) ** 2).sum(1)
    for q in SEARCH_QUANTILES:
        sq = (clip_quantile(w.abs(), q) / qmax(4)).clamp_min(2 ** -14).half().float()
        err_q = ((round_to_grid(w, sq, 4) * sq[:, None] - w) ** 2).sum(1)
        assert bool((err <= err_q + 1e-9).all())


def test_sdclip_k_is_a_monotone_size_knob():
    from pgolf.quant.fitter import entropy_bytes
    w = _matrix(256, 256)
    sizes = [entropy_bytes(round_to_grid(w, row_scales(w, 6, "sdclip", k), 6).numpy()) for k in (6, 10, 14, 20)]
    assert sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("bits", [3, 4, 6])
def test_gptq_beats_round_to_nearest_on_the_layer_loss(bits):
    w, h = _matrix(), _correlated_hessian()
    s = row_scales(w, bits, "sdclip", 12.0)
    rtn = round_to_grid(w, s, bits) * s[:, None]
    gptq = gptq_quantize(w, h, s, bits).float() * s[:, None]
    assert hessian_error(w, gptq, h) < 0.8 * hessian_error(w, rtn, h)


def test_gptq_with_identity_hessian_and_no_act_order_is_round_to_nearest():
    w = _matrix()
    s = row_scales(w, 5, "sdclip", 12.0)
    q = gptq_quantize(w, torch.eye(96, dtype=torch.float64), s, 5, act_order=False, damp=0.0)
    assert torch.equal(q.float(), round_to_grid(w, s, 5))


def test_gptq_handles_dead_inputs():
    w, h = _matrix(), _correlated_hessian()
    h[:, 5] = 0
    h[5, :] = 0
    q = gptq_quantize(w, h, row_scales(w, 6), 6)
    assert torch.all(q[:, 5] == 0)


def test_lqer_reduces_the_error_and_uses_its_integer_ranges():
    w = _matrix(128, 192)
    s = row_scales(w, 3, "sdclip", 12.0)
    e = w - round_to_grid(w, s, 3) * s[:, None]
    arrays, corr = lqer_correction(e, rank=4)
    assert (e - corr).norm() < e.norm()
    assert arrays["lqer_a"].min() >= -2 and arrays["lqer_a"].max() <= 1
    assert arrays["lqer_b"].min() >= -8 and arrays["lqer_b"].max() <= 7


def test_ternary_is_int2_with_absmean_scales():
    w = _matrix()
    s = row_scales(w, 2, "absmean")
    q = round_to_grid(w, s, 2)
    assert set(q.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert torch.allclose(s, w.abs().mean(1), rtol=1e-3)


def _state(seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"tok_emb.weight": torch.randn(96, 32, generator=g) * 0.02,
            "blocks.0.attn.c_q.weight": torch.randn(32, 32, generator=g) * 0.05,
            "blocks.0.attn.gate.attn_gate_w": torch.randn(4, 12, generator=g),
            "blocks.0.mlp.fc.weight": torch.randn(64, 32, generator=g) * 0.05,
            "blocks.0.attn_scale": torch.ones(32), "step": torch.tensor([3, 4])}


def _qcfg(**kw):
    q = resolve_config("baseline").quant
    q.scheme, q.passthrough_numel = "mixed", 100
    for k, v in kw.items():
        setattr(q, k, v)
    return q


def test_mixed_recipe_assigns_schemes_by_group_and_round_trips_through_the_artifact():
    q = _qcfg(bits="embed=7,attn=5,mlp=4", int8_gates=True, lqer_top=1, lqer_rank=2)
    qm, report = quantize_mixed(_state(), q)
    schemes = {t.name: t.scheme for t in qm.tensors}
    assert schemes["tok_emb.weight"].startswith("int7_row")
    assert schemes["blocks.0.attn.c_q.weight"].startswith("int5_row")
    assert schemes["blocks.0.mlp.fc.weight"].startswith("int4_row")
    assert schemes["blocks.0.attn.gate.attn_gate_w"] == "int8_row"
    assert schemes["blocks.0.attn_scale"] == "fp16" and schemes["step"] == "raw"
    assert len(report.lqer) == 1 and schemes[report.lqer[0]].endswith("_lqer")
    art = decode_artifact(encode_artifact(qm, config={}, tokenizer={}, codec="lzma"))
    for qt in qm.tensors:
        assert torch.equal(art.state_dict()[qt.name], dequantize_tensor(qt))
    assert torch.equal(art.state_dict()["step"], torch.tensor([3, 4]))


@settings(max_examples=25, deadline=None)
@given(bits=st.integers(2, 8), rows=st.integers(1, 9), cols=st.integers(1, 70), lqer=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_every_int_row_scheme_decodes_exactly(bits, rows, cols, lqer, seed):
    torch.manual_seed(seed)
    w = torch.randn(rows, cols) * 0.1
    s = row_scales(w, bits, "sdclip", 10.0)
    q = round_to_grid(w, s, bits).to(torch.int8)
    arrays = {"q": q.numpy(), "scale": s.half().numpy()}
    scheme = f"int{bits}_row"
    if lqer:
        arrays |= lqer_correction(w - q.float() * s[:, None], rank=2)[0]
        scheme += "_lqer"
    qt = QuantizedTensor("blocks.0.mlp.fc.weight", (rows, cols), "float32", scheme, arrays)
    assert check_tensor(qt) is None
    art = decode_artifact(encode_artifact(QuantizedModel([qt]), config={}, tokenizer={}, codec="zlib"))
    assert np.array_equal(art.quantized.tensors[0].arrays["q"], arrays["q"])
    assert torch.equal(art.state_dict()[qt.name], dequantize_tensor(qt))


def test_out_of_range_integers_are_refused():
    qt = QuantizedTensor("w", (2, 2), "float32", "int4_row",
                         {"q": np.array([[0, 8], [1, 1]], np.int8), "scale": np.ones(2, np.float16)})
    assert "outside" in check_tensor(qt)


def test_group_value_strings_are_validated():
    assert parse_group_values("embed=7,attn=6,default=5", int, "bits", lo=2, hi=8) == {"embed": 7, "attn": 6,
                                                                                        "default": 5}
    with pytest.raises(PgolfError, match="GROUP=VALUE"):
        parse_group_values("nonsense=3", int, "bits", lo=2, hi=8)
    with pytest.raises(PgolfError, match="outside"):
        parse_group_values("attn=9", int, "bits", lo=2, hi=8)
    plan = plan_for(_qcfg(bits="attn=5,default=6", clip_k="attn.q=9"))
    assert (plan["attn.q"].bits, plan["attn.q"].k, plan["attn.k"].bits, plan["mlp.fc"].bits) == (5, 9.0, 5, 6)


def test_hessians_cover_every_linear_and_the_tied_embedding(tiny_config):
    from pgolf.model.gpt import GPT
    cfg = tiny_config()
    model = GPT(cfg.model)
    linears = {n for n, p in model.state_dict().items() if p.ndim == 2 and ("attn.c_" in n or "proj" in n or
                                                                             "fc" in n)}
    with HessianCollector(model) as hc:
        hc.collect(torch.randint(0, cfg.model.vocab_size, (2, 16)))
    assert linears | {"tok_emb.weight"} == set(hc.hessians)
    for h in hc.hessians.values():
        assert torch.allclose(h, h.T) and bool((torch.linalg.eigvalsh(h) > -1e-6 * h.diagonal().max()).all())
    seqs = generate_calibration(model, num_seqs=3, seq_len=5, batch=2)
    assert seqs.shape == (3, 5) and int(seqs.max()) < cfg.model.vocab_size
