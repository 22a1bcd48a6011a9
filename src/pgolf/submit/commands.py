"""The submission commands of `pgolf` (multi-seed runs, statistics, packing and verifying a records folder, plots,
comparisons, leaderboard), registered on the CLI from here so that `pgolf/cli.py` keeps one line for all of them.

The subparsers inherit `pgolf.cli`'s parser class, so a bad command line is one `pgolf: error:` line and exit 2,
like a `PgolfError` raised here (docs/submission.md documents every command).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pgolf.errors import PgolfError


def _float(lowest: float, what: str, strict: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (value > lowest if strict else value >= lowest):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


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
    p.add_argument("--sota-bpb", type=_float(0.0, "a BPB > 0", strict=True), help="a published mean val_bpb")
    p.add_argument("--sota-std", type=_float(0.0, "a standard deviation >= 0"), help="its sample std (BPB)")
    p.add_argument("--sota-n", type=_positive_int, help="its number of seeds")
    p.add_argument("--margin", type=_float(0.0, "nats >= 0"), default=0.005,
                   help="required improvement in nats per token (default 0.005)")
    p.add_argument("--alpha", type=_float(0.0, "a p-value threshold in (0, 1)", strict=True), default=0.01,
                   help="significance level (default 0.01)")
    p.add_argument("--json", action="store_true", help="JSON instead of markdown")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the submission subcommands to `pgolf`'s subparsers."""
    p = sub.add_parser("stats", help="per-seed scores, mean/std, and the 0.005-nat p < 0.01 test against a baseline")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (or train logs) of the candidate")
    _add_stats_options(p)
    p.set_defaults(func=_cmd_stats)
