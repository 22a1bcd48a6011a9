"""The fused Triton kernels (pgolf/model/kernels.py) against their eager definitions: values and gradients,
through Triton's CPU interpreter here and compiled on CUDA when there is one."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is an optional test dependency")

from pgolf.config import ModelConfig  # noqa: E402
from pgolf.model import kernels  # noqa: E402
from pgolf.model.gpt import GPT  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def interpreted():
    """The kernels on CPU tensors, through Triton's interpreter (tests/conftest.py sets it without CUDA)."""
    if not kernels.available("cpu"):
        pytest.skip("CPU tensors need TRITON_INTERPRET=1 (tests/conftest.py sets it when there is no CUDA)")
    return kernels


def _grads(fn, *inputs):
    inputs = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    out = fn(*inputs)
    weights = torch.linspace(0.5, 1.5, out.numel()).view_as(out)
    (out * weights).sum().backward()
    return out.detach(), [t.grad for t in inputs if t.is_floating_point()]


@pytest.mark.parametrize("vocab", [50, 1100])  # one block, and several blocks with a ragged end
def test_softcap_cross_entropy_matches_eager(interpreted, vocab):
    g = torch.Generator().manual_seed(0)
    z = 20 * torch.randn(7, vocab, generator=g)
    t = torch.randint(0, vocab, (7,), generator=g)
    fused, (dz_fused,) = _grads(lambda a: interpreted.softcap_cross_entropy(a, t, 30.0), z)
    eager, (dz_eager,) = _grads(lambda a: interpreted.softcap_cross_entropy_eager(a, t, 30.0), z)
    torch.testing.assert_close(fused, eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dz_fused, dz_eager, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("slope", [0.5, 0.0])
def test_leaky_relu2_up_matches_eager(interpreted, slope):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 37, 48, generator=g)   # 74 rows: a ragged last tile
    w = torch.randn(80, 48, generator=g) / 7  # 80 outputs: a ragged last tile
    fused, grads_fused = _grads(lambda a, b: interpreted.leaky_relu2_up(a, b, slope), x, w)
    eager, grads_eager = _grads(lambda a, b: interpreted.leaky_relu2_up_eager(a, b, slope), x, w)
    torch.testing.assert_close(fused, eager, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads_fused, grads_eager):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def _tiny_model() -> GPT:
    """A 2-layer LeakyReLU^2 model with matrices large enough that the kernels' numbers matter."""
    cfg = ModelConfig(vocab_size=96, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1,
                      mlp_activation="leaky_relu2")
    torch.manual_seed(0)
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.2)
    return model


def test_model_with_kernels_trains_the_same(interpreted):
    """GPT.use_kernels changes no number that matters: same loss and same gradients on a fixed batch."""
    model = _tiny_model()
    x, y = torch.randint(0, 96, (2, 16)), torch.randint(0, 96, (2, 16))
    results = []
    for on in (False, True):
        model.zero_grad()
        model.use_kernels(on)
        loss = model(x, y)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_kernels_compile_in_one_graph(interpreted):
    """`train.compile` compiles the model with fullgraph=True: each kernel must be one opaque op there (a custom
    op with a fake implementation and a registered backward), not a Triton launch Dynamo has to trace or break on.
    Same loss and gradients as eager, one graph, no recompile on the second call."""
    import torch._dynamo
    from torch._dynamo.testing import CompileCounterWithBackend

    model = _tiny_model()
    model.use_kernels(True)
    x, y = torch.randint(0, 96, (2, 16)), torch.randint(0, 96, (2, 16))
    counter = CompileCounterWithBackend("aot_eager")  # Dynamo and AOT autograd: where a graph would break
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=False)
    results = []
    for run in (model, compiled, compiled):
        model.zero_grad()
        loss = run(x, y)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch._dynamo.reset()
    assert counter.frame_count == 1
    for loss, grads in results[1:]:
        torch.testing.assert_close(loss, results[0][0], rtol=1e-5, atol=1e-6)
        for a, b in zip(grads, results[0][1]):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_kernels_on_cuda_bf16():
    g = torch.Generator(device="cuda").manual_seed(0)
    z = 10 * torch.randn(64, 8192, device="cuda", generator=g, dtype=torch.bfloat16)
    t = torch.randint(0, 8192, (64,), device="cuda", generator=g)
    torch.testing.assert_close(kernels.softcap_cross_entropy(z, t, 30.0),
                               kernels.softcap_cross_entropy_eager(z, t, 30.0), rtol=1e-3, atol=1e-3)
    x = torch.randn(4096, 512, device="cuda", generator=g, dtype=torch.bfloat16)
    w = torch.randn(2048, 512, device="cuda", generator=g) / 22
    torch.testing.assert_close(kernels.leaky_relu2_up(x, w, 0.5).float(),
                               kernels.leaky_relu2_up_eager(x, w, 0.5).float(), rtol=2e-2, atol=2e-2)
