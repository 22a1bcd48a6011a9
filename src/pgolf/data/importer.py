"""Adopt an existing official data folder: validate it and write pgolf's `manifest.json` (`pgolf data import DIR`).

An official folder is what openai/parameter-golf `data/cached_challenge_fineweb.py` leaves in
`data/datasets/fineweb10B_<variant>/`: shards `fineweb_{train,val}_NNNNNN.bin` numbered from 0 and, for the CaseOps
export, the val byte sidecar `fineweb_val_bytes_NNNNNN.bin` beside each val shard (written shard-parallel, same
header and uint16 layout, one entry per val token = the original UTF-8 bytes it stands for; the 2026-04-18 CaseOps
record's `download_hf_docs_and_tokenize.py`, function `export_shards`, writes shard i and sidecar i from one
buffer). The tokenizer is looked for beside the shards, then in the official `data/tokenizers/`, two levels up,
under the name the official exporter gives it: dataset folder `fineweb10B_sp<N><rest>` goes with
`fineweb_<N>_bpe<rest>.model` (`download_hf_docs_and_tokenize.py`: dataset suffix `sp<vocab>`, model prefix
`fineweb_<vocab>_bpe`; the CaseOps record pairs `fineweb10B_sp8192_lossless_caps_caseops_v1_reserved` with
`fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model`). `--tokenizer` names it instead. A tokenizer found
elsewhere is copied beside the shards, because pgolf's data directories are self-contained.

Everything is checked before anything is written: every shard header and size, numbering without gaps, the
tokenizer (a SentencePiece model with BOS, a vocabulary that fits uint16, the standalone "▁" piece the byte rule
needs), every token id below the vocabulary (all shards are read anyway to count), and the sidecar: one per val
shard, each exactly as long as its shard. A sidecar needs a tokenizer that reserves the CaseOps operators, and a
tokenizer that reserves them needs a sidecar (the piece rule would charge each operator three bytes). Then
`manifest.json` is written atomically, with the SHA-256 of every shard and sidecar (`shard_sha256`, what `pgolf data
verify` compares; hashed while the files are read for counting) and `overlap`, what comparing the train documents
with the val documents found (`pgolf.data.overlap`: the data is given, so a leak is reported, not refused); on any
failure nothing is written and the error is one line.

`into=VIEW` leaves the official folder untouched (a submission run the official way must not write into the
user's data folder): the manifest, the tokenizer copy and one symbolic link per shard and sidecar go into VIEW, a
data directory of its own that every pgolf reader takes as it takes DIR. `view_dir(DIR)` is where the official
flow keeps it: under `$XDG_CACHE_HOME/pgolf/data-views/` (default `~/.cache`), one per folder, reused while the
shards it links to are unchanged.

Totals, as `pgolf.data.build.manifest_from_shards` counts them: documents are BOS tokens; bytes follow the byte rule
over each split's stream, across shard boundaries. For CaseOps the val bytes are the sidecar's sum (what
`pgolf.data.manifest.load_val_sidecar` checks), and the train bytes, which no sidecar covers and nothing scores, are
the byte rule with the operators charged 0 (equal to the original bytes wherever normalization changed nothing).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Iterable

import numpy as np

from pgolf.data.bytes import ByteTables, byte_tables, stream_bytes
from pgolf.data.caseops import OPERATORS, SIDECAR_SPLIT, operator_ids
from pgolf.data.manifest import CHECKSUMS, FORMAT, MANIFEST, OVERLAP, check_data_dir, tokenizer_entry
from pgolf.data.overlap import compare_splits
from pgolf.data.shards import read_header, read_shard, shard_name, shard_sha256
from pgolf.data.tokenizer import check_encodable, load_tokenizer
from pgolf.errors import PgolfError
from pgolf.fileio import atomic_output, atomic_write_json
from pgolf.progress import track

_CHUNK = 1 << 22
_FOLDER_RE = re.compile(r"fineweb10B_sp(\d+)(.*)")


def official_tokenizer_name(folder: str) -> str | None:
    """The model file the official exporter pairs with dataset folder `folder`, or None for another naming."""
    m = _FOLDER_RE.fullmatch(folder)
    return f"fineweb_{m.group(1)}_bpe{m.group(2)}.model" if m else None


def find_tokenizer(data_dir: str | Path) -> Path:
    """The tokenizer of an official folder: the one `.model` beside the shards (or the one of the official name
    among several), else the official name in `../../tokenizers/`."""
    data_dir = Path(data_dir)
    wanted = official_tokenizer_name(data_dir.resolve().name)
    beside = sorted(data_dir.glob("*.model"))
    if len(beside) == 1:
        return beside[0]
    if len(beside) > 1:
        named = [p for p in beside if p.name == wanted]
        if named:
            return named[0]
        raise PgolfError(f"{data_dir}: several tokenizers ({', '.join(p.name for p in beside)}): "
                         f"pass --tokenizer MODEL")
    official = data_dir.resolve().parent.parent / "tokenizers" / wanted if wanted else None
    if official is not None and official.is_file():
        return official
    where = f" or {official}" if official is not None else ""
    raise PgolfError(f"{data_dir}: no tokenizer .model beside the shards{where}: pass --tokenizer MODEL")


def count_numbered(names: Iterable[str], split: str, where: str) -> int:
    """How many `fineweb_<split>_NNNNNN.bin` files are among `names`, refused unless they are numbered 0..n-1."""
    pattern = re.compile(rf"fineweb_{split}_(\d{{6}})\.bin")
    found = sorted(int(m.group(1)) for name in names if (m := pattern.fullmatch(name)))
    for expected, index in enumerate(found):
        if index != expected:
            raise PgolfError(f"{where}: {shard_name(split, expected)} is missing (the {split} files are numbered "
                             f"up to {found[-1]:06d})")
    return len(found)


def _caseops_train_tables(tables: ByteTables, ops: np.ndarray) -> ByteTables:
    base = tables.base_bytes.copy()
    base[ops] = 0
    return replace(tables, base_bytes=base)


def _count_split(files: list[Path], tables: ByteTables, bos: int, vocab: int, progress: bool, split: str,
                 checksums: dict[str, str]) -> dict:
    """Tokens, documents (BOS) and bytes of one split's stream; refuses ids the tokenizer does not have. Each
    file's SHA-256 goes into `checksums`."""
    n_tokens = n_docs = n_bytes = 0
    prev: int | None = None
    for f in track(files, f"checking {split}", "file", enabled=progress):
        checksums[f.name] = shard_sha256(f)  # first: the read below then finds the file in the page cache
        toks = read_shard(f)
        for start in range(0, len(toks), _CHUNK):
            block = np.asarray(toks[start:start + _CHUNK])
            top = int(block.max())
            if top >= vocab:
                raise PgolfError(f"{f}: token id {top} is outside the tokenizer's {vocab} ids (wrong tokenizer?)")
            n_docs += int(np.count_nonzero(block == bos))
        if len(toks):
            if prev is not None:
                n_bytes += stream_bytes(np.array([prev, toks[0]], dtype=np.uint16), tables)
            n_bytes += stream_bytes(toks, tables)
            n_tokens += len(toks)
            prev = int(toks[-1])
    return {"docs": n_docs, "tokens": n_tokens, "bytes": n_bytes, "files": [f.name for f in files]}


