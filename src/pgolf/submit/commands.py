"""The submission commands of `pgolf` (multi-seed runs, statistics, packing and verifying a records folder, plots,
comparisons, leaderboard), registered on the CLI from here so that `pgolf/cli.py` keeps one line for all of them.

The subparsers inherit `pgolf.cli`'s parser class, so a bad command line is one `pgolf: error:` line and exit 2,
like a `PgolfError` raised here (docs/submission.md documents every command).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pgolf.cli_args import budget_sets, number, positive
from pgolf.errors import PgolfError


def _seed_list(text: str) -> list[int]:
    seeds = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise argparse.ArgumentTypeError(f"expected comma-separated seeds (integers >= 0), got {text!r}")
        seeds.append(int(part))
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"a seed is listed twice in {text!r}")
    return seeds


# ---------------------------------------------------------------------------------------------- stats
def _stats_of(args: argparse.Namespace):
    from pgolf.submit.runs import load_runs
    from pgolf.submit.stats import Sample, compute_stats

    sota_given = [v is not None for v in (args.sota_bpb, args.sota_std, args.sota_n)]
    sota = None
    if any(sota_given):
        if not all(sota_given):
            raise PgolfError("stats: a published score needs all of --sota-bpb, --sota-std and --sota-n")
        sota = Sample(args.sota_bpb, args.sota_std, args.sota_n)
    runs = load_runs(args.runs)
    against = load_runs(args.against) if args.against else None
    return compute_stats(runs, against, sota, margin_nats=args.margin, alpha=args.alpha)


def _cmd_stats(args: argparse.Namespace) -> int:
    stats = _stats_of(args)
    print(json.dumps(stats.to_dict(), indent=2) if args.json else stats.markdown())
    return 0


def _add_stats_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--against", nargs="+", metavar="RUN", help="the baseline's runs (run directories or logs)")
    p.add_argument("--sota-bpb", type=number(float, 0.0, "a BPB > 0", strict=True), help="a published mean val_bpb")
    p.add_argument("--sota-std", type=number(float, 0.0, "a standard deviation >= 0"), help="its sample std (BPB)")
    p.add_argument("--sota-n", type=positive, help="its number of seeds")
    p.add_argument("--margin", type=number(float, 0.0, "nats >= 0"), default=0.005,
                   help="required improvement in nats per token (default 0.005)")
    p.add_argument("--alpha", type=number(float, 0.0, "a p-value threshold in (0, 1)", strict=True), default=0.01,
                   help="significance level (default 0.01)")
    p.add_argument("--json", action="store_true", help="JSON instead of markdown")


# ---------------------------------------------------------------------------------------------- pack
def _cmd_pack(args: argparse.Namespace) -> int:
    from pgolf.submit.pack import pack

    sub, warnings = pack(args.runs, args.out, preset=args.preset, name=args.name, author=args.author,
                         github_id=args.github_id, blurb=args.blurb, date=args.date, hardware=args.hardware,
                         track=args.track, legality=args.legality, non_record=args.non_record)
    std = sub["val_bpb_std"]
    print(f"wrote {args.out}: {len(sub['seeds'])} seed(s), val_bpb {sub['val_bpb']:.8f}"
          + (f" (std {std:.8f})" if std is not None else "")
          + f", bytes_total {sub['bytes_total']:,} (code {sub['bytes_code']:,}; cap 16,000,000)")
    for line in warnings:
        print(f"warning: {line}")
    return 0


# ---------------------------------------------------------------------------------------------- verify
VERIFY_FAILED = 1  # `pgolf verify`'s exit code for a folder that was read but failed a check (bad input: 2)


def _cmd_verify(args: argparse.Namespace) -> int:
    from pgolf.submit.verify import verify_folder

    eval_args = ["--device", args.device] + (["--threads", str(args.threads)] if args.threads else [])
    report = verify_folder(args.folder, data=args.data, tolerance=args.tolerance, run=args.run,
                           run_tolerance=args.run_tolerance, eval_args=eval_args)
    print(report.table())
    for check in report.failures:
        print(f"pgolf: verify: FAIL {check.name}: {check.detail}", file=sys.stderr)
    return 0 if report.passed else VERIFY_FAILED


# ---------------------------------------------------------------------------------------------- seeds
def _cmd_seeds(args: argparse.Namespace) -> int:
    from pgolf.submit.seeds import run_seeds

    dirs = run_seeds(args.preset, args.seeds, budget_sets(args), args.data, args.out,
                     echo=sys.stderr if args.json else sys.stdout, workers=args.workers,
                     nproc_per_node=args.nproc_per_node)  # --json: stdout holds only the JSON
    args.runs = [str(d) for d in dirs]
    stats = _stats_of(args)
    if args.json:
        print(json.dumps(stats.to_dict(), indent=2))
    else:
        print(f"\n{len(dirs)} seed(s) of {args.preset} in {args.out}:\n")
        print(stats.markdown())
    return 0


# ---------------------------------------------------------------------------------------------- plot
def _figure_list(text: str) -> tuple[str, ...]:
    from pgolf.submit.plots import FIGURES

    names = tuple(part.strip() for part in text.split(",") if part.strip())
    bad = [n for n in names if n not in FIGURES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(FIGURES)}, got {text!r}")
    return names


def _cmd_plot(args: argparse.Namespace) -> int:
    from pgolf.submit.plots import FIGURES, make_plots

    written = make_plots(args.runs, args.out, args.figures or FIGURES, group_by=args.group_by,
                         overwrite=args.overwrite)
    for path in written:
        print(path)
    return 0


# ---------------------------------------------------------------------------------------------- compare
def _cmd_compare(args: argparse.Namespace) -> int:
    from pgolf.submit.compare import compare_markdown, compare_rows, compare_text
    from pgolf.submit.runs import load_runs

    rows = compare_rows(load_runs(args.runs))
    if args.sort:
        rows.sort(key=lambda r: r["val_bpb"])
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(compare_markdown(rows) if args.markdown else compare_text(rows))
    return 0


# ---------------------------------------------------------------------------------------------- leaderboard
def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from pgolf.fileio import atomic_write_text
    from pgolf.submit.leaderboard import build_leaderboard, leaderboard_markdown

    text = leaderboard_markdown(build_leaderboard(args.dirs, group_by=args.group_by), args.margin, args.alpha)
    if args.out is None:
        print(text, end="")
    else:
        atomic_write_text(args.out, text)
        print(args.out)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the submission subcommands to `pgolf`'s subparsers."""
    p = sub.add_parser("stats", help="per-seed scores, mean/std, and the 0.005-nat p < 0.01 test against a baseline")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (or train logs) of the candidate")
    _add_stats_options(p)
    p.set_defaults(func=_cmd_stats)

    p = sub.add_parser("pack", help="write a records folder (README, submission.json, logs, train_gpt.py, ...) "
                                    "from one run per seed")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="finished run directories, one per seed")
    p.add_argument("--out", type=Path, required=True, help="the folder to create (must not exist, or be empty)")
    p.add_argument("--preset", help="the preset train_gpt.py is bundled for (default: the runs' preset)")
    p.add_argument("--name", help="submission name (default: pgolf PRESET)")
    p.add_argument("--author", default="", help="submission.json author")
    p.add_argument("--github-id", default="", help="submission.json github_id")
    p.add_argument("--blurb", help="one-paragraph description (default: generated from the config)")
    p.add_argument("--date", help="submission date (default: today, UTC)")
    p.add_argument("--hardware", help='e.g. "8xH100 80GB SXM" (default: the runs\' world size and device)')
    p.add_argument("--track", help="records track (default track_10min_16mb; with --non-record "
                                   "track_non_record_16mb)")
    p.add_argument("--non-record", action="store_true",
                   help="the folder does not claim a record: scores on any val split are packed, marked so")
    p.add_argument("--legality", type=Path, help="the saved output of `pgolf legality` for the eval mode")
    p.set_defaults(func=_cmd_pack)

    p = sub.add_parser("verify", help="recount a records folder's bytes, times and scores against submission.json",
                       description="Recount a records folder's bytes, times and scores against its submission.json. "
                                   f"Exit code: 0 verified, {VERIFY_FAILED} a check failed, 2 bad input (a bad "
                                   "command line, no such folder, a missing or unreadable submission.json).")
    p.add_argument("folder", type=Path, help="a records folder (pgolf pack)")
    p.add_argument("--data", type=Path, help="also re-score each artifact on this data directory, in a fresh process")
    p.add_argument("--tolerance", type=number(float, 0.0, "a BPB tolerance >= 0"), default=1e-5,
                   help="largest accepted |re-scored - claimed| val_bpb (default 1e-5)")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"), help="device of the re-score")
    p.add_argument("--threads", type=positive, help="CPU threads of the re-score")
    p.add_argument("--run", action="store_true",
                   help="also execute the folder's train_gpt.py for every seed (needs --data) and compare scores")
    p.add_argument("--run-tolerance", type=number(float, 0.0, "a BPB tolerance >= 0"), default=0.005,
                   help="largest accepted |retrained - claimed| val_bpb with --run (default 0.005)")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("seeds", help="train a preset once per seed (OUT/seedS, one after another), then pgolf stats")
    p.add_argument("--preset", required=True, help="preset name (pgolf presets) or TOML path")
    p.add_argument("--seeds", type=_seed_list, required=True, help="comma-separated, e.g. 1337,42,2025")
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="override a config field for every seed (pgolf config show lists them)")
    p.add_argument("--max-steps", type=positive, help="stop after N steps (sets train.iterations)")
    p.add_argument("--max-seconds", type=number(float, 0.0, "a number of seconds >= 0 (0 = no limit)"),
                   help="bound each seed's whole run to about N s, as pgolf train (sets train.max_total_seconds; 0 = "
                        "no bound and no training cap)")
    p.add_argument("--data", type=Path, required=True, help="data directory (with manifest.json)")
    p.add_argument("--out", type=Path, required=True, help="parent of the run directories seedS")
    p.add_argument("--workers", type=positive, default=1,
                   help="seeds at once, each a pgolf train process on its own GPU(s) or cores (default 1)")
    p.add_argument("--nproc-per-node", type=positive, default=1, help="GPUs per seed, under torchrun (default 1)")
    _add_stats_options(p)
    p.set_defaults(func=_cmd_seeds)

    p = sub.add_parser("plot", help="PNG figures of runs: training curves, artifact bytes per tensor group, "
                                    "ablation bars with seed error bars")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="finished run directories (or train logs)")
    p.add_argument("--out", type=Path, required=True, help="folder for curves.png, bytes.png, ablation.png")
    p.add_argument("--overwrite", action="store_true", help="replace figures already in --out")
    p.add_argument("--figures", type=_figure_list, help="comma-separated subset of curves,bytes,ablation (default all)")
    p.add_argument("--group-by", choices=("config", "preset"), default="config",
                   help="ablation bars: one per config up to the seed (default), or per preset name")
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser("compare", help="a table of runs (preset, seed, steps, train s, val_bpb, bytes, eval mode), "
                                       "the best marked")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="finished run directories (or train logs)")
    p.add_argument("--markdown", action="store_true", help="a markdown table instead of aligned text")
    p.add_argument("--json", action="store_true", help="JSON rows instead of a table")
    p.add_argument("--sort", action="store_true", help="best val_bpb first (default: the order given)")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("leaderboard", help="a markdown leaderboard of configurations and records folders by mean "
                                           "val_bpb, with the significance rule against the row above")
    p.add_argument("dirs", nargs="+", metavar="DIR",
                   help="run directories, records folders (pgolf pack), or folders holding them")
    p.add_argument("--out", type=Path, help="write the markdown here (default: print it)")
    p.add_argument("--group-by", choices=("config", "preset"), default="config",
                   help="group runs by config up to the seed (default), or by preset name")
    p.add_argument("--margin", type=number(float, 0.0, "nats >= 0"), default=0.005,
                   help="required improvement in nats per token (default 0.005)")
    p.add_argument("--alpha", type=number(float, 0.0, "a p-value threshold in (0, 1)", strict=True), default=0.01,
                   help="significance level (default 0.01)")
    p.set_defaults(func=_cmd_leaderboard)
