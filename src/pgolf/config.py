"""Typed configuration: the single source of truth for every knob.

The dataclass defaults below are the official naive baseline; `pgolf.config_sources` layers a preset, `PGOLF_*`
variables and `--set` overrides over them, each setting assigned here (`assign_setting`: the field's type, the old
names, "did you mean" for an unknown one) and the whole checked by `Config.validate`.

A renamed setting still reads under its old name, with one note on stderr: the `[ttt]` fields were `eval.ttt_*`
(`LEGACY_TTT_PREFIX`), in presets, overrides, environment variables and the configs embedded in older artifacts.

The resolved config is written to the run directory and embedded in the artifact, so a score can always be traced
to the exact settings that produced it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping

from pgolf.errors import PgolfError
from pgolf.suggest import did_you_mean

@dataclass
class ModelConfig:
    """Shape of the GPT. Defaults: the official naive baseline (docs/techniques.md). Every record technique is an
    option here, off by default (definitions: pgolf/model/gpt.py and docs/techniques.md)."""

    vocab_size: int = 1024
    """Vocabulary size; must equal the data's tokenizer (at most 65,536: shards store uint16)."""
    num_layers: int = 9
    """Transformer blocks (physical layers; depth recurrence can run some twice)."""
    model_dim: int = 512
    """Width of the residual stream; a multiple of num_heads."""
    num_heads: int = 8
    """Query heads; the head size model_dim / num_heads must be even (RoPE)."""
    num_kv_heads: int = 4
    """Key/value heads of grouped-query attention; must divide num_heads."""
    mlp_mult: float = 2.0
    """MLP hidden width as a multiple of model_dim (4 in the 1.0611 record, PR #1855)."""
    tie_embeddings: bool = True
    """The output head reuses the token embedding (false: a separate zero-initialised head)."""
    tied_embed_init_std: float = 0.005
    """Standard deviation of the token embedding's normal initialisation."""
    rope_base: float = 10000.0
    """RoPE base (theta)."""
    logit_softcap: float = 30.0
    """Logits become c*tanh(z/c) with this c; 0 = no soft-cap."""
    qk_gain_init: float = 1.5
    """Initial learnable per-head query gain (QK-gain: 4.0 in PR #1125, 5.0 in PR #1413)."""
    mlp_activation: str = "relu2"
    """MLP activation: relu2 (baseline, relu(x)^2) or leaky_relu2 (LeakyReLU(0.5)^2, PR #493)."""
    rope_dims: int = 0
    """Head dimensions RoPE rotates (partial RoPE, 16 in PR #315); 0 = all."""
    ln_scale: bool = False
    """Scale each block's norm outputs by 1/sqrt(layer + 1) (LN scale, PR #315)."""
    xsa_last_n: int = 0
    """Exclusive self-attention in the last n layers, all when n >= num_layers (XSA, PR #478); 0 = off."""
    ortho_init: bool = False
    """Orthogonal initialisation of every block matrix that does not start at zero (03-19 records)."""
    skip_gates: bool = False
    """U-Net skips become a learned sigmoid interpolation with the stream (skip gates, PR #1089)."""
    smear_gate: bool = False
    """SmearGate v2 with the BOS fix: add a gated copy of the previous token's embedding (PRs #1667, #1855)."""
    smear_bos_fix: bool = True
    """SmearGate leaves BOS positions unmixed (PR #1851); false reproduces PR #2135, which leaks across documents."""
    bigram_rows: int = 0
    """Rows of the BigramHash embedding of (previous, current) token pairs (PR #162); 0 = off, else >= 2."""
    value_embed_last_n: int = 0
    """Add a shared value embedding to V in the last n layers (VE128, PR #374); 0 = off."""
    value_embed_dim: int = 128
    """Width of the value-embedding table (projected to the key/value width)."""
    bigram_dim: int = 128
    """Width of the BigramHash table (projected to model_dim)."""
    attn_gate: str = "none"
    """Attention output gate: none, out (PR #1667), gated (PR #1736) or sparse (SparseAttnGate, PR #1787)."""
    attn_gate_scale: float = 1.0
    """Scale s of the sparse gate sigmoid(s*W*x) (0.5 in the 1.0611 record, PR #1855)."""
    parallel_mode: str = "none"
    """Parallel residuals from layer parallel_start: none, gptj (PR #1204) or two_lane (PR #1529)."""
    parallel_start: int = 0
    """First layer with parallel residuals (see parallel_mode)."""
    bos_id: int = 1
    """BOS token id; SmearGate does not mix a BOS position with the token before it (the BOS fix)."""
    num_loops: int = 0
    """Extra passes over layers loop_start..loop_end (depth recurrence, PR #1394); 0 = off."""
    loop_start: int = 0
    """First layer of the looped span."""
    loop_end: int = 0
    """Last layer of the looped span (inclusive, below num_layers)."""
    loop_start_frac: float = 0.0
    """Training progress (0-1) from which the loops run; evaluation always loops."""
    value_residual: bool = False
    """Each later attention adds sigmoid(alpha) times the first layer's values (ResFormer, PR #569)."""
    rope_ntk_train_len: int = 0
    """NTK-aware RoPE base scaling for contexts longer than this (set it to train_seq_len); 0 = off."""
    asym_logit: bool = False
    """AsymLogit (PR #1923): separate fp32 caps for positive and negative logits, both starting at logit_softcap."""


