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


def require(module: str, purpose: str, package: str | None = None):
    """`import module`, or one PgolfError naming what needs it and the pip package that brings it.

    The compression libraries (brotli, zstandard, constriction) are imported where an artifact is first written or
    read, not when pgolf is: the model, the trainer and the evaluator then import on a machine that lacks them (the
    offline GPU machine's image, benchmarks/gpu_image.txt), and only the step that needs one says so."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise PgolfError(f"{purpose} needs the '{package or module}' package, which is not installed "
                         f"(pip install {package or module})") from None
