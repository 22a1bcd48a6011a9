"""SentencePiece tokenizers: training with the official settings (docs/rules.md), loading, parallel encoding."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import sentencepiece as spm

from pgolf.data.caseops import OPERATORS
from pgolf.errors import PgolfError
from pgolf.fileio import atomic_write_bytes

OFFICIAL_TRAINER_SETTINGS: dict = {
    "model_type": "bpe",
    "character_coverage": 0.999,
    "byte_fallback": True,
    "split_digits": True,
    "normalization_rule_name": "nmt_nfkc",
    "add_dummy_prefix": False,
    "pad_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "unk_id": 3,
    "hard_vocab_limit": False,
}


def training_text(texts: Iterable[str]) -> Iterable[str]:
    """The official exporter's cleaning: NUL -> space, strip, skip empties."""
    for text in texts:
        text = text.replace("\x00", " ").strip()
        if text:
            yield text


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_path: str | Path,
                    user_defined_symbols: Sequence[str] = (), caseops: bool = False, **overrides) -> Path:
    """Train a BPE SentencePiece model with the official settings and write `out_path` atomically.

    The same texts always give the same bytes: the model is trained from an iterator, so no temporary file path
    ends up in its trainer spec.

    `caseops=True` reserves the four CaseOps operators as user-defined pieces (ids 4..7, as in the official CaseOps
    tokenizer); `texts` must then already be CaseOps-transformed (`pgolf.data.caseops.encode_caseops`)."""
    if not 16 <= vocab_size <= 65_536:
        raise PgolfError(f"tokenizer vocab size {vocab_size} must be in [16, 65536]")
    if caseops:
        user_defined_symbols = [*OPERATORS, *(s for s in user_defined_symbols if s not in OPERATORS)]
    settings = {**OFFICIAL_TRAINER_SETTINGS, **overrides}
    if user_defined_symbols:
        settings["user_defined_symbols"] = list(user_defined_symbols)
    model = io.BytesIO()
    seen = 0
    failure: list[Exception] = []

    def sentences() -> Iterable[str]:  # one line per document, as the official exporter's corpus file has
        nonlocal seen
        try:
            for text in training_text(texts):
                seen += 1
                yield text.replace("\n", " ")
        except Exception as exc:  # SentencePiece would turn it into a RuntimeError: keep it to re-raise
            failure.append(exc)
            raise

    try:
        spm.SentencePieceTrainer.train(sentence_iterator=sentences(), vocab_size=vocab_size, model_writer=model,
                                       minloglevel=2, max_sentence_length=1 << 20, **settings)
    except RuntimeError as exc:
        if failure:
            raise failure[0] from None
        if seen == 0:
            raise PgolfError("cannot train a tokenizer: no non-empty documents") from None
        raise PgolfError(f"SentencePiece training failed: {str(exc).strip().splitlines()[-1]}") from None
    atomic_write_bytes(out_path, model.getvalue())
    return Path(out_path)


def load_tokenizer(path: str | Path) -> spm.SentencePieceProcessor:
    path = Path(path)
    if not path.is_file():
        raise PgolfError(f"{path}: tokenizer model file is missing")
    sp = spm.SentencePieceProcessor()
    try:
        sp.load(str(path))
    except (OSError, RuntimeError, ValueError):  # ValueError: a damaged model's pieces are not UTF-8
        raise PgolfError(f"{path}: not a valid SentencePiece model") from None
    return sp


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_encodable(sp: spm.SentencePieceProcessor, name: str = "tokenizer") -> None:
    if sp.bos_id() < 0:
        raise PgolfError(f"{name}: tokenizer has no BOS id; documents must start with BOS")
    if sp.get_piece_size() > 65_536:
        raise PgolfError(f"{name}: vocab {sp.get_piece_size()} does not fit uint16 shards (max 65536)")


def encode_documents(sp: spm.SentencePieceProcessor, texts: Sequence[str], workers: int = 1) -> list[np.ndarray]:
    """Each document -> uint16 [BOS] + ids, in order; SentencePiece's own thread pool encodes in parallel."""
    check_encodable(sp)
    bos = sp.bos_id()
    encoded = sp.encode(list(texts), num_threads=max(1, workers))
    return [np.array([bos, *ids], dtype=np.uint16) for ids in encoded]
