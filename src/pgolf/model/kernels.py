"""Fused Triton kernels for the two hot spots the 1.0611 record fuses (PR #1855's kernels;
docs/techniques.md#fused-softcapped-cross-entropy):

- `softcap_cross_entropy(z, targets, cap)`: per-token cross-entropy of softcapped logits c*tanh(z/c), forward and
  backward, without materialising the softcapped float32 [N, V] logits or their softmax (one pass over z for the
  loss, one for the gradient);
- `leaky_relu2_up(x, w, slope)`: the MLP up-projection fused with its activation, leaky_relu(x @ w.T, slope)^2 in
  the matmul's epilogue (slope 0 is relu^2); the backward is two ordinary matmuls on the gradient of the
  pre-activation.

Each is a `torch.autograd.Function` whose eager twin (`softcap_cross_entropy_eager`, `leaky_relu2_up_eager`) is the
definition it must match; `tests/model/test_kernels.py` checks values and gradients against it through Triton's CPU
interpreter (`TRITON_INTERPRET=1`) and on CUDA when there is one. `available()` says whether Triton can run here;
the model uses the kernels only when asked (`GPT.use_kernels`).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from pgolf.errors import PgolfError

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is optional
    triton = None


KERNEL_MODES = ("auto", "on", "off")  # `train.kernels`


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
        rm = tl.program_id(0) * BM + tl.arange(0, BM)
        rn = tl.program_id(1) * BN + tl.arange(0, BN)
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


class _SoftcapCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor, targets: torch.Tensor, cap: float) -> torch.Tensor:
        z, targets = z.contiguous(), targets.contiguous()
        n, vocab = z.shape
        loss = torch.empty(n, device=z.device, dtype=torch.float32)
        lse = torch.empty_like(loss)
        _softcap_ce_forward[(n,)](z, targets, loss, lse, z.stride(0), vocab, float(cap), BLOCK=CE_BLOCK)
        ctx.save_for_backward(z, targets, lse)
        ctx.cap = cap
        return loss

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        z, targets, lse = ctx.saved_tensors
        dz = torch.empty_like(z)
        _softcap_ce_backward[(z.size(0),)](z, targets, lse, grad.float().contiguous(), dz, z.stride(0), z.size(1),
                                           float(ctx.cap), BLOCK=CE_BLOCK)
        return dz, None, None


class _LeakyReLU2Up(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, slope: float) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        wx = w.to(x.dtype)
        m, k = x2.shape
        n = wx.size(0)
        pre = torch.empty(m, n, device=x.device, dtype=x.dtype)
        post = torch.empty_like(pre)
        bm, bn, bk = UP_BLOCKS
        grid = (triton.cdiv(m, bm), triton.cdiv(n, bn))
        _leaky_relu2_up_forward[grid](x2, wx, pre, post, m, n, k, x2.stride(0), x2.stride(1), wx.stride(0),
                                      wx.stride(1), pre.stride(0), pre.stride(1), float(slope), BM=bm, BN=bn, BK=bk)
        ctx.save_for_backward(x2, w, pre)
        ctx.slope, ctx.shape = slope, shape
        return post.view(*shape[:-1], n)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x2, w, pre = ctx.saved_tensors
        g = grad.reshape(-1, pre.size(1))
        # d/dh leaky(h)^2 = 2 * leaky(h) * leaky'(h) = 2h (h > 0) or 2 * slope^2 * h (h <= 0)
        d_pre = g * 2 * pre * torch.where(pre > 0, 1.0, ctx.slope * ctx.slope).to(pre.dtype)
        dx = (d_pre @ w.to(d_pre.dtype)).view(ctx.shape)
        dw = (d_pre.t() @ x2).to(w.dtype)
        return dx, dw, None


def softcap_cross_entropy(z: torch.Tensor, targets: torch.Tensor, cap: float) -> torch.Tensor:
    """Per-token loss [N] of softcapped logits, fused (see the module docstring); z [N, V], targets [N]."""
    if cap <= 0:
        raise ValueError("the fused cross-entropy needs a positive softcap")
    return _SoftcapCrossEntropy.apply(z, targets, cap)


def leaky_relu2_up(x: torch.Tensor, w: torch.Tensor, slope: float) -> torch.Tensor:
    """leaky_relu(x @ w.T, slope) ** 2, fused (see the module docstring); x [..., K], w [N, K]."""
    if torch.is_autocast_enabled(x.device.type):
        x = x.to(torch.get_autocast_dtype(x.device.type))
    return _LeakyReLU2Up.apply(x, w, slope)
