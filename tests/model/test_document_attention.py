"""Document-isolated attention (pgolf/data/segments.py, `segment_attention`): a packed row computes each document
exactly as if it ran alone, on the record's full technique stack with every parameter off its init."""

from __future__ import annotations

import inspect

import pytest
import torch

from pgolf.data.segments import CU_BUCKET, document_segments
from pgolf.model.attention import segment_attention, varlen_keywords
from tests.model.test_techniques_reference import BOS, VOCAB, _cfg, randomised

pytestmark = pytest.mark.usefixtures("one_thread")

# The record's stack at test size: two lanes from layer 2, a loop over layers 1-2, XSA everywhere, SmearGate with
# the BOS fix, sparse gates, partial RoPE, value embeddings, skip gates.
RECORD_LIKE = dict(num_layers=4, num_loops=1, loop_start=1, loop_end=2, parallel_mode="two_lane", parallel_start=2,
                   xsa_last_n=4, smear_gate=True, attn_gate="sparse", attn_gate_scale=0.5, rope_dims=8, ln_scale=True,
                   skip_gates=True, value_embed_last_n=2, value_embed_dim=8, mlp_activation="leaky_relu2")


def _documents(lengths, seed=0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    docs = []
    for n in lengths:
        doc = torch.randint(2, VOCAB, (n,), generator=g)
        doc[0] = BOS
        docs.append(doc)
    return docs


def test_segments_cut_at_bos_row_ends_and_max_len():
    ids = torch.tensor([[5, 1, 7, 8, 9, 10, 11, 1, 4], [6, 6, 6, 1, 2, 2, 2, 2, 2]])
    seg = document_segments(ids, bos_id=1, max_len=4)
    starts = seg.cu_seqlens[:seg.count].tolist()
    # row 0: start, BOS at 1, 4 tokens later at 5, BOS at 7; row 1 (offset 9): start, BOS at 12, then 16
    assert starts == [0, 1, 5, 7, 9, 12, 16]
    assert len(seg.cu_seqlens) % CU_BUCKET == 0 and set(seg.cu_seqlens[seg.count:].tolist()) == {18}
    assert seg.positions.tolist() == [[0, 0, 1, 2, 3, 0, 1, 0, 1], [0, 1, 2, 0, 1, 2, 3, 0, 1]]
    assert seg.max_seqlen == 4 and int(seg.valid.sum()) == 18
    flat = ids.reshape(-1)
    assert flat[seg.gather[seg.valid]].tolist() == flat.tolist()  # segment by segment is the flat order


def test_segment_attention_equals_each_segment_alone():
    torch.manual_seed(0)
    ids = torch.tensor([[1, 3, 3, 3, 1, 3, 3, 3, 3, 3, 1, 3]])
    seg = document_segments(ids, bos_id=1, max_len=0)
    q, k, v = torch.randn(1, 4, 12, 8), torch.randn(1, 2, 12, 8), torch.randn(1, 2, 12, 8)
    y = segment_attention(q, k, v, seg)
    for a, b in ((0, 4), (4, 10), (10, 12)):
        alone = torch.nn.functional.scaled_dot_product_attention(q[..., a:b, :], k[..., a:b, :], v[..., a:b, :],
                                                                 is_causal=True, enable_gqa=True)
        torch.testing.assert_close(y[..., a:b, :], alone)


@pytest.mark.parametrize("looping", [True, False])
def test_packed_documents_score_as_if_alone(looping):
    """Logits of documents packed into one row with segments equal each document's logits run alone."""
    model = randomised(_cfg(**RECORD_LIKE))
    model.set_looping(looping)
    docs = _documents([5, 11, 1, 9, 6])
    packed = torch.cat(docs)[None]
    seg = document_segments(packed, BOS, max_len=0)
    with torch.no_grad():
        together = model(packed, segments=seg)[0]
        plain = model(packed)[0]
        offset = 0
        for doc in docs:
            alone = model(doc[None])[0]
            torch.testing.assert_close(together[offset:offset + len(doc)], alone, rtol=1e-9, atol=1e-9)
            offset += len(doc)
    assert not torch.allclose(plain[5:], together[5:], atol=1e-3)  # without the cut, documents see each other


def test_two_rows_and_max_len_pieces():
    """Rows are cut at their ends, and a document longer than max_len runs as pieces of max_len (SmearGate off:
    it reads the previous token across a piece boundary, as in the record)."""
    model = randomised(_cfg(**{**RECORD_LIKE, "smear_gate": False}))
    docs = _documents([7, 14, 3], seed=2)
    rows = torch.stack((torch.cat(docs), torch.cat(docs[::-1])))
    seg = document_segments(rows, BOS, max_len=8)
    with torch.no_grad():
        out = model(rows, segments=seg)
        pieces = {0: [(0, 7), (7, 15), (15, 21), (21, 24)], 1: [(0, 3), (3, 11), (11, 17), (17, 24)]}
        for r, cuts in pieces.items():
            for a, b in cuts:
                torch.testing.assert_close(out[r, a:b], model(rows[r:r + 1, a:b])[0], rtol=1e-9, atol=1e-9)


def test_gradients_flow_through_segments():
    model = randomised(_cfg(**RECORD_LIKE)).train()
    docs = _documents([6, 10])
    packed = torch.cat(docs)[None]
    seg = document_segments(packed, BOS, max_len=0)
    loss = model(packed[:, :-1], packed[:, 1:], segments=document_segments(packed[:, :-1], BOS, 0))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert seg.count == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_varlen_matches_padded_path():
    from pgolf.model import attention
    if attention.varlen_attention is None and attention.fa3_varlen is None:
        pytest.skip("neither FlashAttention-3 nor torch's varlen attention is here")
    torch.manual_seed(0)
    ids = torch.tensor([[1] + [3] * 100 + [1] + [3] * 27])
    seg = document_segments(ids, 1, max_len=64).to("cuda")
    q = torch.randn(1, 8, 128, 64, device="cuda", dtype=torch.bfloat16)
    k, v = torch.randn(2, 1, 4, 128, 64, device="cuda", dtype=torch.bfloat16)
    fast = segment_attention(q, k, v, seg)
    saved = attention.varlen_attention, attention.fa3_varlen
    attention.varlen_attention = attention.fa3_varlen = None
    try:
        slow = segment_attention(q, k, v, seg)
    finally:
        attention.varlen_attention, attention.fa3_varlen = saved
    torch.testing.assert_close(fast.float(), slow.float(), rtol=2e-2, atol=2e-2)


try:  # the installed torch's own signature: the stand-in below binds every call against it
    from torch.nn.attention.varlen import varlen_attn as _torch_varlen_attn
    TORCH_VARLEN = inspect.signature(_torch_varlen_attn)
except ImportError:  # pragma: no cover - torch < 2.10
    TORCH_VARLEN = None


def _torch_2_11_varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None,
                            window_size=(-1, -1)):
    """The parameters of torch 2.11's `torch.nn.attention.varlen.varlen_attn` (the GPU image's torch): no
    `enable_gqa`; keys and values with fewer heads go to the flash kernel as they are."""


