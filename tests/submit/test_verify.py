"""`pgolf verify`: a packed folder passes, and each kind of tampering fails with one clear line naming it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from _submit_fakes import fake_run

from pgolf.cli import main
from pgolf.submit.pack import pack

FAKE_BUNDLE = b"# a stand-in train_gpt.py\n" * 100


def fake_bundle(preset: str, out: Path) -> None:
    Path(out).write_bytes(FAKE_BUNDLE)


def packed(tmp_path: Path, **run_options) -> Path:
    runs = [fake_run(tmp_path / "runs", s, b, **run_options) for s, b in ((1, 1.100), (2, 1.102))]
    out = tmp_path / "records"
    pack(runs, out, bundle_writer=fake_bundle)
    return out


def verify(folder: Path, capsys, *extra: str) -> tuple[int, str, list[str]]:
    code = main(["verify", str(folder), *extra])
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line]


def edit_submission(folder: Path, change) -> None:
    path = folder / "submission.json"
    sub = json.loads(path.read_text())
    change(sub)
    path.write_text(json.dumps(sub, indent=2))


def test_packed_folder_verifies(tmp_path, capsys):
    folder = packed(tmp_path)
    code, out, err = verify(folder, capsys)
    assert code == 0 and err == []
    assert "| code bytes" in out and "| pass   | train_gpt.py: 2,600 bytes |" in out
    assert "| train time seed 1 | pass   | 590.0 s <= 600 s |" in out
    assert "| data use seed 2   | pass   | no calibration on data recorded; val scored 1 time(s) during training " \
           "(monitoring, clock paused, not trained on) |" in out
    assert out.rstrip().endswith(f"{folder}: verified")


def test_val_split_claims_are_checked(tmp_path, capsys):
    """Seeds on different val tokens fail; a record claim from seeds that do not record their split fails; a
    non-record folder without them passes with a note."""
    folder = packed(tmp_path)
    assert "| val split         | pass   | val split: 50,000 docs" in verify(folder, capsys)[1]

    def other_digest(s):
        s["seed_results"][1]["val_split"]["digest"] = "sha256:" + "77" * 32
    edit_submission(folder, other_digest)
    code, _, err = verify(folder, capsys)
    assert code == 1 and err == ["pgolf: verify: FAIL val split: the seeds were scored on different val splits "
                                 "(digests 5a5a5a5a5a5a, 777777777777)"]

    def unrecorded(s):
        for seed in s["seed_results"]:
            del seed["val_split"]
    edit_submission(folder, unrecorded)
    code, _, err = verify(folder, capsys)
    assert code == 1 and err == ["pgolf: verify: FAIL val split: seed(s) 1, 2 do not record the val split they were "
                                 "scored on: a record must show it was scored on the official split"]
    edit_submission(folder, lambda s: s.update(record=False))
    code, out, _ = verify(folder, capsys)
    assert code == 0 and "| val split         | skip" in out


def test_calibration_past_the_clock_fails_whatever_the_trainer_said(tmp_path, capsys):
    """PR #2135's seed 0: stopped at 599,608 ms, then collected its GPTQ Hessians from training data in 6.9 s."""
    folder = packed(tmp_path, train_ms=599_608.0, calibration="GPTQ:collected 67 Hessians in 6.9s")
    code, _, err = verify(folder, capsys)
    assert code == 1 and err == ["pgolf: verify: FAIL train+calibration seed 1: train_seed1.log: training 599.6 s + "
                                 "GPTQ calibration on training data 6.9 s = 606.5 s > 600 s",
                                 "pgolf: verify: FAIL train+calibration seed 2: train_seed2.log: training 599.6 s + "
                                 "GPTQ calibration on training data 6.9 s = 606.5 s > 600 s"]
    inside = packed(tmp_path / "inside", train_ms=593_000.0, calibration="GPTQ:collected 67 Hessians in 6.9s")
    code, out, _ = verify(inside, capsys)
    assert code == 0 and "| train+calibration seed 1 | pass   | 599.9 s <= 600 s" in out


