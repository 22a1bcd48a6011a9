"""Code bytes: the part of the 16,000,000-byte cap spent on code (docs/rules.md#the-cap,
docs/rules.md#code-bytes).

The convention (the records' own, accepted from PR #1530 on and stated in the 04-16 README): the counted code is a
minified, compressed, self-extracting `train_gpt.py`. pgolf counts exactly the file `pgolf bundle` writes
(`pgolf.bundle.build`):

- running FROM a bundle (`python train_gpt.py --data ...`), code bytes are the size of that running file (a bundle
  carries only this path: building and caching are `LEFT_OUT` of it, see `pgolf.bundle.build`);
- running from the package (`pgolf train --preset NAME`), code bytes are the size of the bundle this checkout
  builds for the run's preset, which `pgolf bundle --preset NAME` then writes byte for byte.

Bundling is deterministic, so that size is a function of what the bundle is built from: the bytes of every package
source and preset file (*.py and *.toml under `pgolf/`, this tool included), the preset (and the bytes of its TOML
when it is a path), the python-minifier and brotli versions, and the Python minor version (`ast.unparse` and the
minifier print the running interpreter's grammar). `cache_key` hashes all of these. A size is built once per key
and stored in `~/.cache/pgolf/code_bytes/<key>.json` (written atomically; when the folder cannot be written the size
is computed without caching), and kept in memory for the rest of the process, so a training run reads a number
instead of building a bundle. Entries are never removed (one small file per key). Not in the key: the liblzma that
Python links against (the LZMA2 candidate's size could change if that library were replaced in place).

Fallback: when no bundle can be built, the count is the older estimate, zlib-9 of every package source file, and
`code_bytes_method` in result.json says so. That happens for a run whose preset was given as a path to a TOML file
that is not a shipped preset: the run's config records only the file's stem, which names no preset the bundle can
be rebuilt from. (A stem that names a shipped preset counts that shipped preset's bundle, whatever the file held.)
A missing python-minifier falls back too, though it is a declared dependency.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import zlib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pgolf
from pgolf.errors import PgolfError
from pgolf.fileio import atomic_write_json

METHOD = ("size of the self-extracting train_gpt.py bundle for the run's preset (pgolf bundle: pyminify + "
          "LZMA2/brotli in a base-251 literal; the running file when run from a bundle)")
FALLBACK_METHOD = "zlib-9 of the pgolf package sources (*.py, *.toml under src/pgolf); no bundle could be built"


def running_bundle() -> Path | None:
    """The `train_gpt.py` this process runs from, or None when pgolf is imported from the package.

    A bundle's in-memory loader carries the script path as `bundle_file` (see `pgolf.bundle.selfextract`)."""
    spec = getattr(pgolf, "__spec__", None)
    path = getattr(getattr(spec, "loader", None), "bundle_file", None)
    return Path(path) if path else None


def count_code_bytes(preset: str) -> tuple[int, str]:
    """(code_bytes, code_bytes_method) of a run of `preset`: the running bundle's size, else the size of the
    preset's bundle, else the fallback estimate (module docstring)."""
    bundle = running_bundle()
    if bundle is not None:
        return bundle.stat().st_size, METHOD
    try:
        return bundle_code_bytes(preset), METHOD
    except (PgolfError, ImportError):
        return source_code_bytes(), FALLBACK_METHOD


def default_cache_dir() -> Path | None:
    """Where bundle sizes are cached: `~/.cache/pgolf/code_bytes`, or None when there is no home directory."""
    try:
        return Path.home() / ".cache" / "pgolf" / "code_bytes"
    except RuntimeError:
        return None


@functools.lru_cache(maxsize=None)
def bundle_code_bytes(preset: str, cache_dir: Path | None = None) -> int:
    """Size of the bundle `pgolf bundle --preset PRESET` writes from this checkout: read from the cache in
    `cache_dir` (default `default_cache_dir()`) when a process built it from the same inputs before, else built
    and stored there; cached per process too."""
    from pgolf.bundle.build import build_bundle

    folder = cache_dir or default_cache_dir()
    path = folder / f"{cache_key(preset)}.json" if folder else None
    cached = _read_cached(path) if path else None
    if cached is not None:
        return cached
    size = len(build_bundle(preset).data)
    if path:
        try:
            atomic_write_json(path, {"preset": preset, "code_bytes": size})
        except (OSError, PgolfError):
            pass  # not writable: the size is still right, only not cached
    return size


def _read_cached(path: Path) -> int | None:
    """The size stored at `path`, or None when there is none (or only an unreadable one)."""
    try:
        size = json.loads(path.read_text(encoding="utf-8"))["code_bytes"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return size if isinstance(size, int) and size > 0 else None


def _installed(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "absent"


def cache_key(preset: str, root: Path | None = None) -> str:
    """SHA-256 (hex) of everything the bundle of `preset` is built from (module docstring); `root` is the package
    folder (default: this pgolf's)."""
    digest = hashlib.sha256()
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    for field in (preset, _installed("python-minifier"), _installed("brotli"), minor):
        digest.update(field.encode() + b"\0")
    if Path(preset).is_file():  # a preset given as a path (`pgolf.bundle.build.resolve_preset`)
        digest.update(Path(preset).read_bytes())
    digest.update(_sources_blob(root))
    return digest.hexdigest()


def package_source_files(root: Path | None = None) -> list[Path]:
    """The package's *.py and *.toml files under `root` (default: this pgolf's folder), in a fixed order."""
    root = root or Path(pgolf.__file__).resolve().parent
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix in (".py", ".toml") and "__pycache__" not in p.parts]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _sources_blob(root: Path | None = None) -> bytes:
    """Every package source file, each preceded by its relative path and length."""
    root = root or Path(pgolf.__file__).resolve().parent
    blob = bytearray()
    for path in package_source_files(root):
        data = path.read_bytes()
        blob += f"{path.relative_to(root).as_posix()}\n{len(data)}\n".encode() + data
    return bytes(blob)


def source_code_bytes() -> int:
    """The fallback: zlib-9 of the package sources (`_sources_blob`)."""
    return len(zlib.compress(_sources_blob(), 9))
