"""The one exception type for bad input.

Library code raises `PgolfError` for anything a user caused (a missing file, a corrupt shard, a bad option). The CLI
catches it and prints a single line on stderr with a non-zero exit code, never a traceback.
"""


class PgolfError(Exception):
    """A user-facing error: the message is one line that names the file or option and the problem."""


def choose(registry: dict, key, what: str):
    """`registry[key]`, or one PgolfError naming what is available."""
    try:
        return registry[key]
    except (KeyError, TypeError):  # TypeError: an unhashable key
        raise PgolfError(f"unknown {what} {key!r} (available: {', '.join(sorted(registry))})") from None