def test_verify_data_fails_a_directory_whose_train_split_holds_val_documents(tiny_data, tmp_path, capsys):
    from pgolf.data.build import build_dataset

    docs = [f"document number {i} says something about {i * 7} things. " * 20 for i in range(12)]
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in [*docs, docs[1]]), encoding="utf-8")
    leaky = tmp_path / "leaky"
    build_dataset([src], leaky, tokenizer=next(tiny_data.glob("*.model")), val_docs=3, workers=1, progress=False)
    code, _, err = verify(packed(tmp_path), capsys, "--data", str(leaky))
    assert code == 1
    assert any(line.startswith("pgolf: verify: FAIL data overlap: ") and "1 train document(s) equal val documents"
               in line for line in err), err


def test_tampered_artifact(tmp_path, capsys):
    folder = packed(tmp_path)
    art = folder / "artifact_seed2.pgolf"
    data = bytearray(art.read_bytes())
    data[100] ^= 0xFF  # same size, other bytes
    art.write_bytes(bytes(data))
    code, _, err = verify(folder, capsys)
    assert code == 1
    assert err == ["pgolf: verify: FAIL artifact seed 2: artifact_seed2.pgolf's sha256 differs from "
                   "submission.json's"]


def test_grown_artifact_breaks_the_byte_counts(tmp_path, capsys):
    folder = packed(tmp_path)
    with open(folder / "artifact_seed1.pgolf", "ab") as f:
        f.write(b"x" * 10)
    code, _, err = verify(folder, capsys)
    assert code == 1
    assert "pgolf: verify: FAIL artifact seed 1: artifact_seed1.pgolf is 5,010 bytes, submission.json says 5000; " \
           "artifact_seed1.pgolf's sha256 differs from submission.json's" in err
    assert "pgolf: verify: FAIL bytes seed 1: 5,010 + 2,600 = 7,610 bytes, submission.json says 7600" in err


def test_grown_code_is_counted(tmp_path, capsys):
    folder = packed(tmp_path)
    with open(folder / "train_gpt.py", "ab") as f:
        f.write(b"# more\n")
    code, _, err = verify(folder, capsys)
    assert code == 1
    assert err[0] == ("pgolf: verify: FAIL code bytes: train_gpt.py is 2,607 bytes, submission.json says "
                      "bytes_code 2,600")


def test_over_cap_folder(tmp_path, capsys):
    folder = packed(tmp_path, artifact_bytes=16_000_000 - 2_000)  # + 2,600 of code: 600 bytes over
    code, out, err = verify(folder, capsys)
    assert code == 1
    assert "pgolf: verify: FAIL cap: 16,000,600 bytes is over the 16,000,000-byte cap" in err
    assert "pgolf: verify: FAIL bytes seed 1: 16,000,600 bytes is over the 16,000,000-byte cap" in err
    assert "pgolf: verify: FAIL compliance: compliance.within_cap is false" in err
    assert len(err) == 4  # bytes for each seed, cap, compliance


def test_over_time_log(tmp_path, capsys):
    folder = packed(tmp_path, train_ms=612_345.0)
    code, _, err = verify(folder, capsys)
    assert code == 1
    assert "pgolf: verify: FAIL train time seed 1: train_seed1.log: training took 612.3 s > 600 s" in err
    assert "pgolf: verify: FAIL compliance: compliance.train_within_limit is false" in err
    folder = packed(tmp_path / "eval", eval_ms=600_500.0)
    code, _, err = verify(folder, capsys)
    assert code == 1
    assert "pgolf: verify: FAIL eval time seed 2: train_seed2.log: evaluation took 600.5 s > 600 s" in err


