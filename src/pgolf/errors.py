"""The one exception type for bad input.

Library code raises `PgolfError` for anything a user caused (a missing file, a corrupt shard, a bad option). The CLI
catches it and prints a single line on stderr with a non-zero exit code, never a traceback.
"""


class PgolfError(Exception):
    """A user-facing error: the message is one line that names the file or option and the problem."""
