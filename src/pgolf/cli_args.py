"""argparse pieces every command module shares (`pgolf.cli`, `pgolf.data.commands`, `pgolf.submit.commands`,
`pgolf.sweep.commands`): number types that refuse a bad value with one line, and the `--set` overrides the budget
flags stand for."""

from __future__ import annotations

import argparse


def number(cast, lowest: float, what: str, *, below: float | None = None, strict: bool = False):
    """An argparse type: `cast(text)`, refused with one line ("expected WHAT, got 'TEXT'") unless it is at least
    `lowest` (above it when `strict`) and, with `below`, under that; NaN never passes."""
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (value > lowest if strict else value >= lowest) or (below is not None and not value < below):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


positive = number(int, 1, "a positive integer")
count = number(int, 0, "an integer >= 0")
seconds = number(float, 0.0, "a number of seconds >= 0 (0 = no limit)")


def budget_sets(args: argparse.Namespace) -> list[str]:
    """`--set` overrides plus the ones the budget flags (and --seed, where the command has it) stand for:
    --max-steps is train.iterations, --max-seconds bounds the whole run (train.max_total_seconds; 0 also lifts the
    training clock's cap)."""
    sets = list(args.set or [])
    for flag, key in (("max_steps", "iterations"), ("max_seconds", "max_total_seconds"), ("seed", "seed")):
        if getattr(args, flag, None) is not None:
            sets.append(f"train.{key}={getattr(args, flag)}")
    if getattr(args, "max_seconds", None) == 0:  # no bound at all: the training clock's cap goes too
        sets.append("train.max_wallclock_seconds=0")
    return sets
