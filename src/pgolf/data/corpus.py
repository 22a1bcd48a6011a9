"""Document sources: challenge-style `.jsonl` (plain, gzip, xz), `.txt`, `.parquet`, and the offline demo corpus.

Every reader yields one string per document and fails with one line naming the file (and line) on invalid UTF-8,
invalid JSON or a missing `text` field, never with a traceback.
"""

from __future__ import annotations

import ast
import gzip
import json
import lzma
import sysconfig
from pathlib import Path
from typing import Iterator

from pgolf.errors import PgolfError

# Standard-library folders that are tests, vendored code or tools rather than documented modules.
_SKIP_DIRS = {"test", "tests", "idle_test", "idlelib", "lib2to3", "site-packages", "dist-packages", "ensurepip",
              "turtledemo", "pydoc_data", "__pycache__", "tkinter"}


def _open_text_lines(path: Path):
    name = path.name
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".xz"):
        return lzma.open(path, "rb")
    return open(path, "rb")


def _iter_jsonl(path: Path) -> Iterator[str]:
    try:
        with _open_text_lines(path) as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise PgolfError(f"{path}:{lineno}: invalid UTF-8 at byte {exc.start}") from None
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise PgolfError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
                if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                    raise PgolfError(f"{path}:{lineno}: expected an object with a string field 'text'")
                yield obj["text"]
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise PgolfError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None


def _iter_parquet(path: Path) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise PgolfError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
    try:
        table = pq.read_table(path, columns=["text"])
    except Exception as exc:  # pyarrow raises several unrelated types for bad files
        raise PgolfError(f"{path}: cannot read parquet column 'text': {str(exc).splitlines()[0]}") from None
    for value in table.column("text").to_pylist():
        if not isinstance(value, str):
            raise PgolfError(f"{path}: column 'text' holds a non-string value")
        yield value


def iter_documents(path: str | Path) -> Iterator[str]:
    """Documents of one file, in file order. A `.txt` file is one document."""
    path = Path(path)
    if not path.is_file():
        raise PgolfError(f"{path}: documents file is missing")
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".jsonl.xz", ".json.gz", ".json.xz")):
        yield from _iter_jsonl(path)
    elif name.endswith(".parquet"):
        yield from _iter_parquet(path)
    elif name.endswith(".txt"):
        try:
            yield path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            line = path.read_bytes()[:exc.start].count(b"\n") + 1
            raise PgolfError(f"{path}:{line}: invalid UTF-8 at byte {exc.start}") from None
    else:
        raise PgolfError(f"{path}: unknown document format (use .jsonl, .jsonl.gz, .jsonl.xz, .txt or .parquet)")


def _module_document(path: Path) -> str | None:
    """A standard-library module's docstrings (module, classes, functions), parsed without importing it."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return None
    parts = []
    for node in [tree, *ast.walk(tree)]:
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= 40 and (node is tree or not isinstance(node, ast.Module)):
                parts.append(doc.strip())
    unique = list(dict.fromkeys(parts))
    text = "\n\n".join(unique)
    return text if len(text) >= 200 else None


def demo_documents() -> list[str]:
    """Real English prose that every Python installation ships: the Language Reference topics of `pydoc_data`
    (the text behind `help()`) and the docstrings of the standard library, in a fixed order. Deterministic for a
    given Python version; nothing is imported or downloaded besides `pydoc_data.topics`."""
    from pydoc_data.topics import topics

    docs = [topics[key].strip() for key in sorted(topics) if len(topics[key].strip()) >= 200]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py"), key=lambda p: p.relative_to(stdlib).as_posix()):
        if _SKIP_DIRS.intersection(path.relative_to(stdlib).parts):
            continue
        doc = _module_document(path)
        if doc:
            docs.append(doc)
    return docs