@dataclass
class OptimConfig:
    """Muon for block matrices, Adam for embeddings, head and control tensors (baseline values; docs/techniques.md)."""

    matrix_lr: float = 0.04
    """Muon learning rate of the block matrices."""
    scalar_lr: float = 0.04
    """Adam learning rate of vectors, scalars and control tensors (gains, gates, mixes)."""
    tied_embed_lr: float = 0.05
    """Adam learning rate of the token embedding when it is tied to the head."""
    embed_lr: float = 0.6
    """Adam learning rate of the token embedding when it is not tied."""
    head_lr: float = 0.008
    """Adam learning rate of the untied output head."""
    beta1: float = 0.9
    """Adam beta1 of every group without its own *_betas."""
    beta2: float = 0.95
    """Adam beta2 of every group without its own *_betas."""
    adam_eps: float = 1e-8
    """Adam epsilon."""
    embed_betas: str = ""
    """Adam "beta1,beta2" of the embedding group (e.g. "0.9,0.99" as in PR #1855); empty = beta1, beta2."""
    head_betas: str = ""
    """Adam "beta1,beta2" of the head group; empty = beta1, beta2."""
    scalar_betas: str = ""
    """Adam "beta1,beta2" of the scalar/control group; empty = beta1, beta2."""
    muon_momentum: float = 0.95
    """Muon Nesterov momentum after the warm-up."""
    muon_momentum_warmup_start: float = 0.85
    """Muon momentum at step 0, raised linearly to muon_momentum."""
    muon_momentum_warmup_steps: int = 500
    """Steps over which Muon momentum rises to muon_momentum."""
    muon_backend_steps: int = 5
    """Newton-Schulz iterations that orthogonalize each Muon update."""
    grad_clip_norm: float = 0.0
    """Clip the gradient norm to this (0.3 in the records); 0 = off."""
    grad_clip_scope: str = "global"
    """global: clip the gradient averaged over ranks; rank: each rank clips its own before the averaging (PR #1855)."""
    embed_weight_decay: float = 0.0
    """AdamW decoupled weight decay of the embedding group (0.085 in PR #1855); 0 = plain Adam."""
    head_weight_decay: float = 0.0
    """AdamW decoupled weight decay of an untied head; 0 = plain Adam."""
    scalar_weight_decay: float = 0.0
    """AdamW decoupled weight decay of the scalar/control group (0.02 in PR #1855); 0 = plain Adam."""
    matrix_optimizer: str = "muon"
    """Optimizer of the block matrices: muon (the records') or soap (SOAP, Vyas et al. 2024, from heavyball)."""
    muon_ns: str = "classic"
    """Newton-Schulz coefficients: classic (baseline) or polar_express (PR #1787)."""
    muon_row_norm: bool = False
    """Divide each row of the Muon update by its norm before Newton-Schulz (MuonEq-R, PR #1217)."""
    muon_weight_decay: float = 0.0
    """Decoupled Muon weight decay, p <- p*(1 - lr*wd) (0.095 in PR #1855); 0 = off."""
    muon_wd_taper: bool = False
    """Muon weight decay falls linearly to half from 70% of training (WD taper, PR #1729)."""
    muon_compile: str = "auto"
    """torch.compile each Newton-Schulz bank (one fixed-shape graph per matrix shape): auto (CUDA only), on, off."""
    muon_sharded: bool = False
    """Sharded bank Muon: one bf16 reduce-scatter + all-gather, NS on the local shard (pgolf/optim/sharded_muon.py)."""
    ema_decay: float = 0.0
    """Decay of the exponential moving average of the weights exported at the end (0.9965 in PR #1855); 0 = off."""
    swa_every: int = 0
    """SWA snapshot interval in steps (PR #265); 0 = off. Not together with EMA."""
    swa_lr_below: float = 0.5
    """SWA snapshots are taken once the LR multiplier is below this."""


