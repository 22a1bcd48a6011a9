"""The legality checker passes the legal modes and flags every broken fixture with the condition it violates,
through the library and through `pgolf legality` (exit code); `pgolf eval` runs the new modes and its budget."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import perturbed_tiny_gpt
from pgolf.cli import main
from pgolf.eval.fixtures import EXPECTED_VIOLATION, FIXTURES
from pgolf.eval.legality import check_mode
from pgolf.eval.modes import make_mode

pytestmark = pytest.mark.usefixtures("one_thread")

BOS = 1




@pytest.fixture(scope="module")
def model():
    return perturbed_tiny_gpt("model.smear_gate=true", "model.bigram_rows=64", seed=1)


@pytest.fixture(scope="module")
def tokens():
    out = np.random.default_rng(3).integers(2, 512, size=400).astype(np.uint16)
    out[[0, 60, 61, 190, 330]] = BOS
    return out


def _check(name, model, tokens):
    return check_mode(lambda: make_mode(name, seq_len=64, stride=16, bos_id=BOS, extra=FIXTURES), model, tokens,
                      batch_tokens=256, perturbations=5)


@pytest.mark.parametrize("name", ["flat", "sliding", "doc", "score-first-cache", "ngram-tilt"])
def test_legal_modes_pass(model, tokens, name):
    report = _check(name, model, tokens)
    assert report.passed, report.table()
    assert [r.condition for r in report.results] == ["C1", "C2", "C3", "C4"]
    if name == "score-first-cache":  # the adaptive reference really adapted, and only on scored tokens
        assert "adapt calls" in report.results[2].detail


@pytest.mark.parametrize("name", sorted(EXPECTED_VIOLATION))
def test_broken_fixtures_are_flagged(model, tokens, name):
    report = _check(name, model, tokens)
    assert not report.passed
    assert EXPECTED_VIOLATION[name] in report.violated, report.table()
    assert "VIOLATES" in report.table()


def test_every_fixture_is_named_and_judged():
    assert set(FIXTURES) == set(EXPECTED_VIOLATION) | {"score-first-cache", "ngram-tilt"}


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A tiny finished run: (data dir, artifact path)."""
    from conftest import TINY_MODEL_SETS
    from pgolf.options import resolve_config
    from pgolf.train.trainer import train

    run = tmp_path_factory.mktemp("legality_run")
    sets = [*TINY_MODEL_SETS, "train.val_loss_every=0", "train.iterations=3", "model.smear_gate=true",
            "eval.mode=doc", "eval.stride=32"]
    train(resolve_config("cpu-smoke", sets, environ={}), tiny_data, run, echo=None)
    return tiny_data, run / "artifact.pgolf"


@pytest.mark.parametrize("mode, code", [("doc", 0), ("sliding", 0), ("broken-peek", 1), ("broken-double-score", 1)])
def test_legality_cli_exit_codes(trained, capsys, mode, code):
    data, artifact = trained
    rc = main(["legality", str(artifact), "--data", str(data), "--mode", mode, "--tokens", "300", "--stride", "16",
               "--perturbations", "3", "--threads", "1"])
    out = capsys.readouterr().out
    assert rc == code, out
    assert "C4 each token scored once" in out
    assert ("legal" in out.splitlines()[-1]) == (code == 0)


def test_legality_cli_unknown_mode_fails_cleanly(trained, capsys):
    data, artifact = trained
    assert main(["legality", str(artifact), "--data", str(data), "--mode", "nope"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("pgolf: error: ") and "unknown eval mode" in err


def test_eval_cli_modes_cover_the_whole_val_split(trained, capsys):
    data, artifact = trained
    manifest = json.loads((data / "manifest.json").read_text())
    scores = {}
    for mode in ("flat", "sliding", "doc"):
        assert main(["eval", str(artifact), "--data", str(data), "--mode", mode, "--stride", "32", "--json",
                     "--threads", "1"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["mode"] == mode
        assert result["val_tokens"] == manifest["splits"]["val"]["tokens"] - 1
        assert result["val_bytes"] == manifest["splits"]["val"]["bytes"]
        assert "scoring" in result["phases"]
        scores[mode] = result["val_bpb"]
    assert len(set(scores.values())) == 3


def test_eval_cli_budget_error_is_one_clean_line(trained, capsys):
    data, artifact = trained
    rc = main(["eval", str(artifact), "--data", str(data), "--mode", "sliding", "--stride", "1",
               "--max-seconds", "0.000001", "--threads", "1"])
    err = capsys.readouterr().err
    assert rc != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pgolf: error: ") and "time budget" in lines[0]


def test_eval_cli_applies_the_ngram_tilt_to_the_final_score(trained, capsys):
    data, artifact = trained
    scores = {}
    for sets in ([], ["--set", "eval.ngram_order=3"]):
        assert main(["eval", str(artifact), "--data", str(data), "--mode", "flat", "--json", "--threads", "1",
                     *sets]) == 0
        scores[bool(sets)] = json.loads(capsys.readouterr().out)
    plain, tilted = scores[False], scores[True]
    assert tilted["val_tokens"] == plain["val_tokens"] and tilted["val_bytes"] == plain["val_bytes"]
    assert tilted["val_bpb"] != plain["val_bpb"]
    assert "n-gram tilt (order 3" in tilted["evals"][-1]["detail"]
    assert tilted["evals"][-1]["report"]["ngram_tilt"]["hinted"] > 0


def test_the_artifact_config_chooses_the_default_mode(trained, capsys):
    data, artifact = trained
    result = json.loads((artifact.parent / "result.json").read_text())
    assert result["eval_mode"] == "doc"  # the trainer scored its artifact with the preset's eval section
    assert main(["eval", str(artifact), "--data", str(data), "--json", "--threads", "1"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["mode"] == "doc" and scored["stride"] == 32
    assert scored["val_bpb"] == result["val_bpb"]


@pytest.mark.parametrize("bad", ["eval.mode=bogus", "eval.stride=-1", "eval.max_seconds=-5"])
def test_eval_config_is_validated(bad):
    from conftest import TINY_MODEL_SETS
    from pgolf.options import resolve_config
    from pgolf.errors import PgolfError

    with pytest.raises(PgolfError, match="eval"):
        resolve_config("cpu-smoke", [*TINY_MODEL_SETS, bad], environ={})
