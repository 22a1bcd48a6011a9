"""docs/integrity.md's table: each integrity failure of the public record, reproduced on small data, and pgolf's
one-line verdict on it. Every verdict quoted in the table is produced here (paths replaced by their names)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from _submit_fakes import fake_run, fake_val_split

from conftest import REPO_ROOT, perturbed_tiny_gpt
from pgolf.cli import main
from pgolf.data.build import build_dataset
from pgolf.data.bytes import byte_tables
from pgolf.data.tokenizer import load_tokenizer
from pgolf.data.val_split import ValSplit, official_verdict
from pgolf.errors import PgolfError
from pgolf.eval.evaluate import ValidationData
from pgolf.eval.fixtures import FIXTURES
from pgolf.eval.legality import check_mode
from pgolf.eval.modes import make_mode
from pgolf.submit.pack import pack

DOC = (REPO_ROOT / "docs" / "integrity.md").read_text(encoding="utf-8")


def fake_bundle(preset: str, out: Path) -> None:
    Path(out).write_bytes(b"# a stand-in train_gpt.py\n" * 100)


def _quoted(line: str) -> str:
    """`line` as the table quotes it: one line, no pgolf: prefixes."""
    line = re.sub(r"^pgolf: (error|verify|warning): ", "", line.strip())
    assert "\n" not in line
    assert line in DOC, f"docs/integrity.md does not quote: {line}"
    return line


@pytest.fixture(scope="module")
def sp1024_splits(tmp_path_factory):
    """The official sp1024 tokenizer over 200 challenge documents: "official" (val = the first 50, the 50,000
    scaled down) and "leaky" (val = the first 10, as the CaseOps script's default --val-docs 10000), one document
    list (issue #2127)."""
    from conftest import shared_data_dir

    shared = shared_data_dir()
    if shared is None:
        pytest.skip("../shared/data is not present")
    root = tmp_path_factory.mktemp("integrity")
    docs = shared / "fineweb" / "challenge_docs_200.jsonl"
    tok = shared / "tokenizers" / "fineweb_1024_bpe.model"
    out = {}
    for name, val in (("OFFICIAL", 50), ("LEAKY", 10)):
        out[name] = root / name
        build_dataset([docs], out[name], tokenizer=tok, val_docs=val, workers=1, progress=False)
    return out


def test_2127_leak_found_against_the_official_split(sp1024_splits, capsys):
    leaky, official = sp1024_splits["LEAKY"], sp1024_splits["OFFICIAL"]
    assert main(["data", "verify", str(leaky), "--quiet"]) == 0  # on its own it is consistent
    capsys.readouterr()
    assert main(["data", "verify", str(leaky), "--against", str(official), "--quiet"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("pgolf: error:")]
    assert len(err) == 1
    _quoted(err[0].replace(str(official), "OFFICIAL").replace(str(leaky), "LEAKY"))


def test_a_smaller_val_split_is_not_the_official_one(sp1024_splits):
    """#1854 and the #2127 submissions scored 10,000 of the 50,000 documents."""
    record = ValidationData(sp1024_splits["LEAKY"]).split_record()
    assert not record["verdict"]["official"]
    _quoted(record["verdict"]["reason"])


def test_a_dropped_tail_is_not_the_official_split(sp1024_splits):
    """The 1.0611 record's 47,851,520 targets against 47,853,343: the last partial window not scored."""
    val = ValidationData(sp1024_splits["OFFICIAL"])
    fields = {k: v for k, v in val.split_record().items() if k != "verdict"}
    full = ValSplit(**fields)
    dropped = (full.tokens - 1) % 1024
    truncated = dataclasses.replace(full, targets=full.targets - dropped, tail=f"truncated: {dropped} targets dropped")
    verdict = official_verdict(truncated)
    assert not verdict.official and "targets scored" in verdict.reason
    _quoted(verdict.reason)


def test_byte_fallback_tokens_count_one_byte_and_a_miscount_is_refused(sp1024_splits, tmp_path):
    """PR #1184's byte table counted 27 byte-fallback tokens as 3 bytes (audit PR #1271): pgolf derives every
    byte count from the tokenizer itself, and a data directory whose total disagrees is refused."""
    data = sp1024_splits["OFFICIAL"]
    sp = load_tokenizer(next(data.glob("*.model")))
    tables = byte_tables(sp)
    fallback = [i for i in range(sp.get_piece_size()) if sp.is_byte(i)]
    assert len(fallback) == 256 and set(tables.base_bytes[fallback].tolist()) == {1}
    bad = tmp_path / "miscounted"
    shutil.copytree(data, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    tokens = ValidationData(data).tokens
    extra = 2 * int(np.isin(tokens[1:], fallback).sum())  # each byte-fallback target counted 3 bytes, not 1
    assert extra > 0
    manifest["splits"]["val"]["bytes"] += extra
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PgolfError) as exc:
        ValidationData(bad)
    _quoted(str(exc.value).replace(str(bad), "DATA"))


def test_ttt_that_trains_before_scoring_is_flagged():
    tokens = np.random.default_rng(3).integers(2, 512, size=400).astype(np.uint16)
    tokens[[0, 60, 61, 190, 330]] = 1
    report = check_mode(lambda: make_mode("broken-adapt-first", seq_len=64, stride=16, bos_id=1, extra=FIXTURES),
                        perturbed_tiny_gpt(seed=1), tokens, batch_tokens=256, perturbations=5)
    assert "C3" in report.violated
    from pgolf.eval.legality import CONDITIONS

    c3 = next(r for r in report.results if r.condition == "C3")
    _quoted(f"{c3.condition} {CONDITIONS['C3']}: FAIL {c3.detail}")


def test_hessians_past_the_clock_fail_verify(tmp_path, capsys):
    """PR #2135's seed 0: 599,608 ms of training, then its Hessians from training batches in 6.9 s."""
    runs = [fake_run(tmp_path / "runs", 1, 1.1, train_ms=599_608.0, calibration="GPTQ:collected 67 Hessians in 6.9s")]
    pack(runs, tmp_path / "records", bundle_writer=fake_bundle)
    assert main(["verify", str(tmp_path / "records")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    _quoted(err[0])


def test_a_small_run_claiming_a_record_fails_verify(tmp_path, capsys):
    """A run scored on 5 documents, packed as a record (the default): verify fails it; --non-record passes."""
    runs = [fake_run(tmp_path / "runs", s, 1.1, val_split=fake_val_split(False)) for s in (1, 2)]
    pack(runs, tmp_path / "claim", bundle_writer=fake_bundle)
    assert main(["verify", str(tmp_path / "claim")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    _quoted(err[0])
    pack(runs, tmp_path / "non-record", bundle_writer=fake_bundle, non_record=True)
    assert main(["verify", str(tmp_path / "non-record")]) == 0
    assert "not a record (packed with --non-record)" in (tmp_path / "non-record" / "README.md").read_text()


def test_the_table_names_only_tests_that_exist():
    names = set(re.findall(r"`(test_\w+)`", DOC))
    here = set(re.findall(r"^def (test_\w+)", Path(__file__).read_text(), re.M))
    assert names and names <= here, names - here
