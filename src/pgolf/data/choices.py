"""The data stage's named choices, importable without torch: the training loaders (`train.loader`) and the one rule
that ties a loader to the sequence-length schedule.

`pgolf.options` checks a config against them before anything imports torch (`pgolf config show`, a mistyped `--set`:
well under a second). `loader` keeps the registry of implementations (`loader.LOADERS`, name -> factory) and
imports `check_loader_schedule` from here; tests/test_options.py asserts that `LOADER_NAMES` lists exactly the
registry's names, in its order, so they cannot drift apart.
"""

from __future__ import annotations

from pgolf.errors import PgolfError

LOADER_NAMES = ("sequential", "shuffled", "packed")  # `train.loader`: the keys of loader.LOADERS


def check_loader_schedule(loader: str, seq_len_schedule: str) -> None:
    """The shuffled loader cuts fixed windows at train_seq_len, so it cannot follow a sequence-length schedule."""
    if loader == "shuffled" and seq_len_schedule:
        raise PgolfError("config: the shuffled loader cuts fixed windows; it cannot follow train.seq_len_schedule")
