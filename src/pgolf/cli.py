"""The `pgolf` command: thin argparse subcommands that parse, call one library function, and print.

Every error caused by input (`PgolfError`, or an OS error on a named file) becomes one line on stderr and a
non-zero exit code; a traceback means a bug in pgolf.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pgolf.errors import PgolfError
from pgolf.eval.names import EVAL_MODES

DEFAULT_DEMO_DATA = Path("data/demo")


def _cmd_data_demo(args: argparse.Namespace) -> int:
    from pgolf.data.build import build_demo

    manifest = build_demo(args.out, vocab_size=args.vocab_size, progress=not args.quiet)
    _print_manifest(args.out, manifest)
    return 0


def _cmd_data_build(args: argparse.Namespace) -> int:
    from pgolf.data.build import build_dataset

    if (args.tokenizer is None) == (args.vocab_size is None):
        raise PgolfError("data build: give exactly one of --tokenizer MODEL or --vocab-size N")
    manifest = build_dataset(args.docs, args.out, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                             val_docs=args.val_docs, workers=args.workers, shard_size=args.shard_size,
                             progress=not args.quiet, caseops=args.caseops)
    _print_manifest(args.out, manifest)
    return 0


def _cmd_data_fineweb(args: argparse.Namespace) -> int:
    from pgolf.data.build import manifest_from_shards
    from pgolf.data.hub import download_fineweb
    from pgolf.fileio import atomic_write_json

    result = download_fineweb(args.out, variant=args.variant, train_shards=args.train_shards, repo_id=args.repo_id,
                              remote_root=args.remote_root, with_docs=args.with_docs, progress=not args.quiet,
                              hub_dir=args.hub_dir)
    manifest = manifest_from_shards(result.dataset_dir, result.tokenizer_path)
    atomic_write_json(Path(result.dataset_dir) / "manifest.json", manifest)
    print(f"downloaded {len(result.files)} files ({result.skipped} already present)")
    _print_manifest(result.dataset_dir, manifest)
    return 0


def _print_manifest(out: str | Path, manifest: dict) -> None:
    tok = manifest["tokenizer"]
    print(f"data: {out} (tokenizer {tok['file']}, vocab {tok['vocab_size']})")
    for split in ("train", "val"):
        s = manifest["splits"][split]
        print(f"  {split}: {s['docs']} docs, {s['tokens']} tokens, {s['bytes']} bytes, {len(s['files'])} shard(s)")


def _resolve(args: argparse.Namespace):
    from pgolf.options import resolve_config

    sets = list(args.set or [])
    if args.max_steps is not None:
        sets.append(f"train.iterations={args.max_steps}")
    if args.max_seconds is not None:
        sets.append(f"train.max_wallclock_seconds={args.max_seconds}")
    if args.seed is not None:
        sets.append(f"train.seed={args.seed}")
    return resolve_config(args.preset, sets)


def _cmd_train(args: argparse.Namespace) -> int:
    from pgolf.train.trainer import train

    cfg = _resolve(args)
    run_dir = args.run_dir or Path("runs") / f"{cfg.preset}-seed{cfg.train.seed}"
    result = train(cfg, args.data, run_dir)
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
    from pgolf.data.manifest import check_data_dir
    from pgolf.train.trainer import train

    data_dir = Path(args.data_dir)
    try:
        check_data_dir(data_dir)
        print(f"using demo data in {data_dir}")
    except PgolfError:
        print(f"building the offline demo corpus in {data_dir}")
        build_demo(data_dir, progress=not args.quiet)
    cfg = _resolve(args)
    run_dir = args.run_dir or Path("runs") / "demo"
    result = train(cfg, data_dir, run_dir)
    if result is not None:
        _print_result(run_dir, result)
    return 0


def _cmd_ablate(args: argparse.Namespace) -> int:
    from pgolf.train.ablate import ablate

    sets = list(args.set or [])
    if args.max_seconds is not None:
        sets.append(f"train.max_wallclock_seconds={args.max_seconds}")
    if args.max_steps is not None:
        sets.append(f"train.iterations={args.max_steps}")
    toggles = [t.strip() for t in args.toggle.split(",") if t.strip()]
    out = args.out or Path("runs") / f"ablate-{Path(args.preset).stem}"
    print(ablate(args.preset, toggles, args.data, out, sets=sets))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from pgolf.config import launch_env
    from pgolf.eval.evaluate import score_artifact
    from pgolf.runtime import init_distributed

    ctx = init_distributed(launch_env(), args.device)
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        result = score_artifact(args.artifact, args.data, mode=args.mode, seq_len=args.seq_len,
                                batch_tokens=args.batch_tokens, device=ctx.device, ctx=ctx, stride=args.stride,
                                max_seconds=args.max_seconds, max_tokens=args.max_tokens, overrides=args.set)
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
    return 0


def _cmd_legality(args: argparse.Namespace) -> int:
    import torch

    from pgolf.eval.legality import check_artifact

    if args.threads:
        torch.set_num_threads(args.threads)
    report = check_artifact(args.artifact, args.data, mode=args.mode, tokens=args.tokens, seq_len=args.seq_len,
                            stride=args.stride, batch_tokens=args.batch_tokens, perturbations=args.perturbations,
                            tolerance=args.tolerance, device=torch.device(args.device), seed=args.seed)
    print(report.table())
    return 0 if report.passed else 1


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
    from pgolf.submit.bundle import write_bundle

    bundle = write_bundle(args.preset, args.out)
    print(f"wrote {args.out}: {len(bundle.data)} bytes (preset {bundle.preset}, {len(bundle.modules)} modules, "
          f"{bundle.source_bytes} source bytes -> {bundle.minified_bytes} minified -> {bundle.codec}, base-251 literal)")
    print(f"run it: python {args.out} --data DIR [pgolf train options]")
    return 0


def _add_train_options(p: argparse.ArgumentParser, default_preset: str) -> None:
    p.add_argument("--preset", default=default_preset, help=f"preset name or TOML path (default {default_preset})")
    p.add_argument("--max-steps", type=int, help="stop after N steps (sets train.iterations)")
    p.add_argument("--max-seconds", type=float, help="wall-clock training cap in seconds")
    p.add_argument("--seed", type=int)
    p.add_argument("--run-dir", type=Path, help="where config.json, logs, artifact and result.json go")
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", help="override a config field")


def _add_train_command(p: argparse.ArgumentParser, default_preset: str) -> None:
    p.add_argument("--data", type=Path, required=True)
    _add_train_options(p, default_preset)
    p.set_defaults(func=_cmd_train)


def train_main(argv: list[str] | None = None, *, preset: str = "baseline", prog: str = "train_gpt.py") -> int:
    """`pgolf train` alone, with `preset` as the default: the entry point of a train_gpt.py bundle, which thereby
    carries no code for the other commands."""
    parser = argparse.ArgumentParser(prog=prog, description=f"Train the {preset} preset (pgolf train).")
    _add_train_command(parser, preset)
    return _run(parser.parse_args(argv))


def build_parser() -> argparse.ArgumentParser:
    from pgolf import __version__

    parser = argparse.ArgumentParser(prog="pgolf", description="Parameter Golf: data, training, artifacts, scores.")
    parser.add_argument("--version", action="version", version=f"pgolf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="prepare challenge-format data").add_subparsers(dest="data_command",
                                                                                       required=True)
    p = data.add_parser("demo", help="offline English corpus (Python's own docs) -> tokenizer + shards + manifest")
    p.add_argument("--out", type=Path, default=DEFAULT_DEMO_DATA)
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_data_demo)

    p = data.add_parser("build", help="documents -> tokenizer + shards + manifest")
    p.add_argument("--docs", type=Path, action="append", required=True, help=".jsonl[.gz|.xz], .txt or .parquet")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tokenizer", type=Path, help="an existing SentencePiece .model")
    p.add_argument("--vocab-size", type=int, help="train a tokenizer with the official settings")
    p.add_argument("--val-docs", type=int, default=50_000, help="the first N documents are the val split")
    p.add_argument("--workers", type=int, default=0, help="tokenizer processes (default: all cores)")
    p.add_argument("--shard-size", type=int, default=10**8, help="tokens per shard (official: 10^8)")
    p.add_argument("--caseops", action="store_true",
                   help="CaseOps: tokenize case-folded text with operator symbols, write the val byte sidecar")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_data_build)

    p = data.add_parser("fineweb", help="download the official cached export from the Hugging Face Hub")
    p.add_argument("--variant", default="sp1024")
    p.add_argument("--train-shards", type=int, default=80)
    p.add_argument("--out", type=Path, default=Path("data"))
    p.add_argument("--repo-id", default="willdepueoai/parameter-golf")
    p.add_argument("--remote-root", default="datasets")
    p.add_argument("--with-docs", action="store_true", help="also fetch docs_selected.jsonl and its sidecar")
    p.add_argument("--hub-dir", type=Path, help="a local mirror of the hub repository instead of the network")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_data_fineweb)

    p = sub.add_parser("train", help="train a preset under the wall clock, write the artifact and its score")
    _add_train_command(p, "baseline")

    p = sub.add_parser("run", help="the whole pipeline on the offline demo corpus, CPU-sized")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DEMO_DATA)
    p.add_argument("--quiet", action="store_true")
    _add_train_options(p, "cpu-smoke")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("ablate", help="train a preset and each listed technique flipped; write a markdown table")
    p.add_argument("--preset", required=True)
    p.add_argument("--toggle", required=True, help="comma-separated techniques, e.g. xsa,ema,recurrence")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, help="folder for the runs and ablation.md")
    p.add_argument("--max-seconds", type=float, help="the fixed training budget of every variant")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE")
    p.set_defaults(func=_cmd_ablate)

    p = sub.add_parser("eval", help="score an artifact file on a data directory's val split")
    p.add_argument("artifact", type=Path)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--mode", choices=EVAL_MODES,
                   help="default: the artifact's eval.mode; sliding and doc take --stride")
    p.add_argument("--seq-len", type=int, default=0, help="default: the artifact's eval/train sequence length")
    p.add_argument("--stride", type=int, default=0, help="sliding/doc window stride (default: 64, capped at seq-len)")
    p.add_argument("--max-seconds", type=float, help="fail if scoring takes longer (default: eval.max_seconds)")
    p.add_argument("--max-tokens", type=int, default=0, help="score only the first N val tokens (not a score)")
    p.add_argument("--set", action="append", metavar="eval.FIELD=VALUE",
                   help="override an eval setting of the artifact's config (e.g. eval.ttt_lr=0.005)")
    p.add_argument("--batch-tokens", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("legality", help="check an eval mode against C1-C4 (issue #1017) on a slice of val")
    p.add_argument("artifact", type=Path)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--mode", required=True, help="flat, sliding, doc, or a fixture of pgolf/eval/fixtures.py")
    p.add_argument("--tokens", type=int, default=4096, help="val tokens checked (from the start of val)")
    p.add_argument("--seq-len", type=int, default=0)
    p.add_argument("--stride", type=int, default=0)
    p.add_argument("--batch-tokens", type=int, default=16_384)
    p.add_argument("--perturbations", type=int, default=8, help="tokens changed, one per rerun, for C1")
    p.add_argument("--tolerance", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=_cmd_legality)

    p = sub.add_parser("inspect", help="list an artifact's tensors, schemes and bytes")
    p.add_argument("artifact", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("bundle", help="write one self-extracting train_gpt.py for a preset (its size is code_bytes)")
    p.add_argument("--preset", required=True, help="preset name or TOML path baked in as the default")
    p.add_argument("--out", type=Path, required=True, help="the file to write, e.g. train_gpt.py")
    p.set_defaults(func=_cmd_bundle)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "workers", None) == 0:
        args.workers = os.cpu_count() or 1
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Run a parsed command; user errors become one `pgolf: error:` line and a non-zero exit."""
    try:
        return args.func(args)
    except PgolfError as exc:
        print(f"pgolf: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"pgolf: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pgolf: interrupted", file=sys.stderr)
        return 130