@dataclass
class TrainConfig:
    """Batch, sequence, wall clock and schedule (baseline values; docs/techniques.md).

    `micro_batch_tokens` is what one rank processes per forward/backward; gradient accumulation is
    `train_batch_tokens / (world_size * micro_batch_tokens)`, so the global batch is the same on 1 CPU, 1 GPU or 8.
    The baseline's `grad_accum = 8 // world_size` is `micro_batch_tokens = train_batch_tokens / 8`.
    """

    train_batch_tokens: int = 524_288
    """Tokens per optimizer step, over all ranks (a multiple of micro_batch_tokens and train_seq_len)."""
    micro_batch_tokens: int = 65_536
    """Tokens per forward/backward on one rank; gradient accumulation makes up the rest."""
    train_seq_len: int = 1024
    """Training sequence length."""
    iterations: int = 20_000
    """Training stops after this many steps, or at the wall-clock cap if that comes first."""
    max_wallclock_seconds: float = 600.0
    """Training-time cap in seconds (validation does not count); 0 = no cap."""
    max_total_seconds: float = 0.0
    """Bound the whole run to about N s: training stops at 75% of it, the rest is export and scoring; 0 = off."""
    warmdown_iters: int = 1200
    """Baseline warmdown: the LR falls linearly to 0 over the last N steps, estimated from the clock."""
    warmdown_frac: float = 0.0
    """Warmdown as a fraction of the budget instead of warmdown_iters (0.85 in PR #1855); 0 = off."""
    min_lr: float = 0.0
    """Floor of the LR multiplier (MIN_LR 0.1, PR #1787)."""
    warmup_steps: int = 20
    """Compile warm-up steps; weights, optimizers and data are restored after them, and their time is not counted."""
    val_loss_every: int = 1000
    """Validate every N steps during training; 0 = only the final score."""
    train_log_every: int = 200
    """Log the training loss every N steps (and the first 10); 0 = never."""
    val_batch_tokens: int = 524_288
    """Tokens per batch of the validation runs during training."""
    val_max_tokens: int = 0
    """Validate on only the first N val tokens during training (the final score uses all); 0 = all."""
    seed: int = 1337
    """Random seed (init, data order, calibration samples); 0 to 2**32 - 1."""
    compile: str = "auto"
    """torch.compile: auto (on CUDA only), on or off."""
    kernels: str = "auto"
    """Fused Triton kernels (pgolf/model/kernels.py): auto (CUDA with triton), on or off; same function as eager."""
    prefetch: int = 2
    """Training batches prepared ahead in a background thread (0: none); same batches and positions either way."""
    body_dtype: str = "auto"
    """Embedding tables (the residual stream) in bf16 as the official script: auto (bf16 on CUDA), fp32 or bf16."""
    device: str = "auto"
    """Training device: auto (CUDA when present), cpu or cuda."""
    threads: int = 0
    """CPU threads for torch; 0 = torch's default."""
    loader: str = "sequential"
    """Training data order: sequential (baseline), shuffled (PR #1394) or packed (BOS-aligned rows, PR #1530)."""
    seq_len_schedule: str = ""
    """Progressive sequence length as "fraction:length" stages, e.g. "0:256,0.2:512"; empty = off."""
    seq_len_full_frac: float = 0.5
    """Training progress from which seq_len_schedule gives way to train_seq_len."""
    seq_change_warmup_steps: int = 0
    """After each sequence-length switch, the LR ramps back up linearly over N steps (PR #2014's 32); 0 = off."""
    save_float: bool = False
    """Also write the float weights as model_fp32.pt in the run directory (for quantization studies)."""
    checkpoint_every: int = 0
    """Write a resumable checkpoint every N steps (pgolf train --resume RUN_DIR); 0 = only on SIGINT/SIGTERM."""
    tensorboard: bool = False
    """Also write TensorBoard event files under RUN_DIR/tensorboard (losses, val_bpb, LR, step time, eval results)."""
    wandb_project: str = ""
    """Also log to this Weights & Biases project (pip install pgolf[wandb]; WANDB_MODE=offline works); "" = off."""


