"""The submission commands of `pgolf` (multi-seed runs, statistics, packing and verifying a records folder, plots,
comparisons, leaderboard), registered on the CLI from here so that `pgolf/cli.py` keeps one line for all of them."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the submission subcommands to `pgolf`'s subparsers."""
