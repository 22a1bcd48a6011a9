"""The ONE model: the official naive baseline GPT (docs/techniques.md#baseline-architecture), used by training,
evaluation and everything that runs a forward pass.

Shape: tied embedding -> RMSNorm (kept as x0) -> blocks -> RMSNorm -> tied head -> softcap. Each block mixes its
input with x0 (`resid_mix`), runs pre-norm GQA attention (QK-norm, RoPE, learnable per-head `q_gain`) and a
relu^2 MLP, each branch scaled per channel (`attn_scale`, `mlp_scale`). The first half of the blocks push their
outputs on a stack that the second half pops, U-Net style, weighted by `skip_weights`. Output projections start at
zero, so every block is the identity at initialisation. Weights stay float32 and are cast to the activation dtype
per matmul, so bf16 autocast on CUDA works without a second copy.

Record techniques are options of this same model (ModelConfig fields, all off by default;
docs/techniques.md#record-techniques):
- `mlp_activation = "leaky_relu2"`: LeakyReLU(0.5)^2 instead of relu^2 (PR #493);
- `rope_dims = k`: partial RoPE, only the first k head dims rotate, the rest are position-free (PR #315);
- `ln_scale`: each block's RMSNorm outputs are multiplied by 1/sqrt(layer + 1) (PR #315);
- `xsa_last_n = k`: exclusive self-attention in the last k layers (all when k >= num_layers): each head's output
  loses its component along the same position's normalised value vector (arXiv:2603.09078; PRs #198/#265/#478);
- `ortho_init`: orthogonal init of Q, K, V, MLP-up and other non-zero-init matrices (03-19/03-20 records);
- `skip_gates`: U-Net skips become x <- w*s + sigmoid(g)*(x - w*s), g zero-init (PR #1089);
- `bigram_rows`, `bigram_dim`: BigramHash embedding added before the RMSNorm (`pgolf/model/bigram.py`);
- `value_embed_last_n`, `value_embed_dim`: value embeddings (VE128, PR #374): one shared vocab x 128 table
  (N(0, 0.01)), a zero-init projection to the KV width and a scalar 0.1, added to V in the last n layers, each
  with a learnable scale;
- `smear_gate`: SmearGate v2 with the BOS fix on the token embedding (`pgolf/model/smear.py`);
- `num_loops`, `loop_start`, `loop_end`, `loop_start_frac`: depth recurrence (`pgolf/model/recurrence.py`); the
  trainer sets `model.looping` from training progress, evaluation always loops;
- `attn_gate` (`out`, `gated`, `sparse`) and `attn_gate_scale`: attention output gates (`pgolf/model/attention.py`);
- `parallel_mode` (`gptj`, `two_lane`) from layer `parallel_start`: parallel residuals (see `Block`);
- `value_residual`: every later attention adds sigmoid(alpha) times the first applied layer's V (ResFormer);
- `rope_ntk_train_len = L`: NTK-aware RoPE base scaling for eval contexts longer than L (`Rotary`);
- `asym_logit`: AsymLogit (PR #1923, in PRs #1945/#2135): the logits the evaluation scores (`head`, `logits`,
  `forward(x)`, the TTT forward) are capped by two fp32 scalars, `logit_cap_pos` for positive and `logit_cap_neg`
  for negative logits, both starting at `logit_softcap` (then the same function as the symmetric cap). The training
  loss keeps the one symmetric cap (and the fused kernel), and no optimizer group holds the caps
  (`pgolf/optim/groups.py`), so training never moves them, as in PR #2135; only phased TTT's global phases with
  `ttt.train_logit_caps` do (`pgolf/eval/ttt_lora.py`).

Test-time training adapts this same forward: `hidden(ids, lora)` and `head(h, lora)` take per-document LoRA
adapters, one per virtual-layer slot (`pgolf/model/lora.py`).

What each option does to the score at CPU scale (`pgolf ablate`), measured: docs/BENCHMARKS.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pgolf.config import ModelConfig
from pgolf.data.segments import Segments
from pgolf.errors import PgolfError
from pgolf.model.attention import Attention, Rotary, exclude_self_value  # noqa: F401  (re-exported)
from pgolf.model import kernels
from pgolf.model.bigram import BigramHash
from pgolf.model.choices import MLP_ACTIVATIONS, PARALLEL_MODES  # noqa: F401  (PARALLEL_MODES re-exported)
from pgolf.model.layers import CastedLinear
from pgolf.model.lora import Adapter, with_adapter
from pgolf.model.recurrence import max_skips, unet_split, virtual_layers
from pgolf.model.smear import SmearGate


class MLP(nn.Module):
    """relu(x W1)^2 W2 (Primer's squared ReLU, So et al. arXiv:2109.08668); W2 starts at zero."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        hidden = int(cfg.mlp_mult * cfg.model_dim)
        self.fc = CastedLinear(cfg.model_dim, hidden)
        self.proj = CastedLinear(hidden, cfg.model_dim, zero_init=True)
        self.negative_slope = MLP_ACTIVATIONS[cfg.mlp_activation]
        self.fused = False  # GPT.use_kernels: the Triton up-projection + activation

    def forward(self, x: torch.Tensor, adapter: Adapter | None = None) -> torch.Tensor:
        if self.fused:
            h2 = kernels.leaky_relu2_up(x, self.fc.effective_weight(), self.negative_slope)
        else:
            h = self.fc(x)
            h2 = (F.leaky_relu(h, self.negative_slope) if self.negative_slope else torch.relu(h)).square()
        return with_adapter(self.proj(h2), adapter, "mlp", x)


class Block(nn.Module):
    """x_in = m0*x + m1*x0; x += attn_scale * Attn(norm(x_in)); x += mlp_scale * MLP(norm(x)).

    From physical layer `parallel_start` on, `parallel_mode` changes the wiring (docs/techniques.md#parallel-residuals):
    - `gptj` (PRs #1204/#1412): attention and MLP both read norm(x_in): x = x_in + a*Attn + m*MLP;
    - `two_lane` (PR #1529, as the 1.0611 record wires it): an attention lane (lane 0, the stream x, which alone
      receives the U-Net skips) and an MLP lane (lane 1). Both lanes start as copies of the stream entering the
      first two-lane layer, before that layer's skip. Attention reads norm(m0*lane0 + m1*x0) (`resid_mix` shapes
      what attention reads, while lane 0 itself carries on unmixed), the MLP reads norm(lane1) (not this block's
      attention output), and lane0 = rho_a*lane0 + P00*attn + P10*mlp, lane1 = rho_m*lane1 + P01*attn + P11*mlp
      with learnable rho (init 1.1) and P (init 1). The final hidden state is the lanes' mean.
    """

    def __init__(self, cfg: ModelConfig, layer: int = 0) -> None:
        super().__init__()
        self.attn = Attention(cfg, xsa=layer >= cfg.num_layers - cfg.xsa_last_n)
        self.mlp = MLP(cfg)
        self.norm_scale = 1.0 / math.sqrt(layer + 1) if cfg.ln_scale else 1.0
        self.attn_scale = nn.Parameter(torch.ones(cfg.model_dim))
        self.mlp_scale = nn.Parameter(torch.ones(cfg.model_dim))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(cfg.model_dim), torch.zeros(cfg.model_dim))))
        self.parallel = cfg.parallel_mode if layer >= cfg.parallel_start else "none"
        self.uses_value_embed = layer >= cfg.num_layers - cfg.value_embed_last_n
        if self.uses_value_embed:
            self.ve_layer_scale = nn.Parameter(torch.ones(()))
        if self.parallel == "two_lane":
            self.lane_rho = nn.Parameter(torch.full((2,), 1.1))
            self.lane_mix = nn.Parameter(torch.ones(2, 2))

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm_scale * F.rms_norm(x, (x.size(-1),))

    def forward(self, x: torch.Tensor, x0: torch.Tensor, lane1: torch.Tensor | None = None,
                value_embed: torch.Tensor | None = None, shared: dict | None = None, adapter: Adapter | None = None,
                segments: Segments | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        mix = self.resid_mix.to(x.dtype)
        mixed = mix[0] * x + mix[1] * x0
        ve = self.ve_layer_scale.to(x.dtype) * value_embed if self.uses_value_embed else None
        if self.parallel == "none":
            x = mixed + self.attn_scale.to(x.dtype) * self.attn(self._norm(mixed), ve, shared, adapter, segments)
            return x + self.mlp_scale.to(x.dtype) * self.mlp(self._norm(x), adapter), lane1
        if self.parallel == "gptj":
            h = self._norm(mixed)
            a = self.attn_scale.to(x.dtype) * self.attn(h, ve, shared, adapter, segments)
            return mixed + a + self.mlp_scale.to(x.dtype) * self.mlp(h, adapter), lane1
        # two_lane: x is lane 0 and continues unmixed; the mixed value is only what attention reads.
        a = self.attn_scale.to(x.dtype) * self.attn(self._norm(mixed), ve, shared, adapter, segments)
        m = self.mlp_scale.to(x.dtype) * self.mlp(self._norm(lane1), adapter)
        rho, p = self.lane_rho.to(x.dtype), self.lane_mix.to(x.dtype)
        return rho[0] * x + p[0, 0] * a + p[1, 0] * m, rho[1] * lane1 + p[0, 1] * a + p[1, 1] * m


class GPT(nn.Module):
    """The baseline GPT. `forward(x, y)` returns the CE loss (the training loss: symmetric softcap); `forward(x)`
    returns softcapped float32 logits (the evaluation's: AsymLogit's caps when `asym_logit` is on)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        nn.init.normal_(self.tok_emb.weight, mean=0.0, std=cfg.tied_embed_init_std)
        self.smear = SmearGate(cfg.model_dim, cfg.bos_id, cfg.smear_bos_fix) if cfg.smear_gate else None
        self.bigram = BigramHash(cfg.bigram_rows, cfg.bigram_dim, cfg.model_dim) if cfg.bigram_rows else None
        self.value_embed = None
        if cfg.value_embed_last_n > 0:
            kv_dim = cfg.num_kv_heads * (cfg.model_dim // cfg.num_heads)
            self.value_embed = nn.Embedding(cfg.vocab_size, cfg.value_embed_dim)
            nn.init.normal_(self.value_embed.weight, std=0.01)
            self.value_embed_proj = CastedLinear(cfg.value_embed_dim, kv_dim, zero_init=True)
            self.value_embed_scale = nn.Parameter(torch.tensor(0.1))
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_layers))
        self.looping = cfg.num_loops > 0
        self.num_skips = max_skips(cfg.num_layers, cfg.loop_start, cfg.loop_end, cfg.num_loops)
        self.skip_weights = nn.Parameter(torch.ones(self.num_skips, cfg.model_dim))
        self.skip_gates = nn.Parameter(torch.zeros(self.num_skips, cfg.model_dim)) if cfg.skip_gates else None
        self.lm_head = None if cfg.tie_embeddings else CastedLinear(cfg.model_dim, cfg.vocab_size, zero_init=True)
        self.fused_loss = False  # use_kernels: the Triton softcapped cross-entropy
        if cfg.ortho_init:
            self._orthogonal_init()
        if cfg.asym_logit and not cfg.logit_softcap > 0:
            raise PgolfError("config: model.asym_logit needs model.logit_softcap > 0 (both caps start at it)")
        # AsymLogit's caps: fp32 scalars outside every optimizer (requires_grad off, so DDP does not wait for a
        # gradient the symmetric training loss never gives them); phased TTT turns them on to train them.
        self.logit_cap_pos = self._logit_cap() if cfg.asym_logit else None
        self.logit_cap_neg = self._logit_cap() if cfg.asym_logit else None

    def _logit_cap(self) -> nn.Parameter:
        return nn.Parameter(torch.tensor(float(self.cfg.logit_softcap), dtype=torch.float32), requires_grad=False)

    def use_kernels(self, on: bool) -> None:
        """Switch the fused Triton kernels (`pgolf/model/kernels.py`) on or off: the MLP up-projection with its
        activation, and the training loss's softcapped cross-entropy. They compute the same function."""
        for block in self.blocks:
            block.mlp.fused = on
        self.fused_loss = on and self.cfg.logit_softcap > 0

    def set_looping(self, on: bool) -> None:
        """Run the depth-recurrent (looped) layer order or the plain one: the one switch the trainer's schedule,
        resuming and the bench use, so the flag has a single writer outside this class."""
        self.looping = bool(on)

    def _orthogonal_init(self) -> None:
        """Orthogonal (gain 1) init of every block matrix that does not start at zero."""
        with torch.no_grad():
            for module in self.blocks.modules():
                if isinstance(module, CastedLinear) and module.weight.any():
                    nn.init.orthogonal_(module.weight)

    @property
    def slots(self) -> int:
        """Virtual layers of the current order (one per block application): the TTT adapters' slots."""
        c = self.cfg
        return len(virtual_layers(c.num_layers, c.loop_start, c.loop_end, c.num_loops, self.looping))

    def hidden(self, input_ids: torch.Tensor, lora=None, segments: Segments | None = None) -> torch.Tensor:
        """Final normalised hidden states [B, T, D]; `lora` (a `pgolf.model.lora.BatchedLoRA` with one row per
        batch row) adapts every block application through its slot; `segments` (`pgolf/data/segments.py`) cuts
        attention at document boundaries, so each document is computed as if alone."""
        x = self.tok_emb(input_ids)
        if self.bigram is not None:
            x = x + self.bigram(input_ids)
        if self.smear is not None:
            x = self.smear(x, input_ids)
        x = F.rms_norm(x, (x.size(-1),))
        x0 = x
        c = self.cfg
        encoder, decoder = unet_split(virtual_layers(c.num_layers, c.loop_start, c.loop_end, c.num_loops, self.looping))
        ve = None
        if self.value_embed is not None:
            ve = self.value_embed_scale.to(x.dtype) * self.value_embed_proj(self.value_embed(input_ids).to(x.dtype))
        skips, lane1, shared = [], None, {}
        slot = (lambda k: None) if lora is None else lora.at
        for k, i in enumerate(encoder):
            lane1 = self._start_lanes(i, x, lane1)
            x, lane1 = self.blocks[i](x, x0, lane1, ve, shared, slot(k), segments)
            skips.append(x)
        for j, i in enumerate(decoder):
            lane1 = self._start_lanes(i, x, lane1)
            if j < len(encoder):
                skip = self.skip_weights[j].to(x.dtype) * skips.pop()
                if self.skip_gates is None:
                    x = x + skip
                else:
                    x = skip + torch.sigmoid(self.skip_gates[j]).to(x.dtype) * (x - skip)
            x, lane1 = self.blocks[i](x, x0, lane1, ve, shared, slot(len(encoder) + j), segments)
        if lane1 is not None:
            x = 0.5 * (x + lane1)
        return F.rms_norm(x, (x.size(-1),))

    def _start_lanes(self, layer: int, x: torch.Tensor, lane1: torch.Tensor | None) -> torch.Tensor | None:
        """Lane 1 of the two-lane blocks: a copy of the stream entering the first one, taken before that layer's
        U-Net skip (the skips enter lane 0 only), as the 1.0611 record does."""
        if lane1 is None and self.blocks[layer].parallel == "two_lane":
            return x
        return lane1

    def logits(self, input_ids: torch.Tensor, segments: Segments | None = None) -> torch.Tensor:
        return self.head(self.hidden(input_ids, segments=segments))

    def head(self, h: torch.Tensor, lora=None, symmetric: bool = False) -> torch.Tensor:
        """Softcapped float32 logits of final hidden states (the tied embedding or the untied head; `lora` adds
        its head adapter before the softcap); see `softcap` for `symmetric`."""
        z = self._head_matmul(h)
        if lora is not None:
            z = with_adapter(z, lora.at(0), "head", h)
        return self.softcap(z.float(), symmetric)

    def softcap(self, z: torch.Tensor, symmetric: bool = False) -> torch.Tensor:
        """c * tanh(z / c) with c = `logit_softcap` (0: no cap). With `asym_logit` (and not `symmetric`, which the
        training loss asks for), c is `logit_cap_pos` where z > 0 and `logit_cap_neg` elsewhere: the cap is chosen
        per logit and one tanh runs: the values of where(z > 0, cp*tanh(z/cp), cn*tanh(z/cn)) (PR #1923) for half
        the tanh work. While both caps equal `logit_softcap` this is the symmetric cap (bit for bit on the CPU; CUDA
        divides by a Python number through its reciprocal, so there the last bit may differ)."""
        if self.logit_cap_pos is not None and not symmetric:
            cap = torch.where(z > 0, self.logit_cap_pos.float(), self.logit_cap_neg.float())
            return cap * torch.tanh(z / cap)
        c = self.cfg.logit_softcap
        return c * torch.tanh(z / c) if c > 0 else z

    def _head_matmul(self, h: torch.Tensor) -> torch.Tensor:
        """Raw head logits: the tied embedding or the untied head, before adapters and softcap."""
        weight = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(h, weight.to(h.dtype))

    def forward(self, input_ids: torch.Tensor, target_ids: torch.Tensor | None = None,
                reduction: str = "mean", segments: Segments | None = None) -> torch.Tensor:
        if target_ids is not None and self.fused_loss:
            z = self._head_matmul(self.hidden(input_ids, segments=segments))
            loss = kernels.softcap_cross_entropy(z.reshape(-1, z.size(-1)), target_ids.reshape(-1),
                                                 self.cfg.logit_softcap)
            if reduction == "none":
                return loss.view_as(target_ids)
            return loss.sum() if reduction == "sum" else loss.mean()
        # The training loss keeps the symmetric cap (AsymLogit's caps act on evaluation only, as in PR #1923).
        logits = self.head(self.hidden(input_ids, segments=segments), symmetric=target_ids is not None)
        if target_ids is None:
            return logits
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), target_ids.reshape(-1), reduction=reduction)
        return loss.view_as(target_ids) if reduction == "none" else loss