@dataclass
class QuantConfig:
    """How the trained weights become the artifact (pgolf/quant/recipe.py; docs/techniques.md).

    `scheme=int8` is the baseline's export. `scheme=mixed` quantizes every large matrix per row to `bits` (per
    tensor group, e.g. "embed=7,attn=6,mlp=6"; groups from pgolf/quant/groups.py, a key may be a prefix like
    `attn`, `default` is the fallback) with scales chosen by `clip` (percentile, search, sdclip, absmean) and SDClip
    multipliers `clip_k` (same syntax), optionally GPTQ on Hessians from `calib` (train: `calib_batches` training
    batches inside the clock, which is shortened by `gptq_reserve_seconds`; self: `calib_seqs` x `calib_seq_len`
    tokens the model samples itself after the clock), LQER on the `lqer_top` worst matrices, int8 attention gates,
    and, with `fit`, the budget fitter that picks bits and k per group to fit the cap.
    """

    scheme: str = "int8"
    """Export recipe: int8 (the baseline's) or mixed (the records'; the settings below up to fit)."""
    codec: str = "zlib"
    """Artifact compressor (pgolf/artifact/codecs.py): zlib (baseline), lzma, zstd, brotli, bshf-brotli, ans, ans2."""
    level: int = 9
    """Compression level of the codec (zlib, lzma 0-9; zstd 0-22; brotli, bshf-brotli, ans 0-11)."""
    bits: str = "embed=8,gate=8,default=6"
    """Bit width per tensor group, e.g. "embed=7,attn=6,mlp=6" (2 = ternary)."""
    clip: str = "sdclip"
    """Row-scale method: percentile, search (GPTQ-lite), sdclip (PR #1394) or absmean."""
    clip_k: str = "embed=20,default=12.85"
    """SDClip k per group (scale = k*std(row)/qmax; larger k, fewer bytes)."""
    passthrough_numel: int = 65_536
    """Float tensors with at most this many elements are stored as fp16."""
    int8_gates: bool = False
    """Store attention-gate weights int8 per row instead of fp16 (QuantGate, PR #1736)."""
    gptq: bool = False
    """Round the matrices with full-Hessian GPTQ (PR #1019) instead of to nearest."""
    calib: str = "train"
    """GPTQ calibration data: train (training batches inside the clock) or self (model samples, PR #1019)."""
    calib_batches: int = 16
    """calib=train: training micro-batches for the Hessians."""
    calib_seqs: int = 64
    """calib=self: sequences the model samples."""
    calib_seq_len: int = 2048
    """calib=self: length of each sampled sequence."""
    calib_temperature: float = 0.8
    """calib=self: sampling temperature."""
    gptq_reserve_seconds: float = 0.0
    """calib=train: seconds of the training clock kept for calibration."""
    lqer_top: int = 0
    """Add a low-rank error correction to the N matrices with the largest error (LQER, PR #1797); 0 = off."""
    lqer_rank: int = 4
    """Rank of each LQER correction."""
    lqer_group: int = 64
    """Entries of an LQER B factor per fp16 scale (64 in PR #1855, 32 in PR #2135)."""
    awq_top: int = 0
    """AWQ-lite (PR #1908): GPTQ quantizes the model's N most salient column groups at awq_bits; 0 = off."""
    awq_bits: int = 8
    """AWQ-lite: bit width of the salient column groups."""
    awq_group: int = 64
    """AWQ-lite: columns per group."""
    calib_reserve: str = "fixed"
    """calib=train: fixed (gptq_reserve_seconds) or measured (at least the calibration's time, timed in the run)."""
    fit: bool = False
    """Fit the cap: keep the bits/clip_k plan when artifact plus code fit 16,000,000 bytes, else shrink it (reported)."""
    qat_bits: int = 0
    """Late QAT: fake-quantize the block matrices to this many bits late in training (2-8); 0 = off."""
    qat_start_frac: float = 0.85
    """Training progress from which late QAT runs."""


