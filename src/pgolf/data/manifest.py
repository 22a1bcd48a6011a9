"""A data directory's manifest.json: reading it, and checking that the directory is whole.

The manifest (written last by `pgolf.data.build`, so a directory without one is recognisably incomplete) names the
tokenizer (file, vocab size, sha256) and, per split, the documents, tokens, BPB byte denominator and shard files
(docs/rules.md#data). CaseOps directories also name the val original-byte sidecar (`pgolf.data.caseops`), which this
module loads and checks: training and evaluation read a directory only through here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pgolf.data.shards import read_header, read_shard
from pgolf.data.tokenizer import file_sha256
from pgolf.errors import PgolfError

MANIFEST = "manifest.json"
FORMAT = "pgolf-data-v1"



def tokenizer_entry(path: Path, sp) -> dict:
    """The manifest's `tokenizer` entry: file name, vocab size, sha256 and BOS id."""
    return {"file": path.name, "vocab_size": sp.get_piece_size(), "sha256": file_sha256(path), "bos_id": sp.bos_id()}

def read_manifest(data_dir: str | Path) -> dict:
    """`DIR/manifest.json`, checked to carry every field the readers rely on."""
    path = Path(data_dir) / MANIFEST
    if not Path(data_dir).is_dir():
        if Path(data_dir).exists():
            raise PgolfError(f"{data_dir}: is a file, not a data directory (a directory with {MANIFEST} and shards)")
        raise PgolfError(f"{data_dir}: data directory does not exist")
    if not path.is_file():
        raise PgolfError(f"{path}: missing; build it with pgolf data build (or pgolf data demo)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PgolfError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise PgolfError(f"{path}: not valid JSON (nested too deeply)") from None
    try:
        manifest["tokenizer"]["file"], manifest["tokenizer"]["vocab_size"], manifest["tokenizer"]["sha256"]
        for split in ("train", "val"):
            s = manifest["splits"][split]
            s["docs"], s["tokens"], s["bytes"], s["files"]
    except (KeyError, TypeError) as exc:
        raise PgolfError(f"{path}: manifest lacks the field {exc}") from None
    problem = _field_problem(manifest)
    if problem:
        raise PgolfError(f"{path}: damaged manifest: {problem}")
    return manifest


def _count(value) -> bool:
    return type(value) is int and value >= 0  # JSON true/false are ints in Python: refuse them


def _file_name(value) -> bool:
    """A plain file name inside the data directory (what `pgolf data build` writes): no folders, no escape."""
    return (isinstance(value, str) and value.isprintable() and value not in (".", "..") and "/" not in value
            and "\\" not in value and 0 < len(value.encode("utf-8")) <= 255)


def _field_problem(manifest: dict) -> str | None:
    """What is wrong with the types of the fields the readers use, or None."""
    tok = manifest["tokenizer"]
    if not _file_name(tok["file"]):
        return f"tokenizer.file {tok['file']!r} is not a file name"
    if not _count(tok["vocab_size"]) or not isinstance(tok["sha256"], str):
        return "tokenizer.vocab_size must be a count and tokenizer.sha256 a string"
    for split in ("train", "val"):
        s = manifest["splits"][split]
        for key in ("docs", "tokens", "bytes"):
            if not _count(s[key]):
                return f"splits.{split}.{key} {s[key]!r} is not a count"
        for key in ("files", "byte_files") if split == "val" else ("files",):
            names = s[key] if key == "files" else s.get(key) or []  # byte_files: CaseOps only
            if not isinstance(names, list) or not all(_file_name(n) for n in names):
                return f"splits.{split}.{key} must be a list of file names"
    return None


def check_data_dir(data_dir: str | Path, expected_vocab: int | None = None) -> tuple[dict, Path]:
    """Cheap consistency checks (headers, counts, tokenizer hash, vocabulary); returns (manifest, tokenizer path)."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    tok = manifest["tokenizer"]
    tok_path = data_dir / tok["file"]
    if not tok_path.is_file():
        raise PgolfError(f"{tok_path}: tokenizer named by the manifest is missing")
    if file_sha256(tok_path) != tok["sha256"]:
        raise PgolfError(f"{tok_path}: tokenizer does not match the manifest's sha256 (replaced or damaged)")
    for split in ("train", "val"):
        s = manifest["splits"][split]
        count = 0
        for name in s["files"]:
            count += read_header(data_dir / name)
        if count != s["tokens"]:
            raise PgolfError(f"{data_dir}: {split} shards hold {count} tokens but the manifest says {s['tokens']}")
    if manifest.get("caseops"):
        load_val_sidecar(data_dir, manifest)
    if expected_vocab is not None and expected_vocab != tok["vocab_size"]:
        raise PgolfError(f"vocabulary mismatch: model has {expected_vocab} tokens but tokenizer {tok['file']} has "
                         f"{tok['vocab_size']}")
    return manifest, tok_path


def load_val_sidecar(data_dir: str | Path, manifest: dict | None = None) -> np.ndarray:
    """The val byte sidecar of a CaseOps data directory, checked against the manifest (length and total)."""
    data_dir = Path(data_dir)
    manifest = manifest if manifest is not None else read_manifest(data_dir)
    val = manifest["splits"]["val"]
    names = val.get("byte_files")
    if not names:
        raise PgolfError(f"{data_dir}: CaseOps manifest names no val byte sidecar (splits.val.byte_files)")
    parts = [np.asarray(read_shard(data_dir / name)) for name in names]
    sidecar = np.concatenate(parts) if len(parts) != 1 else np.array(parts[0])
    if len(sidecar) != int(val["tokens"]):
        raise PgolfError(f"{data_dir}: val byte sidecar has {len(sidecar)} entries but the val split has "
                         f"{val['tokens']} tokens")
    if int(sidecar.sum(dtype=np.int64)) != int(val["bytes"]):
        raise PgolfError(f"{data_dir}: val byte sidecar sums to {int(sidecar.sum(dtype=np.int64))} bytes but the "
                         f"manifest says {val['bytes']}")
    return sidecar


def val_target_bytes(data_dir: str | Path, tokens: np.ndarray) -> np.ndarray | None:
    """Original bytes charged to each target tokens[i+1] (length len(tokens) - 1) for CaseOps data, from the
    sidecar; None when the directory is not CaseOps (use the byte rule of `pgolf.data.bytes`).

    `tokens` is the val stream or a prefix of it."""
    manifest = read_manifest(data_dir)
    if not manifest.get("caseops"):
        return None
    sidecar = load_val_sidecar(data_dir, manifest)
    if len(tokens) > len(sidecar):
        raise PgolfError(f"{data_dir}: {len(tokens)} val tokens but the byte sidecar covers only {len(sidecar)}")
    return sidecar[1:len(tokens)].astype(np.int64)