def _sidecar_total(val: list[Path], sidecar: list[Path], checksums: dict[str, str]) -> int:
    """The sum of the val byte sidecar, after checking it is one file per val shard, each as long as its shard.
    Each sidecar file's SHA-256 goes into `checksums`."""
    if len(sidecar) != len(val):
        raise PgolfError(f"{sidecar[0].parent}: {len(sidecar)} val byte sidecar file(s) for {len(val)} val shard(s)")
    total = 0
    for shard, side in zip(val, sidecar):
        n, m = read_header(shard), read_header(side)
        if n != m:
            raise PgolfError(f"{side}: val byte sidecar has {m} entries but {shard.name} has {n} tokens")
        checksums[side.name] = shard_sha256(side)
        counts = read_shard(side)
        total += sum(int(counts[i:i + _CHUNK].sum(dtype=np.int64)) for i in range(0, len(counts), _CHUNK))
    return total


def _reusable(data_dir: Path, tok: Path, names: dict[str, list[str]], overlap: bool = True) -> dict | None:
    """The manifest already in `data_dir` when it describes exactly these files and this tokenizer, has checksums
    and passes `check_data_dir` (headers, token counts, tokenizer hash, sidecar); else None. (A manifest from before
    checksums or before the overlap check is rewritten once, with them.)"""
    if not (data_dir / MANIFEST).is_file():
        return None
    try:
        kept = json.loads((data_dir / MANIFEST).read_text(encoding="utf-8"))
        if CHECKSUMS not in kept or (overlap and OVERLAP not in kept):
            return None
    except (OSError, ValueError, TypeError, RecursionError):
        return None
    try:
        manifest, tok_path = check_data_dir(data_dir)
    except PgolfError:
        return None
    splits = manifest["splits"]
    same = (tok_path.name == tok.name and all(splits[s]["files"] == names[s] for s in ("train", "val"))
            and splits["val"].get("byte_files", []) == names["val_bytes"])
    return manifest if same else None