@dataclass
class EvalConfig:
    """How the artifact is scored (docs/rules.md)."""

    mode: str = "flat"
    """Scoring mode: flat, sliding, doc, or a score-first TTT mode (lora-ttt, sgd-ttt, phased-ttt)."""
    seq_len: int = 0
    """Context length of scoring windows; 0 = train.train_seq_len."""
    batch_tokens: int = 524_288
    """Tokens per scoring batch."""
    stride: int = 0
    """Window stride of sliding and doc modes; 0 = 64, capped at seq_len."""
    max_seconds: float = 0.0
    """Fail if scoring takes longer than this (the challenge allows 600 s on 8xH100); 0 = no limit."""
    max_tokens: int = -1
    """Final score on the first N val tokens (NOT official); -1: whole split on CUDA, 131,072 on CPU; 0: whole."""
    compile: str = "auto"
    """Compile the eval forward (every mode) for fixed, padded shapes: auto (CUDA only), on, off."""
    report_modes: str = ""
    """Modes the trainer also scores and logs before the final one, comma-separated (e.g. flat,sliding)."""
    ngram_order: int = 0
    """Causal n-gram tilt (PR #2135): boost the token that most often followed the last order-1 tokens; 0 = off."""
    ngram_threshold: float = 0.8
    """n-gram tilt: hint only where the top token's share of the context's continuations is at least this."""
    ngram_boost: float = 2.625
    """n-gram tilt: logit boost of the hinted token (the distribution is renormalised in closed form)."""
    ngram_gamma: float = 0.0
    """n-gram tilt: confidence-adaptive boost, boost * (1 - p_model(hint))^gamma (PR #2129); 0 = fixed boost."""
    ngram_hashed: bool = False
    """n-gram tilt: key contexts by PR #2135's XOR hash (collisions merge contexts) instead of exactly."""


@dataclass
class TTTConfig:
    """Score-first test-time training: the knobs of `eval.mode` lora-ttt, phased-ttt and sgd-ttt (docs/evaluation.md).

    The one place these defaults live: the TTT modes (pgolf/eval/ttt_lora.py, ttt_sgd.py) read this dataclass.
    Before this section existed they were `eval.ttt_*`; those names still read, with a note (`LEGACY_TTT_PREFIX`).
    """

    chunk: int = 256
    """lora/phased: targets scored per adaptation step."""
    rank: int = 8
    """lora/phased: LoRA rank."""
    alpha: float = 0.0
    """lora/phased: adapter output scale alpha/rank (PR #1767); 0 = scale 1."""
    targets: str = "q,v,head"
    """lora/phased: adapted maps, comma-separated, of q, k, v, o, mlp, head (one adapter per virtual layer)."""
    lr: float = 0.01
    """lora/phased: AdamW learning rate of the adapters."""
    beta1: float = 0.9
    """lora/phased: AdamW beta1."""
    beta2: float = 0.95
    """lora/phased: AdamW beta2."""
    weight_decay: float = 0.0
    """lora/phased: AdamW weight decay."""
    warm_start_a: bool = False
    """lora/phased: keep the A matrices across documents (PR #1767)."""
    batch_docs: int = 64
    """lora/phased: documents adapted together in one batch (length-sorted, longest batches first)."""
    chains: int = 8
    """lora/phased with warm-start A: batch j continues the A of batch j - chains (a multiple of the ranks)."""
    chunk_tokens: int = 32_768
    """sgd: targets per chunk (PR #549); phased: tokens per global SGD step."""
    sgd_lr: float = 0.002
    """sgd: peak SGD learning rate, cosine-decayed across chunks."""
    epochs: int = 3
    """sgd: SGD epochs over each scored chunk."""
    phases: int = 3
    """phased: global SGD phases over the prefix documents (PR #1626)."""
    prefix_docs: int = 2000
    """phased: documents over which the phase boundaries are spread."""
    phase_lr: float = 0.001
    """phased: peak SGD learning rate of each global phase, cosine-decayed across its chunks."""
    pad_multiple: int = 0
    """lora/phased: pad windows to a multiple of this (0 = no padding; a compiled forward pads to 256)."""
    seed: int = 0
    """lora/phased: seed of the adapters' A draws (the same on every rank and device)."""
    phase_docs: str = "scored-order"
    """phased: global-phase documents: scored-order (first scored: longest) or batch-index (PR #1855's: shortest)."""
    train_logit_caps: bool = False
    """phased: the global SGD phases also train the AsymLogit caps (model.asym_logit; PR #1923/#1945)."""
    short_doc_chunks: str = ""
    """lora/phased: smaller score-first chunks for short documents, "LENGTH:CHUNK,..." (PR #2014: "256:8,2000:24")."""


