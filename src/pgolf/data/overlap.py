"""Train/val leak detection: is any train document also a val document? (docs/data.md#trainval-overlap)

Why: the CaseOps preparation script used by the top records defaulted to `--val-docs 10000` instead of the
official 50,000, so documents 10,000..49,999 of `docs_selected.jsonl`, 80% of the official val split, were trained
on; 15 of 34 CaseOps submissions carried the leak (official issue #2127). Nothing that only counts tokens or
checks files sees it, so `pgolf data build` refuses such splits, `data import` / `data fineweb` warn, `data verify`
fails, and every manifest pgolf writes records the result under `overlap` (`recorded_overlap` reads it back).

A document is the tokens after one BOS up to the next BOS (the shards carry one BOS per document and no EOS,
docs/rules.md#source-documents-and-split); tokens before a split's first BOS, when its stream does not start with
one, are a document too. Two documents are equal when their tokens are; empty documents (BOS directly followed by
BOS) carry no text and are never reported. How, per document: a vectorised 64-bit key of its length and six of
its tokens (first three, middle, last two) for every document; a BLAKE2b-128 digest of all its tokens only for the
documents whose key is also a val key; and an exact token comparison for every digest hit, so neither a key nor a
digest collision can report a false overlap (or hide a true one: equal digests keep every distinct document).
Train shards are streamed one at a time (memory: the val split plus one shard; a document spanning shards is
joined). Measured on one shared core (`benchmarks/overlap_check.py`): 0.7 s to index a 50,000-document val
split, 0.24-0.30 s per clean 10^8-token train shard; a BLAKE2b of every document would cost about 0.8 s per shard,
a numpy polynomial hash of every token about 3.5 s.

The #2127 fingerprint needs no reference directory: a val split smaller than the official one beside train data
of official size (`leak_fingerprint`). A within-directory check cannot see #2127 itself: the leaked official val
documents 10,000..49,999 are that directory's train documents, and none of its own 10,000 val documents is among
them. `pgolf data verify DIR --against OFFICIAL_DIR` compares DIR's train split with another directory's val split
and does see it.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from pgolf.data.manifest import OVERLAP, read_manifest
from pgolf.data.shards import read_shard
from pgolf.data.val_split import OFFICIAL_VAL_DOCS
from pgolf.errors import PgolfError

# Train data "of official size": the official download takes 80 shards of 10^8 tokens by default (up to 143 for
# sp4096, docs/rules.md#hub-download-layout) and a 10-minute record run reads a few 10^9 tokens. At 10^9 tokens (10
# shards) a directory is training data, not a test build; a val split below the official size beside it is #2127.
FULL_TRAIN_TOKENS = 10**9
METHOD = "doc-hash-v1"  # how documents are compared (the module docstring); recorded in the manifest
EXAMPLES = 5  # overlapping pairs kept in a report

_BLOCK = 1 << 24  # tokens per step of the BOS scan (bounds the temporary boolean mask to 16 MB)
_M1, _M2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9)  # odd 64-bit mixing constants
_S = np.uint64(31)


@dataclass
class Overlap:
    """What one comparison of a train split with a val split found. Document indices count from 0 in each split's
    stream; `examples` holds up to `EXAMPLES` pairs `{"train_doc", "val_doc", "tokens"}`."""

    val_docs: int = 0
    val_tokens: int = 0
    train_docs: int = 0  # train documents checked
    train_tokens: int = 0
    overlapping_docs: int = 0  # train documents equal to a val document
    overlapping_tokens: int = 0  # their tokens, BOS included
    val_docs_in_train: int = 0  # val documents (repeats counted) that appear in the train split
    val_duplicates: int = 0  # val documents equal to an earlier val document (not an error: reported apart)
    empty_docs: int = 0  # documents of either split with no token after their BOS (never reported as overlap)
    examples: list[dict] = field(default_factory=list)
    seconds: float = 0.0  # the whole comparison
    index_seconds: float = 0.0  # of which reading and indexing the val split(s)
    against: str | None = None  # the directory whose val split was compared, when not the train split's own

    def to_manifest(self) -> dict:
        """The manifest's `overlap` entry (`recorded_overlap` reads it back). No timing: a rebuilt data directory
        must have a byte-identical manifest."""
        from pgolf import __version__

        return {"val_docs": self.val_docs, "train_docs": self.train_docs, "overlapping_docs": self.overlapping_docs,
                "overlapping_tokens": self.overlapping_tokens, "val_docs_in_train": self.val_docs_in_train,
                "val_duplicates": self.val_duplicates, "examples": self.examples,
                "checked_with": f"pgolf {__version__} {METHOD}"}

    def summary(self, where: str | Path) -> str:
        """One line for stdout: counts, an example, the time taken."""
        return describe(self.to_manifest(), where, self.against, self.seconds)

    def problem(self, where: str | Path) -> str | None:
        """The one-line error of a leaking split (None when no train document equals a val document)."""
        if not self.overlapping_docs:
            return None
        return leak_problem(self.to_manifest(), where, self.against)


def describe(entry: dict, where: str | Path, against: str | None = None, seconds: float | None = None) -> str:
    """The summary line of an `overlap` entry (from `Overlap.to_manifest` or a manifest)."""
    split = f"{where} train split against the val split of {against}" if against else f"{where}"
    took = f" ({seconds:.2f} s)" if seconds is not None else ""
    dup = entry["val_duplicates"]
    dups = f"; {dup:,} val document(s) repeat an earlier val document" if dup else ""
    if not entry["overlapping_docs"]:
        return (f"overlap: {split}: none of {entry['val_docs']:,} val documents is among {entry['train_docs']:,} train "
                f"documents{dups}{took}")
    share = 100.0 * entry["val_docs_in_train"] / max(entry["val_docs"], 1)
    return (f"overlap: {split}: {entry['val_docs_in_train']:,} of {entry['val_docs']:,} val documents ({share:.1f}%) "
            f"are in the train split: {entry['overlapping_docs']:,} train documents, {entry['overlapping_tokens']:,} "
            f"tokens{_example(entry)}{dups}{took}")


def leak_problem(entry: dict, where: str | Path, against: str | None = None) -> str:
    """One line saying that (and how much of) the val split leaked into train, and what to do."""
    val = f"val documents of {against}" if against else "val documents"
    return (f"{where}: {entry['overlapping_docs']:,} train document(s) equal {val} ({entry['val_docs_in_train']:,} of "
            f"{entry['val_docs']:,} val documents leaked{_example(entry)}): a model trained on it is scored on text "
            f"it saw (official issue #2127); rebuild it so that no val document is in the train split")


def _example(entry: dict) -> str:
    ex = entry.get("examples") or []
    return f"; e.g. train document {ex[0]['train_doc']:,} = val document {ex[0]['val_doc']:,}" if ex else ""


def recorded_overlap(manifest: dict) -> dict | None:
    """The manifest's `overlap` entry (checked by `read_manifest`), or None for a manifest written before pgolf
    recorded it: then only `check_overlap` can say."""
    entry = manifest.get(OVERLAP)
    return dict(entry) if isinstance(entry, dict) else None


def print_overlap(manifest: dict, where: str | Path) -> None:
    """What `data build`, `data import` and `data fineweb` print after writing a manifest: its recorded overlap (one
    line on stdout) and, on stderr, a warning for a leak and one for the #2127 fingerprint."""
    entry = recorded_overlap(manifest)
    if entry is not None:
        print(describe(entry, where, seconds=entry.get("seconds")))
        if entry["overlapping_docs"]:
            print(f"pgolf: warning: {leak_problem(entry, where)}", file=sys.stderr)
    warning = leak_fingerprint(manifest, where)
    if warning:
        print(f"pgolf: warning: {warning}", file=sys.stderr)


