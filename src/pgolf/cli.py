"""The `pgolf` command: thin argparse subcommands that parse, call one library function, and print.

Every error caused by input (a bad command line, `PgolfError`, or an OS error on a named file) becomes one
`pgolf: error:` line on stderr and exit code 2; a traceback means a bug in pgolf. Commands that read a data
directory take `--data DIR`; those that train write under `--run-dir DIR`. The `data` commands and the submission
commands register from `pgolf/data/commands.py`, `pgolf/submit/commands.py` and `pgolf/sweep/commands.py`, imported
inside `build_parser` only: a `train_gpt.py` bundle, which follows the imports of `train_main`, carries none of them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pgolf.cli_args import budget_sets, count, number, positive, seconds
from pgolf.errors import PgolfError
from pgolf.fileio import refuse_existing
from pgolf.eval.names import EVAL_MODES


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line like every other pgolf error: one line, exit 2."""

    def error(self, message: str):
        where = self.prog.removeprefix("pgolf").strip()
        raise PgolfError(f"{where + ': ' if where else ''}{message} (see --help)")




def _out_dir(path: Path, what: str) -> Path:
    """`path`, unless it (or a folder above it) is a file, so that it cannot become the directory `what`."""
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise PgolfError(f"{what} {path}: {p} is a file, not a directory")
            break
    return path


def _fresh_run_dir(base: Path) -> Path:
    """`base`, or `base-2`, `base-3`, ...: the first that does not exist or is empty (a second `pgolf run` never
    replaces the first one's outputs)."""
    candidate, n = base, 1
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def _train_and_report(args: argparse.Namespace, data_dir: Path, default_run_dir: str) -> int:
    """Train into `--run-dir` (refused when it holds a run, unless --overwrite) or into a fresh directory under
    runs/ named `default_run_dir`."""
    from pgolf.options import resolve_config
    from pgolf.train.trainer import train

    cfg = resolve_config(args.preset, budget_sets(args))
    if args.run_dir is not None:
        run_dir, existing = _out_dir(args.run_dir, "run directory"), "overwrite" if args.overwrite else "refuse"
    else:
        run_dir, existing = _fresh_run_dir(Path("runs") / default_run_dir), "refuse"
    result = train(cfg, data_dir, run_dir, existing=existing)
    if result is not None:
        _print_result(run_dir, result)
    return 0


def _resumed_config(args: argparse.Namespace) -> tuple["Config", Path]:
    """`train --resume RUN_DIR`: the config the run was checkpointed with, and its run directory; refuses the flags
    that would change it (docs/training.md#checkpoints-and-resume)."""
    from pgolf.config import Config
    from pgolf.train.checkpoint import read_manifest

    given = [flag for flag, value in (("--preset", args.preset), ("--set", args.set), ("--seed", args.seed),
                                      ("--max-steps", args.max_steps), ("--max-seconds", args.max_seconds),
                                      ("--overwrite", args.overwrite or None)) if value is not None]
    if args.run_dir is not None and args.run_dir.resolve() != args.resume.resolve():
        given.append("--run-dir")
    if given:
        raise PgolfError(f"train --resume: the run continues with the config it was checkpointed with; drop "
                         f"{', '.join(given)}")
    run_dir = _out_dir(args.resume, "run directory")
    try:
        return Config.from_dict(read_manifest(run_dir)["config"]), run_dir
    except PgolfError as exc:
        if "checkpoint" in str(exc):
            raise
        raise PgolfError(f"{run_dir}: the checkpoint's config does not load in this pgolf ({exc})") from None


def _cmd_train(args: argparse.Namespace) -> int:
    """Train into a new (or empty) run directory, or into a non-empty one with --overwrite, or continue the
    checkpointed run of --resume RUN_DIR with its own config (docs/training.md#checkpoints-and-resume)."""
    from pgolf.options import resolve_config
    from pgolf.train.trainer import TrainingInterrupted, train

    if args.resume is not None:
        (cfg, run_dir), existing = _resumed_config(args), "resume"
    else:
        cfg = resolve_config(args.preset or args.default_preset, budget_sets(args))
        run_dir = _out_dir(args.run_dir or Path("runs") / f"{cfg.preset}-seed{cfg.train.seed}", "run directory")
        existing = "overwrite" if args.overwrite else "refuse"
    try:
        result = train(cfg, args.data, run_dir, existing=existing)
    except TrainingInterrupted as exc:  # a checkpoint was written: not an error, but not a finished run either
        print(f"pgolf: {exc}", file=sys.stderr)
        return 128 + exc.signum
    if result is not None:
        _print_result(run_dir, result)
    return 0