@dataclass
class Config:
    """A whole run: the sections above plus the preset's name."""

    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ttt: TTTConfig = field(default_factory=TTTConfig)
    preset: str = "baseline"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Config":
        cfg = cls(preset=str(data.get("preset", "custom")))
        old: list[str] = []
        for section, values in data.items():
            if section == "preset":
                continue
            for key, value in dict(values).items():
                assign_setting(cfg, section, key, value, source="config", old=old)
        note_old_names(old)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Refuse settings that cannot work together, with one clear line. Whether a named choice exists (a mode,
        a codec, a loader) is asked of the code that implements it: `pgolf.options.check_options`."""
        m, t, e, tt = self.model, self.train, self.eval, self.ttt
        if not 2 <= m.vocab_size <= 65_536:
            raise PgolfError(f"config: model.vocab_size={m.vocab_size} must be in [2, 65536] (shards store uint16)")
        if m.model_dim % m.num_heads:
            raise PgolfError(f"config: model.model_dim={m.model_dim} is not divisible by model.num_heads={m.num_heads}")
        if m.num_heads % m.num_kv_heads:
            raise PgolfError(f"config: model.num_heads={m.num_heads} is not divisible by num_kv_heads={m.num_kv_heads}")
        head_dim = m.model_dim // m.num_heads
        if head_dim % 2:
            raise PgolfError("config: the head dimension must be even for RoPE")
        if m.rope_dims < 0 or m.rope_dims > head_dim or m.rope_dims % 2:
            raise PgolfError(f"config: model.rope_dims={m.rope_dims} must be even and in [0, {head_dim}] (0 = all)")
        if m.num_loops < 0 or (m.num_loops and not 0 <= m.loop_start <= m.loop_end < m.num_layers):
            raise PgolfError(f"config: loops need 0 <= model.loop_start <= model.loop_end < num_layers "
                             f"(got {m.loop_start}..{m.loop_end} of {m.num_layers})")
        if m.bigram_rows == 1 or m.bigram_rows < 0:
            raise PgolfError(f"config: model.bigram_rows={m.bigram_rows} must be 0 (off) or at least 2")
        if t.train_batch_tokens % t.train_seq_len or t.micro_batch_tokens % t.train_seq_len:
            raise PgolfError("config: train.train_batch_tokens and train.micro_batch_tokens must be multiples of "
                             f"train.train_seq_len={t.train_seq_len}")
        if t.train_batch_tokens % t.micro_batch_tokens:
            raise PgolfError(f"config: train.train_batch_tokens={t.train_batch_tokens} is not a multiple of "
                             f"train.micro_batch_tokens={t.micro_batch_tokens}")
        if not t.max_wallclock_seconds >= 0:
            raise PgolfError(f"config: train.max_wallclock_seconds={t.max_wallclock_seconds} must be >= 0 (0 = no cap)")
        if t.iterations < 1:
            raise PgolfError(f"config: train.iterations={t.iterations} must be at least 1")
        if not t.max_total_seconds >= 0:
            raise PgolfError(f"config: train.max_total_seconds={t.max_total_seconds} must be >= 0 (0 = no bound)")
        if self.eval.max_tokens < -1:
            raise PgolfError(f"config: eval.max_tokens={self.eval.max_tokens} must be -1 (auto), 0 (all) or a count")
        if t.seq_change_warmup_steps < 0:
            raise PgolfError(f"config: train.seq_change_warmup_steps={t.seq_change_warmup_steps} must be >= 0 "
                             "(0 = off)")
        if not 0 <= t.prefetch <= 64:
            raise PgolfError(f"config: train.prefetch={t.prefetch} must be in [0, 64]")
        if not 0 <= t.seed < 2 ** 32:
            raise PgolfError(f"config: train.seed={t.seed} must be in [0, 2**32 - 1]")
        for which in ("embed_betas", "head_betas", "scalar_betas"):
            parse_betas(getattr(self.optim, which), (0.9, 0.95), f"optim.{which}")
        if self.optim.swa_every < 0 or (self.optim.swa_every and self.optim.ema_decay):
            raise PgolfError("config: optim.swa_every must be >= 0, and SWA and EMA cannot both be on")
        if min(self.optim.embed_weight_decay, self.optim.head_weight_decay, self.optim.scalar_weight_decay,
               self.optim.muon_weight_decay, self.optim.grad_clip_norm) < 0:
            raise PgolfError("config: optim weight decays and optim.grad_clip_norm must be >= 0 (0 = off)")
        if not 0.0 <= self.optim.ema_decay < 1.0:
            raise PgolfError(f"config: optim.ema_decay={self.optim.ema_decay} must be in [0, 1) (0 = off)")
        if not 0.0 <= t.warmdown_frac <= 1.0 or not 0.0 <= t.min_lr <= 1.0:
            raise PgolfError("config: train.warmdown_frac and train.min_lr must be in [0, 1]")
        q = self.quant
        if q.qat_bits and not 2 <= q.qat_bits <= 8:
            raise PgolfError(f"config: quant.qat_bits={q.qat_bits} must be 0 (off) or in 2..8")
        if e.stride < 0 or not e.max_seconds >= 0:
            raise PgolfError("config: eval.stride and eval.max_seconds must be >= 0 (0 = the default / no limit)")
        if min(tt.chunk, tt.rank, tt.chunk_tokens, tt.phases, tt.batch_docs, tt.chains) < 1 or tt.epochs < 0:
            raise PgolfError("config: ttt.chunk, ttt.rank, ttt.chunk_tokens, ttt.phases, ttt.batch_docs and "
                             "ttt.chains must be >= 1 (ttt.epochs >= 0)")
        if tt.pad_multiple < 0 or tt.seed < 0:
            raise PgolfError("config: ttt.pad_multiple and ttt.seed must be >= 0")
        if q.lqer_group < 1 or q.awq_top < 0 or q.awq_group < 1 or not 2 <= q.awq_bits <= 8:
            raise PgolfError("config: quant.lqer_group and quant.awq_group must be >= 1, quant.awq_top >= 0 and "
                             "quant.awq_bits in 2..8")
        if e.ngram_order < 0 or e.ngram_order == 1 or not 0.0 < e.ngram_threshold <= 1.0 or e.ngram_gamma < 0:
            raise PgolfError("config: eval.ngram_order must be 0 (off) or >= 2, eval.ngram_threshold in (0, 1] and "
                             "eval.ngram_gamma >= 0")
        if m.asym_logit and not m.logit_softcap > 0:
            raise PgolfError("config: model.asym_logit needs model.logit_softcap > 0 (the caps start there)")
        if tt.train_logit_caps and not m.asym_logit:
            raise PgolfError("config: ttt.train_logit_caps needs model.asym_logit = true")

    def grad_accum_steps(self, world_size: int) -> int:
        """Micro-steps per optimizer step on each rank so that the global batch is `train_batch_tokens`."""
        per_step = self.train.train_batch_tokens // self.train.micro_batch_tokens
        if per_step % world_size:
            raise PgolfError(
                f"config: world size {world_size} does not divide train_batch_tokens/micro_batch_tokens={per_step}; "
                "choose micro_batch_tokens so that the global batch splits evenly across ranks")
        return per_step // world_size


SECTIONS = ("model", "optim", "train", "quant", "eval", "ttt")

LEGACY_TTT_PREFIX = "ttt_"
"""`eval.ttt_<field>`: the name of `ttt.<field>` before TTT had its own section; still read, with a note."""


def parse_betas(text: str, default: tuple[float, float], where: str) -> tuple[float, float]:
    """"0.9,0.99" -> (0.9, 0.99); empty -> `default`; PgolfError unless two numbers in [0, 1)."""
    if not str(text).strip():
        return default
    try:
        b1, b2 = (float(v) for v in str(text).split(","))
    except ValueError:
        raise PgolfError(f"config: {where}={text!r} must be two numbers 'beta1,beta2'") from None
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise PgolfError(f"config: {where}={text!r}: betas must be in [0, 1)")
    return b1, b2


def _coerce(value: Any, target_type: Any, where: str) -> Any:
    """Convert a string (CLI/env) or TOML value to the field's declared type."""
    type_name = target_type if isinstance(target_type, str) else getattr(target_type, "__name__", str(target_type))
    try:
        if type_name == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if type_name == "int":
            if isinstance(value, bool):
                raise ValueError(value)
            if isinstance(value, str):
                return int(value.replace("_", ""))
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if type_name == "float":
            return float(value)
        if type_name == "str":
            return str(value)
    except (TypeError, ValueError):
        raise PgolfError(f"{where}: cannot read {value!r} as {type_name}") from None
    return value


