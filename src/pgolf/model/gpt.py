"""The ONE model: the official naive baseline GPT (CHALLENGE.md section 4), used by training, evaluation and
everything that runs a forward pass.

Shape: tied embedding -> RMSNorm (kept as x0) -> blocks -> RMSNorm -> tied head -> softcap. Each block mixes its
input with x0 (`resid_mix`), runs pre-norm GQA attention (QK-norm, RoPE, learnable per-head `q_gain`) and a
relu^2 MLP, each branch scaled per channel (`attn_scale`, `mlp_scale`). The first half of the blocks push their
outputs on a stack that the second half pops, U-Net style, weighted by `skip_weights`. Output projections start at
zero, so every block is the identity at initialisation. Weights stay float32 and are cast to the activation dtype
per matmul, so bf16 autocast on CUDA works without a second copy.

Record techniques are options of this same model (ModelConfig fields, all off by default; CHALLENGE.md 5.2):
- `mlp_activation = "leaky_relu2"`: LeakyReLU(0.5)^2 instead of relu^2 (PR #493);
- `rope_dims = k`: partial RoPE, only the first k head dims rotate, the rest are position-free (PR #315);
- `ln_scale`: each block's RMSNorm outputs are multiplied by 1/sqrt(layer + 1) (PR #315);
- `xsa_last_n = k`: exclusive self-attention in the last k layers (all when k >= num_layers): each head's output
  loses its component along the same position's normalised value vector (arXiv:2603.09078; PRs #198/#265/#478);
- `ortho_init`: orthogonal init of Q, K, V, MLP-up and other non-zero-init matrices (03-19/03-20 records);
- `skip_gates`: U-Net skips become x <- w*s + sigmoid(g)*(x - w*s), g zero-init (PR #1089);
- `smear_gate`: SmearGate v2 with the BOS fix on the token embedding (`pgolf/model/smear.py`);
- `num_loops`, `loop_start`, `loop_end`, `loop_start_frac`: depth recurrence (`pgolf/model/recurrence.py`); the
  trainer sets `model.looping` from training progress, evaluation always loops.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pgolf.config import ModelConfig
from pgolf.model.recurrence import max_skips, unet_split, virtual_layers
from pgolf.model.smear import SmearGate

# Names of the model's control tensors: trained by Adam at scalar_lr, kept in fp32 by the int8 export.
CONTROL_PATTERNS = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight", "skip_gate", "smear_")


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

    def __init__(self, head_dim: int, base: float, rope_dims: int = 0) -> None:
        super().__init__()
        self.rope_dims = rope_dims or head_dim
        inv_freq = 1.0 / (base ** (torch.arange(0, self.rope_dims, 2, dtype=torch.float32) / self.rope_dims))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate the first `rope_dims` dims of x [B, H, T, D] by position (pairs (i, i + rope_dims/2))."""
        t = torch.arange(x.size(-2), device=x.device, dtype=torch.float32)
        freqs = torch.outer(t, self.inv_freq.to(x.device))
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
        self.num_heads, self.num_kv_heads = cfg.num_heads, cfg.num_kv_heads
        self.head_dim = cfg.model_dim // cfg.num_heads
        kv_dim = self.num_kv_heads * self.head_dim
        self.c_q = CastedLinear(cfg.model_dim, cfg.model_dim)
        self.c_k = CastedLinear(cfg.model_dim, kv_dim)
        self.c_v = CastedLinear(cfg.model_dim, kv_dim)
        self.proj = CastedLinear(cfg.model_dim, cfg.model_dim, zero_init=True)
        self.q_gain = nn.Parameter(torch.full((cfg.num_heads,), float(cfg.qk_gain_init)))
        self.rotary = Rotary(self.head_dim, cfg.rope_base, cfg.rope_dims)

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
        if self.xsa:
            y = exclude_self_value(y, v)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