def _print_result(run_dir: str | Path, result: dict) -> None:
    print(f"val_bpb: {result['val_bpb']:.8f}  val_loss: {result['val_loss']:.8f}")
    print(f"total_bytes: {result['total_bytes']} (artifact {result['artifact_bytes']} + code {result['code_bytes']}; "
          f"cap {result['cap_bytes']})")
    print(f"run directory: {run_dir}")


def _cmd_run(args: argparse.Namespace) -> int:
    from pgolf.data.build import build_demo
    from pgolf.data.manifest import MANIFEST, check_data_dir

    data_dir = _out_dir(args.data, "data directory")
    try:
        check_data_dir(data_dir)
        print(f"using demo data in {data_dir}")
    except PgolfError:
        if (data_dir / MANIFEST).exists() and not (data_dir / "demo_docs.jsonl").exists():
            raise  # someone's own data directory, damaged: never overwrite it with the demo
        print(f"building the offline demo corpus in {data_dir}")
        build_demo(data_dir, progress=not args.quiet)
    if not any(s.split("=", 1)[0].strip() == "train.threads" for s in args.set or []):
        from pgolf.train.pool import cpu_threads

        threads, why = cpu_threads(0)  # the demo must learn on a busy laptop too: one thread per free core
        args.set = [*(args.set or []), f"train.threads={threads}"]
        print(f"threads: {threads} ({why}; --set train.threads=N to choose)")
    return _train_and_report(args, data_dir, "demo")


def _cmd_ablate(args: argparse.Namespace) -> int:
    from pgolf.train.ablate import ablate

    toggles = [t.strip() for t in args.toggle.split(",") if t.strip()]
    out = _out_dir(args.run_dir or Path("runs") / f"ablate-{Path(args.preset).stem}", "run directory")
    print(ablate(args.preset, toggles, args.data, out, sets=budget_sets(args), workers=args.workers,
                 nproc_per_node=args.nproc_per_node))
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    from pgolf.config_sources import preset_names
    from pgolf.config_docs import preset_description

    names = preset_names()
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  {preset_description(name)}")
    return 0


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _cmd_config_show(args: argparse.Namespace) -> int:
    """Every setting as `section.field = value  # doc`: valid TOML, so the output is itself a preset."""
    from pgolf.config_docs import describe_config
    from pgolf.options import resolve_config

    cfg = resolve_config(args.preset, args.set)
    print(f"# preset {cfg.preset} (defaults, then the preset, then PGOLF_<SECTION>_<FIELD> variables, then --set)")
    rows = [(f"{key} = {_toml_value(value)}", doc) for key, value, doc in describe_config(cfg)]
    width = min(48, max(len(text) for text, _ in rows))
    for text, doc in rows:
        print(f"{text:<{width}}  # {doc}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from pgolf.data.val_split import describe as describe_split
    from pgolf.runtime import launch_env
    from pgolf.eval.evaluate import score_artifact
    from pgolf.runtime import init_distributed

    ctx = init_distributed(launch_env(), args.device, "--device")
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        result = score_artifact(args.artifact, args.data, mode=args.mode, seq_len=args.seq_len or 0,
                                batch_tokens=args.batch_tokens or 0, device=ctx.device, ctx=ctx,
                                stride=args.stride or 0, max_seconds=args.max_seconds,
                                max_tokens=args.max_tokens or 0, overrides=args.set, progress=True)
    finally:
        ctx.shutdown()
    if ctx.is_main:
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(f"val_loss:{result['val_loss']:.8f} val_bpb:{result['val_bpb']:.8f} "
                  f"tokens:{result['val_tokens']} bytes:{result['val_bytes']}")
            print(f"mode: {result['mode']} seq_len:{result['seq_len']}"
                  + (f" stride:{result['stride']}" if "stride" in result else "")
                  + (" (first --max-tokens of val only: not a score)" if result.get("full_val") is False else "")
                  + f" scoring:{result['phases'].get('scoring', 0.0):.2f}s")
            print(f"total_bytes: {result['total_bytes']} (artifact {result['artifact_bytes']} + "
                  f"code {result['code_bytes']})")
            print(describe_split(result["val_split"]))
            if result.get("no_op"):
                print(f"warning: {result['no_op']}")
    return 0


def _cmd_legality(args: argparse.Namespace) -> int:
    import torch

    from pgolf.eval.legality import check_artifact

    if args.threads:
        torch.set_num_threads(args.threads)
    report = check_artifact(args.artifact, args.data, mode=args.mode, tokens=args.tokens, seq_len=args.seq_len or 0,
                            stride=args.stride or 0, batch_tokens=args.batch_tokens, perturbations=args.perturbations,
                            tolerance=args.tolerance, device=torch.device(args.device), seed=args.seed)
    print(report.table())
    return 0 if report.passed else 1


def _cmd_bench(args: argparse.Namespace) -> int:
    """Speed of a preset on this machine, synthetic tokens (pgolf/train/bench.py)."""
    import torch

    from pgolf.options import resolve_config
    from pgolf.train.bench import format_result, run_bench, write_outputs

    cfg = resolve_config(args.preset, args.set)
    if args.json is not None and args.json != Path("-"):
        refuse_existing([args.json], args.overwrite)  # before minutes of measuring, not after
    if args.steps < 1 or args.warmup < 1 or args.eval_tokens < 0:
        raise PgolfError("bench: --steps and --warmup must be at least 1 and --eval-tokens at least 0")
    if args.no_train and args.eval_tokens == 0:
        raise PgolfError("bench: --no-train with --eval-tokens 0 leaves nothing to measure")
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    result = run_bench(cfg, device=device, steps=args.steps, warmup=args.warmup, eval_tokens=args.eval_tokens,
                       ttt=not args.no_ttt, train=not args.no_train)
    to_stdout = args.json == Path("-")  # --json alone: the JSON instead of the table
    write_outputs(result, None if to_stdout else args.json, args.markdown)
    print(json.dumps(result) if to_stdout else format_result(result))
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from pgolf.artifact.format import describe_artifact, format_inspect_table, load_artifact

    rows = describe_artifact(args.artifact)
    if args.json:
        header = load_artifact(args.artifact).header
        print(json.dumps({"tensors": rows, "config": header.get("config"), "tokenizer": header.get("tokenizer"),
                          "meta": header.get("meta")}, indent=2))
    else:
        print(format_inspect_table(rows))
    return 0


def _cmd_bundle(args: argparse.Namespace) -> int:
    from pgolf.bundle.build import write_bundle

    refuse_existing([args.out], args.overwrite)
    bundle = write_bundle(args.preset, args.out)
    print(bundle.report(args.out))
    print(f"run it: python {args.out} --data DIR [pgolf train options]")
    return 0


def _add_config_options(p: argparse.ArgumentParser, default_preset: str | None) -> None:
    """--preset (required when there is no default) and --set."""
    if default_preset is None:
        p.add_argument("--preset", required=True, help="preset name (pgolf presets) or TOML path")
    else:
        p.add_argument("--preset", default=default_preset,
                       help=f"preset name (pgolf presets) or TOML path (default {default_preset})")
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="override a config field (pgolf config show lists them)")