def current_name(section: str, key: str) -> tuple[str, str]:
    """The (section, field) a setting name means now: an old flat `eval.ttt_<field>` is `ttt.<field>`."""
    if section == "eval" and key.startswith(LEGACY_TTT_PREFIX):
        field_name = key[len(LEGACY_TTT_PREFIX):]
        if field_name in {f.name for f in dataclasses.fields(TTTConfig)}:
            return "ttt", field_name
    return section, key


def note_old_names(old: list[str]) -> None:
    """One line on stderr (rank 0 under torchrun) naming the old setting names that were read."""
    if old and os.environ.get("RANK", "0") == "0":
        print(f"pgolf: note: deprecated setting names read as [ttt] fields (eval.ttt_<field> is now ttt.<field>): "
              f"{', '.join(dict.fromkeys(old))}", file=sys.stderr)


def env_name(section: str, key: str) -> str:
    """The environment variable of setting `section.key`: PGOLF_<SECTION>_<FIELD>."""
    return f"PGOLF_{section.upper()}_{key.upper()}"


def _dotted(section: str, key: str) -> str:
    return f"{section}.{key}"


def assign_setting(cfg: Config, section: str, key: str, value: Any, source: str, old: list[str] | None = None,
            spell=_dotted) -> None:
    """Set one field from a preset, override or JSON value; an old name is mapped and appended to `old`. An unknown
    name is refused with the closest known ones, spelled by `spell(section, field)` (`env_name` for a variable)."""
    new = current_name(section, key)
    if new != (section, key):
        if old is not None:
            old.append(f"{section}.{key}")
        section, key = new
    if section not in SECTIONS:
        raise PgolfError(f"{source}: unknown config section {section!r}"
                         + (closest_settings(section, key, spell) or f" (known: {', '.join(SECTIONS)})"))
    obj = getattr(cfg, section)
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if key not in fields:
        raise PgolfError(f"{source}: unknown setting {section}.{key}"
                         + (closest_settings(section, key, spell) or f" (known: {', '.join(sorted(fields))})"))
    setattr(obj, key, _coerce(value, fields[key].type, f"{source}: {section}.{key}"))


def closest_settings(section: str, key: str, spell, also: tuple[str, ...] = ()) -> str:
    """"; did you mean train.iterations?": the settings of every section (and `also`) closest to `section.key`, all
    spelled by `spell`; "" when none is close."""
    cfg = Config()
    known = [spell(s, f.name) for s in SECTIONS for f in dataclasses.fields(getattr(cfg, s))]
    return did_you_mean(spell(section, key), [*known, *also])
