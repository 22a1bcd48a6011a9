"""A data directory's manifest.json: reading it, and checking that the directory is whole.

The manifest (written last by `pgolf.data.build`, so a directory without one is recognisably incomplete) names the
tokenizer (file, vocab size, sha256) and, per split, the documents, tokens, BPB byte denominator and shard files
(docs/rules.md#data). CaseOps directories also name the val original-byte sidecar (`pgolf.data.caseops`), which this
module loads and checks: training and evaluation read a directory only through here.

Checksums. A manifest written by this pgolf (`data build`, `data demo`, `data import`, `data fineweb`) also holds
`shard_sha256`: the SHA-256 of every shard and sidecar file it names. Two levels of checking use the manifest:

* `check_data_dir`, before every training run and evaluation: the tokenizer's hash, every shard's header and exact
  size, the token counts. It reads 1 KiB per shard, so it costs nothing on a 20 GB directory, and it never hashes
  shards (about 0.15 s per 200 MB shard on one core: minutes of every 8-GPU run's startup for 80-130 shards).
* `verify_data_dir` (`pgolf data verify DIR`): the same plus the full SHA-256 of every file, every problem reported
  (one line per bad file). Run it once after copying, downloading or restoring a data directory; it is what catches
  token bytes flipped in place, which the cheap checks cannot see.

Manifests written by `data build`, `data import` and `data fineweb` also record `overlap`: whether any train
document equals a val document (`pgolf.data.overlap`, docs/data.md#trainval-overlap). It is optional (older
manifests lack it) and never recomputed here: the scan reads every token, so it is not part of `check_data_dir`.

An older manifest without `shard_sha256` keeps working: `check_data_dir` says so once per process (a note, not an
error), and `pgolf data verify DIR --add-checksums` records the checksums of the files as they are now.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pgolf.data.shards import read_header, read_shard, shard_sha256
from pgolf.data.tokenizer import file_sha256
from pgolf.errors import PgolfError
from pgolf.fileio import atomic_write_json

MANIFEST = "manifest.json"
FORMAT = "pgolf-data-v1"
CHECKSUMS = "shard_sha256"  # manifest key: {file name: SHA-256 hex of the whole file}, for every shard and sidecar
OVERLAP = "overlap"  # manifest key: what `pgolf.data.overlap` found comparing the train and val documents (optional)
_OVERLAP_COUNTS = ("val_docs", "train_docs", "overlapping_docs", "overlapping_tokens", "val_docs_in_train",
                   "val_duplicates")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_noted: set[str] = set()  # data directories whose missing checksums were already mentioned in this process


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
    if CHECKSUMS in manifest:  # optional: manifests written before pgolf recorded checksums have none
        sums = manifest[CHECKSUMS]
        if not isinstance(sums, dict) or not all(_file_name(k) and isinstance(v, str) and _HEX64.fullmatch(v)
                                                 for k, v in sums.items()):
            return f"{CHECKSUMS} must map file names to SHA-256 hex digests"
        missing = [n for n in data_files(manifest) if n not in sums]
        if missing:
            return f"{CHECKSUMS} has no entry for {missing[0]}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1
                                                                    else "")
    if OVERLAP in manifest:  # optional: manifests written before pgolf compared the splits have none
        entry = manifest[OVERLAP]
        if not isinstance(entry, dict) or not all(_count(entry.get(k)) for k in _OVERLAP_COUNTS) \
                or not isinstance(entry.get("checked_with"), str) or not isinstance(entry.get("examples", []), list):
            return f"{OVERLAP} must hold the counts {', '.join(_OVERLAP_COUNTS)}, examples and checked_with"
    return None


def data_files(manifest: dict) -> list[str]:
    """Every shard and sidecar file the manifest names: val, val byte sidecars (CaseOps), train."""
    val = manifest["splits"]["val"]
    return [*val["files"], *(val.get("byte_files") or []), *manifest["splits"]["train"]["files"]]


def _note_no_checksums(data_dir: Path) -> None:
    """Say once per process and directory (and only on rank 0 under torchrun) that this manifest predates
    checksums: a note on stderr, not an error."""
    key = str(data_dir.resolve())
    if key in _noted or os.environ.get("RANK", "0") != "0":
        return
    _noted.add(key)
    print(f"pgolf: note: {data_dir / MANIFEST} has no shard checksums (written by an older pgolf): shards are checked "
          f"by header and size only; record them with: pgolf data verify {data_dir} --add-checksums",
          file=sys.stderr, flush=True)


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
    if CHECKSUMS not in manifest:
        _note_no_checksums(data_dir)
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


# ---------------------------------------------------------------------------------------------- full verification
@dataclass
class Verification:
    """What `verify_data_dir` found: `problems` holds one line per bad file (or count), empty when all is well."""

    data_dir: Path
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    checksums: bool = True  # False: the manifest has none, so only headers, sizes and counts were checked
    problems: list[str] = field(default_factory=list)


def verify_data_dir(data_dir: str | Path, progress: bool = False) -> Verification:
    """Check every file of a data directory and report every problem (not only the first): the tokenizer's hash,
    each shard's and sidecar's presence, header and size, the split token counts, and, when the manifest has
    `shard_sha256`, each file's full SHA-256. A manifest that cannot be read is one PgolfError."""
    from pgolf.progress import track

    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    report = Verification(data_dir, checksums=CHECKSUMS in manifest)
    sums = manifest.get(CHECKSUMS, {})
    tok = data_dir / manifest["tokenizer"]["file"]
    if not tok.is_file():
        report.problems.append(f"{tok}: tokenizer named by the manifest is missing")
    elif file_sha256(tok) != manifest["tokenizer"]["sha256"]:
        report.problems.append(f"{tok}: tokenizer does not match the manifest's sha256 (replaced or damaged)")
    start = time.perf_counter()
    counts: dict[str, int | None] = {}
    names = data_files(manifest)
    for name in track(names, "verifying", "file", enabled=progress):
        path = data_dir / name
        try:
            counts[name] = read_header(path)
        except PgolfError as exc:
            counts[name] = None
            report.problems.append(str(exc))
            continue
        report.files += 1
        report.bytes += path.stat().st_size
        if name in sums:
            try:
                digest = shard_sha256(path)
            except PgolfError as exc:
                report.problems.append(str(exc))
                continue
            if digest != sums[name]:
                report.problems.append(f"{path}: SHA-256 mismatch: the file changed since the manifest was written "
                                       f"(damaged or replaced); rebuild or re-download it")
    report.seconds = time.perf_counter() - start
    for split in ("train", "val"):
        s = manifest["splits"][split]
        got = [counts[n] for n in s["files"]]
        if None not in got and sum(got) != s["tokens"]:
            report.problems.append(f"{data_dir}: {split} shards hold {sum(got)} tokens but the manifest says "
                                   f"{s['tokens']}")
    return report


def add_checksums(data_dir: str | Path) -> dict:
    """Record `shard_sha256` in a manifest that has none, from the files as they are now (after the cheap checks
    pass: the files are whole, though nothing can say whether their tokens changed earlier); returns the manifest.
    The manifest is rewritten atomically; its other fields (and thus checkpoints' data identity) are unchanged."""
    data_dir = Path(data_dir)
    _noted.add(str(data_dir.resolve()))  # about to fix what the note would say
    manifest, _ = check_data_dir(data_dir)
    if CHECKSUMS in manifest:
        return manifest
    manifest[CHECKSUMS] = {name: shard_sha256(data_dir / name) for name in data_files(manifest)}
    atomic_write_json(data_dir / MANIFEST, manifest)
    return manifest
