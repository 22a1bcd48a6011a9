"""Resolve a run's config and check every named choice against the code that implements it.

`pgolf.config` defines the settings and checks what is about the settings themselves (shapes that divide, ranges);
whether a named choice exists (an eval mode, a codec, a loader, an attention gate) is known only to the module that
implements it, which keeps its allowed values beside its code. This module sits above all of them and asks each one,
so a bad value is refused with one line before a run starts, while `pgolf.config` imports none of them.
"""

from __future__ import annotations

from typing import Mapping

from pgolf.artifact.codecs import check_codec
from pgolf.config import Config, build_config
from pgolf.data.loader import LOADERS, check_loader_schedule
from pgolf.errors import PgolfError
from pgolf.eval.names import EVAL_MODES
from pgolf.eval.ttt_lora import PHASE_DOCS, lora_targets, short_doc_chunks
from pgolf.model.attention import ATTN_GATES
from pgolf.model.gpt import MLP_ACTIVATIONS, PARALLEL_MODES
from pgolf.model.kernels import KERNEL_MODES
from pgolf.model.precision import BODY_DTYPES
from pgolf.optim.clip import CLIP_SCOPES
from pgolf.optim.muon import NS_COEFFICIENTS
from pgolf.optim.schedule import parse_seq_len_schedule
from pgolf.optim.soap import MATRIX_OPTIMIZERS, check_soap
from pgolf.quant.grid import CLIP_METHODS
from pgolf.quant.gptq import CALIB_RESERVES, CALIBRATION_SOURCES
from pgolf.quant.recipe import EXPORT_SCHEMES, parse_group_values
from pgolf.runtime import COMPILE_MODES, DEVICES


def _one_of(value: str, allowed, key: str) -> None:
    if value not in allowed:
        raise PgolfError(f"config: {key}={value!r} must be one of {', '.join(allowed)}")


def check_options(cfg: Config) -> Config:
    """PgolfError (one line) for any named choice or option string that its implementing code would refuse."""
    m, o, t, q, e = cfg.model, cfg.optim, cfg.train, cfg.quant, cfg.eval
    _one_of(m.attn_gate, ATTN_GATES, "model.attn_gate")
    _one_of(m.parallel_mode, PARALLEL_MODES, "model.parallel_mode")
    _one_of(m.mlp_activation, MLP_ACTIVATIONS, "model.mlp_activation")
    _one_of(o.muon_ns, NS_COEFFICIENTS, "optim.muon_ns")
    _one_of(o.matrix_optimizer, MATRIX_OPTIMIZERS, "optim.matrix_optimizer")
    check_soap(o)  # SOAP needs heavyball and unsharded Muon
    _one_of(o.grad_clip_scope, CLIP_SCOPES, "optim.grad_clip_scope")
    _one_of(t.loader, LOADERS, "train.loader")
    parse_seq_len_schedule(t.seq_len_schedule, t.train_seq_len, t.micro_batch_tokens)
    check_loader_schedule(t.loader, t.seq_len_schedule)
    _one_of(t.compile, COMPILE_MODES, "train.compile")
    _one_of(t.kernels, KERNEL_MODES, "train.kernels")
    _one_of(o.muon_compile, COMPILE_MODES, "optim.muon_compile")
    if o.muon_sharded and o.grad_clip_norm > 0 and o.grad_clip_scope == "global":
        raise PgolfError("config: optim.muon_sharded reduces the Muon gradients inside its step, after clipping; "
                         "use optim.grad_clip_scope=rank (or no clipping)")
    _one_of(t.body_dtype, BODY_DTYPES, "train.body_dtype")
    _one_of(t.device, DEVICES, "train.device")
    _one_of(q.scheme, EXPORT_SCHEMES, "quant.scheme")
    try:
        check_codec(q.codec, q.level)
    except PgolfError as exc:
        raise PgolfError(f"config: quant.codec={q.codec!r}, quant.level={q.level}: {exc}") from None
    _one_of(q.calib, CALIBRATION_SOURCES, "quant.calib")
    _one_of(q.clip, CLIP_METHODS, "quant.clip")
    parse_group_values(q.bits, int, "quant.bits", lo=2, hi=8)
    parse_group_values(q.clip_k, float, "quant.clip_k", lo=1e-3, hi=1e3)
    _one_of(e.mode, EVAL_MODES, "eval.mode")
    _one_of(e.compile, COMPILE_MODES, "eval.compile")
    for name in (m.strip() for m in e.report_modes.split(",")):  # as the trainer splits it; empty entries skipped
        if name and name not in EVAL_MODES:
            raise PgolfError(f"config: eval.report_modes={e.report_modes!r}: {name!r} must be one of "
                             f"{', '.join(EVAL_MODES)}")
    lora_targets(cfg.ttt.targets)
    _one_of(q.calib_reserve, CALIB_RESERVES, "quant.calib_reserve")
    _one_of(cfg.ttt.phase_docs, PHASE_DOCS, "ttt.phase_docs")
    short_doc_chunks(cfg.ttt.short_doc_chunks)
    return cfg


def resolve_config(preset: str = "baseline", overrides: list[str] | None = None,
                   environ: Mapping[str, str] | None = None) -> Config:
    """Defaults, then the preset, then `PGOLF_*` environment variables, then `--set` overrides; every setting
    checked (`Config.validate`) and every named choice checked by its implementing code (`check_options`)."""
    return check_options(build_config(preset, overrides, environ))


def config_from_dict(data: Mapping) -> Config:
    """A config read back from JSON (config.json, an artifact header), fully checked."""
    return check_options(Config.from_dict(data))