def view_dir(data_dir: str | Path) -> Path:
    """Where the official flow keeps the data view of `data_dir` (`import_data_dir(into=...)`): a cache folder
    named after the folder and a hash of its absolute path."""
    resolved = Path(data_dir).resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    tag = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    return cache / "pgolf" / "data-views" / f"{resolved.name}-{tag}"


def _link_shards(view: Path, files: dict[str, list[Path]]) -> None:
    """One symbolic link in `view` per shard and sidecar, to the official file (absolute), replacing a stale one."""
    view.mkdir(parents=True, exist_ok=True)
    for f in (f for group in files.values() for f in group):
        link = view / f.name
        target = f.resolve()
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)


def import_data_dir(data_dir: str | Path, tokenizer: str | Path | None = None, *, progress: bool = True,
                    source: dict | None = None, reuse: bool = False, overlap: bool = True,
                    into: str | Path | None = None) -> dict:
    """Validate an official data folder and write its `manifest.json`; returns the manifest. `tokenizer`: the
    SentencePiece model (default: found as the module docstring says). `source` is recorded in the manifest.
    `reuse`: keep a manifest already there that describes exactly these files and passes `check_data_dir`.
    `overlap`: compare the train and val documents (false: a bundle run the official way adopting its data folder,
    which `pgolf data verify` checks instead; its manifest then records no overlap). `into`: write nothing into
    `data_dir`; the manifest, tokenizer and links to the shards go into this data view instead."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise PgolfError(f"{data_dir}: data directory does not exist" if not data_dir.exists()
                         else f"{data_dir}: is a file, not a data directory")
    present = [p.name for p in data_dir.iterdir()]
    files = {split: [data_dir / shard_name(split, i) for i in range(count_numbered(present, split, str(data_dir)))]
             for split in ("train", "val", SIDECAR_SPLIT)}
    if not files["val"]:  # no train shards is fine: such a folder can still score an artifact
        raise PgolfError(f"{data_dir}: no fineweb_val_NNNNNN.bin shards")
    for f in (f for group in files.values() for f in group):
        read_header(f)  # every header and size, before the slow part
    tok = Path(tokenizer) if tokenizer is not None else find_tokenizer(data_dir)
    sp = load_tokenizer(tok)
    check_encodable(sp, str(tok))
    tables = byte_tables(sp)
    caseops = bool(files[SIDECAR_SPLIT])
    if caseops:
        ops = operator_ids(sp)
        train_tables = _caseops_train_tables(tables, ops)
    else:
        train_tables = tables
        op = next((o for o in OPERATORS if sp.id_to_piece(sp.piece_to_id(o)) == o), None)
        if op is not None:
            raise PgolfError(f"{tok}: a CaseOps tokenizer (it reserves U+{ord(op):04X}) but {data_dir} has no val byte "
                             f"sidecar fineweb_val_bytes_NNNNNN.bin: BPB would count the operators' bytes")
    out = data_dir if into is None else Path(into)
    local_tok = out / tok.name
    names = {split: [f.name for f in group] for split, group in files.items()}
    same_tok = local_tok.is_file() and (local_tok.resolve() == tok.resolve() or
                                        (into is not None and local_tok.read_bytes() == tok.read_bytes()))
    if reuse and same_tok and (kept := _reusable(out, local_tok, names, overlap)) is not None:
        return kept

    checksums: dict[str, str] = {}
    sidecar_bytes = _sidecar_total(files["val"], files[SIDECAR_SPLIT], checksums) if caseops else None
    vocab, bos = sp.get_piece_size(), sp.bos_id()
    val = _count_split(files["val"], tables, bos, vocab, progress, "val", checksums)
    if caseops:
        val["bytes"], val["byte_files"] = sidecar_bytes, names[SIDECAR_SPLIT]
    train = _count_split(files["train"], train_tables, bos, vocab, progress, "train", checksums)
    found = compare_splits(files["train"], [files["val"]], bos, progress=progress)[0] if overlap else None

    if into is not None:  # after every check, as the manifest: a view is written whole or not at all
        _link_shards(out, files)
    if not same_tok:
        with atomic_output(local_tok) as tmp:
            shutil.copyfile(tok, tmp)
    manifest = {"format": FORMAT, "tokenizer": tokenizer_entry(local_tok, sp), "splits": {"train": train, "val": val}}
    if caseops:
        manifest["caseops"] = True
    manifest["source"] = source if source is not None else {"imported": "official data folder"}
    manifest[CHECKSUMS] = checksums
    if found is not None:
        manifest[OVERLAP] = found.to_manifest()
    atomic_write_json(out / MANIFEST, manifest)
    return manifest
