"""The val split's identity (`pgolf.data.val_split`): counts, digest, and the official-split verdict."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re

import numpy as np
import pytest

from pgolf.data.loader import load_split
from pgolf.data.manifest import read_manifest
from pgolf.data.val_split import (OFFICIAL_SPLITS, OFFICIAL_VAL_DOCS, TAIL_SCORED, ValSplit, describe, official_verdict,
                                  stream_digest, val_split)


def test_digest_is_the_sha256_of_the_shard_payload(tiny_data):
    payload = b"".join(s.read_bytes()[1024:] for s in sorted(tiny_data.glob("fineweb_val_[0-9]*.bin")))
    tokens = load_split(tiny_data, "val")
    assert len(payload) == 2 * len(tokens)
    assert stream_digest(tokens) == "sha256:" + hashlib.sha256(payload).hexdigest()
    changed = tokens.copy()
    changed[len(changed) // 2] ^= 1
    assert stream_digest(changed) != stream_digest(tokens)
    assert stream_digest(tokens.astype(np.int64)) == stream_digest(tokens)  # the value, not the dtype


def test_val_split_counts_documents_tokens_and_bytes(tiny_data):
    manifest = read_manifest(tiny_data)
    tokens = load_split(tiny_data, "val")
    target_bytes = np.full(len(tokens) - 1, 3)
    split = val_split(tokens, target_bytes, manifest, full=True)
    assert split.docs == 40 == manifest["splits"]["val"]["docs"]  # built with --val-docs 40, one BOS each
    assert split.tokens == len(tokens) and split.targets == len(tokens) - 1 and split.tail == TAIL_SCORED
    assert split.bytes == 3 * (len(tokens) - 1)
    assert split.tokenizer_sha256 == manifest["tokenizer"]["sha256"] and split.vocab_size == 512
    verdict = official_verdict(split)
    assert not verdict.official and "no official export has a vocabulary of 512" in verdict.reason


def _official(export: str, **changes) -> ValSplit:
    o = next(o for o in OFFICIAL_SPLITS if o.export == export)
    split = ValSplit(docs=OFFICIAL_VAL_DOCS, tokens=o.tokens[0], targets=o.tokens[0] - 1, tail=TAIL_SCORED,
                     bytes=o.bytes or 1, vocab_size=o.vocab_size, tokenizer_sha256=o.tokenizer_sha256 or "0" * 64,
                     digest="sha256:" + "ab" * 32, full=True, caseops=o.caseops)
    return dataclasses.replace(split, **changes)


@pytest.mark.parametrize("export", [o.export for o in OFFICIAL_SPLITS])
def test_the_official_split_of_each_export_is_recognised(export):
    verdict = official_verdict(_official(export))
    assert verdict.official and verdict.export == export, verdict.reason


@pytest.mark.parametrize("change, words", [
    ({"docs": 10_000}, "10,000 documents"),  # the #2127 split: --val-docs 10000
    ({"full": False}, "only the first"),
    ({"tokens": 47_851_521, "targets": 47_851_520}, "47,851,521 tokens"),  # the tail dropped (1.0611's count)
    ({"targets": 47_853_000}, "targets scored"),
    ({"tokenizer_sha256": "1" * 64}, "tokenizer sha256 111111111111"),
    ({"caseops": False}, "not the official sp8192 val split"),  # CaseOps tokens are not sp8192's stream
])
def test_anything_else_is_not_official_and_says_why(change, words):
    verdict = official_verdict(_official("sp8192-caseops", **change))
    assert not verdict.official and words in verdict.reason, verdict.reason


def test_sp1024_bytes_are_checked():
    verdict = official_verdict(_official("sp1024", bytes=151_080_890))
    assert not verdict.official and "151,080,890 bytes" in verdict.reason


def test_describe_is_one_line_even_for_old_records():
    split = _official("sp1024")
    line = describe(split.to_dict() | {"verdict": official_verdict(split).to_dict()})
    assert "\n" not in line and "50,000 docs" in line and "official: the official sp1024" in line
    assert "NOT official" in describe({})  # a result.json written before val splits were recorded


def test_score_and_result_json_carry_the_val_split(tiny_data, tmp_path, tiny_config):
    from pgolf.train.trainer import train

    result = train(tiny_config("train.iterations=2"), tiny_data, tmp_path / "run", echo=None)
    split = result["val_split"]
    assert split["docs"] == 40 and split["tokens"] == result["val_tokens"] + 1 and split["bytes"] == result["val_bytes"]
    assert split["digest"] == stream_digest(load_split(tiny_data, "val"))
    assert split["verdict"]["official"] is False
    assert json.loads((tmp_path / "run" / "result.json").read_text())["val_split"] == split
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "val split: 40 docs" in log
    assert re.search(r"^Code size: \d+ bytes \(", log, re.M)  # the official script's line (issue 24)
