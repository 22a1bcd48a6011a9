"""int8 baseline quantization: per-row error bounds, clip, passthrough rules, exact restoration of dtypes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf.errors import PgolfError
from pgolf.quant.schemes import (ROW_SCALED_SCHEMES, SCHEMES, QuantizedTensor, dequantize_state_dict,
                                 quantize_state_dict)


def test_per_row_int8_error_is_half_a_step_inside_the_clip():
    torch.manual_seed(0)
    w = torch.randn(300, 400) * 3  # > 65,536 elements: quantized
    qm = quantize_state_dict({"blocks.0.mlp.fc.weight": w})
    qt = qm.tensors[0]
    assert qt.scheme == "int8_row" and qt.arrays["q"].dtype == np.int8 and qt.arrays["scale"].dtype == np.float16
    assert np.abs(qt.arrays["q"]).max() <= 127
    scale = torch.from_numpy(qt.arrays["scale"].astype(np.float32))[:, None]
    clip = torch.quantile(w.abs(), 0.9999984, dim=1)[:, None]
    deq = dequantize_state_dict(qm)["blocks.0.mlp.fc.weight"]
    inside = w.abs() <= clip
    assert ((w - deq).abs()[inside] <= scale.expand_as(w)[inside] / 2 + 1e-6).all()
    assert (deq.abs() <= 127 * scale + 1e-6).all()


def test_small_floats_and_control_tensors_pass_through():
    sd = {"blocks.0.attn_scale": torch.randn(512), "blocks.0.resid_mix": torch.randn(2, 512),
          "skip_weights": torch.randn(4, 512), "small.weight": torch.randn(100, 100), "steps": torch.arange(5)}
    qm = quantize_state_dict(sd)
    schemes = {qt.name: qt.scheme for qt in qm.tensors}
    assert schemes == {"blocks.0.attn_scale": "fp32", "blocks.0.resid_mix": "fp32", "skip_weights": "fp32",
                       "small.weight": "fp16", "steps": "raw"}
    out = dequantize_state_dict(qm)
    for name in ("blocks.0.attn_scale", "blocks.0.resid_mix", "skip_weights", "steps"):
        assert torch.equal(out[name], sd[name])
    assert out["small.weight"].dtype == torch.float32
    assert torch.equal(out["small.weight"], sd["small.weight"].half().float())


def test_large_non_matrix_uses_one_scale_and_bf16_is_restored():
    t = torch.randn(70_000).to(torch.bfloat16)
    qm = quantize_state_dict({"v": t})
    assert qm.tensors[0].scheme == "int8_tensor"
    out = dequantize_state_dict(qm)["v"]
    assert out.dtype == torch.bfloat16 and out.shape == t.shape
    assert (out.float() - t.float()).abs().max() < 0.05


def test_tiny_rows_hit_the_scale_floor():
    """The baseline floors the scale at 1/127, so rows with |w| < 1/254 quantize to zero."""
    qm = quantize_state_dict({"w": torch.full((300, 300), 0.001)})
    assert not qm.tensors[0].arrays["q"].any()


def test_unknown_scheme():
    with pytest.raises(PgolfError, match="unknown quantization scheme"):
        quantize_state_dict({}, scheme="int3")


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 300), cols=st.integers(220, 300), seed=st.integers(0, 2**16), scale=st.floats(0.01, 50))
def test_quantization_is_deterministic_and_bounded(rows, cols, seed, scale):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=gen) * scale
    a, b = quantize_state_dict({"w": w}), quantize_state_dict({"w": w})
    for key in a.tensors[0].arrays:
        assert np.array_equal(a.tensors[0].arrays[key], b.tensors[0].arrays[key])
    deq = dequantize_state_dict(a)["w"]
    assert deq.shape == w.shape and torch.isfinite(deq).all()


def test_row_scaled_means_the_per_row_integer_storage_schemes():
    """`is_row_scaled` is what the fitter used to match as "_row" in the scheme name: every intN_row(_lqer), no
    other storage scheme."""
    assert ROW_SCALED_SCHEMES == {n for n in SCHEMES if n.startswith("int") and "_row" in n}
    assert QuantizedTensor("w", (2, 2), "float32", "int6_row_lqer").is_row_scaled
    assert QuantizedTensor("w", (2, 2), "float32", "int8_row").is_row_scaled
    assert not any(QuantizedTensor("w", (4,), "float32", n).is_row_scaled for n in ("int8_tensor", "fp16", "raw"))