def test_submission_that_disagrees_with_its_log(tmp_path, capsys):
    folder = packed(tmp_path)

    def more_steps(sub):
        sub["seed_results"][0]["steps"] = 4_500
    edit_submission(folder, more_steps)
    code, _, err = verify(folder, capsys)
    assert code == 1
    assert err == ["pgolf: verify: FAIL log seed 1: train_seed1.log stopped at step 4000, submission.json says 4500"]

    def better_score(sub):  # a better claimed score, with consistent means: only the log disagrees
        sub["seed_results"][0]["steps"] = 4_000
        sub["seed_results"][1]["val_bpb"] = 1.090
        sub["val_bpb"] = (1.100 + 1.090) / 2
        sub["val_bpb_std"] = 0.01 / 2 ** 0.5
    edit_submission(folder, better_score)
    code, _, err = verify(folder, capsys)
    assert code == 1
    assert err == ["pgolf: verify: FAIL log seed 2: train_seed2.log says val_bpb 1.10200000, submission.json says "
                   "1.09"]

    def wrong_mean(sub):
        sub["seed_results"][1]["val_bpb"] = 1.102
        sub["val_bpb"] = 1.0
    edit_submission(folder, wrong_mean)
    code, _, err = verify(folder, capsys)
    assert code == 1 and len(err) == 1
    assert err[0].startswith("pgolf: verify: FAIL means: the mean of the seeds' val_bpb is 1.10100000, "
                             "submission.json says 1.00000000; the sample std of val_bpb is 0.0014142")


def test_data_use_and_legality(tmp_path, capsys):
    folder = packed(tmp_path, calibration="gptq_calibration: 66 Hessians (40 distinct, fp32) from 65536 val tokens "
                                          "in 2.00s")
    code, _, err = verify(folder, capsys)
    assert code == 1
    assert err[0].startswith("pgolf: verify: FAIL data use seed 1: train_seed1.log: calibration read validation data")
    folder = packed(tmp_path / "legal")
    (folder / "legality.txt").write_text("C1 FAIL x\nVIOLATES C1\n")
    code, _, err = verify(folder, capsys)
    assert code == 1 and err == ["pgolf: verify: FAIL legality: legality.txt: VIOLATES C1"]


def test_missing_files(tmp_path, capsys):
    folder = packed(tmp_path)
    (folder / "train_seed2.log").unlink()
    code, _, err = verify(folder, capsys)
    assert code == 1 and "pgolf: verify: FAIL files: missing train_seed2.log" in err
    (folder / "submission.json").unlink()  # nothing to verify: bad input, exit 2 (a failed check is exit 1)
    code, _, err = verify(folder, capsys)
    assert code == 2 and err == [f"pgolf: error: {folder / 'submission.json'} is missing: {folder} is not a records "
                                 "folder (pgolf pack writes one)"]
    (folder / "submission.json").write_text("{not json")
    code, _, err = verify(folder, capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"pgolf: error: {folder / 'submission.json'} is not a "
                                                             "valid submission (")
    code, _, err = verify(tmp_path / "nowhere", capsys)
    assert code == 2 and err == [f"pgolf: error: {tmp_path / 'nowhere'}: no such folder"]
    (folder / "submission.json").write_text(json.dumps({"val_loss": 1, "val_bpb": 1, "bytes_total": 1, "bytes_code": 1,
                                                        "seed_results": [{"seed": 1, "artifact": "../x.pgolf"}]}))
    code, _, err = verify(folder, capsys)
    assert code == 2 and err == [f"pgolf: error: {folder / 'submission.json'} is not a valid submission (seed 1: "
                                 "artifact '../x.pgolf' is not a file name in the folder)"]
    assert main(["verify", str(folder), "--run"]) == 2  # --run needs --data
    assert "--run needs --data" in capsys.readouterr().err