def _fa3_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_q=None, seqused_k=None,
                     softmax_scale=None, causal=False, qv=None, q_descale=None, k_descale=None, v_descale=None,
                     window_size=(-1, -1), attention_chunk=0, softcap=0.0, num_splits=1, pack_gqa=None,
                     deterministic=False, sm_margin=0, return_attn_probs=False):
    """The parameters of FlashAttention-3's `flash_attn_interface.flash_attn_varlen_func` (the Hopper build,
    hopper/flash_attn_interface.py): seven positional inputs, then options, `causal` among them."""


TORCH_2_11 = frozenset(inspect.signature(_torch_2_11_varlen_attn).parameters)
TORCH_2_13 = TORCH_2_11 | {"enable_gqa", "seqused_k", "block_table", "num_splits"}
FA3_VARLEN = inspect.signature(_fa3_varlen_func)


def _flash_contract(q, k, v, cu_q, cu_k) -> None:
    """The flash kernels' input contract: q, k, v of one half-precision dtype, (total, heads, dim) and contiguous;
    int32 cu_seqlens."""
    assert q.dtype == k.dtype == v.dtype and q.dtype in (torch.float16, torch.bfloat16), (q.dtype, k.dtype, v.dtype)
    assert q.dim() == k.dim() == v.dim() == 3 and q.is_contiguous() and k.is_contiguous() and v.is_contiguous()
    assert cu_q.dtype == cu_k.dtype == torch.int32


def _segment_sdpa(q, k, v, cu) -> torch.Tensor:
    """What the kernels compute: causal attention within each segment [cu[i], cu[i + 1]) of the flat tokens."""
    out = torch.zeros_like(q)
    bounds = cu.tolist()
    for a, b in zip(bounds, bounds[1:]):
        if b > a:
            out[a:b] = torch.nn.functional.scaled_dot_product_attention(
                q[a:b].transpose(0, 1).float(), k[a:b].transpose(0, 1).float(), v[a:b].transpose(0, 1).float(),
                is_causal=True, enable_gqa=True).transpose(0, 1).to(q.dtype)
    return out


