"""`pgolf pack`: the records folder's contents, its refusals, and its atomicity (fake runs, a stand-in bundle)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _submit_fakes import fake_run

from pgolf.cli import main
from pgolf.errors import PgolfError
from pgolf.submit.pack import pack

FAKE_BUNDLE = b"# a stand-in train_gpt.py\n" * 100  # 2,600 bytes


def fake_bundle(preset: str, out: Path) -> None:
    Path(out).write_bytes(FAKE_BUNDLE)


def test_pack_writes_the_records_folder(tmp_path):
    runs = [fake_run(tmp_path / "runs", s, b, artifact_bytes=a, sets=("model.num_layers=3",))
            for s, b, a in ((42, 1.10, 5_000), (7, 1.12, 6_000))]
    out = tmp_path / "records" / "2026-12-02_Test"
    sub, warnings = pack(runs, out, author="A. Person", github_id="aperson", hardware="8xH100 SXM",
                         date="2026-12-02", bundle_writer=fake_bundle)
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "artifact_seed42.pgolf", "artifact_seed7.pgolf", "requirements.txt", "submission.json",
        "train_gpt.py", "train_seed42.log", "train_seed7.log"]
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary folder left beside it
    on_disk = json.loads((out / "submission.json").read_text())
    assert on_disk == json.loads(json.dumps(sub))
    assert sub["seeds"] == [7, 42]  # sorted by seed
    assert sub["val_bpb"] == pytest.approx(1.11) and sub["val_bpb_std"] == pytest.approx(0.0141421356)
    assert sub["bytes_code"] == len(FAKE_BUNDLE)
    assert sub["bytes_model_max"] == 6_000 and sub["bytes_total"] == 6_000 + len(FAKE_BUNDLE)
    assert (sub["author"], sub["github_id"], sub["hardware"], sub["date"]) == ("A. Person", "aperson",
                                                                               "8xH100 SXM", "2026-12-02")
    assert sub["overrides"] == ["model.num_layers=3"] and sub["preset"] == "cpu-smoke"
    by_seed = {s["seed"]: s for s in sub["seed_results"]}
    assert by_seed[42]["log"] == "train_seed42.log" and by_seed[42]["artifact_bytes"] == 5_000
    assert by_seed[42]["bytes_total"] == 5_000 + len(FAKE_BUNDLE)
    assert by_seed[42]["steps"] == 4_000 and by_seed[42]["train_seconds"] == pytest.approx(590.0)
    assert by_seed[42]["eval_seconds"] == pytest.approx(300.0)
    for seed, run in ((42, runs[0]), (7, runs[1])):
        assert (out / f"train_seed{seed}.log").read_bytes() == (run / "log.txt").read_bytes()
        assert (out / f"artifact_seed{seed}.pgolf").read_bytes() == (run / "artifact.pgolf").read_bytes()
    c = sub["compliance"]
    assert c["within_cap"] and c["train_within_limit"] and c["eval_within_limit"] and c["val_not_trained_on"]
    assert c["legality"] is None and c["test_time_training"] is False and c["eval_mode"] == "flat"
    assert sub["technique_summary"]["settings_changed_from_pgolf_defaults"]["model.num_layers"] == 3
    assert sub["versions"]["torch"] == "2.13.0+cu128"
    readme = (out / "README.md").read_text()
    assert "# pgolf cpu-smoke" in readme and "| 42 | " in readme and "| 7 | " in readme
    assert "train_gpt.py --data DATA_DIR --seed 42 --set model.num_layers=3" in readme
    assert "1.11000000" in readme
    reqs = (out / "requirements.txt").read_text().splitlines()
    assert "torch==2.13.0" in reqs and "numpy==2.4.6" in reqs and any(r.startswith("brotli") for r in reqs)
    assert warnings == [f"seed {s}: ran with 40,000 code bytes, the shipped train_gpt.py has {len(FAKE_BUNDLE):,} "
                        "(the sources changed since the run)" for s in (7, 42)]


def test_pack_refuses_a_non_empty_folder_and_accepts_an_empty_one(tmp_path):
    run = fake_run(tmp_path / "runs", 1, 1.1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(PgolfError, match="not an empty folder"):
        pack([run], out, bundle_writer=fake_bundle)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    pack([run], empty, bundle_writer=fake_bundle)
    assert (empty / "submission.json").is_file()


def test_pack_is_atomic(tmp_path):
    run = fake_run(tmp_path / "runs", 1, 1.1)

    def broken(preset, out):
        Path(out).write_bytes(b"half")
        raise PgolfError("bundle failed")

    with pytest.raises(PgolfError, match="bundle failed"):
        pack([run], tmp_path / "records" / "x", bundle_writer=broken)
    assert list((tmp_path / "records").iterdir()) == []


def test_pack_refusals_name_the_run(tmp_path):
    a = fake_run(tmp_path / "a", 1, 1.1)
    same_seed = fake_run(tmp_path / "b", 1, 1.2)
    with pytest.raises(PgolfError, match=f"{same_seed}: seed 1 again"):
        pack([a, same_seed], tmp_path / "o1", bundle_writer=fake_bundle)
    other = fake_run(tmp_path / "c", 2, 1.1, sets=("model.num_layers=5",))
    with pytest.raises(PgolfError, match=f"{other}: another configuration .*model.num_layers"):
        pack([a, other], tmp_path / "o2", bundle_writer=fake_bundle)
    unfinished = fake_run(tmp_path / "d", 3, 1.1)
    (unfinished / "result.json").unlink()
    (unfinished / "log.txt").write_text("step:1/10 train_loss:7.0 train_time:5ms step_avg:5.00ms\n")
    with pytest.raises(PgolfError, match=f"{unfinished}: no final score"):
        pack([a, unfinished], tmp_path / "o3", bundle_writer=fake_bundle)
    no_artifact = fake_run(tmp_path / "e", 4, 1.1)
    (no_artifact / "artifact.pgolf").unlink()
    with pytest.raises(PgolfError, match=f"{no_artifact}: not a finished pgolf run directory .*the artifact"):
        pack([a, no_artifact], tmp_path / "o4", bundle_writer=fake_bundle)
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))


def test_pack_legality_and_over_cap(tmp_path):
    run = fake_run(tmp_path / "runs", 1, 1.1, artifact_bytes=16_000_000 - 1_000)
    legal = tmp_path / "legality.txt"
    legal.write_text("condition  result detail\nC1 pass x\nlegal\n")
    sub, warnings = pack([run], tmp_path / "out", legality=legal, bundle_writer=fake_bundle)
    assert sub["compliance"]["legality"] == "legal" and (tmp_path / "out" / "legality.txt").is_file()
    assert sub["compliance"]["within_cap"] is False
    assert warnings[-1] == f"over the cap: {16_000_000 - 1_000 + len(FAKE_BUNDLE):,} bytes > 16,000,000"
    legal.write_text("whatever\n")
    with pytest.raises(PgolfError, match="--legality"):
        pack([run], tmp_path / "out2", legality=legal, bundle_writer=fake_bundle)


def test_pack_command(tmp_path, capsys, monkeypatch):
    import pgolf.bundle.build

    monkeypatch.setattr(pgolf.bundle.build, "write_bundle", fake_bundle)
    runs = [str(fake_run(tmp_path / "runs", s, 1.1)) for s in (1, 2)]
    assert main(["pack", *runs, "--out", str(tmp_path / "out"), "--name", "My run"]) == 0
    assert f"wrote {tmp_path / 'out'}: 2 seed(s), val_bpb 1.10000000" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "submission.json").read_text())["name"] == "My run"
    assert main(["pack", *runs, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pgolf: error: ") and err.count("\n") == 1
