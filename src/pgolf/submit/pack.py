"""`pgolf pack`: turn finished runs (one per seed, same configuration) into the records folder the official
process expects (docs/rules.md#submission-process): README.md, submission.json, one train log per seed
(`train_seedS.log`), the bundled `train_gpt.py` (pgolf.bundle.build), requirements.txt, and each seed's artifact
(`artifact_seedS.pgolf`, so that `pgolf verify` can recount and re-score it).

The folder is written under a temporary name beside `--out` and renamed into place only when complete; a
non-empty `--out` is never touched.

Byte accounting: `bytes_code` is the size of the `train_gpt.py` shipped in the folder; each seed's total is its
artifact plus that, and `bytes_total` is the largest. A run records the code bytes of the sources it ran from
(result.json `code_bytes`); when the sources changed since, the shipped bundle differs from what was run, and
pack says so (`code_bytes_at_run` per seed, a warning line) rather than hiding it.

Record or not: a folder claims a record (`"record": true`, track `track_10min_16mb`) unless packed with
`--non-record` (track `track_non_record_16mb`). Each seed carries the val split it was scored on
(`pgolf.data.val_split`); a record claim whose scores are not on the full official val split is packed with a
warning, and `pgolf verify` fails it (docs/integrity.md).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import shlex
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pgolf.data.val_split import describe as describe_split
from pgolf.errors import PgolfError
from pgolf.eval.names import TTT_MODES
from pgolf.fileio import atomic_write_json
from pgolf.submit.runs import Run, load_run, parse_log
from pgolf.submit.stats import mean, sample_std

CAP_BYTES = 16_000_000
TRAIN_LIMIT_S = 600.0
EVAL_LIMIT_S = 600.0
SUBMISSION = "submission.json"
BUNDLE = "train_gpt.py"
REQUIREMENTS = ("torch", "numpy", "sentencepiece", "brotli", "zstandard", "constriction")
RECORD_TRACK = "track_10min_16mb"
NON_RECORD_TRACK = "track_non_record_16mb"


def log_name(seed: int) -> str:
    return f"train_seed{seed}.log"


def artifact_name(seed: int) -> str:
    return f"artifact_seed{seed}.pgolf"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _toml_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, str) else repr(value)


def config_overrides(config: dict, preset: str) -> list[str]:
    """The `--set section.field=value` overrides that turn `preset` (no environment) into `config`, seed left
    out; checked by rebuilding the config from them."""
    from pgolf.options import resolve_config

    base = resolve_config(preset, [], environ={}).to_dict()
    sets = []
    for section, values in config.items():
        if section == "preset" or not isinstance(values, dict):
            continue
        for key, value in values.items():
            if (section, key) == ("train", "seed"):
                continue
            if section not in base or key not in base[section]:
                raise PgolfError(f"config.json: unknown setting {section}.{key} (a run of another pgolf version?)")
            if base[section][key] != value:
                sets.append(f"{section}.{key}={_toml_text(value)}")
    seed = config.get("train", {}).get("seed", 0)
    rebuilt = resolve_config(preset, [*sets, f"train.seed={seed}"], environ={}).to_dict()
    # settings added to pgolf after the run are not in its config.json: they keep their defaults
    rebuilt = {s: {k: v for k, v in values.items() if k in config[s]} for s, values in rebuilt.items()
               if isinstance(values, dict)} | {"preset": config.get("preset", rebuilt["preset"])}
    if rebuilt != config:
        raise PgolfError(f"config.json cannot be rebuilt from preset {preset} with --set overrides")
    return sets


def technique_summary(config: dict) -> dict:
    """What the configuration is, in a few lines, plus every setting that differs from pgolf's defaults."""
    from pgolf.config import Config

    defaults = Config().to_dict()
    config = Config.from_dict(config).to_dict()  # older setting names (eval.ttt_*) in today's layout
    m, q, e, t = config["model"], config["quant"], config["eval"], config["train"]
    changed = {f"{s}.{k}": v for s, values in config.items() if isinstance(values, dict)
               for k, v in values.items() if defaults.get(s, {}).get(k) != v and (s, k) != ("train", "seed")}
    model = (f"{m['num_layers']} layers, dim {m['model_dim']}, {m['num_heads']} heads ({m['num_kv_heads']} KV), "
             f"MLP x{m['mlp_mult']}, vocab {m['vocab_size']}")
    quant = f"{q['scheme']} weights, {q['codec']} codec" + (f", GPTQ (calibration: {q['calib']})" if q.get("gptq")
                                                              and q["scheme"] == "mixed" else "")
    evaluation = f"{e['mode']} evaluation" + (f", stride {e['stride']}" if e.get("stride") else "")
    training = f"seq_len {t['train_seq_len']}, {t['train_batch_tokens']} tokens per step, loader {t['loader']}"
    return {"model": model, "training": training, "quantization": quant, "evaluation": evaluation,
            "settings_changed_from_pgolf_defaults": changed}


