"""AWQ-lite (PR #1908): the most salient column groups at a wider width inside the same GPTQ solve, stored as their
own integer stream, counted by the budget fitter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pgolf.artifact.ans_container import symbol_streams
from pgolf.artifact.codec_base import layout_pieces
from pgolf.artifact.format import _table_and_payload, decode_artifact, encode_artifact, payload_layout
from pgolf.options import resolve_config
from pgolf.quant.awq import group_saliency, select_groups
from pgolf.quant.fitter import _group_est_bytes, fit_budget, group_options
from pgolf.quant.gptq import FineColumns, HessianCollector, gptq_quantize, hessian_error
from pgolf.quant.grid import round_to_grid, row_scales
from pgolf.quant.recipe import GroupPlan, awq_groups, plan_for, quantize_mixed
from pgolf.quant.schemes import QuantizedModel, QuantizedTensor, awq_scale, check_tensor, dequantize_tensor, qmax

FC = "blocks.0.mlp.fc.weight"


def _qcfg(**kw):
    q = resolve_config("baseline").quant
    q.scheme, q.passthrough_numel, q.gptq, q.bits, q.awq_group = "mixed", 100, True, "default=6", 16
    for k, v in kw.items():
        setattr(q, k, v)
    return q


def _salient_hessian(cols: int, hot: slice, seed: int = 1) -> torch.Tensor:
    """A diagonal Hessian (so GPTQ's feedback is nil and every column is plain rounding) whose `hot` inputs are 5x
    louder than the rest."""
    g = torch.Generator().manual_seed(seed)
    d = torch.rand(cols, generator=g) + 0.5
    d[hot] *= 25.0
    return torch.diag(d)


def test_the_most_salient_group_is_chosen_and_its_columns_use_the_finer_grid():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 96, generator=g) * 0.05
    h = _salient_hessian(96, slice(32, 48))  # group 2 of 16 columns carries the loud inputs
    q = _qcfg(awq_top=1)
    qm, report = quantize_mixed({FC: w}, q, hessians={FC: h})
    qt = qm.tensors[0]
    assert report.awq == {FC: [32]} and qt.scheme == "int6_row_awq8"
    assert qt.arrays["q"].shape == (64, 80) and qt.arrays["q_awq"].shape == (64, 16)
    assert np.abs(qt.arrays["q_awq"]).max() > qmax(6)  # the int8 range is used
    err = (w - dequantize_tensor(qt)).abs()
    coarse = row_scales(w, 6, "sdclip", 12.85)[:, None]
    fine = awq_scale(coarse, 6, 8)  # the same clip over 127 levels instead of 31: PR #1908's s_hi
    assert torch.allclose(fine, row_scales(w, 8, "sdclip", 12.85)[:, None], rtol=2e-3)
    assert bool((err[:, 32:48] <= fine / 2 + 1e-7).all())  # the finer grid's rounding error, and no more
    assert err[:, 32:48].mean() < 0.4 * err[:, :32].mean()
    assert bool((err[:, :32] <= coarse / 2 + 1e-7).all())
    off = quantize_mixed({FC: w}, _qcfg(awq_top=0), hessians={FC: h})[0].tensors[0]
    assert off.scheme == "int6_row"
    assert np.array_equal(off.arrays["q"][:, 48:], qt.arrays["q"][:, 32:])  # the rest is untouched (diagonal H)
    rms = torch.ones(96)
    rms[64:80] = 10.0  # calibration's activation RMS, when given, is what scores the groups
    assert quantize_mixed({FC: w}, q, hessians={FC: h}, act_rms={FC: rms})[1].awq == {FC: [64]}


def test_saliency_is_activation_rms_times_mean_abs_weight_summed_per_group():
    w = torch.tensor([[1.0, -2.0, 0.0, 4.0, 9.0], [3.0, 0.0, -2.0, 0.0, 9.0]])
    rms = torch.tensor([1.0, 1.0, 10.0, 0.5, 100.0])
    assert group_saliency(w, rms, 2).tolist() == [2.0 + 1.0, 10.0 + 1.0]  # the 5th column is a tail: never a group
    scores = {"a": torch.tensor([1.0, 5.0]), "b": torch.tensor([4.0, 7.0, 0.5])}
    assert select_groups(scores, 2, 8) == {"a": [8], "b": [8]}  # the model's top 2 (PR #1908's code)
    assert select_groups(scores, 1, 8, per_matrix=True) == {"a": [8], "b": [8]}
    assert select_groups(scores, 2, 8, per_matrix=True) == {"a": [0, 8], "b": [0, 8]}
    assert select_groups(scores, 0, 8) == {}


def test_only_gptq_matrices_narrower_than_awq_bits_compete():
    g = torch.Generator().manual_seed(0)
    state = {"tok_emb.weight": torch.randn(96, 32, generator=g), FC: torch.randn(64, 32, generator=g)}
    h = {n: _salient_hessian(32, slice(0, 16)) for n in state}
    q = _qcfg(awq_top=4, bits="embed=8,default=6")
    assert set(awq_groups(state, q, plan_for(q), h)) == {FC}  # the int8 embedding cannot get wider
    assert awq_groups(state, _qcfg(awq_top=4, gptq=False), plan_for(q), h) == {}  # no GPTQ, no Hessian: off
    assert quantize_mixed(state, _qcfg(awq_top=4, gptq=False), hessians=h)[1].awq == {}


def test_gptq_with_fine_columns_is_round_to_nearest_on_both_grids_without_feedback():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(32, 48, generator=g) * 0.05
    mask = torch.zeros(48, dtype=torch.bool)
    mask[16:32] = True
    s6 = row_scales(w, 6)
    s8 = awq_scale(s6, 6, 8)
    q = gptq_quantize(w, torch.eye(48, dtype=torch.float64), s6, 6, act_order=False, damp=0.0,
                      fine=FineColumns(mask, s8, 8))
    assert torch.equal(q[:, ~mask].float(), round_to_grid(w[:, ~mask], s6, 6))
    assert torch.equal(q[:, mask].float(), round_to_grid(w[:, mask], s8, 8))


def _trained_like_model(tiny_config, tiny_data):
    """A tiny GPT and Hessians (and activation RMS) from real calibration: its forward over training tokens."""
    from pgolf.data.shards import read_shard
    from pgolf.model.gpt import GPT

    cfg = tiny_config()
    torch.manual_seed(0)
    model = GPT(cfg.model).eval()
    tokens = np.asarray(read_shard(sorted(tiny_data.glob("*train*.bin"))[0])[:8 * 64]).astype(np.int64)
    with HessianCollector(model) as hc:
        hc.collect(torch.from_numpy(tokens).reshape(8, 64))
    return model.state_dict(), hc.hessians, hc.activation_rms()


def test_activation_rms_is_the_rms_of_each_input_channel(tiny_config, tiny_data):
    from pgolf.data.shards import read_shard
    from pgolf.model.gpt import GPT

    cfg = tiny_config()
    model = GPT(cfg.model).eval()
    seen = []
    fc = dict(model.named_modules())[FC.removesuffix(".weight")]
    handle = fc.register_forward_pre_hook(lambda mod, args: seen.append(args[0].reshape(-1, args[0].shape[-1])))
    tokens = torch.from_numpy(np.asarray(read_shard(sorted(tiny_data.glob("*train*.bin"))[0])[:256]).astype(np.int64))
    with HessianCollector(model) as hc, torch.no_grad():
        hc.collect(tokens.reshape(4, 64))
    handle.remove()
    x = torch.cat(seen).double()
    assert torch.allclose(hc.activation_rms()[FC].double(), x.pow(2).mean(0).sqrt(), rtol=1e-4)


@pytest.mark.parametrize("top", [1, 4])
def test_awq_never_worsens_the_activation_weighted_error_on_a_calibrated_model(tiny_config, tiny_data, top):
    """||(W - W_hat) X^T||^2 = tr(E H E^T), summed over the matrices, with real calibration: no worse with AWQ."""
    state, hessians, rms = _trained_like_model(tiny_config, tiny_data)
    q = _qcfg(passthrough_numel=1024, awq_group=8)
    total = {}
    for awq_top in (0, top):
        q.awq_top = awq_top
        qm, report = quantize_mixed(state, q, hessians=hessians, act_rms=rms)
        assert sum(map(len, report.awq.values())) == awq_top
        total[awq_top] = sum(hessian_error(state[qt.name], dequantize_tensor(qt), hessians[qt.name]) *
                             float(torch.diagonal(hessians[qt.name]).sum())
                             for qt in qm.tensors if qt.name in hessians and qt.is_row_scaled)
    assert total[top] < total[0]


def _awq_record(seed=0, starts=(16,), group=16, cols=64) -> QuantizedTensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(8, cols, generator=g) * 0.05
    mask = torch.zeros(cols, dtype=torch.bool)
    for s in starts:
        mask[s:s + group] = True
    s6 = row_scales(w, 6)
    q = round_to_grid(w, s6, 6)
    q[:, mask] = round_to_grid(w[:, mask], awq_scale(s6, 6, 8), 8)
    arrays = {"q": q[:, ~mask].to(torch.int8).numpy(), "scale": s6.half().numpy(),
              "q_awq": q[:, mask].to(torch.int8).numpy(), "awq_start": np.array(starts, np.int32)}
    return QuantizedTensor(FC, (8, cols), "float32", "int6_row_awq8", arrays)


@pytest.mark.parametrize("codec", ["zlib", "ans", "ans2"])
def test_awq_records_round_trip_and_their_wide_columns_are_their_own_stream(codec):
    qt = _awq_record(starts=(0, 32))
    assert check_tensor(qt) is None and qt.is_row_scaled
    art = decode_artifact(encode_artifact(QuantizedModel([qt]), config={}, tokenizer={}, codec=codec))
    assert torch.equal(art.state_dict()[FC], dequantize_tensor(qt))
    table, payload = _table_and_payload(QuantizedModel([qt]))
    keys = set(symbol_streams(list(layout_pieces(len(payload), payload_layout(table)))))
    assert keys == {("mlp.fc", "int6_row_awq8", "q", "int8"), ("mlp.fc", "int6_row_awq8", "q_awq", "int8")}


def test_malformed_awq_records_are_refused():
    qt = _awq_record()

    def problem(arrays, scheme=qt.scheme):
        return check_tensor(QuantizedTensor(FC, qt.shape, qt.dtype, scheme, arrays))

    assert "awq_start" in problem(qt.arrays | {"awq_start": np.array([56], np.int32)})  # past the last column
    loud = qt.arrays | {"q_awq": np.full((8, 16), 127, np.int8)}
    assert problem(loud) is None and "outside" in problem(loud, "int6_row_awq7")  # the range of the stated width
    two = _awq_record(starts=(0, 16)).arrays
    assert problem(two) is None and "awq_start" in problem(two | {"awq_start": np.array([16, 0], np.int32)})
    assert "awq_start" in problem(two | {"awq_start": np.array([0, 8], np.int32)})  # overlapping groups
    assert problem({k: v for k, v in qt.arrays.items() if k != "awq_start"})
    assert problem(qt.arrays | {"awq_scale": np.ones(8, np.float16)})  # no array the scheme does not name
    assert problem(qt.arrays | {"awq_start": np.array([16], np.int64)})


def test_the_fitter_counts_the_wide_columns():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 96, generator=g) * 0.05
    h = {FC: _salient_hessian(96, slice(32, 48))}
    q = _qcfg(awq_top=2, codec="lzma")
    awq = awq_groups({FC: w}, q, plan_for(q), h)
    plain = group_options({FC: w}, GroupPlan(6, 12.85), "sdclip", {})
    wide = group_options({FC: w}, GroupPlan(6, 12.85), "sdclip", {}, awq, q)
    for a, b in zip(plain, wide):
        assert (b.est_bytes > a.est_bytes) == (b.bits < 8)  # two groups at int8 cost more, except at int8 already
    qm = quantize_mixed({FC: w}, q, hessians=h)[0]
    qm0 = quantize_mixed({FC: w}, _qcfg(awq_top=0), hessians=h)[0]
    assert _group_est_bytes(qm, {"mlp.fc": {}})["mlp.fc"] > _group_est_bytes(qm0, {"mlp.fc": {}})["mlp.fc"]


def test_the_fitter_keeps_an_awq_plan_that_fits_and_fits_one_that_does_not():
    g = torch.Generator().manual_seed(0)
    state = {"tok_emb.weight": torch.randn(128, 48, generator=g) * 0.02,
             FC: torch.randn(96, 48, generator=g) * 0.05, "blocks.0.attn.c_q.weight": torch.randn(48, 48, generator=g)}
    h = {n: _salient_hessian(48, slice(16, 32), seed=i) for i, n in enumerate(state)}
    q = _qcfg(awq_top=2, codec="lzma", bits="embed=7,default=6", fit=True)

    def size(qm):
        return len(encode_artifact(qm, config={}, tokenizer={}, codec="lzma"))

    plain = quantize_mixed(state, q, hessians=h)[0]
    qm, report = fit_budget(state, q, budget_bytes=size(plain), encoded_size=size, hessians=h)
    assert report.kept_plan and encode_artifact(qm, config={}, tokenizer={}, codec="lzma") == \
        encode_artifact(plain, config={}, tokenizer={}, codec="lzma")
    assert any(qt.scheme.startswith("int6_row_awq8") or qt.scheme.startswith("int7_row_awq8") for qt in qm.tensors)
    qm, report = fit_budget(state, q, budget_bytes=int(0.8 * size(plain)), encoded_size=size, hessians=h)
    assert not report.kept_plan and size(qm) == report.actual_bytes <= int(0.8 * size(plain))
