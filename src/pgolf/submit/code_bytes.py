"""Code bytes: the part of the 16,000,000-byte cap spent on code (CHALLENGE.md 3.1, 3.5).

The convention (the records' own, accepted from PR #1530 on and stated in the 04-16 README): the counted code is a
minified, compressed, self-extracting `train_gpt.py`. pgolf counts exactly the file `pgolf bundle` writes
(`pgolf.submit.bundle`: pyminify + raw LZMA2 or brotli in a base-251 literal, with only the modules training
needs):

- running FROM a bundle (`python train_gpt.py --data ...`), code bytes are the size of that running file;
- running from the package (`pgolf train --preset NAME`), code bytes are the size of the bundle this checkout
  builds for the run's preset. Bundling is deterministic, so `pgolf bundle --preset NAME` then writes a file of
  exactly that size. The bundle is built once per process and preset (a few seconds).

Fallback: with no preset given, or when no bundle can be built (a preset given only by a name whose TOML is not
shipped, python-minifier missing), the count is the older estimate, zlib-9 of every package source file, and
`code_bytes_method` says so.
"""

from __future__ import annotations

import functools
import zlib
from pathlib import Path

import pgolf
from pgolf import IN_BUNDLE
from pgolf.errors import PgolfError

METHOD = ("size of the self-extracting train_gpt.py bundle for the run's preset (pgolf bundle: pyminify + "
          "LZMA2/brotli in a base-251 literal; the running file when run from a bundle)")
FALLBACK_METHOD = "zlib-9 of the pgolf package sources (*.py, *.toml under src/pgolf); no bundle could be built"


def running_bundle() -> Path | None:
    """The `train_gpt.py` this process runs from, or None when pgolf is imported from the package.

    A bundle's in-memory loader carries the script path as `bundle_file` (see `pgolf.submit.selfextract`)."""
    spec = getattr(pgolf, "__spec__", None)
    path = getattr(getattr(spec, "loader", None), "bundle_file", None)
    return Path(path) if path else None


@functools.lru_cache(maxsize=None)
def bundle_code_bytes(preset: str) -> int:
    """Size of the bundle `pgolf bundle --preset PRESET` writes from this checkout (cached per process)."""
    from pgolf.submit.bundle import build_bundle

    return len(build_bundle(preset).data)


def _bundle_size(preset: str | None) -> int | None:
    if preset is None:
        return None
    try:
        return bundle_code_bytes(preset)
    except (PgolfError, ImportError):
        return None


def package_code_bytes(preset: str | None = None) -> int:
    """The run's `code_bytes`: the running bundle's size, else the size of the preset's bundle, else the
    fallback estimate (module docstring)."""
    if IN_BUNDLE:
        return running_bundle().stat().st_size  # stage 2 always records the file it runs from
    size = _bundle_size(preset)
    return size if size is not None else source_code_bytes()


def code_bytes_method(preset: str | None = None) -> str:
    """How `package_code_bytes(preset)` counted, for result.json and the log."""
    if IN_BUNDLE or _bundle_size(preset) is not None:
        return METHOD
    return FALLBACK_METHOD


def package_source_files() -> list[Path]:
    """The source files the fallback counts, in a fixed order."""
    root = Path(pgolf.__file__).resolve().parent
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix in (".py", ".toml") and "__pycache__" not in p.parts]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def source_code_bytes() -> int:
    """The fallback: zlib-9 of the package sources, each preceded by its relative path and length."""
    root = Path(pgolf.__file__).resolve().parent
    blob = bytearray()
    for path in package_source_files():
        data = path.read_bytes()
        blob += f"{path.relative_to(root).as_posix()}\n{len(data)}\n".encode() + data
    return len(zlib.compress(bytes(blob), 9))