def _fake_flash_varlen(calls, which="torch", signature=None):
    """A CPU stand-in for torch's `varlen_attn` (`which="torch"`) or FA3's `flash_attn_varlen_func` (`"fa3"`) that
    binds every call against the real signature (the installed torch's, FA3's, or `signature`), so a keyword the
    function lacks is the same TypeError it would be on the GPU, enforces the kernels' input contract and the
    causal option, and computes each segment with SDPA. The torch one also refuses fewer key/value heads without
    `enable_gqa=True` where the signature has that flag (torch >= 2.13 raises a ValueError there)."""
    signature = signature or (FA3_VARLEN if which == "fa3" else TORCH_VARLEN)

    def fake(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        q, k, v, cu_q, cu_k = list(bound.arguments.values())[:5]
        _flash_contract(q, k, v, cu_q, cu_k)
        if which == "fa3":
            assert bound.arguments["causal"] is True
        else:
            assert tuple(bound.arguments["window_size"]) == (-1, 0)  # causal
            if "enable_gqa" in signature.parameters and q.size(1) != k.size(1) and not bound.arguments["enable_gqa"]:
                raise ValueError(f"Hq={q.size(1)} and Hkv={k.size(1)}: set enable_gqa=True for GQA")
        calls.append(q.dtype)
        out = _segment_sdpa(q, k, v, cu_q)
        return (out, None) if which == "fa3" else out  # FA3 builds that also return the log-sum-exp
    return fake


def test_varlen_keywords_follow_the_signature():
    """`enable_gqa` goes to torch's varlen_attn only where its signature has it: torch 2.11's has not (passing it
    was a TypeError on the GPU image), torch 2.13's has and refuses GQA inputs without it."""
    assert varlen_keywords(True, TORCH_2_11) == {"window_size": (-1, 0)}
    assert varlen_keywords(True, TORCH_2_13) == {"window_size": (-1, 0), "enable_gqa": True}
    assert varlen_keywords(False, TORCH_2_13) == {"window_size": (-1, 0), "enable_gqa": False}
    if TORCH_VARLEN is not None:  # the installed torch: what `_varlen` passes binds
        from pgolf.model import attention
        assert attention.VARLEN_PARAMETERS == frozenset(TORCH_VARLEN.parameters)
        TORCH_VARLEN.bind(*[None] * 7, **varlen_keywords(True))


def test_torch_standin_refuses_a_keyword_its_signature_lacks():
    """The stand-ins are as strict as the functions: on torch 2.11's signature `enable_gqa` is a TypeError (the bug
    the former stand-in, which took any keyword, let through) and the keywords pgolf chooses for it pass; FA3's
    takes pgolf's call and refuses torch's keyword."""
    ids = torch.tensor([[1] + [3] * 9 + [1] + [3] * 5])
    seg = document_segments(ids, 1, max_len=0)
    q, k, v = torch.randn(16, 4, 8).bfloat16(), torch.randn(16, 2, 8).bfloat16(), torch.randn(16, 2, 8).bfloat16()
    args = (q, k, v, seg.cu_seqlens, seg.cu_seqlens, seg.max_seqlen, seg.max_seqlen)
    fake_2_11 = _fake_flash_varlen([], "torch", inspect.signature(_torch_2_11_varlen_attn))
    with pytest.raises(TypeError, match="enable_gqa"):
        fake_2_11(*args, window_size=(-1, 0), enable_gqa=True)
    assert fake_2_11(*args, **varlen_keywords(True, TORCH_2_11)).shape == q.shape
    fake_fa3 = _fake_flash_varlen([], "fa3")
    with pytest.raises(TypeError, match="enable_gqa"):  # FA3 does GQA without being asked
        fake_fa3(*args, causal=True, enable_gqa=True)
    assert fake_fa3(*args, causal=True)[0].shape == q.shape  # the call `_varlen` makes


@pytest.mark.parametrize("which", ["fa3", "torch"])
def test_varlen_call_gets_one_half_dtype_under_autocast(monkeypatch, which):
    """Under CUDA autocast q and k reach attention in float32 (rms_norm is an autocast float32 op) and v in bf16;
    the flash kernels take neither float32 nor mixed dtypes and are not autocast ops, so `_varlen` casts them."""
    from pgolf.model import attention
    if which == "torch" and TORCH_VARLEN is None:
        pytest.skip("this torch has no torch.nn.attention.varlen")
    calls = []
    monkeypatch.setattr(attention, "fa3_varlen", _fake_flash_varlen(calls, "fa3") if which == "fa3" else None)
    monkeypatch.setattr(attention, "varlen_attention", None if which == "fa3" else _fake_flash_varlen(calls))
    torch.manual_seed(0)
    ids = torch.tensor([[1] + [3] * 20 + [1] + [3] * 11])
    seg = document_segments(ids, 1, max_len=16)
    q, k = torch.randn(1, 4, 33, 8), torch.randn(1, 2, 33, 8)
    v = torch.randn(1, 2, 33, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # stands for CUDA's: same dtype rules in `_varlen`
        y = attention._varlen(q, k, v, seg)
    assert calls == [torch.bfloat16] and y.dtype == torch.bfloat16 and y.shape == q.shape
    reference = segment_attention(q, k, v.float(), seg)
    torch.testing.assert_close(y.float(), reference, rtol=3e-2, atol=3e-2)
    with torch.autocast("cpu", dtype=torch.float16):
        assert attention._varlen(q, k, v, seg).dtype == torch.float16 and calls[-1] == torch.float16
    y = attention._varlen(q, k, v, seg)  # no autocast: bf16 kernels, q's dtype out (as SDPA would give)
    assert calls[-1] == torch.bfloat16 and y.dtype == torch.float32


@torch.library.custom_op("pgolf_test::varlen", mutates_args=())
def _test_varlen_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_len: int) -> torch.Tensor:
    _flash_contract(q, k, v, cu, cu)
    return _segment_sdpa(q, k, v, cu)


@_test_varlen_op.register_fake
def _(q, k, v, cu, max_len):
    return torch.empty_like(q)


def test_varlen_compiles_once_for_every_cu_seqlens_bucket(monkeypatch):
    """The compiled training step (fullgraph, dynamic=False) sees cu_seqlens whose length follows the number of
    documents (a multiple of CU_BUCKET): `Segments.to` marks that length dynamic, so a new bucket is no recompile
    (8 of them would be a hard error under fullgraph)."""
    import torch._dynamo
    from torch._dynamo.testing import CompileCounter

    from pgolf.model import attention
    if TORCH_VARLEN is None:
        pytest.skip("this torch has no torch.nn.attention.varlen")

    def varlen_standin(q, k, v, cu, cu_k, max_q, max_k, **keywords):  # a custom op with a fake, as varlen_attn is
        TORCH_VARLEN.bind(q, k, v, cu, cu_k, max_q, max_k, **keywords)  # a keyword torch lacks: TypeError
        return _test_varlen_op(q, k, v, cu, max_q)

    monkeypatch.setattr(attention, "fa3_varlen", None)
    monkeypatch.setattr(attention, "varlen_attention", varlen_standin)
    counter = CompileCounter()
    compiled = torch.compile(attention._varlen, backend=counter, fullgraph=True, dynamic=False)
    torch.manual_seed(0)
    for docs in (3, 70, 140, 5):  # cu_seqlens of 64, 128, 192 and 64 entries
        ids = torch.full((1, 600), 3)
        ids[0, torch.linspace(0, 599, docs).long()] = 1
        seg = document_segments(ids, 1, max_len=64).to("cpu")
        q, k, v = torch.randn(1, 4, 600, 8), torch.randn(1, 2, 600, 8), torch.randn(1, 2, 600, 8)
        torch.testing.assert_close(compiled(q, k, v, seg).float(), segment_attention(q, k, v, seg),
                                   rtol=3e-2, atol=3e-2)
    torch._dynamo.reset()
    assert counter.frame_count == 1


def test_fa3_only_where_it_compiles(monkeypatch):
    """Under torch.compile an FA3 build without registered custom ops would break the fullgraph: torch's varlen_attn
    serves there when it exists; eager, and FA3 builds that register their ops, keep FA3."""
    from pgolf.model import attention
    monkeypatch.setattr(attention, "fa3_varlen", lambda *a, **k: None)
    monkeypatch.setattr(attention, "varlen_attention", lambda *a, **k: None)
    compiling = {"now": True}
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: compiling["now"])
    monkeypatch.setattr(attention, "fa3_traceable", False)
    assert not attention.use_fa3()
    compiling["now"] = False
    assert attention.use_fa3()
    compiling["now"] = True
    monkeypatch.setattr(attention, "fa3_traceable", True)
    assert attention.use_fa3()
    monkeypatch.setattr(attention, "fa3_traceable", False)
    monkeypatch.setattr(attention, "varlen_attention", None)
    assert attention.use_fa3()  # nothing else can serve: FA3 it is (and the compile says why it cannot)
    monkeypatch.setattr(attention, "fa3_varlen", None)
    assert not attention.use_fa3()