def _add_budget_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-steps", type=positive, help="stop after N steps (sets train.iterations)")
    p.add_argument("--max-seconds", type=seconds,
                   help="bound the whole command (warm-up, training, calibration, export, scoring) to about N s: "
                        "training stops at 75%% of it (sets train.max_total_seconds; 0 = no bound and no training "
                        "cap)")
    p.add_argument("--run-dir", type=Path, help="where config.json, logs, artifact and result.json go")


def _add_train_options(p: argparse.ArgumentParser, default_preset: str) -> None:
    _add_config_options(p, default_preset)
    _add_budget_options(p)
    p.add_argument("--seed", type=count, help="random seed (sets train.seed)")


def _add_data_option(p: argparse.ArgumentParser, default: Path | None = None, old: str | None = None) -> None:
    """--data DIR, the data directory of every command (`old`: a former spelling still accepted, not listed)."""
    if default is None:
        p.add_argument("--data", type=Path, required=True, help="data directory (with manifest.json)")
    else:
        p.add_argument("--data", type=Path, default=default, help=f"data directory (default {default})")
    if old:
        p.add_argument(old, dest="data", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _add_train_command(p: argparse.ArgumentParser, default_preset: str) -> None:
    _add_data_option(p)
    _add_train_options(p, default_preset)
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--resume", type=Path, metavar="RUN_DIR",
                          help="continue the run in RUN_DIR from its last checkpoint, with its own config")
    existing.add_argument("--overwrite", action="store_true",
                          help="train into a non-empty run directory, replacing the earlier run's outputs")
    # preset None: --resume can tell whether --preset was given; a fresh run falls back to default_preset
    p.set_defaults(func=_cmd_train, preset=None, default_preset=default_preset)


