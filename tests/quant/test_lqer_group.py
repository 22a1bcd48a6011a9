"""`quant.lqer_group`: LQER's B factor with one fp16 scale per N entries (64 in PR #1797, 32 in PR #2135), stored
with the record when it is not 64, so that old artifacts and default ones stay what they were."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pgolf.artifact.format import decode_artifact, encode_artifact
from pgolf.options import resolve_config
from pgolf.quant.grid import round_to_grid, row_scales
from pgolf.quant.lqer import lqer_arrays, lqer_correction
from pgolf.quant.recipe import quantize_mixed
from pgolf.quant.schemes import QuantizedModel, QuantizedTensor, check_tensor, dequantize_tensor


def _record(group: int, rows=48, cols=80, seed=0) -> tuple[QuantizedTensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * 0.05
    s = row_scales(w, 3, "sdclip", 12.0)
    q = round_to_grid(w, s, 3)
    arrays = {"q": q.to(torch.int8).numpy(), "scale": s.half().numpy()}
    arrays |= lqer_arrays(w - q * s[:, None], rank=4, group=group)
    return QuantizedTensor("blocks.0.mlp.fc.weight", (rows, cols), "float32", "int3_row_lqer", arrays), w


@pytest.mark.parametrize("group", [32, 64])
@pytest.mark.parametrize("codec", ["zlib", "ans2"])
def test_lqer_groups_round_trip_through_the_artifact(group, codec):
    qt, _ = _record(group)
    assert check_tensor(qt) is None
    assert ("lqer_group" in qt.arrays) == (group != 64)  # the default adds nothing: the old format exactly
    assert qt.arrays["lqer_b_scale"].size == -(-4 * 80 // group)
    art = decode_artifact(encode_artifact(QuantizedModel([qt]), config={}, tokenizer={}, codec=codec))
    assert torch.equal(art.state_dict()[qt.name], dequantize_tensor(qt))


def test_a_smaller_group_reconstructs_the_error_better():
    g = torch.Generator().manual_seed(3)
    error = torch.randn(96, 128, generator=g) * torch.logspace(0, -2, 128)  # uneven columns: scales matter
    residual = {group: float((error - lqer_correction(error, 4, group)[1]).norm()) for group in (16, 32, 64, 128)}
    assert residual[16] < residual[32] < residual[64] < residual[128]


def test_an_artifact_without_lqer_group_decodes_with_64():
    """What every artifact written before the option holds: no `lqer_group`, B scales per 64 entries."""
    qt, _ = _record(64)
    assert "lqer_group" not in qt.arrays
    old = decode_artifact(encode_artifact(QuantizedModel([qt]), config={}, tokenizer={}, codec="lzma"))
    b = torch.from_numpy(qt.arrays["lqer_b"].astype(np.float32)).reshape(-1)
    scale = torch.from_numpy(qt.arrays["lqer_b_scale"].astype(np.float32)).repeat_interleave(64)[:b.numel()]
    a = torch.from_numpy(qt.arrays["lqer_a"].astype(np.float32)) * float(qt.arrays["lqer_a_scale"])
    base = torch.from_numpy(qt.arrays["q"].astype(np.float32)) * torch.from_numpy(
        qt.arrays["scale"].astype(np.float32))[:, None]
    assert torch.equal(old.state_dict()[qt.name], base + a @ (b * scale).reshape(4, 80))


def test_the_group_is_stored_because_sizes_do_not_determine_it():
    """ceil(320 / g) = 5 scales for every g in 64..79: the scale count alone cannot say which group was used."""
    a, b = _record(64)[0], _record(70)[0]
    assert a.arrays["lqer_b_scale"].shape == b.arrays["lqer_b_scale"].shape
    assert int(b.arrays["lqer_group"]) == 70 and check_tensor(b) is None


def test_bad_lqer_groups_are_refused():
    qt, _ = _record(32)
    for bad in (np.array(0, np.int32), np.array(32, np.int64), np.array([32], np.int32)):
        assert check_tensor(QuantizedTensor(qt.name, qt.shape, qt.dtype, qt.scheme, qt.arrays | {"lqer_group": bad}))
    wrong = qt.arrays | {"lqer_group": np.array(64, np.int32)}  # 10 scales stored, 64 says 5
    assert "lqer_b_scale" in check_tensor(QuantizedTensor(qt.name, qt.shape, qt.dtype, qt.scheme, wrong))


def test_the_recipe_uses_quant_lqer_group():
    g = torch.Generator().manual_seed(0)
    state = {"blocks.0.mlp.fc.weight": torch.randn(64, 96, generator=g) * 0.05}
    q = resolve_config("baseline").quant
    q.scheme, q.passthrough_numel, q.bits, q.lqer_top, q.lqer_rank = "mixed", 100, "default=3", 1, 4
    errors = {}
    for group in (32, 64):
        q.lqer_group = group
        qm, report = quantize_mixed(state, q)
        qt = qm.tensors[0]
        assert qt.scheme == "int3_row_lqer" and qt.arrays["lqer_b_scale"].size == 4 * 96 // group
        errors[group] = float((state[qt.name] - dequantize_tensor(qt)).norm())
    assert errors[32] < errors[64]
