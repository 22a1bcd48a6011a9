"""Typed configuration: the single source of truth for every knob.

A run's configuration is built in three layers, each overriding the last:

1. the dataclass defaults below (which are the official naive baseline);
2. a preset, a TOML file in `pgolf/presets/` (or any path) with one table per section;
3. overrides: `PGOLF_<SECTION>_<FIELD>` environment variables (the challenge's torchrun convention), then
   `--set section.field=value` from the command line.

This is the only module that reads the environment. The resolved config is written to the run directory and
embedded in the artifact, so a score can always be traced to the exact settings that produced it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from pgolf.errors import PgolfError

@dataclass
class ModelConfig:
    """Shape of the GPT. Defaults: the official naive baseline (CHALLENGE.md section 4)."""

    vocab_size: int = 1024
    num_layers: int = 9
    model_dim: int = 512
    num_heads: int = 8
    num_kv_heads: int = 4
    mlp_mult: float = 2.0
    tie_embeddings: bool = True
    tied_embed_init_std: float = 0.005
    rope_base: float = 10000.0
    logit_softcap: float = 30.0
    qk_gain_init: float = 1.5
    # Record techniques (CHALLENGE.md 5.2); every one is off by default. See pgolf/model/gpt.py for definitions.
    mlp_activation: str = "relu2"
    rope_dims: int = 0
    ln_scale: bool = False
    xsa_last_n: int = 0
    ortho_init: bool = False
    skip_gates: bool = False
    smear_gate: bool = False
    bigram_rows: int = 0
    value_embed_last_n: int = 0
    value_embed_dim: int = 128
    bigram_dim: int = 128
    attn_gate: str = "none"
    attn_gate_scale: float = 1.0
    parallel_mode: str = "none"
    parallel_start: int = 0
    bos_id: int = 1
    num_loops: int = 0
    loop_start: int = 0
    loop_end: int = 0
    loop_start_frac: float = 0.0
    value_residual: bool = False
    rope_ntk_train_len: int = 0  # NTK-aware RoPE base scaling beyond this length (0: off; set to train_seq_len)


@dataclass
class OptimConfig:
    """Muon for block matrices, Adam for embeddings, head and control tensors (baseline values)."""

    matrix_lr: float = 0.04
    scalar_lr: float = 0.04
    tied_embed_lr: float = 0.05
    embed_lr: float = 0.6
    head_lr: float = 0.008
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    # Per-group Adam betas "b1,b2" (empty: beta1, beta2), e.g. the record's embed/scalar beta2 0.99.
    embed_betas: str = ""
    head_betas: str = ""
    scalar_betas: str = ""
    muon_momentum: float = 0.95
    muon_momentum_warmup_start: float = 0.85
    muon_momentum_warmup_steps: int = 500
    muon_backend_steps: int = 5
    grad_clip_norm: float = 0.0
    # Record techniques (CHALLENGE.md 5.2), off by default.
    muon_ns: str = "classic"
    muon_row_norm: bool = False
    muon_weight_decay: float = 0.0
    muon_wd_taper: bool = False
    ema_decay: float = 0.0
    swa_every: int = 0  # SWA snapshot interval in steps (0: off)
    swa_lr_below: float = 0.5  # ... taken once the LR multiplier is below this


@dataclass
class TrainConfig:
    """Batch, sequence, wall clock and schedule (baseline values).

    `micro_batch_tokens` is what one rank processes per forward/backward; gradient accumulation is
    `train_batch_tokens / (world_size * micro_batch_tokens)`, so the global batch is the same on 1 CPU, 1 GPU or 8.
    The baseline's `grad_accum = 8 // world_size` is `micro_batch_tokens = train_batch_tokens / 8`.
    """

    train_batch_tokens: int = 524_288
    micro_batch_tokens: int = 65_536
    train_seq_len: int = 1024
    iterations: int = 20_000
    max_wallclock_seconds: float = 600.0
    warmdown_iters: int = 1200
    warmdown_frac: float = 0.0
    min_lr: float = 0.0
    warmup_steps: int = 20
    val_loss_every: int = 1000
    train_log_every: int = 200
    val_batch_tokens: int = 524_288
    val_max_tokens: int = 0
    seed: int = 1337
    compile: str = "auto"
    device: str = "auto"
    threads: int = 0
    loader: str = "sequential"  # sequential (baseline) | shuffled (PR #1394) | packed (BOS-aligned rows)
    seq_len_schedule: str = ""  # progressive sequence length "0:256,0.2:512" (ends at train_seq_len)
    seq_len_full_frac: float = 0.5  # ... from this training fraction on, train_seq_len
    save_float: bool = False  # also write the exported float weights as model_fp32.pt (for quantization studies)


@dataclass
class QuantConfig:
    """How the trained weights become the artifact (pgolf/quant/recipe.py; CHALLENGE.md 3.3).

    `scheme=int8` is the baseline's export. `scheme=mixed` quantizes every large matrix per row to `bits` (per
    tensor group, e.g. "embed=7,attn=6,mlp=6"; groups from pgolf/quant/groups.py, a key may be a prefix like
    `attn`, `default` is the fallback) with scales chosen by `clip` (percentile, search, sdclip, absmean) and SDClip
    multipliers `clip_k` (same syntax), optionally GPTQ on Hessians from `calib` (train: `calib_batches` training
    batches inside the clock, which is shortened by `gptq_reserve_seconds`; self: `calib_seqs` x `calib_seq_len`
    tokens the model samples itself after the clock), LQER on the `lqer_top` worst matrices, int8 attention gates,
    and, with `fit`, the budget fitter that picks bits and k per group to fit the cap.
    """

    scheme: str = "int8"
    codec: str = "zlib"
    level: int = 9
    bits: str = "embed=8,gate=8,default=6"
    clip: str = "sdclip"
    clip_k: str = "embed=20,default=12.85"
    passthrough_numel: int = 65_536
    int8_gates: bool = False
    gptq: bool = False
    calib: str = "train"
    calib_batches: int = 16
    calib_seqs: int = 64
    calib_seq_len: int = 2048
    calib_temperature: float = 0.8
    gptq_reserve_seconds: float = 0.0
    lqer_top: int = 0
    lqer_rank: int = 4
    fit: bool = False
    qat_bits: int = 0
    qat_start_frac: float = 0.85


@dataclass
class EvalConfig:
    """How the artifact is scored."""

    mode: str = "flat"  # flat, sliding or doc (pgolf.eval.modes)
    seq_len: int = 0
    batch_tokens: int = 524_288
    stride: int = 0  # sliding/doc window stride; 0 = 64 capped at seq_len
    max_seconds: float = 0.0  # scoring time budget; 0 = none (the challenge allows 600 s on 8xH100)
    # Score-first test-time training (modes lora-ttt, sgd-ttt, phased-ttt; pgolf/eval/ttt.py, CHALLENGE.md 2.6).
    ttt_chunk: int = 256
    ttt_rank: int = 8
    ttt_alpha: float = 0.0
    ttt_targets: str = "attn.c_q,attn.c_v"
    ttt_lr: float = 0.01
    ttt_beta1: float = 0.9
    ttt_beta2: float = 0.95
    ttt_weight_decay: float = 0.0
    ttt_warm_start_a: bool = False
    ttt_chunk_tokens: int = 32_768
    ttt_sgd_lr: float = 0.002
    ttt_epochs: int = 3
    ttt_phases: int = 3
    ttt_prefix_docs: int = 2000
    ttt_phase_lr: float = 0.001


@dataclass
class Config:
    """A whole run: the sections above plus the preset's name."""

    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    preset: str = "baseline"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Config":
        cfg = cls(preset=str(data.get("preset", "custom")))
        for section, values in data.items():
            if section == "preset":
                continue
            for key, value in dict(values).items():
                _assign(cfg, section, key, value, source="config")
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Refuse settings that cannot work together, with one clear line. Whether a named choice exists (a mode,
        a codec, a loader) is asked of the code that implements it: `pgolf.options.check_options`."""
        m, t, e = self.model, self.train, self.eval
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
        if t.max_wallclock_seconds < 0:
            raise PgolfError(f"config: train.max_wallclock_seconds={t.max_wallclock_seconds} must be >= 0 (0 = no cap)")
        for which in ("embed_betas", "head_betas", "scalar_betas"):
            parse_betas(getattr(self.optim, which), (0.9, 0.95), f"optim.{which}")
        if self.optim.swa_every < 0 or (self.optim.swa_every and self.optim.ema_decay):
            raise PgolfError("config: optim.swa_every must be >= 0, and SWA and EMA cannot both be on")
        if not 0.0 <= self.optim.ema_decay < 1.0:
            raise PgolfError(f"config: optim.ema_decay={self.optim.ema_decay} must be in [0, 1) (0 = off)")
        if not 0.0 <= t.warmdown_frac <= 1.0 or not 0.0 <= t.min_lr <= 1.0:
            raise PgolfError("config: train.warmdown_frac and train.min_lr must be in [0, 1]")
        q = self.quant
        if q.qat_bits and not 2 <= q.qat_bits <= 8:
            raise PgolfError(f"config: quant.qat_bits={q.qat_bits} must be 0 (off) or in 2..8")
        if e.stride < 0 or e.max_seconds < 0:
            raise PgolfError("config: eval.stride and eval.max_seconds must be >= 0 (0 = the default / no limit)")
        if min(e.ttt_chunk, e.ttt_rank, e.ttt_chunk_tokens, e.ttt_phases) < 1 or e.ttt_epochs < 0:
            raise PgolfError("config: eval.ttt_chunk, ttt_rank, ttt_chunk_tokens and ttt_phases must be >= 1")

    def grad_accum_steps(self, world_size: int) -> int:
        """Micro-steps per optimizer step on each rank so that the global batch is `train_batch_tokens`."""
        per_step = self.train.train_batch_tokens // self.train.micro_batch_tokens
        if per_step % world_size:
            raise PgolfError(
                f"config: world size {world_size} does not divide train_batch_tokens/micro_batch_tokens={per_step}; "
                "choose micro_batch_tokens so that the global batch splits evenly across ranks")
        return per_step // world_size


SECTIONS = ("model", "optim", "train", "quant", "eval")


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


def _assign(cfg: Config, section: str, key: str, value: Any, source: str) -> None:
    if section not in SECTIONS:
        raise PgolfError(f"{source}: unknown config section {section!r} (known: {', '.join(SECTIONS)})")
    obj = getattr(cfg, section)
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if key not in fields:
        raise PgolfError(f"{source}: unknown setting {section}.{key} (known: {', '.join(sorted(fields))})")
    setattr(obj, key, _coerce(value, fields[key].type, f"{source}: {section}.{key}"))


def preset_names() -> list[str]:
    """Names of the presets shipped with pgolf."""
    folder = resources.files("pgolf") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_preset(name_or_path: str) -> dict[str, Any]:
    """Read a preset by shipped name (`baseline`) or by path to a TOML file."""
    path = Path(name_or_path)
    try:
        if path.suffix == ".toml" or path.exists():
            text = path.read_text(encoding="utf-8")
        else:
            resource = resources.files("pgolf") / "presets" / f"{name_or_path}.toml"
            if not resource.is_file():
                raise PgolfError(f"unknown preset {name_or_path!r} (known: {', '.join(preset_names())})")
            text = resource.read_text(encoding="utf-8")
        return tomllib.loads(text)
    except OSError as exc:
        raise PgolfError(f"{path}: cannot read preset: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PgolfError(f"{name_or_path}: invalid TOML: {exc}") from None


def parse_override(text: str) -> tuple[str, str, str]:
    """Split `section.field=value`."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise PgolfError(f"--set {text!r}: expected section.field=value, e.g. model.num_layers=11")
    key, value = text.split("=", 1)
    section, name = key.strip().split(".", 1)
    return section, name, value.strip()