def train_main(argv: list[str] | None = None, *, preset: str = "baseline", prog: str = "train_gpt.py") -> int:
    """`pgolf train` alone, with `preset` as the default: the entry point of a train_gpt.py bundle, which thereby
    carries no code for the other commands. With no arguments it runs the official way: settings from the official
    environment variables (`pgolf.official_env`), the data folder adopted as `pgolf data import` would."""
    parser = _Parser(prog=prog, description=f"Train the {preset} preset (pgolf train). With no arguments: the "
                     "official way, settings from DATA_PATH, TOKENIZER_PATH, RUN_ID, SEED, ITERATIONS, ...")
    _add_train_command(parser, preset)
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        try:
            argv = _official_argv(prog)
        except PgolfError as exc:
            print(f"pgolf: error: {exc}", file=sys.stderr)
            return 2
    return _run(parser, argv)


def _official_argv(prog: str) -> list[str]:
    """The train arguments an official-style run (no arguments, settings in the environment) stands for. As the
    official script: the log is `logs/RUN_ID.txt` (RUN_ID defaults to a fresh UUID), a link to the run directory
    `logs/RUN_ID/`'s log.txt beside the artifact and result, and the data folder is only read: its manifest,
    tokenizer copy and shard links go into a data view in the user's cache (`pgolf.data.importer.view_dir`)."""
    import uuid

    from pgolf.data.importer import import_data_dir, view_dir
    from pgolf.official_env import official_run

    run = official_run()
    view = view_dir(run.data)
    # official folders carry no manifest; the leak scan is `pgolf data verify`'s, not every submission run's
    import_data_dir(run.data, run.tokenizer, progress=False, reuse=True, overlap=False, into=view)
    run_id = run.run_id or str(uuid.uuid4())
    run_dir, log = Path("logs") / run_id, Path("logs") / f"{run_id}.txt"
    if not (log.exists() or log.is_symlink()):
        log.parent.mkdir(parents=True, exist_ok=True)
        log.symlink_to(Path(run_id) / "log.txt")
    print(f"{prog}: official environment: data {run.data} (read only; manifest in {view})"
          + (f", tokenizer {run.tokenizer}" if run.tokenizer else "")
          + (f", settings {' '.join(run.sets)}" if run.sets else "") + f"; log {log}", file=sys.stderr)
    return ["--data", str(view), *(f"--set={s}" for s in run.sets), "--run-dir", str(run_dir)]


