"""Documents -> tokenizer -> challenge shards + manifest.json (read back and checked by `pgolf.data.manifest`).

As in the official exporter (docs/rules.md), each document is tokenized independently with BOS prepended and no
EOS, documents are concatenated per split and cut into fixed-size shards, and the first `val_docs` documents are the
val split. The manifest is written last, so a directory without one is recognisably incomplete. Its byte totals come
from `pgolf.data.bytes`, the same function the evaluator uses; its `shard_sha256` (each file's SHA-256, for `pgolf
data verify`) is computed from the bytes as they are written, so it costs no second read.

Before the manifest, the written shards are compared document by document (`pgolf.data.overlap`): a train document
equal to a val document is a leak (official issue #2127), recorded in the manifest's `overlap`, and with
`refuse_overlap` (what `pgolf data build` does unless --allow-overlap) refused: identical input texts are caught
before anything is written, equal token sequences after writing, and then everything this build wrote is removed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from pgolf.data.bytes import byte_tables, stream_bytes
from pgolf.data.caseops import SIDECAR_SPLIT, encode_caseops, encode_with_sidecars, operator_ids
from pgolf.data.corpus import demo_documents, iter_documents
from pgolf.data.manifest import CHECKSUMS, FORMAT, MANIFEST, OVERLAP, tokenizer_entry
from pgolf.data.overlap import compare_splits
from pgolf.data.val_split import OFFICIAL_VAL_DOCS
from pgolf.data.shards import ShardWriter, read_shard, shard_paths
from pgolf.data.tokenizer import check_encodable, encode_documents, load_tokenizer, train_tokenizer
from pgolf.errors import PgolfError
from pgolf.fileio import atomic_output, atomic_write_json
from pgolf.progress import progress_bar, track

_ENCODE_BATCH = 2048


def build_dataset(docs: Sequence[str | Path], out_dir: str | Path, *, tokenizer: str | Path | None = None,
                  vocab_size: int | None = None, val_docs: int | None = None, workers: int = 1, shard_size: int = 10**8,
                  progress: bool = True, caseops: bool = False, refuse_overlap: bool = False) -> dict:
    """Build shards and manifest.json in `out_dir` from document files (in order); returns the manifest. The first
    `val_docs` documents (default: the official 50,000) are the val split.

    The manifest records `overlap` (train documents equal to val documents). `refuse_overlap=True` raises one
    PgolfError instead when there is any, leaving nothing of this build behind.

    `caseops=True` tokenizes CaseOps-transformed text (`pgolf.data.caseops`), writes the val original-byte sidecar
    `fineweb_val_bytes_*.bin` beside the val shards, and records `caseops: true`, the sidecar files and ORIGINAL
    UTF-8 byte totals in the manifest."""
    if (tokenizer is None) == (vocab_size is None):
        raise PgolfError("give exactly one of a tokenizer model or a vocab size")
    out_dir = Path(out_dir)
    paths = [Path(p) for p in docs]
    sp = None
    for p in paths:
        if not p.is_file():
            raise PgolfError(f"{p}: documents file is missing")
    if tokenizer is not None:
        sp = load_tokenizer(tokenizer)
        if caseops:
            operator_ids(sp)  # refuses a tokenizer without the reserved operators before anything is written
    texts = [t for p in paths for t in iter_documents(p)]  # reads (and validates) every file before writing
    if val_docs is None:
        val_docs = OFFICIAL_VAL_DOCS
        if val_docs >= len(texts):
            raise PgolfError(f"{len(texts):,} documents read; the default of {val_docs:,} val documents (the "
                             f"official split) needs more: pass --val-docs N, fewer than {len(texts):,}")
    if val_docs <= 0 or val_docs >= len(texts):
        raise PgolfError(f"--val-docs {val_docs} must leave both splits non-empty ({len(texts)} documents read)")
    if refuse_overlap:
        _refuse_equal_texts(texts, val_docs)  # the common case, before anything is written
    made = [p for p in (out_dir, *out_dir.parents) if not p.exists()]  # folders this build creates
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)
    for old in out_dir.glob("fineweb_*.bin"):
        old.unlink()
    written: list[Path] = []  # besides the shards: the tokenizer, when this build put it there
    try:
        manifest = _build(texts, out_dir, paths, tokenizer, sp, vocab_size,
                          val_docs, workers, shard_size, progress, caseops, refuse_overlap, written)
    except BaseException:
        _remove_output(out_dir, written, made)  # a directory without a manifest is incomplete: leave none behind
        raise
    return manifest


def _refuse_equal_texts(texts: Sequence[str], val_docs: int) -> None:
    """One PgolfError when a train text is identical to a val text (equal texts tokenize to equal documents)."""
    val = {t: i for i, t in reversed(list(enumerate(texts[:val_docs])))}
    hits = [(i, val[t]) for i, t in enumerate(texts[val_docs:], val_docs) if t in val]
    if hits:
        raise PgolfError(f"data build: {len(hits):,} train document(s) are identical to val documents (e.g. input "
                         f"document {hits[0][0]:,} repeats val document {hits[0][1]:,}): training on them leaks the "
                         f"val split (official issue #2127); remove the repeats from the input, or pass "
                         f"--allow-overlap to build it anyway (recorded in the manifest); nothing was written")


def _remove_output(out_dir: Path, written: list[Path], made: list[Path]) -> None:
    """Remove what a failed build wrote: its shards and sidecars, the tokenizer it placed, the folders it made."""
    for path in [*out_dir.glob("fineweb_*.bin"), *written]:
        path.unlink(missing_ok=True)
    for folder in made:  # innermost first
        try:
            folder.rmdir()
        except OSError:
            break


def _build(texts: list[str], out_dir: Path, paths: list[Path], tokenizer, sp, vocab_size, val_docs: int,
           workers: int, shard_size: int, progress: bool, caseops: bool, refuse_overlap: bool,
           written: list[Path]) -> dict:
    """The writing part of `build_dataset`: tokenizer, shards, overlap check, manifest."""
    if tokenizer is not None:
        tok_path = out_dir / Path(tokenizer).name
        if Path(tokenizer).resolve() != tok_path.resolve():
            written.append(tok_path)
            with atomic_output(tok_path) as tmp:  # never a truncated copy (a full disk)
                shutil.copyfile(tokenizer, tmp)
    else:
        train_texts = (encode_caseops(t) for t in texts) if caseops else texts
        written.append(out_dir / "tokenizer.model")
        tok_path = train_tokenizer(train_texts, vocab_size, out_dir / "tokenizer.model", caseops=caseops)
        sp = load_tokenizer(tok_path)
    check_encodable(sp, str(tok_path))
    tables = byte_tables(sp)
    splits = {}
    checksums: dict[str, str] = {}
    bar = progress_bar(len(texts), "tokenizing", "doc", enabled=progress)
    for split, part in (("val", texts[:val_docs]), ("train", texts[val_docs:])):
        total_bytes = 0
        prev_last: int | None = None
        if caseops:
            splits[split] = _write_caseops_split(sp, out_dir, split, part, shard_size, workers, bar, checksums)
            continue
        with ShardWriter(out_dir, split, shard_size) as writer:
            for i in range(0, len(part), _ENCODE_BATCH):
                encoded = encode_documents(sp, part[i:i + _ENCODE_BATCH], workers=workers)
                for toks in encoded:
                    stream = toks if prev_last is None else np.concatenate([[prev_last], toks]).astype(np.uint16)
                    total_bytes += stream_bytes(stream, tables)
                    prev_last = int(toks[-1])
                    writer.add(toks)
                bar.update(len(encoded))
        splits[split] = {"docs": len(part), "tokens": writer.num_tokens, "bytes": total_bytes,
                         "files": [f.name for f in writer.files]}
        checksums.update(writer.sha256)
    bar.close()
    overlap = compare_splits([out_dir / n for n in splits["train"]["files"]],
                             [[out_dir / n for n in splits["val"]["files"]]], sp.bos_id(), progress=progress)[0]
    if overlap.overlapping_docs and refuse_overlap:  # equal tokens from unequal texts (normalization)
        ex = overlap.examples[0]
        raise PgolfError(f"data build: {overlap.overlapping_docs:,} train document(s) tokenize exactly like val "
                         f"documents (e.g. input document {val_docs + ex['train_doc']:,} and val document "
                         f"{ex['val_doc']:,}): training on them leaks the val split (official issue #2127); remove "
                         f"them from the input, or pass --allow-overlap to build it anyway (recorded in the "
                         f"manifest); nothing was kept")
    manifest = {
        "format": FORMAT,
        "tokenizer": tokenizer_entry(tok_path, sp),
        "splits": {"train": splits["train"], "val": splits["val"]},
        "source": {"docs": [p.name for p in paths], "val_docs": val_docs, "shard_size": shard_size},
    }
    if caseops:
        manifest["caseops"] = True
    manifest[CHECKSUMS] = checksums
    manifest[OVERLAP] = overlap.to_manifest()
    atomic_write_json(out_dir / MANIFEST, manifest)
    return manifest


def _write_caseops_split(sp, out_dir: Path, split: str, part: Sequence[str], shard_size: int, workers: int,
                         bar, checksums: dict[str, str]) -> dict:
    """One split of transformed text; val also gets its byte sidecar. Byte totals are original UTF-8 bytes. Each
    file's SHA-256 goes into `checksums`."""
    original_bytes = sidecar_bytes = 0
    sidecar = ShardWriter(out_dir, SIDECAR_SPLIT, shard_size) if split == "val" else None
    with ShardWriter(out_dir, split, shard_size) as writer:
        for i in range(0, len(part), _ENCODE_BATCH):
            batch = part[i:i + _ENCODE_BATCH]
            original_bytes += sum(len(t.encode("utf-8")) for t in batch)
            transformed = [encode_caseops(t) for t in batch]
            if sidecar is None:
                for toks in encode_documents(sp, transformed, workers=workers):
                    writer.add(toks)
            else:
                for toks, counts in encode_with_sidecars(sp, transformed, workers=workers):
                    writer.add(toks)
                    sidecar.add(counts)
                    sidecar_bytes += int(counts.sum(dtype=np.int64))
            bar.update(len(batch))
    entry = {"docs": len(part), "tokens": writer.num_tokens, "bytes": original_bytes,
             "files": [f.name for f in writer.files]}
    checksums.update(writer.sha256)
    if sidecar is not None:
        sidecar.close()
        checksums.update(sidecar.sha256)
        if sidecar_bytes != original_bytes or sidecar.num_tokens != writer.num_tokens:
            raise PgolfError(f"internal: CaseOps sidecar ({sidecar.num_tokens} entries, {sidecar_bytes} bytes) does "
                             f"not match the val split ({writer.num_tokens} tokens, {original_bytes} bytes)")
        entry["byte_files"] = [f.name for f in sidecar.files]
    return entry


