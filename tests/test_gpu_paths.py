"""The CUDA-only paths together, as the trainer runs them (`pytest -m gpu`, benchmarks/gpu_check.sh): the bf16 body,
the Triton kernels, bf16 autocast, document-isolated (varlen) attention and torch.compile(fullgraph=True) in one
training step, against the plain float32 eager step; compiled Newton-Schulz; the TTT adapters' draws on CUDA.
Skipped without CUDA: the CPU halves of these checks are in tests/model and tests/eval."""

from __future__ import annotations

import copy

import pytest
import torch

from pgolf.data.segments import document_segments
from pgolf.model.gpt import GPT
from tests.model.test_document_attention import RECORD_LIKE
from tests.model.test_techniques_reference import BOS, VOCAB, _cfg, randomised

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _packed_batch(rows: int, length: int, docs: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (rows, length + 1), generator=g)
    ids.view(-1)[torch.randint(0, rows * (length + 1), (docs,), generator=g)] = BOS
    return ids


def _step(model: torch.nn.Module, run, ids: torch.Tensor, max_len: int, device: str):
    x, y = ids[:, :-1].to(device), ids[:, 1:].to(device)
    segments = document_segments(ids[:, :-1], BOS, max_len).to(device)
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
        loss = run(x, y, segments=segments)
    loss.backward()
    return loss.detach().float(), {n: p.grad.float().clone() for n, p in model.named_parameters()}


def test_compiled_bf16_kernels_varlen_step_matches_fp32_eager():
    """One training step of the record's stack at test size: bf16 tables, Triton kernels, autocast, varlen
    attention (FA3 or torch's), compiled whole with fullgraph=True, twice with different document counts (one
    graph): loss and gradients as the float32 eager step on the CPU (padded segments) within bf16 noise."""
    from torch._dynamo.testing import CompileCounterWithBackend

    from pgolf.model import kernels
    from pgolf.model.precision import cast_body

    cfg = _cfg(**RECORD_LIKE)
    reference = randomised(cfg).float().train()
    fast = copy.deepcopy(reference).cuda()
    cast_body(fast, torch.bfloat16)
    fast.use_kernels(kernels.wanted("auto", torch.device("cuda")))
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(fast, backend=counter, dynamic=False, fullgraph=True)
    for seed, docs in ((0, 3), (1, 90)):  # cu_seqlens of 64 and 128 entries
        ids = _packed_batch(2, 512, docs, seed)
        want_loss, want = _step(reference, reference, ids, 128, "cpu")
        loss, grads = _step(fast, compiled, ids, 128, "cuda")
        assert torch.isfinite(loss)
        torch.testing.assert_close(loss.cpu(), want_loss, rtol=3e-2, atol=3e-2)
        for name, g in grads.items():
            cos = torch.nn.functional.cosine_similarity(g.cpu().reshape(1, -1), want[name].reshape(1, -1)).item()
            assert cos > 0.95 or want[name].norm() < 1e-6, (name, cos)
    torch._dynamo.reset()
    from pgolf.model import attention
    if attention.fa3_varlen is not None or attention.varlen_attention is not None:
        assert counter.frame_count == 1  # the padded fallback's gather shapes follow the documents: no such promise


def test_compiled_newton_schulz_on_cuda_matches_eager():
    from pgolf.optim.muon import Muon, zeropower_newton_schulz

    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(256, 128, device="cuda")) for _ in range(3)]
    opt = Muon(params, compile="auto", coefficients="polar_express")
    g = torch.randn(3, 256, 128, device="cuda")
    got = opt._newton_schulz(torch.device("cuda"))(g, steps=5, coefficients="polar_express", dtype=torch.bfloat16)
    want = zeropower_newton_schulz(g, steps=5, coefficients="polar_express", dtype=torch.bfloat16)
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)


def test_ttt_adapters_draw_on_cuda():
    from pgolf.eval.ttt_lora import _draw_generator
    from pgolf.model.lora import BatchedLoRA

    lora = BatchedLoRA(_cfg(), rows=2, rank=4, slots=2, targets=("q", "v"), device=torch.device("cuda"))
    lora.draw_a(_draw_generator(1337, 0, 0, 1))
    cpu = BatchedLoRA(_cfg(), rows=2, rank=4, slots=2, targets=("q", "v"), device=torch.device("cpu"))
    cpu.draw_a(_draw_generator(1337, 0, 0, 1))
    for key, a in lora.a.items():
        assert torch.equal(a.detach().cpu(), cpu.a[key].detach())


def test_peak_memory_api():
    """What `pgolf bench` reads: the peak after a reset covers an allocation made after it."""
    torch.cuda.reset_peak_memory_stats()
    x = torch.empty(64 * 2**20, dtype=torch.uint8, device="cuda")
    assert torch.cuda.max_memory_allocated() >= x.numel()
    del x