def env_overrides(environ: Mapping[str, str] | None = None) -> list[tuple[str, str, str]]:
    """`PGOLF_<SECTION>_<FIELD>=value` variables as (section, field, value), e.g. PGOLF_TRAIN_SEED=7."""
    environ = os.environ if environ is None else environ
    out = []
    for name, value in sorted(environ.items()):
        if not name.startswith("PGOLF_"):
            continue
        rest = name[len("PGOLF_"):].lower()
        for section in SECTIONS:
            if rest.startswith(section + "_"):
                out.append((section, rest[len(section) + 1:], value))
                break
    return out


def build_config(preset: str = "baseline", overrides: list[str] | None = None,
                 environ: Mapping[str, str] | None = None) -> Config:
    """Defaults, then the preset, then environment variables, then `--set` overrides; `validate`d. Named choices are
    checked by `pgolf.options.resolve_config`, which is what commands use."""
    data = load_preset(preset)
    cfg = Config(preset=Path(preset).stem if preset.endswith(".toml") else preset)
    for section, values in data.items():
        if not isinstance(values, dict):
            raise PgolfError(f"preset {preset}: top-level key {section!r} must be a table like [model]")
        for key, value in values.items():
            _assign(cfg, section, key, value, source=f"preset {preset}")
    for section, key, value in env_overrides(environ):
        _assign(cfg, section, key, value, source=f"environment PGOLF_{section.upper()}_{key.upper()}")
    for text in overrides or []:
        section, key, value = parse_override(text)
        _assign(cfg, section, key, value, source=f"--set {text}")
    cfg.validate()
    return cfg


@dataclass(frozen=True)
class LaunchEnv:
    """What torchrun tells each process (RANK, WORLD_SIZE, LOCAL_RANK); world size 1 without torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launch_env(environ: Mapping[str, str] | None = None) -> LaunchEnv:
    """Read torchrun's variables; the only place outside overrides where pgolf looks at the environment."""
    environ = os.environ if environ is None else environ
    try:
        return LaunchEnv(rank=int(environ.get("RANK", 0)), world_size=int(environ.get("WORLD_SIZE", 1)),
                         local_rank=int(environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise PgolfError("environment: RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None


def config_json(cfg: Config) -> str:
    """The resolved config as stable JSON (for config.json and the artifact header)."""
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True)
