"""Atomic file output: nothing half-written is ever left looking whole.

Every output file is written to a temporary name in the same directory and renamed into place only when complete,
so an interrupted or failed write leaves either the old file or nothing.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from pgolf.errors import PgolfError


# Errors of writing itself (a full disk or quota, a file-size limit, a read-only or failing device): reported as one
# PgolfError naming the output, whatever wrote the bytes.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO}
# The ones that mean "the disk (or the quota) is full": freeing space is what the user can do about them.
NO_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


class WriteFailed(PgolfError):
    """Writing `path` failed for lack of space or a failing device (`errno`); nothing was left at `path` (an older
    file there is untouched) and the temporary file is gone. Callers that know what the file was for (a checkpoint)
    catch it to say what the user should do."""

    def __init__(self, path: Path, errno_: int | None, strerror: str) -> None:
        super().__init__(f"{path}: cannot write: {strerror}; nothing was written")
        self.path, self.errno, self.strerror = path, errno_, strerror


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on normal exit rename it to `path`, on error delete it.

    A folder that cannot be created or written to, and a write that fails for lack of space (ENOSPC, EFBIG, EDQUOT,
    EROFS, EIO), are a PgolfError naming `path`; the temporary file is gone and an older `path` is untouched."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise PgolfError(f"{path}: cannot create the output file: {exc.strerror or exc}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp_path, path)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            raise WriteFailed(path, exc.errno, exc.strerror or str(exc)) from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON (with a trailing newline) to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def refuse_existing(paths, overwrite: bool) -> None:
    """PgolfError naming the first of `paths` that exists, unless `overwrite`: a command never replaces what an
    earlier run wrote without being told (`--overwrite`)."""
    if overwrite:
        return
    for path in paths:
        if os.path.lexists(path):
            raise PgolfError(f"{path} exists: pass --overwrite to replace it")
