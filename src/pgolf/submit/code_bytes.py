"""Code bytes: the part of the 16,000,000-byte cap spent on code (CHALLENGE.md 3.1, 3.5).

Until the single-file `train_gpt.py` bundle exists, the counted code is the pgolf package itself: every `.py` and
`.toml` file under `src/pgolf`, in sorted path order, each preceded by its relative path and length, compressed with
zlib level 9. This mirrors the records' accepted convention of counting compressed source (PR #1530 onward) and is
deterministic, so the same checkout always counts the same number of bytes. result.json names the method.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import pgolf

METHOD = "zlib-9 of the pgolf package sources (*.py, *.toml under src/pgolf), until the single-file bundle exists"


def package_source_files() -> list[Path]:
    """The source files that count as code, in a fixed order."""
    root = Path(pgolf.__file__).resolve().parent
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix in (".py", ".toml") and "__pycache__" not in p.parts]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def package_code_bytes() -> int:
    """Compressed size of the package sources, the run's `code_bytes`."""
    root = Path(pgolf.__file__).resolve().parent
    blob = bytearray()
    for path in package_source_files():
        data = path.read_bytes()
        blob += f"{path.relative_to(root).as_posix()}\n{len(data)}\n".encode() + data
    return len(zlib.compress(bytes(blob), 9))