def leak_fingerprint(manifest: dict, where: str | Path) -> str | None:
    """The #2127 pattern without a reference directory: a val split of fewer than the official 50,000 documents
    beside at least `FULL_TRAIN_TOKENS` train tokens. A warning line, or None."""
    val_docs = manifest["splits"]["val"]["docs"]
    train_tokens = manifest["splits"]["train"]["tokens"]
    if val_docs >= OFFICIAL_VAL_DOCS or train_tokens < FULL_TRAIN_TOKENS:
        return None
    return (f"{where}: {val_docs:,} val documents beside {train_tokens:,} train tokens: the official val split is the "
            f"first {OFFICIAL_VAL_DOCS:,} documents of docs_selected.jsonl, and a smaller one beside full-size train "
            f"data is the mark of official issue #2127 (the CaseOps preparation script's --val-docs 10000 put val "
            f"documents 10,000-49,999 into train); check it with pgolf data verify {where} --against "
            f"<the official export's folder>, or rebuild with --val-docs {OFFICIAL_VAL_DOCS}")


# ----------------------------------------------------------------------------------------------- the comparison
def _bos_positions(tokens: np.ndarray, bos: int) -> np.ndarray:
    """Indices of every BOS, scanned in blocks so the temporary mask stays small."""
    parts = [np.flatnonzero(tokens[i:i + _BLOCK] == bos) + i for i in range(0, len(tokens), _BLOCK)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _keys(tokens: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """A 64-bit key per non-empty document [starts, ends): its length and six of its tokens, mixed. Equal documents
    have equal keys; unequal ones rarely do, and a shared key is only a reason to look closer."""
    length = (ends - starts).astype(np.uint64)
    key = length * _M1
    for pos in (starts, np.minimum(starts + 1, ends - 1), np.minimum(starts + 2, ends - 1),
                starts + (ends - starts) // 2, ends - 1, np.maximum(ends - 2, starts)):
        key = (key ^ tokens[pos].astype(np.uint64)) * _M2
        key ^= key >> _S
    return key


_LE16 = np.dtype("<u2")


def _digest(doc: np.ndarray) -> bytes:
    """BLAKE2b-128 of a document's tokens (little-endian uint16, as the shards store them)."""
    if doc.dtype != _LE16 or not doc.flags.c_contiguous:
        doc = np.ascontiguousarray(doc, dtype=_LE16)
    return hashlib.blake2b(doc, digest_size=16).digest()


class _ValIndex:
    """One val split in memory: its documents, their keys (sorted, for a vectorised membership test) and digests
    (each digest -> the distinct documents with it, confirmed token by token), and what matched so far."""

    def __init__(self, tokens: np.ndarray, bos: int, against: str | None) -> None:
        self.tokens = tokens
        self.report = Overlap(val_tokens=len(tokens), against=against)
        pos = _bos_positions(tokens, bos)
        head = int(pos[0]) if len(pos) else len(tokens)
        starts = pos + 1
        ends = np.append(pos[1:], len(tokens)).astype(np.int64)
        if head:  # the stream does not start with BOS: its first tokens are a document of their own
            starts, ends = np.concatenate([[0], starts]), np.concatenate([[head], ends])
        self.starts, self.ends = starts.tolist(), ends.tolist()  # Python ints: cheap slicing in the loops below
        self.report.val_docs = len(starts)
        full = np.flatnonzero(ends > starts)
        self.report.empty_docs = len(starts) - len(full)
        self.keys = np.unique(_keys(tokens, starts[full], ends[full]))
        self.by_digest: dict[bytes, list[int]] = {}
        self.copies: dict[int, int] = {}  # first val document of each distinct content -> how many val documents
        for i in full.tolist():
            doc = self.doc(i)
            digest = _digest(doc)
            rep = self.match(doc, digest)
            if rep is None:
                self.by_digest.setdefault(digest, []).append(i)
                self.copies[i] = 1
            else:
                self.copies[rep] += 1
                self.report.val_duplicates += 1
        self.leaked: set[int] = set()

    def doc(self, i: int) -> np.ndarray:
        return self.tokens[self.starts[i]:self.ends[i]]

    def match(self, doc: np.ndarray, digest: bytes) -> int | None:
        """The val document equal to `doc` (token by token), or None."""
        return next((r for r in self.by_digest.get(digest, ()) if np.array_equal(doc, self.doc(r))), None)

    def finish(self, train_docs: int, train_tokens: int, train_empty: int, seconds: float,
               index_seconds: float) -> Overlap:
        r = self.report
        r.train_docs, r.train_tokens, r.seconds, r.index_seconds = train_docs, train_tokens, seconds, index_seconds
        r.empty_docs += train_empty
        r.val_docs_in_train = sum(self.copies[i] for i in self.leaked)
        return r


def _read_split(files: Sequence[Path]) -> np.ndarray:
    """A whole split as one uint16 array (a memory map when it is one file)."""
    parts = [np.asarray(read_shard(f)) for f in files]  # plain arrays over the maps: slicing a memmap is slow
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def compare_splits(train_files: Sequence[str | Path], val_sets: Sequence[Sequence[str | Path]], bos: int, *,
                   against: Sequence[str | None] | None = None, progress: bool = False) -> list[Overlap]:
    """Compare the documents of one train split (its shards in order, streamed one at a time) with each of several
    val splits (each a list of shards, held in memory) in one pass over train; one `Overlap` per val split.
    `against[k]` names where val split k came from when it is not the train split's own directory."""
    from pgolf.progress import track

    start = time.perf_counter()
    indexes = [_ValIndex(_read_split([Path(f) for f in files]), bos, (against or [None] * len(val_sets))[k])
               for k, files in enumerate(val_sets)]
    index_seconds = time.perf_counter() - start
    counts = {"docs": 0, "tokens": 0, "empty": 0}

    def check(tokens: np.ndarray, starts: np.ndarray, ends: np.ndarray, headed: bool) -> None:
        first = counts["docs"]
        counts["docs"] += len(starts)
        full = np.flatnonzero(ends > starts)
        counts["empty"] += len(starts) - len(full)
        if not len(full):
            return
        keys = _keys(tokens, starts[full], ends[full])
        hit = np.zeros(len(full), dtype=bool)
        for index in (x for x in indexes if len(x.keys)):
            at = np.minimum(np.searchsorted(index.keys, keys), len(index.keys) - 1)
            hit |= index.keys[at] == keys
        for i in full[hit].tolist():
            doc = tokens[starts[i]:ends[i]]
            digest = _digest(doc)
            n = int(ends[i] - starts[i]) + headed
            for index in indexes:
                j = index.match(doc, digest)
                if j is None:
                    continue
                r = index.report
                r.overlapping_docs += 1
                r.overlapping_tokens += n
                index.leaked.add(j)
                if len(r.examples) < EXAMPLES:
                    r.examples.append({"train_doc": first + i, "val_doc": j, "tokens": n})

    def single(doc: np.ndarray, headed: bool) -> None:
        check(doc, np.array([0]), np.array([len(doc)]), headed)

    open_parts: list[np.ndarray] = []  # the document still open at the end of the last shard (tokens after BOS)
    open_headed = False  # whether it began with a BOS (only the stream's first document may not)
    open_exists = False
    for f in track([Path(f) for f in train_files], "overlap", "shard", enabled=progress):
        tokens = np.asarray(read_shard(f))
        counts["tokens"] += len(tokens)
        pos = _bos_positions(tokens, bos)
        if not len(pos):  # no document starts here: the whole shard continues the open one
            if len(tokens):
                open_parts.append(np.array(tokens))
                open_exists = True
            continue
        if open_exists or pos[0] > 0:  # the open document ends before this shard's first BOS
            single(np.concatenate([*open_parts, np.asarray(tokens[:pos[0]])]), open_headed)
        check(tokens, pos[:-1] + 1, pos[1:], True)
        open_parts, open_headed, open_exists = [np.array(tokens[pos[-1] + 1:])], True, True
        del tokens
    if open_exists:
        single(np.concatenate(open_parts), open_headed)
    seconds = time.perf_counter() - start
    return [index.finish(counts["docs"], counts["tokens"], counts["empty"], seconds, index_seconds)
            for index in indexes]


def bos_id(data_dir: Path, manifest: dict) -> int:
    """The BOS id of a data directory: the manifest's, else (an older manifest) the tokenizer's."""
    value = manifest["tokenizer"].get("bos_id")
    if type(value) is int and value >= 0:
        return value
    from pgolf.data.tokenizer import load_tokenizer

    return load_tokenizer(data_dir / manifest["tokenizer"]["file"]).bos_id()


def check_overlap(data_dir: str | Path, against: str | Path | None = None, *, progress: bool = False) -> Overlap:
    """Compare the train split of `data_dir` with its own val split, or with the val split of `against` (another
    data directory, e.g. the official export: what catches #2127)."""
    return check_overlaps(data_dir, against, progress=progress)[-1]


def check_overlaps(data_dir: str | Path, against: str | Path | None = None, *,
                   progress: bool = False) -> list[Overlap]:
    """`data_dir`'s train split against its own val split and, with `against`, also against that directory's val
    split, in one pass over train: [own] or [own, against]. Both directories must share one tokenizer."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    bos = bos_id(data_dir, manifest)
    vals = [[data_dir / n for n in manifest["splits"]["val"]["files"]]]
    names: list[str | None] = [None]
    if against is not None:
        against = Path(against)
        other = read_manifest(against)
        mine, theirs = manifest["tokenizer"], other["tokenizer"]
        if mine["sha256"] != theirs["sha256"]:
            raise PgolfError(f"--against {against}: its tokenizer {theirs['file']} (sha256 {theirs['sha256'][:12]}) is "
                             f"not the tokenizer of {data_dir} ({mine['file']}, sha256 {mine['sha256'][:12]}): "
                             f"documents compare only in one tokenization")
        if bos_id(against, other) != bos:
            raise PgolfError(f"--against {against}: its BOS id differs from {data_dir}'s")
        vals.append([against / n for n in other["splits"]["val"]["files"]])
        names.append(str(against))
    train = [data_dir / n for n in manifest["splits"]["train"]["files"]]
    return compare_splits(train, vals, bos, against=names, progress=progress)
