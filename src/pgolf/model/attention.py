"""Causal self-attention of the one model: GQA, QK-norm, (partial) RoPE, per-head query gain, and the record
options XSA and attention output gates (see the docstring of pgolf/model/gpt.py for the full list)."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from pgolf.config import ModelConfig
from pgolf.data.segments import Segments
from pgolf.model.layers import CastedLinear
from pgolf.model.choices import ATTN_GATES  # noqa: F401  (re-exported; `model.attn_gate`: see AttentionGate)
from pgolf.model.lora import Adapter, with_adapter


def rope_inv_freq(base: float, rope_dims: int) -> torch.Tensor:
    return 1.0 / (base ** (torch.arange(0, rope_dims, 2, dtype=torch.float32) / rope_dims))


class Rotary(nn.Module):
    """Rotary position embedding (Su et al., RoFormer, arXiv:2104.09864) over the first `rope_dims` head dims.

    NTK-aware scaling for contexts longer than training (`ntk_train_len` > 0; bloc97's NTK-aware RoPE, the
    records' ROPE_YARN option, docs/techniques.md#record-techniques): for a sequence of T > ntk_train_len tokens the
    base becomes
    base * (T / ntk_train_len) ** (d / (d - 2)), so the lowest frequency stretches over the longer context while the
    highest stay put. Sequences up to the training length are unchanged.
    """

    def __init__(self, head_dim: int, base: float, rope_dims: int = 0, ntk_train_len: int = 0) -> None:
        super().__init__()
        self.rope_dims = rope_dims or head_dim
        self.base, self.ntk_train_len = base, ntk_train_len
        self.register_buffer("inv_freq", rope_inv_freq(base, self.rope_dims), persistent=False)

    def forward(self, x: torch.Tensor, segments: Segments | None = None) -> torch.Tensor:
        """Rotate the first `rope_dims` dims of x [B, H, T, D] by position (pairs (i, i + rope_dims/2)). With
        `segments`, positions restart at every segment (only differences of positions matter to attention, so
        this equals numbering the packed row straight through, as the record does)."""
        n = x.size(-2) if segments is None else segments.max_seqlen
        inv_freq = self.inv_freq
        if self.ntk_train_len and n > self.ntk_train_len and self.rope_dims > 2:
            d = self.rope_dims
            inv_freq = rope_inv_freq(self.base * (n / self.ntk_train_len) ** (d / (d - 2)), d)
        if segments is None:
            freqs = torch.outer(torch.arange(n, device=x.device, dtype=torch.float32), inv_freq.to(x.device))
        else:  # [B, 1, T, rope_dims / 2]
            freqs = (segments.positions.to(torch.float32)[..., None] * inv_freq.to(x.device)).unsqueeze(1)
        cos, sin = freqs.cos().to(x.dtype), freqs.sin().to(x.dtype)
        rot, rest = x[..., :self.rope_dims], x[..., self.rope_dims:]
        half = self.rope_dims // 2
        x1, x2 = rot[..., :half], rot[..., half:]
        return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin, rest), dim=-1)


class Attention(nn.Module):
    """Causal grouped-query attention with RMS-normalised Q and K and a learnable per-head query gain."""

    def __init__(self, cfg: ModelConfig, xsa: bool = False) -> None:
        super().__init__()
        self.xsa = xsa
        self.gate = (AttentionGate(cfg.attn_gate, cfg.model_dim, cfg.num_heads, cfg.attn_gate_scale)
                     if cfg.attn_gate != "none" else None)
        self.num_heads, self.num_kv_heads = cfg.num_heads, cfg.num_kv_heads
        self.head_dim = cfg.model_dim // cfg.num_heads
        kv_dim = self.num_kv_heads * self.head_dim
        self.c_q = CastedLinear(cfg.model_dim, cfg.model_dim)
        self.c_k = CastedLinear(cfg.model_dim, kv_dim)
        self.c_v = CastedLinear(cfg.model_dim, kv_dim)
        self.proj = CastedLinear(cfg.model_dim, cfg.model_dim, zero_init=True)
        self.q_gain = nn.Parameter(torch.full((cfg.num_heads,), float(cfg.qk_gain_init)))
        self.rotary = Rotary(self.head_dim, cfg.rope_base, cfg.rope_dims, cfg.rope_ntk_train_len)
        self.vres_alpha = nn.Parameter(torch.zeros(())) if cfg.value_residual else None

    def forward(self, x: torch.Tensor, value_embed: torch.Tensor | None = None,
                shared: dict | None = None, adapter: Adapter | None = None, segments: Segments | None = None
                ) -> torch.Tensor:
        """`value_embed` [B, T, kv_dim], when given, is added to V before the heads are split (VE, PR #374).
        `shared` carries the first applied layer's V to later layers for the value residual. `adapter` adds
        test-time LoRA corrections to Q, K, V and the output (`pgolf/model/lora.py`). `segments` cuts attention
        at document boundaries (`pgolf/data/segments.py`)."""
        b, t, d = x.shape
        q = with_adapter(self.c_q(x), adapter, "q", x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = with_adapter(self.c_k(x), adapter, "k", x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = with_adapter(self.c_v(x), adapter, "v", x)
        if value_embed is not None:
            v = v + value_embed
        if self.vres_alpha is not None and shared is not None:
            # Value residual (ResFormer, arXiv:2410.17897; PR #569 style): v <- v + sigmoid(alpha) * v_first.
            if "v_first" not in shared:
                shared["v_first"] = v
            else:
                v = v + torch.sigmoid(self.vres_alpha).to(v.dtype) * shared["v_first"]
        v = v.view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = self.rotary(F.rms_norm(q, (self.head_dim,)), segments)
        k = self.rotary(F.rms_norm(k, (self.head_dim,)), segments)
        q = q * self.q_gain.to(q.dtype)[None, :, None, None]
        if segments is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               enable_gqa=self.num_kv_heads != self.num_heads)
        else:
            y = segment_attention(q, k, v, segments)
        if self.xsa:
            y = exclude_self_value(y, v)
        if self.gate is not None:
            y = y * self.gate(x)
        return with_adapter(self.proj(y.transpose(1, 2).reshape(b, t, d)), adapter, "o", x)


def segment_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segments: Segments) -> torch.Tensor:
    """Causal attention within each segment only: q [B, H, T, D], k and v [B, Hkv, T, D] -> [B, H, T, D].

    On CUDA this is one variable-length flash-attention call over the flattened tokens: FlashAttention-3's
    `flash_attn_varlen_func` when `flash_attn_interface` imports (what the record calls; see `use_fa3`), else
    torch's own `torch.nn.attention.varlen.varlen_attn` (torch >= 2.10). Elsewhere the segments are gathered into
    a padded batch [n, H, S, D] and each runs ordinary causal SDPA, which is running every document alone by
    construction; the padding sits after each segment's last token, where causal attention of real tokens never
    looks. (A block-diagonal mask over the packed row would cost rows x row-length^2 memory.)
    """
    if q.is_cuda and (fa3_varlen is not None or varlen_attention is not None):
        return _varlen(q, k, v, segments)
    b, h, t, d = q.shape

    def padded(z: torch.Tensor) -> torch.Tensor:  # [B, Hz, T, D] -> [n, Hz, S, D]
        flat = z.transpose(1, 2).reshape(b * t, z.size(1), d)
        return flat[segments.gather].transpose(1, 2)

    y = F.scaled_dot_product_attention(padded(q), padded(k), padded(v), is_causal=True,
                                       enable_gqa=k.size(1) != h)
    rows = y.transpose(1, 2).reshape(-1, h, d)[segments.valid.reshape(-1)]  # segments in order: the flat order
    return rows.view(b, t, h, d).transpose(1, 2)


def flash_dtype(q: torch.Tensor) -> torch.dtype:
    """The dtype the variable-length flash kernels get: the autocast dtype when autocast is on, else q's own dtype
    when it is half precision, else bfloat16.

    Flash attention takes only fp16/bf16, with q, k and v of one dtype (FA3's `flash_attn_varlen_func` and torch's
    `varlen_attn`, a `torch.library.custom_op` over `aten._flash_attention_forward`), and neither is an autocast
    op: unlike SDPA, nothing casts their inputs. Under CUDA autocast q and k arrive in float32, because `rms_norm`
    is on autocast's float32 list (aten/src/ATen/autocast_mode.h, `AT_FORALL_FP32`) while v, a linear's output,
    is bf16."""
    if torch.is_autocast_enabled(q.device.type):
        return torch.get_autocast_dtype(q.device.type)
    return q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16


def _varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segments: Segments) -> torch.Tensor:
    """Variable-length flash attention over the flattened tokens: q [B, H, T, D], k and v [B, Hkv, T, D] ->
    [B, H, T, D], in the autocast dtype under autocast and in q's dtype otherwise (as SDPA returns). The kernels
    get (total, heads, dim), contiguous, one half-precision dtype; cu_seqlens int32 on the same device."""
    b, h, t, d = q.shape
    dtype = flash_dtype(q)
    out_dtype = dtype if torch.is_autocast_enabled(q.device.type) else q.dtype
    flat = lambda z: z.transpose(1, 2).reshape(b * t, z.size(1), d).to(dtype).contiguous()  # noqa: E731
    cu, longest = segments.cu_seqlens, segments.max_seqlen
    if use_fa3():
        y = fa3_varlen(flat(q), flat(k), flat(v), cu, cu, longest, longest, causal=True)
        y = y[0] if isinstance(y, tuple) else y  # some FA3 builds also return the log-sum-exp
    else:
        y = varlen_attention(flat(q), flat(k), flat(v), cu, cu, longest, longest,
                             **varlen_keywords(gqa=k.size(1) != h))
    return y.view(b, t, h, d).transpose(1, 2).to(out_dtype)


def use_fa3() -> bool:
    """FA3 when it imports, except inside torch.compile with a build Dynamo cannot trace when torch's varlen_attn
    can serve instead: FA3 builds whose interface registers `torch.ops.flash_attn_3._flash_attn_forward` as a
    custom op (with a fake) compile in one graph; older ones call their pybind extension directly, which is a
    graph break, i.e. an error under the trainer's fullgraph=True. (`torch.compiler.is_compiling` is constant
    while tracing, so this costs nothing at run time.)"""
    if fa3_varlen is None:
        return False
    return fa3_traceable or varlen_attention is None or not torch.compiler.is_compiling()


def _fa3_registers_custom_op() -> bool:
    try:
        return torch.ops.flash_attn_3._flash_attn_forward is not None
    except (AttributeError, RuntimeError):
        return False


try:  # FlashAttention-3 (Hopper), installed separately; GQA without repeating K/V
    from flash_attn_interface import flash_attn_varlen_func as fa3_varlen
except ImportError:
    fa3_varlen = None
fa3_traceable = fa3_varlen is not None and _fa3_registers_custom_op()
try:  # torch >= 2.10 ships variable-length flash attention for CUDA
    from torch.nn.attention.varlen import varlen_attn as varlen_attention
except ImportError:  # pragma: no cover - older torch: the padded path serves CUDA too
    varlen_attention = None


def _parameters(fn) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # pragma: no cover - a builtin without a signature
        return frozenset()


# The keywords the installed torch's varlen_attn takes, read once from its signature (a constant while compiling).
VARLEN_PARAMETERS = _parameters(varlen_attention) if varlen_attention is not None else frozenset()


def varlen_keywords(gqa: bool, parameters: frozenset[str] | None = None) -> dict:
    """The keywords of a causal `varlen_attn` call for this torch: `window_size=(-1, 0)` (causal), and
    `enable_gqa` only where the signature has it. torch 2.11's varlen_attn has no `enable_gqa`
    (`(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux, scale, window_size)`) and takes keys and
    values with fewer heads as they are (the flash kernels do GQA natively); later releases ask for the flag."""
    parameters = VARLEN_PARAMETERS if parameters is None else parameters
    keywords: dict = {"window_size": (-1, 0)}
    if "enable_gqa" in parameters:
        keywords["enable_gqa"] = gqa
    return keywords


def exclude_self_value(y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """XSA: remove from each head's output y [B, H, T, D] its component along the same position's normalised value
    vector, using the KV group's v [B, Hkv, T, D] without repeating it."""
    b, h, t, d = y.shape
    groups = y.view(b, v.size(1), h // v.size(1), t, d)
    vn = F.normalize(v, dim=-1).unsqueeze(2)
    groups = groups - (groups * vn).sum(-1, keepdim=True) * vn
    return groups.view(b, h, t, d)


class AttentionGate(nn.Module):
    """Per-head multiplicative gates on the attention output, before the out-projection
    (docs/techniques.md#record-techniques):

    - `out` (AttnOutGate, PR #1667): g = 2*sigmoid(W x[:12]), W zero-init (g = 1 at start);
    - `gated` (GatedAttn, PR #1736, Qwen's gated attention G1): g = sigmoid(W x), W ~ N(0, 0.005) (g ~ 0.5);
    - `sparse` (SparseAttnGate, PR #1787): g = sigmoid(s * W x[:12]), W zero-init, s = `scale`.
    x is the attention's (normalised) input. The weight is named `attn_gate_w` so it trains with the scalars.
    """

    def __init__(self, kind: str, dim: int, heads: int, scale: float = 1.0) -> None:
        super().__init__()
        self.kind, self.scale = kind, scale
        self.inputs = dim if kind == "gated" else 12
        self.attn_gate_w = nn.Parameter(torch.zeros(heads, self.inputs))
        if kind == "gated":
            nn.init.normal_(self.attn_gate_w, std=0.005)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gate values [B, H, T, 1] for attention input x [B, T, D]."""
        z = x[..., :self.inputs] @ self.attn_gate_w.to(x.dtype).T
        if self.kind == "out":
            g = 2 * torch.sigmoid(z)
        elif self.kind == "gated":
            g = torch.sigmoid(z)
        else:
            g = torch.sigmoid(self.scale * z)
        return g.transpose(1, 2).unsqueeze(-1)