def _installed(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def requirements(runs: list[Run]) -> str:
    """What the bundle needs, at the versions the runs recorded (torch, numpy) or the installed ones."""
    recorded = runs[0].get("versions", {}) or {}
    lines = ["# what train_gpt.py imports (pgolf itself travels inside it); versions of the packed runs",
             "# (torch, numpy from result.json) or of the packing environment"]
    for dist in REQUIREMENTS:
        v = recorded.get(dist) or _installed(dist)
        lines.append(f"{dist}=={v.split('+')[0]}" if v else dist)
    return "\n".join(lines) + "\n"


def reads_val(calibration_line: str) -> bool:
    """Whether a `gptq_calibration:` log line says it read validation tokens."""
    return " val tokens" in calibration_line or "calibration on val" in calibration_line


def _check_runs(runs: list[Run]) -> None:
    seen: dict[int, Run] = {}
    for run in runs:
        missing = [n for n, ok in (("result.json", bool(run.result) and "artifact_bytes" in run.result),
                                   ("config.json", run.config is not None), ("log.txt", run.log_path is not None),
                                   ("the artifact", run.artifact_path is not None)) if not ok]
        if missing:
            raise PgolfError(f"{run.path}: not a finished pgolf run directory (missing {', '.join(missing)})")
        if run.seed is None:
            raise PgolfError(f"{run.path}: the run records no seed")
        if run.seed in seen:
            raise PgolfError(f"{run.path}: seed {run.seed} again (also {seen[run.seed].path}): one run per seed")
        seen[run.seed] = run
    first = runs[0]
    for run in runs[1:]:
        a = {s: v for s, v in first.config.items()}
        b = {s: v for s, v in run.config.items()}
        for cfg in (a, b):
            cfg["train"] = {k: v for k, v in cfg["train"].items() if k != "seed"}
        if a != b:
            diff = sorted(f"{s}.{k}" for s in a if isinstance(a[s], dict) for k in a[s]
                          if a[s][k] != b.get(s, {}).get(k))
            raise PgolfError(f"{run.path}: another configuration than {first.path} "
                             f"({', '.join(diff) or 'preset'}): a submission is one configuration, seeds aside")


def _seed_entry(run: Run, code_bytes: int) -> dict:
    r = run.result
    phases = r.get("phases", {}) or {}
    artifact_bytes = run.artifact_path.stat().st_size
    if artifact_bytes != r["artifact_bytes"]:
        raise PgolfError(f"{run.artifact_path}: {artifact_bytes} bytes, but result.json says {r['artifact_bytes']}")
    eval_s = phases.get("scoring")
    return {"seed": run.seed, "val_loss": run.val_loss, "val_bpb": run.val_bpb, "steps": r.get("steps"),
            "step_avg_ms": r.get("step_avg_ms"), "train_seconds": r.get("train_seconds"), "eval_seconds": eval_s,
            "eval_mode": r.get("eval_mode"), "artifact_bytes": artifact_bytes,
            "bytes_total": artifact_bytes + code_bytes, "code_bytes_at_run": r.get("code_bytes"),
            "val_tokens": r.get("val_tokens"), "val_bytes": r.get("val_bytes"), "val_split": r.get("val_split"),
            "log": log_name(run.seed), "artifact": artifact_name(run.seed),
            "artifact_sha256": sha256_file(run.artifact_path), "phases": phases}


def build_submission(runs: list[Run], *, preset: str, overrides: list[str], code_bytes: int, name: str, author: str,
                     github_id: str, blurb: str, date: str, hardware: str, track: str,
                     legality: str | None, record: bool = True) -> dict:
    seeds = [_seed_entry(r, code_bytes) for r in runs]
    losses, bpbs = [s["val_loss"] for s in seeds], [s["val_bpb"] for s in seeds]
    totals = [s["bytes_total"] for s in seeds]
    train_s = [s["train_seconds"] for s in seeds if s["train_seconds"] is not None]
    eval_s = [s["eval_seconds"] for s in seeds if s["eval_seconds"] is not None]
    cfg = runs[0].config
    calib = cfg["quant"].get("calib") if cfg["quant"].get("scheme") == "mixed" and cfg["quant"].get("gptq") else None
    calibration_lines = [line for r in runs for line in parse_log(r.log_path.read_text(encoding="utf-8",
                                                                                       errors="replace")).calibration]
    first = runs[0].result
    compliance = {
        "cap_bytes": CAP_BYTES, "within_cap": max(totals) <= CAP_BYTES,
        "train_limit_seconds": TRAIN_LIMIT_S, "train_seconds_max": max(train_s) if train_s else None,
        "train_within_limit": bool(train_s) and len(train_s) == len(seeds) and max(train_s) <= TRAIN_LIMIT_S,
        "eval_limit_seconds": EVAL_LIMIT_S, "eval_seconds_max": max(eval_s) if eval_s else None,
        "eval_within_limit": bool(eval_s) and len(eval_s) == len(seeds) and max(eval_s) <= EVAL_LIMIT_S,
        "score_is_decompressed_artifact": True,
        "gptq_calibration_source": calib,
        "val_not_trained_on": calib != "val" and not any(reads_val(line) for line in calibration_lines),
        "world_size": first.get("world_size"), "device": first.get("device"),
        "eval_mode": first.get("eval_mode"),
        "test_time_training": first.get("eval_mode") in TTT_MODES,  # pgolf's TTT modes are score-first
        "legality": legality,
        **val_split_compliance(seeds),
    }
    return {
        "author": author, "github_id": github_id, "name": name, "blurb": blurb, "date": date, "track": track,
        "record": record,
        "val_loss": mean(losses), "val_bpb": mean(bpbs), "val_loss_std": sample_std(losses),
        "val_bpb_std": sample_std(bpbs), "seeds": [s["seed"] for s in seeds],
        "bytes_total": max(totals), "bytes_code": code_bytes,
        "bytes_model_max": max(s["artifact_bytes"] for s in seeds),
        "seed_results": seeds,
        "steps_mean": mean([s["steps"] for s in seeds]) if all(s["steps"] is not None for s in seeds) else None,
        "step_avg_ms_mean": (mean([s["step_avg_ms"] for s in seeds])
                             if all(s["step_avg_ms"] is not None for s in seeds) else None),
        "hardware": hardware,
        "versions": first.get("versions", {}),
        "preset": preset, "overrides": overrides,
        "technique_summary": technique_summary(cfg),
        "compliance": compliance,
    }


def val_split_compliance(seeds: list[dict]) -> dict:
    """submission.json's val-split facts: whether every seed was scored on the full official split (None when a
    seed does not record it), whether all seeds were scored on the same tokens, and the first seed's verdict."""
    splits = [s.get("val_split") for s in seeds]
    recorded = all(isinstance(v, dict) and v.get("digest") for v in splits)
    official = all((v.get("verdict") or {}).get("official") for v in splits) if recorded else None
    return {"val_split_official": official,
            "val_splits_agree": len({v["digest"] for v in splits}) == 1 if recorded else None,
            "val_split": describe_split(splits[0]) if recorded else "not recorded"}


def readme(sub: dict) -> str:
    c = sub["compliance"]
    std = sub["val_bpb_std"]
    sets = "".join(f" --set {shlex.quote(s)}" for s in sub["overrides"])
    title = sub["name"] + ("" if sub.get("record", True) else " (non-record)")
    lines = [f"# {title}", "", sub["blurb"], "",
             f"**val_bpb {sub['val_bpb']:.8f}** (" + (f"std {std:.8f}, " if std is not None else "")
             + f"{len(sub['seeds'])} seed{'s' if len(sub['seeds']) != 1 else ''}), val_loss {sub['val_loss']:.8f} "
             f"nats per token; {sub['bytes_total']:,} bytes at most ({sub['bytes_code']:,} of code), "
             f"cap {c['cap_bytes']:,}.", "",
             "| seed | val_loss | val_bpb | steps | step avg (ms) | train (s) | eval (s) | artifact bytes "
             "| total bytes |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in sub["seed_results"]:
        lines.append(f"| {s['seed']} | {s['val_loss']:.8f} | {s['val_bpb']:.8f} | {s['steps']} | "
                     f"{_n(s['step_avg_ms'], '.2f')} | {_n(s['train_seconds'], '.1f')} | "
                     f"{_n(s['eval_seconds'], '.1f')} | "
                     f"{s['artifact_bytes']:,} | {s['bytes_total']:,} |")
    t = sub["technique_summary"]
    lines += ["", "## What it is", "",
              f"- model: {t['model']}", f"- training: {t['training']}", f"- quantization: {t['quantization']}",
              f"- evaluation: {t['evaluation']}",
              f"- pgolf preset `{sub['preset']}`" + (f" with `{sets.strip()}`" if sets else ""), "",
              "Settings that differ from pgolf's defaults:", ""]
    lines += [f"- `{k} = {v!r}`" for k, v in t["settings_changed_from_pgolf_defaults"].items()] or ["- none"]
    lines += ["", "## Reproducing", "", "```bash", "pip install -r requirements.txt"]
    lines += [f"torchrun --standalone --nproc_per_node=8 train_gpt.py --data DATA_DIR --seed {s}{sets}"
              for s in sub["seeds"]]
    lines += ["```", "", "`DATA_DIR` holds the challenge's shards and tokenizer (e.g. `pgolf data fineweb`). "
              "Each run writes its log, artifact and result.json under `runs/`.", "",
              "## Compliance", "",
              f"- bytes: largest artifact {sub['bytes_model_max']:,} + code {sub['bytes_code']:,} = "
              f"{sub['bytes_total']:,} {'<=' if c['within_cap'] else '>'} {c['cap_bytes']:,}",
              f"- training: at most {_n(c['train_seconds_max'], '.1f')} s of the {c['train_limit_seconds']:.0f} s "
              f"({'within' if c['train_within_limit'] else 'NOT within'} the limit)",
              f"- evaluation: at most {_n(c['eval_seconds_max'], '.1f')} s of the {c['eval_limit_seconds']:.0f} s "
              f"({'within' if c['eval_within_limit'] else 'NOT within'} the limit)",
              "- the score is that of the artifact decompressed from its file",
              f"- validation data not trained on: {'yes' if c['val_not_trained_on'] else 'NO'}"
              + (f" (GPTQ calibration on {c['gptq_calibration_source']})" if c["gptq_calibration_source"] else ""),
              f"- {c.get('val_split', 'val split: not recorded')}",
              "- " + ("a record claim: every seed must be scored on the full official val split"
                      if sub.get("record", True) else "not a record (packed with --non-record): scored on any val "
                      "split, and marked so"),
              f"- hardware: {sub['hardware']}",
              f"- legality (C1-C4 of issue #1017): {c['legality'] or 'not checked'}", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in sub["versions"].items()), ""]
    return "\n".join(lines)


def _n(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _legality_verdict(text: str) -> str:
    last = [line.strip() for line in text.splitlines() if line.strip()]
    if last and last[-1] == "legal":
        return "legal"
    if last and last[-1].startswith("VIOLATES"):
        return last[-1]
    raise PgolfError("--legality: not the output of `pgolf legality` (its last line is `legal` or `VIOLATES ...`)")


def pack(run_paths: list[str | Path], out: str | Path, *, preset: str | None = None, name: str | None = None,
         author: str = "", github_id: str = "", blurb: str | None = None, date: str | None = None,
         hardware: str | None = None, track: str | None = None, legality: str | Path | None = None,
         non_record: bool = False, bundle_writer=None) -> tuple[dict, list[str]]:
    """Write the records folder `out` from `run_paths`; returns submission.json's content and warning lines.
    `non_record` packs a folder that does not claim a record (track `NON_RECORD_TRACK` unless `track` is given)."""
    track = track or (NON_RECORD_TRACK if non_record else RECORD_TRACK)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PgolfError(f"{out}: exists and is not an empty folder; pack never overwrites")
    runs = [load_run(p) for p in run_paths]
    if not runs:
        raise PgolfError("pack: no runs given")
    _check_runs(runs)
    runs.sort(key=lambda r: r.seed)
    preset = preset or runs[0].config.get("preset") or runs[0].get("preset")
    overrides = config_overrides(runs[0].config, preset)
    legality_text = Path(legality).read_text(encoding="utf-8") if legality else None
    verdict = _legality_verdict(legality_text) if legality_text is not None else None
    if bundle_writer is None:
        from pgolf.bundle.build import write_bundle as bundle_writer
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".packing", dir=out.parent))
    try:
        bundle_writer(preset, tmp / BUNDLE)
        code_bytes = (tmp / BUNDLE).stat().st_size
        for run in runs:
            shutil.copyfile(run.log_path, tmp / log_name(run.seed))
            shutil.copyfile(run.artifact_path, tmp / artifact_name(run.seed))
        if legality_text is not None:
            (tmp / "legality.txt").write_text(legality_text, encoding="utf-8")
        sub = build_submission(
            runs, preset=preset, overrides=overrides, code_bytes=code_bytes,
            name=name or f"pgolf {preset}", author=author, github_id=github_id,
            blurb=blurb or f"pgolf preset {preset}: {technique_summary(runs[0].config)['model']}.",
            date=date or datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
            hardware=hardware or f"{runs[0].get('world_size', '?')}x {runs[0].get('device', '?')}", track=track,
            legality=verdict, record=not non_record)
        atomic_write_json(tmp / SUBMISSION, sub)
        (tmp / "README.md").write_text(readme(sub), encoding="utf-8")
        (tmp / "requirements.txt").write_text(requirements(runs), encoding="utf-8")
        os.chmod(tmp, 0o777 & ~_umask())
        if out.exists():
            out.rmdir()  # empty, checked above
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    warnings = [f"seed {s['seed']}: ran with {s['code_bytes_at_run']:,} code bytes, the shipped train_gpt.py has "
                f"{code_bytes:,} (the sources changed since the run)"
                for s in sub["seed_results"] if s["code_bytes_at_run"] not in (None, code_bytes)]
    if not sub["compliance"]["within_cap"]:
        warnings.append(f"over the cap: {sub['bytes_total']:,} bytes > {CAP_BYTES:,}")
    if sub["record"] and not sub["compliance"]["val_split_official"]:
        warnings.append(f"a record claim, but {sub['compliance']['val_split']}: `pgolf verify` will fail it "
                        "(pack with --non-record if it is not a record)")
    return sub, warnings


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
