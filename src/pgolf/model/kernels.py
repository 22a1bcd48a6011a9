"""Fused Triton kernels for the two hot spots the 1.0611 record fuses (PR #1855's kernels;
docs/techniques.md#fused-softcapped-cross-entropy):

- `softcap_cross_entropy(z, targets, cap)`: per-token cross-entropy of softcapped logits c*tanh(z/c), forward and
  backward, without materialising the softcapped float32 [N, V] logits or their softmax (one pass over z for the
  loss, one for the gradient);
- `leaky_relu2_up(x, w, slope)`: the MLP up-projection fused with its activation, leaky_relu(x @ w.T, slope)^2 in
  the matmul's epilogue (slope 0 is relu^2); the backward is two ordinary matmuls on the gradient of the
  pre-activation.

Each is a `torch.library.custom_op` with a registered backward (one opaque op under torch.compile fullgraph) whose
eager twin (`softcap_cross_entropy_eager`, `leaky_relu2_up_eager`) is the
definition it must match; `tests/model/test_kernels.py` checks values and gradients against it through Triton's CPU
interpreter (`TRITON_INTERPRET=1`) and on CUDA when there is one; the interpreter tests pass under triton 3.6.0 (the
GPU image's) and 3.9.0. `available()` says whether Triton can run here; the model uses the kernels only when asked
(`GPT.use_kernels`).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from pgolf.errors import PgolfError
from pgolf.model.choices import KERNEL_MODES  # noqa: F401  (re-exported; `train.kernels`: see wanted)

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is optional
    triton = None


def wanted(mode: str, device: torch.device) -> bool:
    """Whether `train.kernels=mode` uses the kernels on `device`: auto on CUDA when triton imports; on wherever they
    can run (refused with one line where they cannot)."""
    if mode == "on" and not available(device):
        raise PgolfError(f"train.kernels=on: the Triton kernels cannot run on {torch.device(device).type} here "
                         "(needs triton with CUDA, or TRITON_INTERPRET=1)")
    return mode == "on" or (mode == "auto" and triton is not None and torch.device(device).type == "cuda")


def available(device: torch.device | str) -> bool:
    """Triton kernels can run on `device`: CUDA with triton, or any device under TRITON_INTERPRET=1."""
    if triton is None:
        return False
    return torch.device(device).type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def softcap_cross_entropy_eager(z: torch.Tensor, targets: torch.Tensor, cap: float) -> torch.Tensor:
    """Per-token loss [N] of logits z [N, V] softcapped as cap * tanh(z / cap) (the definition)."""
    logits = cap * torch.tanh(z.float() / cap)
    return F.cross_entropy(logits, targets, reduction="none")


def leaky_relu2_up_eager(x: torch.Tensor, w: torch.Tensor, slope: float) -> torch.Tensor:
    """leaky_relu(x @ w.T, slope) ** 2 (the definition)."""
    h = F.linear(x, w.to(x.dtype))
    return (F.leaky_relu(h, slope) if slope else torch.relu(h)).square()


if triton is not None:

    @triton.jit
    def _tanh(u):
        return 2.0 * tl.sigmoid(2.0 * u) - 1.0

    @triton.jit
    def _softcap_ce_forward(z_ptr, t_ptr, loss_ptr, lse_ptr, stride, vocab, cap, BLOCK: tl.constexpr):
        # Softcapped logits lie in [-cap, cap], so exp(y - cap) needs no running maximum.
        row = tl.program_id(0).to(tl.int64)
        base = z_ptr + row * stride
        total = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, vocab, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            mask = cols < vocab
            z = tl.load(base + cols, mask=mask, other=0.0).to(tl.float32)
            y = cap * _tanh(z / cap)
            total += tl.where(mask, tl.exp(y - cap), 0.0)
        lse = cap + tl.log(tl.sum(total, axis=0))
        target = tl.load(t_ptr + row)
        y_target = cap * _tanh(tl.load(base + target).to(tl.float32) / cap)
        tl.store(loss_ptr + row, lse - y_target)
        tl.store(lse_ptr + row, lse)

    @triton.jit
    def _softcap_ce_backward(z_ptr, t_ptr, lse_ptr, g_ptr, dz_ptr, stride, vocab, cap, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        lse = tl.load(lse_ptr + row)
        g = tl.load(g_ptr + row)
        target = tl.load(t_ptr + row)
        for start in range(0, vocab, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            mask = cols < vocab
            z = tl.load(z_ptr + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
            th = _tanh(z / cap)
            p = tl.exp(cap * th - lse)
            p = tl.where(cols == target, p - 1.0, p)
            dz = g * p * (1.0 - th * th)
            tl.store(dz_ptr + row * stride + cols, dz.to(dz_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _leaky_relu2_up_forward(x_ptr, w_ptr, pre_ptr, post_ptr, M, N, K, sxm, sxk, swn, swk, som, son, slope,
                                BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
        # int64 rows and columns: row * stride reaches 2**31 at 1M tokens x 2048 outputs, where Triton's int32 index
        # arithmetic would wrap silently (the cross-entropy kernels take their row as int64 for the same reason).
        rm = (tl.program_id(0) * BM + tl.arange(0, BM)).to(tl.int64)
        rn = (tl.program_id(1) * BN + tl.arange(0, BN)).to(tl.int64)
        rk = tl.arange(0, BK)
        acc = tl.zeros([BM, BN], dtype=tl.float32)
        for k in range(0, K, BK):
            a = tl.load(x_ptr + rm[:, None] * sxm + (k + rk)[None, :] * sxk,
                        mask=(rm[:, None] < M) & ((k + rk)[None, :] < K), other=0.0)
            b = tl.load(w_ptr + rn[None, :] * swn + (k + rk)[:, None] * swk,
                        mask=(rn[None, :] < N) & ((k + rk)[:, None] < K), other=0.0)
            acc += tl.dot(a, b)
        act = tl.where(acc > 0, acc, acc * slope)
        out = rm[:, None] * som + rn[None, :] * son
        mask = (rm[:, None] < M) & (rn[None, :] < N)
        tl.store(pre_ptr + out, acc.to(pre_ptr.dtype.element_ty), mask=mask)
        tl.store(post_ptr + out, (act * act).to(post_ptr.dtype.element_ty), mask=mask)


CE_BLOCK = 1024
UP_BLOCKS = (64, 64, 32)


def _loop_bound(kernel, n: int):
    """A runtime loop bound (`vocab`, `K`: `for start in range(0, n, BLOCK)` in the kernel) as the launch passes it.

    Compiled, a plain int: a runtime scalar, one kernel for every value (the code is unchanged). Under the triton 3.6
    interpreter every int argument becomes a tensor over a 1-element NumPy array and `range` calls its `__index__`,
    `int(self.handle.data)` (triton/runtime/interpreter.py, `_patch_lang_tensor`), which NumPy >= 2.4 refuses: "only
    0-dimensional arrays can be converted to Python scalars" (triton 3.9 squeezes the array first). A `tl.constexpr`
    is left unconverted by the interpreter (`_implicit_cvt`), so `range` gets a Python int there, in every version.
    (An interpreted kernel is an `InterpretedFunction`, not a `JITFunction`; its module needs NumPy, so it is not
    imported here.)
    """
    return n if isinstance(kernel, triton.runtime.JITFunction) else tl.constexpr(n)


# Each kernel launch is a `torch.library.custom_op` with a fake (shape-only) implementation and its backward
# registered through `register_autograd`. torch.compile(fullgraph=True) then sees one opaque op: it neither traces
# into the Triton launch (which Dynamo cannot do for every Triton build, and never for the interpreter's kernels:
# "Attempted to call function marked as skipped") nor breaks the graph. See the PyTorch tutorial "Using User-Defined
# Triton Kernels with torch.compile" / "Custom Python Operators" (torch.library.custom_op, torch >= 2.4).
if triton is not None:

    @torch.library.custom_op("pgolf::softcap_ce", mutates_args=())
    def _softcap_ce_op(z: torch.Tensor, targets: torch.Tensor, cap: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss [N] float32, log-sum-exp [N] float32) of softcapped logits z [N, V]."""
        z, targets = z.contiguous(), targets.contiguous()
        n, vocab = z.shape
        loss = torch.empty(n, device=z.device, dtype=torch.float32)
        lse = torch.empty_like(loss)
        _softcap_ce_forward[(n,)](z, targets, loss, lse, z.stride(0), _loop_bound(_softcap_ce_forward, vocab),
                                  float(cap), BLOCK=CE_BLOCK)
        return loss, lse

    @_softcap_ce_op.register_fake
    def _(z, targets, cap):
        return z.new_empty(z.shape[:1], dtype=torch.float32), z.new_empty(z.shape[:1], dtype=torch.float32)

    @torch.library.custom_op("pgolf::softcap_ce_backward", mutates_args=())
    def _softcap_ce_backward_op(z: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor, grad: torch.Tensor,
                                cap: float) -> torch.Tensor:
        """d loss / d z [N, V] (z's dtype) for the upstream gradient `grad` [N]."""
        z, targets = z.contiguous(), targets.contiguous()
        dz = torch.empty_like(z)
        _softcap_ce_backward[(z.size(0),)](z, targets, lse.contiguous(), grad.float().contiguous(), dz, z.stride(0),
                                           _loop_bound(_softcap_ce_backward, z.size(1)), float(cap), BLOCK=CE_BLOCK)
        return dz

    @_softcap_ce_backward_op.register_fake
    def _(z, targets, lse, grad, cap):
        return torch.empty_like(z, memory_format=torch.contiguous_format)

    def _softcap_ce_setup(ctx, inputs, output):
        z, targets, cap = inputs
        ctx.set_materialize_grads(False)  # the log-sum-exp output gets no gradient: no zeros tensor for it
        ctx.save_for_backward(z, targets, output[1])
        ctx.cap = cap

    def _softcap_ce_grad(ctx, grad_loss, grad_lse):
        z, targets, lse = ctx.saved_tensors
        return _softcap_ce_backward_op(z, targets, lse, grad_loss, ctx.cap), None, None

    _softcap_ce_op.register_autograd(_softcap_ce_grad, setup_context=_softcap_ce_setup)

    @torch.library.custom_op("pgolf::leaky_relu2_up", mutates_args=())
    def _leaky_relu2_up_op(x: torch.Tensor, w: torch.Tensor, slope: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(pre, post) = (x @ w.T, leaky_relu(pre, slope)^2) for x [M, K], w [N, K] of one dtype."""
        m, k = x.shape
        n = w.size(0)
        pre = torch.empty(m, n, device=x.device, dtype=x.dtype)
        post = torch.empty_like(pre)
        bm, bn, bk = UP_BLOCKS
        grid = (triton.cdiv(m, bm), triton.cdiv(n, bn))
        _leaky_relu2_up_forward[grid](x, w, pre, post, m, n, _loop_bound(_leaky_relu2_up_forward, k), x.stride(0),
                                      x.stride(1), w.stride(0), w.stride(1), pre.stride(0), pre.stride(1), float(slope),
                                      BM=bm, BN=bn, BK=bk)
        return pre, post

    @_leaky_relu2_up_op.register_fake
    def _(x, w, slope):
        return x.new_empty(x.size(0), w.size(0)), x.new_empty(x.size(0), w.size(0))

    def _leaky_relu2_up_setup(ctx, inputs, output):
        x, w, slope = inputs
        ctx.set_materialize_grads(False)  # `pre` is returned for the backward only: no zeros tensor for its grad
        ctx.save_for_backward(x, w, output[0])
        ctx.slope = slope

    def _leaky_relu2_up_grad(ctx, grad_pre, grad_post):
        x, w, pre = ctx.saved_tensors
        # d/dh leaky(h)^2 = 2 * leaky(h) * leaky'(h) = 2h (h > 0) or 2 * slope^2 * h (h <= 0)
        d_pre = grad_post * 2 * pre * torch.where(pre > 0, 1.0, ctx.slope * ctx.slope).to(pre.dtype)
        if grad_pre is not None:  # `pre` is an output too (saved for the backward, never used downstream)
            d_pre = d_pre + grad_pre
        return d_pre @ w, d_pre.t() @ x, None

    _leaky_relu2_up_op.register_autograd(_leaky_relu2_up_grad, setup_context=_leaky_relu2_up_setup)


def softcap_cross_entropy(z: torch.Tensor, targets: torch.Tensor, cap: float) -> torch.Tensor:
    """Per-token loss [N] of softcapped logits, fused (see the module docstring); z [N, V], targets [N]."""
    if cap <= 0:
        raise ValueError("the fused cross-entropy needs a positive softcap")
    return _softcap_ce_op(z, targets, float(cap))[0]


def leaky_relu2_up(x: torch.Tensor, w: torch.Tensor, slope: float) -> torch.Tensor:
    """leaky_relu(x @ w.T, slope) ** 2, fused (see the module docstring); x [..., K], w [N, K] (any float dtype: it
    is cast to x's, which is the autocast dtype under autocast; custom ops are not autocast ops, so the cast is here).
    """
    if torch.is_autocast_enabled(x.device.type):
        x = x.to(torch.get_autocast_dtype(x.device.type))
    shape = x.shape
    post = _leaky_relu2_up_op(x.reshape(-1, shape[-1]), w.to(x.dtype), float(slope))[1]
    return post.view(*shape[:-1], w.size(0))