def exclude_self_value(y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """XSA: remove from each head's output y [B, H, T, D] its component along the same position's normalised value
    vector, using the KV group's v [B, Hkv, T, D] without repeating it."""
    b, h, t, d = y.shape
    groups = y.view(b, v.size(1), h // v.size(1), t, d)
    vn = F.normalize(v, dim=-1).unsqueeze(2)
    groups = groups - (groups * vn).sum(-1, keepdim=True) * vn
    return groups.view(b, h, t, d)


class MLP(nn.Module):
    """relu(x W1)^2 W2 (Primer's squared ReLU, So et al. arXiv:2109.08668); W2 starts at zero."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        hidden = int(cfg.mlp_mult * cfg.model_dim)
        self.fc = CastedLinear(cfg.model_dim, hidden)
        self.proj = CastedLinear(hidden, cfg.model_dim, zero_init=True)
        self.negative_slope = 0.5 if cfg.mlp_activation == "leaky_relu2" else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        h = F.leaky_relu(h, self.negative_slope) if self.negative_slope else torch.relu(h)
        return self.proj(h.square())


class Block(nn.Module):
    """x_in = m0*x + m1*x0; x += attn_scale * Attn(norm(x_in)); x += mlp_scale * MLP(norm(x))."""

    def __init__(self, cfg: ModelConfig, layer: int = 0) -> None:
        super().__init__()
        self.attn = Attention(cfg, xsa=layer >= cfg.num_layers - cfg.xsa_last_n)
        self.mlp = MLP(cfg)
        self.norm_scale = 1.0 / math.sqrt(layer + 1) if cfg.ln_scale else 1.0
        self.attn_scale = nn.Parameter(torch.ones(cfg.model_dim))
        self.mlp_scale = nn.Parameter(torch.ones(cfg.model_dim))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(cfg.model_dim), torch.zeros(cfg.model_dim))))

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(self.norm_scale * F.rms_norm(x, (x.size(-1),)))
        return x + self.mlp_scale.to(x.dtype) * self.mlp(self.norm_scale * F.rms_norm(x, (x.size(-1),)))


class GPT(nn.Module):
    """The baseline GPT. `forward(x, y)` returns the CE loss; `forward(x)` returns softcapped float32 logits."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        nn.init.normal_(self.tok_emb.weight, mean=0.0, std=cfg.tied_embed_init_std)
        self.smear = SmearGate(cfg.model_dim, cfg.bos_id) if cfg.smear_gate else None
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_layers))
        self.looping = cfg.num_loops > 0
        self.num_skips = max_skips(cfg.num_layers, cfg.loop_start, cfg.loop_end, cfg.num_loops)
        self.skip_weights = nn.Parameter(torch.ones(self.num_skips, cfg.model_dim))
        self.skip_gates = nn.Parameter(torch.zeros(self.num_skips, cfg.model_dim)) if cfg.skip_gates else None
        self.lm_head = None if cfg.tie_embeddings else CastedLinear(cfg.model_dim, cfg.vocab_size, zero_init=True)
        if cfg.ortho_init:
            self._orthogonal_init()

    def _orthogonal_init(self) -> None:
        """Orthogonal (gain 1) init of every block matrix that does not start at zero."""
        with torch.no_grad():
            for module in self.blocks.modules():
                if isinstance(module, CastedLinear) and module.weight.any():
                    nn.init.orthogonal_(module.weight)

    def hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Final normalised hidden states [B, T, D]."""
        x = self.tok_emb(input_ids)
        if self.smear is not None:
            x = self.smear(x, input_ids)
        x = F.rms_norm(x, (x.size(-1),))
        x0 = x
        c = self.cfg
        encoder, decoder = unet_split(virtual_layers(c.num_layers, c.loop_start, c.loop_end, c.num_loops, self.looping))
        skips = []
        for i in encoder:
            x = self.blocks[i](x, x0)
            skips.append(x)
        for j, i in enumerate(decoder):
            if j < len(encoder):
                skip = self.skip_weights[j].to(x.dtype) * skips.pop()
                if self.skip_gates is None:
                    x = x + skip
                else:
                    x = skip + torch.sigmoid(self.skip_gates[j]).to(x.dtype) * (x - skip)
            x = self.blocks[i](x, x0)
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
