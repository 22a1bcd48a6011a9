"""`ans2`: exact, deterministic round trips on weight-like matrices, the context model's parts doing their job
(column classes, row classes, row references), and strict decoding of damaged blobs."""

from __future__ import annotations

import brotli
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf.artifact import ans2_context
from pgolf.artifact.ans_container import ANS2_MAGIC
from pgolf.artifact.codecs import Segment, compress, decompress
from pgolf.artifact.format import decode_artifact, encode_artifact
from pgolf.errors import PgolfError
from pgolf.quant.schemes import dequantize_state_dict, quantize_state_dict


def _int6(w: np.ndarray, k: float = 12.0) -> np.ndarray:
    """Per-row SDClip-style int6 quantization of a float matrix."""
    return np.clip(np.rint(w / (k * w.std(axis=1, keepdims=True) / 31 + 1e-12)), -31, 31).astype(np.int8)


def _layout(mats: list[tuple[str, str, np.ndarray]], extra: list[tuple[str, str, np.ndarray]] = ()):
    layout, chunks, offset = [], [], 0
    for name, group, arr in [*mats, *extra]:
        key = "q" if arr.dtype in (np.int8, np.uint8) else "scale"
        layout.append(Segment(name, key, "int6_row", group, arr.dtype.name, arr.shape, offset, arr.nbytes))
        chunks.append(arr.tobytes())
        offset += arr.nbytes
    return b"".join(chunks), layout


@st.composite
def weight_payloads(draw):
    """Weight-like int8 matrices (uneven columns, mean shifts, a few near-duplicate rows), sometimes uint8 or
    1-D arrays and fp16 scales, in one to three groups."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mats, extra = [], []
    for i in range(draw(st.integers(1, 4))):
        rows, cols = draw(st.integers(1, 40)), draw(st.integers(1, 40))
        w = rng.standard_normal((rows, cols)) * rng.lognormal(0, 0.5, cols) + rng.normal(0, 0.3, cols)
        if rows > 2 and draw(st.booleans()):
            w[rows // 2:] = w[0] + 0.05 * rng.standard_normal((rows - rows // 2, cols))
        q = _int6(w, draw(st.sampled_from([3.0, 12.0])))
        kind = draw(st.sampled_from(["int8", "int8", "uint8", "flat"]))
        if kind == "uint8":
            q = (q.astype(np.int16) + 31).astype(np.uint8)
        elif kind == "flat":
            q = q.ravel()
        group = draw(st.sampled_from(["mlp.fc", "attn.q", "embed"]))
        mats.append((f"blocks.{i}.w", group, q))
        if draw(st.booleans()):
            extra.append((f"blocks.{i}.w", group, rng.random(rows).astype("<f2")))
    return _layout(mats, extra)


@settings(max_examples=60, deadline=None)
@given(weight_payloads())
def test_ans2_roundtrips_exactly_and_deterministically(payload):
    data, layout = payload
    blob = compress("ans2", data, 11, layout)
    assert blob.startswith(ANS2_MAGIC)
    assert decompress("ans2", blob, layout) == data
    assert compress("ans2", data, 11, layout) == blob


def test_ans2_uses_references_for_near_duplicate_rows():
    """An embedding-like matrix where a third of the rows are noisy copies of a few others (rarely-trained tokens):
    references code them in a few bits per value, where `ans` pays for every value again and brotli's matches
    break at every changed value."""
    rng = np.random.default_rng(11)
    w = rng.standard_normal((600, 128))
    w[400:] = w[rng.integers(0, 20, 200)] + 0.1 * rng.standard_normal((200, 128))
    q = _int6(w)
    data, layout = _layout([("tok_emb.weight", "embed", q)])
    ans2 = compress("ans2", data, 11, layout)
    assert decompress("ans2", ans2, layout) == data
    plan = ans2_context.choose_plan([q], q.ravel()[:0])
    assert plan.refs and (plan.parents[0] >= 0).sum() >= 180
    assert len(ans2) < 0.8 * len(compress("ans", data, 11, layout))
    assert len(ans2) < 0.95 * len(brotli.compress(data, quality=11, lgwin=24))


def test_ans2_column_and_row_classes_beat_ans():
    """Uneven input features and a block of rows with a shifted mean: classes in both directions."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((512, 256)) * np.where(rng.random(256) < 0.3, 0.3, 1.0)
    w[:128] += 1.5 * np.sign(rng.standard_normal(256))
    q = _int6(w)
    data, layout = _layout([("blocks.0.mlp.proj.weight", "mlp.proj", q)])
    ans2 = compress("ans2", data, 11, layout)
    assert decompress("ans2", ans2, layout) == data
    plan = ans2_context.choose_plan([q], q.ravel()[:0])
    assert plan.kc > 1 and plan.kr > 1
    assert len(ans2) < 0.97 * len(compress("ans", data, 11, layout))