def manifest_from_shards(data_dir: str | Path, tokenizer_path: str | Path, docs: dict | None = None,
                         progress: bool = True) -> dict:
    """The manifest of an existing directory of shards (e.g. the official download): docs are counted as BOS
    tokens, bytes by the shared rule over each split's stream, across shard boundaries."""
    data_dir = Path(data_dir)
    sp = load_tokenizer(tokenizer_path)
    tables = byte_tables(sp)
    bos = sp.bos_id()
    splits = {}
    for split in ("train", "val"):
        files = shard_paths(data_dir, split)
        n_docs = n_tokens = n_bytes = 0
        prev: int | None = None
        for f in track(files, f"counting {split}", "file", enabled=progress):
            toks = read_shard(f)
            if len(toks) == 0:
                continue
            n_tokens += len(toks)
            n_docs += int(np.count_nonzero(toks == bos))
            n_bytes += stream_bytes(toks, tables)
            if prev is not None:
                n_bytes += stream_bytes(np.array([prev, toks[0]], dtype=np.uint16), tables)
            prev = int(toks[-1])
        splits[split] = {"docs": (docs or {}).get(split, n_docs), "tokens": n_tokens, "bytes": n_bytes,
                         "files": [f.name for f in files]}
    return {"format": FORMAT, "tokenizer": tokenizer_entry(Path(tokenizer_path), sp), "splits": splits}


def build_demo(out_dir: str | Path, vocab_size: int = 1024, val_docs: int | None = None, progress: bool = True,
               workers: int = 2) -> dict:
    """The offline demo data set: Python's own documentation (`corpus.demo_documents`) as shards + manifest.

    Documents are interleaved deterministically so the val split (about 10%) samples the whole corpus."""
    out_dir = Path(out_dir)
    docs = demo_documents()
    order = sorted(range(len(docs)), key=lambda i: (i % 10 != 3, i))  # every 10th document first: val
    docs = [docs[i] for i in order]
    val_docs = val_docs or max(1, len(docs) // 10)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = out_dir / "demo_docs.jsonl"
    from pgolf.fileio import atomic_write_text
    atomic_write_text(src, "".join(json.dumps({"text": d}) + "\n" for d in docs))
    return build_dataset([src], out_dir, vocab_size=vocab_size, val_docs=val_docs, workers=workers,
                         shard_size=10**8, progress=progress)
