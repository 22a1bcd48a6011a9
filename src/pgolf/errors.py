"""The one exception type for bad input.

Library code raises `PgolfError` for anything a user caused (a missing file, a corrupt shard, a bad option). The CLI
catches it and prints a single line on stderr with a non-zero exit code, never a traceback.
"""

from pgolf import IN_BUNDLE


class PgolfError(Exception):
    """A user-facing error: the message is one line that names the file or option and the problem."""


def choose(registry: dict, key, what: str):
    """`registry[key]`, or one PgolfError naming what is available. A preset's `train_gpt.py` bundle keeps only
    the registry entries its preset selects (`pgolf.submit.bundle.CHOICES`), and the message says so there."""
    try:
        return registry[key]
    except (KeyError, TypeError):
        pass
    note = ("; this train_gpt.py bundle carries only its preset's choices: rebuild it with `pgolf bundle`"
            if IN_BUNDLE else "")
    raise PgolfError(f"unknown {what} {key!r} (available: {', '.join(sorted(registry))}{note})")
