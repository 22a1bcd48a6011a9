"""Resolve a run's config and check every named choice against the names its implementing code runs.

`pgolf.config` defines the settings and checks what is about the settings themselves (shapes that divide, ranges);
whether a named choice exists (an eval mode, a codec, a loader, an attention gate) is the business of the stage that
implements it. Each stage keeps its names and the parsers of its option strings in a torch-free module,
`pgolf/<stage>/choices.py` (`pgolf.runtime_choices` for the runtime, `pgolf.eval.names` for the eval modes), which
the implementing modules import: one list per choice, the one the code runs. This module sits above them all and
asks each one, so a bad value is refused with one line before a run starts, `pgolf.config` imports none of them,
and none of this imports torch: `pgolf config show` and every config error answer in a fraction of a second
(tests/test_options.py runs them in a fresh interpreter and checks that torch stays unimported). Where a registry of
implementations must stay beside its code (the loaders, the codecs), a test holds its names equal to the torch-free
list.
"""

from __future__ import annotations

from typing import Mapping

from pgolf.artifact.choices import check_codec
from pgolf.config import Config
from pgolf.config_sources import build_config
from pgolf.data.choices import LOADER_NAMES, check_loader_schedule
from pgolf.errors import PgolfError
from pgolf.eval.choices import PHASE_DOCS, lora_targets, short_doc_chunks
from pgolf.eval.names import EVAL_MODES
from pgolf.model.choices import ATTN_GATES, BODY_DTYPES, KERNEL_MODES, MLP_ACTIVATIONS, PARALLEL_MODES
from pgolf.optim.choices import CLIP_SCOPES, MATRIX_OPTIMIZERS, NS_COEFFICIENTS, check_soap
from pgolf.optim.schedule import parse_seq_len_schedule
from pgolf.quant.choices import CALIB_RESERVES, CALIBRATION_SOURCES, CLIP_METHODS, EXPORT_SCHEMES, parse_group_values
from pgolf.runtime_choices import COMPILE_MODES, DEVICES
from pgolf.suggest import did_you_mean


def _refuse(what: str, value: str, allowed) -> PgolfError:
    """One line: `what` (e.g. "eval.mode='slidng'") must be one of `allowed`, and the closest if any is close."""
    return PgolfError(f"config: {what} must be one of {', '.join(allowed)}" + did_you_mean(value, allowed, quote=True))


def _one_of(value: str, allowed, key: str) -> None:
    if value not in allowed:
        raise _refuse(f"{key}={value!r}", value, allowed)


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
    _one_of(t.loader, LOADER_NAMES, "train.loader")
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
            raise _refuse(f"eval.report_modes={e.report_modes!r}: {name!r}", name, EVAL_MODES)
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
