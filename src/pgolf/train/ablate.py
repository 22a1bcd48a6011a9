"""Ablations: train a preset and, for each listed technique, the preset with that technique flipped, at one fixed
budget, and tabulate post-roundtrip val_bpb, its delta and the step time (`pgolf ablate`).

Flipping means: if the preset has the technique on, turn it off (its baseline value); if off, turn it on with the
records' value. Every variant is an ordinary run directory, so any row can be re-scored or inspected. The variants
train one after another in this process, or with `workers` > 1 (or `nproc_per_node` > 1) as `pgolf train` children of
the worker pool (pgolf/train/pool.py), K at once, each on its own GPU(s) or cores; the table is the same either way.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

from pgolf.config import Config
from pgolf.options import resolve_config
from pgolf.errors import PgolfError
from pgolf.fileio import atomic_write_text
from pgolf.train.runlog import STDOUT


@dataclass(frozen=True)
class Toggle:
    """A technique as settings: `off` turns it off; `on(cfg)` gives the settings that turn it on."""

    key: str
    off: dict
    on: Callable[[Config], dict]

    def is_on(self, cfg: Config) -> bool:
        return any(_get(cfg, k) != v for k, v in self.off.items())


def _get(cfg: Config, dotted: str):
    section, name = dotted.split(".")
    return getattr(getattr(cfg, section), name)


def _const(**values) -> Callable[[Config], dict]:
    return lambda cfg: {k.replace("__", "."): v for k, v in values.items()}


TOGGLES: dict[str, Toggle] = {
    "leaky_relu2": Toggle("leaky_relu2", {"model.mlp_activation": "relu2"}, _const(model__mlp_activation="leaky_relu2")),
    "mlp4x": Toggle("mlp4x", {"model.mlp_mult": 2.0}, _const(model__mlp_mult=4.0)),
    "partial_rope": Toggle("partial_rope", {"model.rope_dims": 0},
                           lambda c: {"model.rope_dims": max(2, c.model.model_dim // c.model.num_heads // 4)}),
    "ln_scale": Toggle("ln_scale", {"model.ln_scale": False}, _const(model__ln_scale=True)),
    "xsa": Toggle("xsa", {"model.xsa_last_n": 0}, lambda c: {"model.xsa_last_n": c.model.num_layers}),
    "qk_gain": Toggle("qk_gain", {"model.qk_gain_init": 1.5}, _const(model__qk_gain_init=5.0)),
    "bigram": Toggle("bigram", {"model.bigram_rows": 0}, _const(model__bigram_rows=4096)),
    "value_embed": Toggle("value_embed", {"model.value_embed_last_n": 0}, _const(model__value_embed_last_n=2)),
    "smear_gate": Toggle("smear_gate", {"model.smear_gate": False}, _const(model__smear_gate=True)),
    "attn_gate": Toggle("attn_gate", {"model.attn_gate": "none"},
                        _const(model__attn_gate="sparse", model__attn_gate_scale=0.5)),
    "skip_gates": Toggle("skip_gates", {"model.skip_gates": False}, _const(model__skip_gates=True)),
    "ortho_init": Toggle("ortho_init", {"model.ortho_init": False}, _const(model__ortho_init=True)),
    "recurrence": Toggle("recurrence", {"model.num_loops": 0},
                         lambda c: {"model.num_loops": 1, "model.loop_start": c.model.num_layers // 3,
                                    "model.loop_end": c.model.num_layers // 2, "model.loop_start_frac": 0.35}),
    "parallel": Toggle("parallel", {"model.parallel_mode": "none"},
                       lambda c: {"model.parallel_mode": "two_lane",
                                  "model.parallel_start": 2 * c.model.num_layers // 3}),
    "polar_express": Toggle("polar_express", {"optim.muon_ns": "classic"}, _const(optim__muon_ns="polar_express")),
    "muon_row_norm": Toggle("muon_row_norm", {"optim.muon_row_norm": False}, _const(optim__muon_row_norm=True)),
    "muon_wd": Toggle("muon_wd", {"optim.muon_weight_decay": 0.0}, _const(optim__muon_weight_decay=0.095)),
    "ema": Toggle("ema", {"optim.ema_decay": 0.0}, _const(optim__ema_decay=0.99)),
    "grad_clip": Toggle("grad_clip", {"optim.grad_clip_norm": 0.0}, _const(optim__grad_clip_norm=0.3)),
    "min_lr": Toggle("min_lr", {"train.min_lr": 0.0}, _const(train__min_lr=0.1)),
    # the final record's and the frontier's additions (issue 22; docs/record.md)
    "ngram_tilt": Toggle("ngram_tilt", {"eval.ngram_order": 0}, _const(eval__ngram_order=16)),
    "ngram_adaptive": Toggle("ngram_adaptive", {"eval.ngram_gamma": 0.0}, _const(eval__ngram_gamma=1.0)),
    "asym_logit": Toggle("asym_logit", {"model.asym_logit": False, "ttt.train_logit_caps": False},
                         _const(model__asym_logit=True)),
    "awq": Toggle("awq", {"quant.awq_top": 0}, _const(quant__awq_top=1)),
    "lqer_rank2": Toggle("lqer_rank2", {"quant.lqer_rank": 4}, _const(quant__lqer_rank=2, quant__lqer_top=4)),
    # PR #2014: 1/3 -> 2/3 -> full training context (its 1k -> 2k -> 3k), and smaller TTT chunks for short documents
    "progressive_context": Toggle("progressive_context", {"train.seq_len_schedule": ""}, lambda c: _thirds(c.train)),
    "short_doc_chunks": Toggle("short_doc_chunks", {"ttt.short_doc_chunks": ""},
                               _const(ttt__short_doc_chunks="256:8,2000:24")),
}


def _thirds(t) -> dict:
    """PR #2014's schedule scaled: train_seq_len/3 from the start, 2/3 from 10% of training, the full length from
    70%, each rounded down to a length dividing the micro-batch (the loaders cut it into rows of that length)."""
    def fit(n: int) -> int:
        return max(d for d in range(1, n + 1) if t.micro_batch_tokens % d == 0)
    return {"train.seq_len_schedule": f"0:{fit(t.train_seq_len // 3)},0.1:{fit(2 * t.train_seq_len // 3)}",
            "train.seq_len_full_frac": 0.7}


def flip(cfg: Config, name: str) -> tuple[list[str], str]:
    """The `--set` overrides that flip technique `name` in `cfg`, and a label saying which way."""
    if name not in TOGGLES:
        raise PgolfError(f"ablate: unknown technique {name!r} (known: {', '.join(sorted(TOGGLES))})")
    toggle = TOGGLES[name]
    if toggle.is_on(cfg):
        return [f"{k}={v}" for k, v in toggle.off.items()], f"- {name}"
    return [f"{k}={v}" for k, v in toggle.on(cfg).items()], f"+ {name}"


def ablate(preset: str, toggles: list[str], data_dir: str | Path, out_dir: str | Path, *,
           sets: list[str] | None = None, echo: TextIO | None = STDOUT, workers: int = 1,
           nproc_per_node: int = 1) -> str:
    """Train the preset and one flipped variant per technique; write and return `ablation.md`."""
    out_dir = Path(out_dir)
    sets = list(sets or [])
    base = resolve_config(preset, sets)
    variants = [("preset", [], "00-preset")]
    for i, name in enumerate(toggles, 1):
        extra, label = flip(base, name)
        variants.append((label, extra, f"{i:02d}-{'without' if label.startswith('-') else 'with'}-{name}"))
    configs = [resolve_config(preset, sets + extra) for _, extra, _ in variants]  # every one checked first
    if workers > 1 or nproc_per_node > 1:
        _train_in_pool(preset, sets, variants, configs[0].train.device, data_dir, out_dir, echo, workers,
                       nproc_per_node)
    else:
        _train_here(preset, variants, configs, data_dir, out_dir, echo)
    rows = []
    for label, extra, slug in variants:
        result = json.loads((out_dir / slug / "result.json").read_text())
        rows.append((label, extra, result, slug))
    ref = rows[0][2]["val_bpb"]
    lines = [f"Ablation of `{preset}` ({' '.join(sets) or 'no overrides'}); data `{data_dir}`; "
             f"{rows[0][2]['device']}, {rows[0][2]['world_size']} process(es).", "",
             "| variant | settings | val_bpb (roundtrip) | Δ vs preset | ms/step | steps | total bytes | run |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for label, extra, r, name in rows:
        delta = "" if label == "preset" else f"{r['val_bpb'] - ref:+.4f}"
        lines.append(f"| {label} | {' '.join(f'`{e}`' for e in extra)} | {r['val_bpb']:.4f} | {delta} | "
                     f"{r['step_avg_ms']:.1f} | {r['steps']} | {r['total_bytes']:,} | {name} |")
    table = "\n".join(lines) + "\n"
    atomic_write_text(out_dir / "ablation.md", table)
    return table


def _train_here(preset: str, variants: list, configs: list[Config], data_dir: str | Path, out_dir: Path,
                echo: TextIO | None) -> None:
    """One variant after another in this process; a run that wrote its result and then failed a check (over the
    cap) is a note, not an error."""
    from tqdm import tqdm

    from pgolf.train.trainer import train

    for (label, extra, slug), cfg in tqdm(list(zip(variants, configs)), desc="ablate", unit="run", file=sys.stderr,
                                          disable=not sys.stderr.isatty()):
        run_dir = out_dir / slug
        if echo:
            print(f"== ablate {preset}: {label} {' '.join(extra)} -> {run_dir}", file=echo, flush=True)
        try:
            train(cfg, data_dir, run_dir, echo=None)
        except PgolfError as exc:
            if not (run_dir / "result.json").is_file():
                raise
            if echo:
                print(f"   note: {exc}", file=echo)


def _train_in_pool(preset: str, sets: list[str], variants: list, device: str, data_dir: str | Path, out_dir: Path,
                   echo: TextIO | None, workers: int, nproc_per_node: int) -> None:
    """Every variant as a `pgolf train` child, `workers` at once; as in `_train_here`, a run with a result is a
    note when it failed after writing it, and one without is one PgolfError once the others are done."""
    from pgolf.train.pool import CONSOLE, Job, exit_reason, last_error, plan_slots, run_jobs

    jobs = [Job(f"ablate {preset}: {label} {' '.join(extra)}".rstrip(),
                ["--preset", preset, *(f"--set={s}" for s in sets + extra), "--data", str(data_dir),
                 "--run-dir", str(out_dir / slug), "--overwrite"], out_dir / slug)
            for label, extra, slug in variants]
    slots = plan_slots(min(workers, len(jobs)), device=device, nproc_per_node=nproc_per_node)
    started = time.time()
    run_jobs(jobs, slots, nproc_per_node=nproc_per_node, echo=echo)
    # a result.json from before this ablation (a run that failed before it cleared its directory) is not this run's
    missing = [job for job in jobs if not (job.run_dir / "result.json").is_file()
               or (job.code != 0 and (job.run_dir / "result.json").stat().st_mtime < started)]
    if missing:
        job = missing[0]
        raise PgolfError(f"ablate: {len(missing)} of {len(jobs)} run(s) failed; {job.label} ({job.run_dir}): "
                         f"{last_error(job.run_dir / CONSOLE)} ({exit_reason(job.code)}; see {job.run_dir / CONSOLE})")
    for job in jobs:
        if job.code != 0 and echo:
            print(f"   note: {job.label}: {last_error(job.run_dir / CONSOLE)}", file=echo)