def build_parser() -> argparse.ArgumentParser:
    from pgolf import __version__

    parser = _Parser(prog="pgolf", description="Parameter Golf: data, training, artifacts, scores.")
    parser.add_argument("--version", action="version", version=f"pgolf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    from pgolf.data.commands import DEMO_DATA, add_commands as add_data_commands

    add_data_commands(sub)  # the `data` commands (pgolf/data/commands.py), imported here: not in a bundle

    p = sub.add_parser("train", help="train a preset under the wall clock, write the artifact and its score")
    _add_train_command(p, "baseline")

    p = sub.add_parser("run", help="the whole pipeline on the offline demo corpus, CPU-sized")
    _add_data_option(p, DEMO_DATA, old="--data-dir")
    p.add_argument("--quiet", action="store_true", help="no progress bars while building the demo corpus")
    p.add_argument("--overwrite", action="store_true",
                   help="with --run-dir: replace the run already there (without --run-dir each run gets a fresh "
                        "directory: runs/demo, runs/demo-2, ...)")
    _add_train_options(p, "cpu-smoke")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("ablate", help="train a preset and each listed technique flipped; write a markdown table")
    _add_config_options(p, None)
    p.add_argument("--toggle", required=True, help="comma-separated techniques, e.g. xsa,ema,recurrence")
    _add_data_option(p)
    _add_budget_options(p)
    p.add_argument("--out", dest="run_dir", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--workers", type=positive, default=1,
                   help="variants at once, each a pgolf train process on its own GPU(s) or cores (default 1)")
    p.add_argument("--nproc-per-node", type=positive, default=1, help="GPUs per variant, under torchrun (default 1)")
    p.set_defaults(func=_cmd_ablate)

    sub.add_parser("presets", help="list the shipped presets").set_defaults(func=_cmd_presets)

    config = sub.add_parser("config", help="show settings").add_subparsers(dest="config_command", required=True)
    p = config.add_parser("show", help="every setting of a preset after overrides, with a one-line doc each")
    _add_config_options(p, "baseline")
    p.set_defaults(func=_cmd_config_show)

    p = sub.add_parser("eval", help="score an artifact file on a data directory's val split")
    p.add_argument("artifact", type=Path, help="an artifact file (artifact.pgolf of a run)")
    _add_data_option(p)
    p.add_argument("--mode", choices=EVAL_MODES,
                   help="default: the artifact's eval.mode; sliding and doc take --stride")
    p.add_argument("--seq-len", type=positive, help="default: the artifact's eval/train sequence length")
    p.add_argument("--stride", type=positive, help="sliding/doc window stride (default: 64, capped at seq-len)")
    p.add_argument("--max-seconds", type=seconds, help="fail if scoring takes longer (default: eval.max_seconds)")
    p.add_argument("--max-tokens", type=positive, help="score only the first N val tokens (not a score)")
    p.add_argument("--set", action="append", metavar="eval.FIELD=VALUE",
                   help="override an eval or ttt setting of the artifact's config (e.g. ttt.lr=0.005)")
    p.add_argument("--batch-tokens", type=positive, help="tokens per scoring batch (default: eval.batch_tokens)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where to score (default auto: CUDA when present)")
    p.add_argument("--threads", type=positive, help="CPU threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("legality", help="check an eval mode against C1-C4 (issue #1017) on a slice of val")
    p.add_argument("artifact", type=Path, help="an artifact file (artifact.pgolf of a run)")
    _add_data_option(p)
    p.add_argument("--mode", required=True,
                   help=f"an eval mode ({', '.join(EVAL_MODES)}) or a fixture of pgolf/eval/fixtures.py")
    p.add_argument("--tokens", type=positive, default=4096, help="val tokens checked (from the start of val)")
    p.add_argument("--seq-len", type=positive, help="default: the artifact's eval/train sequence length")
    p.add_argument("--stride", type=positive, help="sliding/doc window stride (default: the artifact's)")
    p.add_argument("--batch-tokens", type=positive, default=16_384, help="tokens per scoring batch (default 16,384)")
    p.add_argument("--perturbations", type=positive, default=8, help="tokens changed, one per rerun, for C1")
    p.add_argument("--tolerance", type=number(float, 0.0, "a number >= 0"), default=1e-4,
                   help="largest numerical difference that counts as none (C1's changed log-probs, C2's "
                        "normalisation; default 1e-4)")
    p.add_argument("--seed", type=count, default=0, help="seed of the perturbed positions and tokens (default 0)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to run the mode (default cpu)")
    p.add_argument("--threads", type=positive, help="CPU threads (default: torch's)")
    p.set_defaults(func=_cmd_legality)

    p = sub.add_parser("bench", help="step time, tokens/s, MFU, memory, eval and TTT tokens/s of a preset here")
    p.add_argument("--preset", required=True, help="preset name (pgolf presets) or TOML path")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field (pgolf config show lists them)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=3, help="untimed first steps (compilation)")
    p.add_argument("--eval-tokens", type=int, default=65_536,
                   help="synthetic val tokens to score (0: no eval, training only)")
    p.add_argument("--no-train", action="store_true",
                   help="skip the training stage: only the eval/TTT throughput (its own stage, its own timeout)")
    p.add_argument("--no-ttt", action="store_true", help="skip the TTT eval timing")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where to measure (default auto: CUDA when present)")
    p.add_argument("--json", type=Path, nargs="?", const="-", metavar="FILE",
                   help="the result as JSON: on stdout instead of the table, or written to FILE")
    p.add_argument("--markdown", type=Path, help="append one table row to this file (docs/BENCHMARKS.md)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json FILE")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("inspect", help="list an artifact's tensors, schemes and bytes")
    p.add_argument("artifact", type=Path, help="an artifact file (artifact.pgolf of a run)")
    p.add_argument("--json", action="store_true", help="the tensors, config, tokenizer and meta as JSON")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("bundle", help="write one self-extracting train_gpt.py for a preset (its size is code_bytes)")
    p.add_argument("--preset", required=True, help="preset name or TOML path baked in as the default")
    p.add_argument("--out", type=Path, required=True, help="the file to write, e.g. train_gpt.py")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=_cmd_bundle)

    from pgolf.submit.commands import add_commands
    add_commands(sub)
    from pgolf.sweep.commands import add_commands as add_sweep_commands
    add_sweep_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return _run(build_parser(), argv)


def _run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse and run a command; user errors (a bad command line included) become one `pgolf: error:` line and
    exit code 2."""
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except PgolfError as exc:
        print(f"pgolf: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`pgolf config show | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"pgolf: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pgolf: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:  # a collective whose peer rank died, outside DistContext (DDP, Muon): one line
        if "torch.distributed" not in sys.modules:
            raise  # no process group in this process: a bug, keep the traceback
        from pgolf.runtime import collective_failure

        failure = collective_failure(exc)
        if failure is None:
            raise  # a bug: keep the traceback
        print(f"pgolf: error: {failure}", file=sys.stderr)
        return 2
