"""The ONE model: the official naive baseline GPT (CHALLENGE.md section 4), used by training, evaluation and
everything that runs a forward pass.

Shape: tied embedding -> RMSNorm (kept as x0) -> blocks -> RMSNorm -> tied head -> softcap. Each block mixes its
input with x0 (`resid_mix`), runs pre-norm GQA attention (QK-norm, RoPE, learnable per-head `q_gain`) and a
relu^2 MLP, each branch scaled per channel (`attn_scale`, `mlp_scale`). The first half of the blocks push their
outputs on a stack that the second half pops, U-Net style, weighted by `skip_weights`. Output projections start at
zero, so every block is the identity at initialisation. Weights stay float32 and are cast to the activation dtype
per matmul, so bf16 autocast on CUDA works without a second copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pgolf.config import ModelConfig


class CastedLinear(nn.Linear):
    """A bias-free linear layer whose float32 weight is cast to the input's dtype (autocast-friendly)."""

    def __init__(self, in_features: int, out_features: int, zero_init: bool = False) -> None:
        super().__init__(in_features, out_features, bias=False)
        if zero_init:
            nn.init.zeros_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype))


class Rotary(nn.Module):
    """Rotary position embedding over the full head dimension (Su et al., RoFormer, arXiv:2104.09864)."""

    def __init__(self, head_dim: int, base: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate x of shape [B, H, T, D] by its positions."""
        t = torch.arange(x.size(-2), device=x.device, dtype=torch.float32)
        freqs = torch.outer(t, self.inv_freq.to(x.device))
        cos, sin = freqs.cos().to(x.dtype), freqs.sin().to(x.dtype)
        half = x.size(-1) // 2
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class Attention(nn.Module):
    """Causal grouped-query attention with RMS-normalised Q and K and a learnable per-head query gain."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads = cfg.num_heads, cfg.num_kv_heads
        self.head_dim = cfg.model_dim // cfg.num_heads
        kv_dim = self.num_kv_heads * self.head_dim
        self.c_q = CastedLinear(cfg.model_dim, cfg.model_dim)
        self.c_k = CastedLinear(cfg.model_dim, kv_dim)
        self.c_v = CastedLinear(cfg.model_dim, kv_dim)
        self.proj = CastedLinear(cfg.model_dim, cfg.model_dim, zero_init=True)
        self.q_gain = nn.Parameter(torch.full((cfg.num_heads,), float(cfg.qk_gain_init)))
        self.rotary = Rotary(self.head_dim, cfg.rope_base)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q = self.c_q(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.c_k(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.c_v(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = self.rotary(F.rms_norm(q, (self.head_dim,)))
        k = self.rotary(F.rms_norm(k, (self.head_dim,)))
        q = q * self.q_gain.to(q.dtype)[None, :, None, None]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           enable_gqa=self.num_kv_heads != self.num_heads)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    """relu(x W1)^2 W2 (Primer's squared ReLU, So et al. arXiv:2109.08668); W2 starts at zero."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        hidden = int(cfg.mlp_mult * cfg.model_dim)
        self.fc = CastedLinear(cfg.model_dim, hidden)
        self.proj = CastedLinear(hidden, cfg.model_dim, zero_init=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.relu(self.fc(x)).square())


class Block(nn.Module):
    """x_in = m0*x + m1*x0; x += attn_scale * Attn(norm(x_in)); x += mlp_scale * MLP(norm(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.attn_scale = nn.Parameter(torch.ones(cfg.model_dim))
        self.mlp_scale = nn.Parameter(torch.ones(cfg.model_dim))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(cfg.model_dim), torch.zeros(cfg.model_dim))))

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(F.rms_norm(x, (x.size(-1),)))
        return x + self.mlp_scale.to(x.dtype) * self.mlp(F.rms_norm(x, (x.size(-1),)))


class GPT(nn.Module):
    """The baseline GPT. `forward(x, y)` returns the CE loss; `forward(x)` returns softcapped float32 logits."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        nn.init.normal_(self.tok_emb.weight, mean=0.0, std=cfg.tied_embed_init_std)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.num_encoder = cfg.num_layers // 2
        self.num_skips = min(self.num_encoder, cfg.num_layers - self.num_encoder)
        self.skip_weights = nn.Parameter(torch.ones(self.num_skips, cfg.model_dim))
        self.lm_head = None if cfg.tie_embeddings else CastedLinear(cfg.model_dim, cfg.vocab_size, zero_init=True)

    def hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Final normalised hidden states [B, T, D]."""
        x = self.tok_emb(input_ids)
        x = F.rms_norm(x, (x.size(-1),))
        x0 = x
        skips = []
        for i, block in enumerate(self.blocks):
            if i >= self.num_encoder:
                j = i - self.num_encoder
                if j < self.num_skips:
                    x = x + self.skip_weights[j].to(x.dtype) * skips.pop()
            x = block(x, x0)
            if i < self.num_encoder:
                skips.append(x)
        return F.rms_norm(x, (x.size(-1),))

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = self.hidden(input_ids)
        weight = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        z = F.linear(h, weight.to(h.dtype)).float()
        c = self.cfg.logit_softcap
        return c * torch.tanh(z / c) if c > 0 else z

    def forward(self, input_ids: torch.Tensor, target_ids: torch.Tensor | None = None,
                reduction: str = "mean") -> torch.Tensor:
        logits = self.logits(input_ids)
        if target_ids is None:
            return logits
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), target_ids.reshape(-1), reduction=reduction)
        return loss.view_as(target_ids) if reduction == "none" else loss