@pytest.mark.slow
def test_real_run_packs_verifies_and_rescores(tiny_data, tiny_config, tmp_path, capsys, monkeypatch):
    """Two tiny seeds trained for real, packed with the real bundle, re-scored in fresh processes; a claimed score
    that the artifact does not reproduce fails."""
    from pgolf.train.trainer import train

    monkeypatch.delenv("PGOLF_SHARED_DATA", raising=False)
    runs = []
    for seed in (1, 2):
        run = tmp_path / f"seed{seed}"
        train(tiny_config(f"train.seed={seed}"), tiny_data, run, echo=None)
        runs.append(str(run))
    assert main(["stats", *runs]) == 0
    assert "| **mean** (n=2) |" in capsys.readouterr().out
    # a tiny run on a 40-document val split cannot claim a record: pack warns, verify fails with one line
    claim = tmp_path / "claim"
    assert main(["pack", *runs, "--out", str(claim)]) == 0
    assert "warning: a record claim, but val split: 40 docs" in capsys.readouterr().out
    code, _, err = verify(claim, capsys)
    assert code == 1 and err == ["pgolf: verify: FAIL val split: claims a record but no official export has a "
                                 "vocabulary of 512 (pack it with --non-record, or score on the official split)"]
    folder = tmp_path / "records"
    assert main(["pack", *runs, "--out", str(folder), "--non-record"]) == 0
    assert "warning" not in capsys.readouterr().out
    sub = json.loads((folder / "submission.json").read_text())
    assert sub["record"] is False and sub["track"] == "track_non_record_16mb"
    assert sub["compliance"]["val_split_official"] is False and sub["compliance"]["val_splits_agree"] is True
    assert sub["bytes_code"] == (folder / "train_gpt.py").stat().st_size
    readme = (folder / "README.md").read_text()
    assert "--set model.num_layers=2" in readme and "(non-record)" in readme.splitlines()[0]
    assert "not a record (packed with --non-record)" in readme and "val split: 40 docs" in readme
    code, out, err = verify(folder, capsys, "--data", str(tiny_data), "--threads", "1")
    assert code == 0, err
    assert re.search(r"\| rescore seed 1 +\| pass", out) and re.search(r"\| rescore seed 2 +\| pass", out)
    # --run retrains seed by seed from the folder's own train_gpt.py (with the overrides): same score on one thread
    code, out, err = verify(folder, capsys, "--data", str(tiny_data), "--run", "--run-tolerance", "1e-6")
    assert code == 0, err
    assert re.search(r"\| rerun seed 2 +\| pass +\| train_gpt.py retrained to val_bpb ", out)

    def off_by_a_little(s):
        s["seed_results"][0]["val_bpb"] += 1e-3
    edit_submission(folder, off_by_a_little)
    code, _, err = verify(folder, capsys, "--data", str(tiny_data), "--threads", "1")
    assert code == 1
    assert any(line.startswith("pgolf: verify: FAIL rescore seed 1: re-scored val_bpb ") and "1.00e-03 > 1e-05" in line
               for line in err)


def test_a_bounded_final_score_is_rescored_on_the_same_tokens(tiny_data, tiny_config, tmp_path, capsys, monkeypatch):
    """A run whose final score covered the first N val tokens (eval.max_tokens, a CPU run's default bound) verifies:
    the re-score covers those N tokens, same digest, same score; the whole split would score differently."""
    from pgolf.train.trainer import train

    monkeypatch.delenv("PGOLF_SHARED_DATA", raising=False)
    run = tmp_path / "seed1"
    result = train(tiny_config("train.seed=1", "eval.max_tokens=3000"), tiny_data, run, echo=None)
    assert result["val_split"]["full"] is False and result["val_split"]["tokens"] == 3000
    folder = tmp_path / "records"
    assert main(["pack", str(run), "--out", str(folder), "--non-record"]) == 0
    capsys.readouterr()
    code, out, err = verify(folder, capsys, "--data", str(tiny_data), "--threads", "1")
    assert code == 0, err
    assert re.search(r"\| rescore seed 1 +\| pass", out)