def test_ans2_never_loses_much_to_ans_on_iid_weights():
    """Without structure the plan falls back to one context per stream: within a few bytes of `ans`."""
    q = _int6(np.random.default_rng(9).standard_t(6, (300, 200)))
    data, layout = _layout([("blocks.0.mlp.fc.weight", "mlp.fc", q)])
    ans2 = compress("ans2", data, 11, layout)
    assert len(ans2) <= len(compress("ans", data, 11, layout)) + 16


def _sample_matrix() -> np.ndarray:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((60, 48))
    w[30:] = w[:30] + 0.05 * rng.standard_normal((30, 48))
    return _int6(w)


def _sample():
    q = _sample_matrix()
    return _layout([("tok_emb.weight", "embed", q), ("b.attn.c_q.weight", "attn.q", q[:, :20].ravel())],
                   [("tok_emb.weight", "embed", np.linspace(0.01, 0.02, 60).astype("<f2"))])


def test_ans2_refuses_truncated_extended_and_foreign_blobs():
    data, layout = _sample()
    blob = compress("ans2", data, 11, layout)
    assert ans2_context.choose_plan([_sample_matrix()], np.zeros(0, np.int8)).refs  # the reference parser is reached
    for n in range(len(blob)):
        with pytest.raises(PgolfError):
            decompress("ans2", blob[:n], layout)
    with pytest.raises(PgolfError, match="trailing"):
        decompress("ans2", blob + b"\0", layout)
    with pytest.raises(PgolfError, match="bad magic"):
        decompress("ans2", compress("ans", data, 11, layout), layout)
    with pytest.raises(PgolfError, match="stream count"):
        decompress("ans2", blob, layout[:1])


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_ans2_damage_gives_pgolf_error_or_other_bytes(data):
    payload, layout = _sample()
    blob = bytearray(compress("ans2", payload, 11, layout))
    for _ in range(data.draw(st.integers(1, 3))):
        blob[data.draw(st.integers(0, len(blob) - 1))] ^= data.draw(st.integers(1, 255))
    try:
        out = decompress("ans2", bytes(blob), layout)
    except PgolfError:
        return
    assert isinstance(out, bytes) and len(out) == len(payload)


def test_reference_forests_are_checked():
    assert ans2_context.levels(np.array([-1, 0, 1, 0]), "x").tolist() == [0, 1, 2, 1]
    with pytest.raises(PgolfError, match="cycle"):
        ans2_context.levels(np.array([1, 0, -1]), "x")
    with pytest.raises(PgolfError, match="out of range"):
        ans2_context.levels(np.array([-1, 5]), "x")
    with pytest.raises(PgolfError, match="out of range"):
        ans2_context.levels(np.array([-1, 1]), "x")  # a row referencing itself
    chain = np.arange(-1, ans2_context.MAX_DEPTH + 1)  # row i references row i - 1: depth MAX_DEPTH + 1 at the end
    with pytest.raises(PgolfError, match="deeper"):
        ans2_context.levels(chain, "x")
    cut = ans2_context._acyclic(np.r_[np.arange(1, 80), 0], np.zeros(80))  # one 80-cycle
    assert ans2_context.levels(cut, "x").max() <= ans2_context.MAX_DEPTH


def test_artifact_roundtrip_with_ans2():
    gen = torch.Generator().manual_seed(1)
    emb = torch.randn(300, 256, generator=gen)
    emb[150:] = emb[:150] + 0.01 * torch.randn(150, 256, generator=gen)
    sd = {"tok_emb.weight": emb, "blocks.0.mlp.fc.weight": torch.randn(300, 256, generator=gen) * 0.02,
          "blocks.0.attn_scale": torch.randn(16, generator=gen)}
    qm = quantize_state_dict(sd)
    config, tokenizer = {"model": {"vocab_size": 8}}, {"vocab_size": 8}
    data = encode_artifact(qm, config=config, tokenizer=tokenizer, codec="ans2", level=11)
    art = decode_artifact(data, "a.pgolf")
    want, got = dequantize_state_dict(qm), art.state_dict()
    assert art.codec == "ans2" and all(torch.equal(got[k], want[k]) for k in want)
    assert [qt.scheme for qt in qm.tensors][:2] == ["int8_row", "int8_row"]
    assert len(data) < 0.95 * len(encode_artifact(qm, config=config, tokenizer=tokenizer, codec="ans", level=11))
