"""`pgolf bundle`: size bound, determinism, code bytes, and that the single file trains end to end without the
package."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pgolf.cli import main
from pgolf.errors import PgolfError, choose
from pgolf.bundle import build as bundle_module
from pgolf.bundle import code_bytes
from pgolf.bundle.build import LEFT_OUT, NOT_AT_TRAIN_TIME, Bundle, analyse, build_bundle, write_bundle

from conftest import TINY_MODEL_SETS

# A gate a little above today's bundles (70,566 bytes for the record preset on 2026-12-08, after issue 22 added the
# n-gram tilt, AsymLogit, AWQ-lite, the measured GPTQ reserve, SOAP, progressive context and short-document chunks,
# issue 23 the val split's identity, and issue 24 the torch-free choices with "did you mean", progress lines, the
# command budget, the official flow's data view and the row-sliced TTT): a module pulled in by accident, or a
# left-out path (LEFT_OUT, NOT_AT_TRAIN_TIME such as the trackers) coming back, fails it. Sizes are tracked in
# docs/BENCHMARKS.md; they shrink by leaving out what a submission never runs, never by shaping the library.
BUNDLE_BOUND = 72_000
# The goal (issue 21): the official naive baseline's train_gpt.py, 47,642 bytes. Not reached yet, so its test is a
# strict xfail: the day both bundles are under it, the test fails and this becomes BUNDLE_BOUND.
OFFICIAL_BASELINE_BYTES = 47_642

# The record preset at tiny size: its loop and lane boundaries must fit in two layers, GPTQ calibration is cut, and
# the final score is flat (the record's phased TTT is tested end to end in tests/eval/test_report.py; here it would
# only make the bundle's run slow).
RECORD_TINY_SETS = ["model.loop_start=0", "model.loop_end=1", "model.parallel_start=1", "quant.calib_batches=2",
                    "quant.gptq_reserve_seconds=0", "eval.mode=flat", "eval.report_modes="]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("bundles")
    return {preset: _write(preset, out / f"{preset}.py") for preset in ("baseline", "record")}


def _write(preset: str, path: Path) -> Path:
    write_bundle(preset, path)
    return path


def _isolated_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGOLF_", "PYTHON"))}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run_bundle(bundle: Path, data: Path, run_dir: Path, sets: list[str], cwd: Path) -> subprocess.CompletedProcess:
    args = [sys.executable, "-I", str(bundle), "--data", str(data), "--run-dir", str(run_dir)]
    for s in sets:
        args += ["--set", s]
    return subprocess.run(args, cwd=cwd, env=_isolated_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("preset", ["baseline", "record"])
def test_bundle_stays_within_its_bound(bundles, preset):
    size = bundles[preset].stat().st_size
    assert size < BUNDLE_BOUND, f"{preset} bundle {size} bytes"


@pytest.mark.xfail(strict=True, reason="about 70 KB on 2026-12-08; docs/BENCHMARKS.md#pgolf-bundle-sizes")
@pytest.mark.parametrize("preset", ["baseline", "record"])
def test_bundle_is_under_the_official_baseline_script(bundles, preset):
    size = bundles[preset].stat().st_size
    assert size < OFFICIAL_BASELINE_BYTES, f"{preset} bundle {size} bytes"


def test_bundle_is_a_short_self_extracting_script(bundles):
    data = bundles["record"].read_bytes()
    lines = data.split(b"\n")
    assert lines[0] == b"#coding:latin-1" and len([x for x in lines if x]) == 4
    assert b"exec(" in data
    assert compile(data, "train_gpt.py", "exec")  # valid Python source as it stands


def test_bundling_is_deterministic_across_processes(bundles):
    # A different hash seed in a fresh process must give the same bytes (set iteration must not leak into output).
    script = "import sys; from pgolf.bundle.build import build_bundle; sys.stdout.buffer.write(build_bundle('record').data)"
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120, check=True).stdout
    assert out == bundles["record"].read_bytes()
    assert build_bundle("record").data == out


def test_closure_leaves_out_what_training_never_imports():
    closure = analyse()
    modules = set(closure.modules)
    assert {"pgolf.train.trainer", "pgolf.model.gpt", "pgolf.artifact.format", "pgolf.eval.evaluate"} <= modules
    assert not modules & set(NOT_AT_TRAIN_TIME)
    assert "pgolf.data.build" not in modules  # data building is not a training run's
    assert "check_data_dir" in closure.kept["pgolf.data.manifest"]
    assert not {name for name in closure.kept["pgolf.cli"] if name.startswith("_cmd_")} - {"_cmd_train"}
    assert closure.stubbed == set(LEFT_OUT)  # every entry is reached (else it is dead and should go)
    assert "write_state" not in closure.kept["pgolf.train.checkpoint"]  # only the left-out saver reached it


def test_choose_names_what_is_available():
    assert choose({"a": 1, "b": 2}, "b", "thing") == 2
    with pytest.raises(PgolfError, match=r"unknown thing 'c' \(available: a, b\)$"):
        choose({"b": 2, "a": 1}, "c", "thing")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """A fresh on-disk cache for bundle sizes, and an empty in-process one."""
    folder = tmp_path / "code_bytes_cache"
    monkeypatch.setattr(code_bytes, "default_cache_dir", lambda: folder)
    code_bytes.bundle_code_bytes.cache_clear()
    yield folder
    code_bytes.bundle_code_bytes.cache_clear()


def _fake_builds(monkeypatch) -> list[str]:
    """Replace build_bundle by a cheap fake of 1234 bytes; returns the list of presets it was called with."""
    calls: list[str] = []

    def fake(preset: str) -> Bundle:
        calls.append(preset)
        return Bundle(data=b"x" * 1234, preset=preset, modules=(), resources=(), codec="brotli", source_bytes=0,
                      minified_bytes=0)

    monkeypatch.setattr(bundle_module, "build_bundle", fake)
    return calls


def test_code_bytes_counts_the_preset_bundle(bundles, cache_dir, monkeypatch):
    assert code_bytes.running_bundle() is None
    size = bundles["record"].stat().st_size
    assert code_bytes.count_code_bytes("record") == (size, code_bytes.METHOD)
    assert json.loads((cache_dir / f"{code_bytes.cache_key('record')}.json").read_text())["code_bytes"] == size
    # A later process reads the size from the cache instead of building the bundle again.
    code_bytes.bundle_code_bytes.cache_clear()
    monkeypatch.setattr(bundle_module, "build_bundle", lambda preset: pytest.fail("bundle rebuilt"))
    assert code_bytes.count_code_bytes("record") == (size, code_bytes.METHOD)


def test_a_preset_no_bundle_can_be_built_for_falls_back(cache_dir):
    # A run of `--preset path/mine.toml` records only "mine", which names no preset to build a bundle from.
    assert code_bytes.count_code_bytes("mine") == (code_bytes.source_code_bytes(), code_bytes.FALLBACK_METHOD)
    assert not cache_dir.exists()


def test_bundle_sizes_are_built_once_per_key(cache_dir, monkeypatch):
    calls = _fake_builds(monkeypatch)
    assert code_bytes.bundle_code_bytes("baseline") == 1234
    assert code_bytes.bundle_code_bytes("baseline") == 1234  # in memory
    code_bytes.bundle_code_bytes.cache_clear()
    assert code_bytes.bundle_code_bytes("baseline") == 1234  # on disk
    assert calls == ["baseline"]
    assert code_bytes.bundle_code_bytes("record") == 1234 and calls == ["baseline", "record"]
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted(
        f"{code_bytes.cache_key(preset)}.json" for preset in ("baseline", "record"))  # no temporary files left


def test_an_unwritable_or_corrupt_cache_still_counts(tmp_path, cache_dir, monkeypatch):
    calls = _fake_builds(monkeypatch)
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    assert code_bytes.bundle_code_bytes("baseline", blocker) == 1234
    cache_dir.mkdir()
    (cache_dir / f"{code_bytes.cache_key('baseline')}.json").write_text("{truncated")
    assert code_bytes.bundle_code_bytes("baseline") == 1234
    assert calls == ["baseline", "baseline"]


def test_cache_key_covers_sources_and_preset(tmp_path):
    package = Path(code_bytes.pgolf.__file__).resolve().parent
    copy = tmp_path / "pgolf"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    key = code_bytes.cache_key("record", copy)
    assert key == code_bytes.cache_key("record")  # the same bytes give the same key wherever they are
    assert code_bytes.cache_key("baseline", copy) != key
    trainer = copy / "train" / "trainer.py"
    trainer.write_text(trainer.read_text() + "\n# an edit\n")
    edited = code_bytes.cache_key("record", copy)
    assert edited != key
    (copy / "presets" / "extra.toml").write_text("[train]\n")
    assert code_bytes.cache_key("record", copy) not in (key, edited)


def test_cli_bundle_writes_the_file(tmp_path, capsys, bundles):
    out = tmp_path / "train_gpt.py"
    assert main(["bundle", "--preset", "baseline", "--out", str(out)]) == 0
    assert out.read_bytes() == bundles["baseline"].read_bytes()
    assert capsys.readouterr().out.startswith(f"wrote {out}: {out.stat().st_size} bytes (")


def test_bundle_report_names_file_bytes_and_preset():
    bundle = Bundle(data=b"x" * 99, preset="record", modules=("pgolf",), resources=(), codec="brotli",
                    source_bytes=5, minified_bytes=4)
    assert bundle.report("train_gpt.py").startswith("wrote train_gpt.py: 99 bytes (code_bytes for preset record;")


def test_cli_bundle_unknown_preset_is_one_line(tmp_path, capsys):
    assert main(["bundle", "--preset", "no-such-preset", "--out", str(tmp_path / "x.py")]) != 0
    err = capsys.readouterr().err
    assert err.startswith("pgolf: error:") and "no-such-preset" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(PgolfError):
        build_bundle("no-such-preset")


def test_baseline_bundle_trains_end_to_end(bundles, tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    proc = _run_bundle(bundles["baseline"], tiny_data, run_dir, TINY_MODEL_SETS, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert math.isfinite(result["val_bpb"]) and result["val_bpb"] > 0
    assert result["code_bytes"] == bundles["baseline"].stat().st_size
    assert result["total_bytes"] == result["artifact_bytes"] + result["code_bytes"]
    assert result["preset"] == "baseline" and result["code_bytes_method"] == code_bytes.METHOD


def test_record_bundle_trains_from_memory_only(bundles, tiny_data, tmp_path):
    """Run the record bundle as __main__ in an isolated interpreter, then check that every pgolf module came from
    the bundle's in-memory finder (none from the installed package) and the excluded ones cannot be imported."""
    run_dir = tmp_path / "run"
    argv = [str(bundles["record"]), "--data", str(tiny_data), "--run-dir", str(run_dir)]
    for s in [*TINY_MODEL_SETS, *RECORD_TINY_SETS]:
        argv += ["--set", s]
    driver = textwrap.dedent(f"""
        import importlib, json, runpy, sys
        sys.argv = {argv!r}
        try:
            runpy.run_path(sys.argv[0], run_name="__main__")
        except SystemExit as exc:
            assert exc.code in (0, None), exc.code
        import pgolf
        mods = {{n: m for n, m in sys.modules.items() if n == "pgolf" or n.startswith("pgolf.")}}
        report = {{"bundle_file": getattr(pgolf.__spec__.loader, "bundle_file", None),
                  "from_disk": sorted(n for n, m in mods.items() if getattr(m, "__file__", None)),
                  "foreign_loader": sorted(n for n, m in mods.items() if m.__spec__.loader is not pgolf.__spec__.loader),
                  "loaded": sorted(mods), "importable_excluded": []}}
        for name in {sorted(NOT_AT_TRAIN_TIME)!r}:
            try:
                importlib.import_module(name)
                report["importable_excluded"].append(name)
            except ImportError:
                pass
            except Exception as exc:  # the stub of an excluded module a kept function imports
                if "left out of this train_gpt.py bundle" not in str(exc):
                    raise
        resume = importlib.import_module("pgolf.train.resume")  # only stubs left, under short bundle names
        report["left_out"] = []
        for stub in [f for f in vars(resume).values() if getattr(f, "__module__", "") == resume.__name__]:
            try:
                stub(None, 0, 0.0, None, None)
            except Exception as exc:
                report["left_out"].append([type(exc).__module__, str(exc)])
        print("REPORT" + json.dumps(report))
    """)
    proc = subprocess.run([sys.executable, "-I", "-c", driver], cwd=tmp_path, env=_isolated_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.rsplit("REPORT", 1)[1])
    assert report["bundle_file"] == str(bundles["record"])
    assert "pgolf.train.trainer" in report["loaded"] and "pgolf.quant.gptq" in report["loaded"]
    assert report["from_disk"] == [] and report["foreign_loader"] == []
    assert report["importable_excluded"] == []
    assert sorted(message.split(" is left out of this train_gpt.py bundle (")[0] for _, message in report["left_out"]) \
        == [f"pgolf.train.resume.{name}" for name in ("check_resume", "load_checkpoint", "save_checkpoint")]
    assert {module for module, _ in report["left_out"]} == {"pgolf.errors"}  # PgolfError: one line from the CLI
    result = json.loads((run_dir / "result.json").read_text())
    assert math.isfinite(result["val_bpb"]) and result["val_bpb"] > 0
    assert result["code_bytes"] == bundles["record"].stat().st_size
    assert result["quant"]["scheme"] == "mixed"


def test_record_bundle_refuses_a_bad_choice_in_one_line(bundles, tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    sets = [*TINY_MODEL_SETS, *RECORD_TINY_SETS, "train.loader=nope"]
    proc = _run_bundle(bundles["record"], tiny_data, run_dir, sets, cwd=tmp_path)
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("pgolf: error: ") and "train.loader='nope' must be one of sequential, shuffled, packed" in err
    assert not (run_dir / "result.json").exists()


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_a_bundle_cannot_resume_and_says_so_in_one_line(bundles, tiny_data, tmp_path):
    (tmp_path / "run").mkdir()
    proc = subprocess.run([sys.executable, "-I", str(bundles["baseline"]), "--data", str(tiny_data),
                           "--resume", str(tmp_path / "run")], cwd=tmp_path, env=_isolated_env(),
                          capture_output=True, text=True, timeout=300)
    assert _one_error_line(proc) == (
        "pgolf: error: pgolf.cli._resumed_config is left out of this train_gpt.py bundle (resuming a "
        "checkpointed run: pgolf train --resume); run it with the pgolf package")


def test_a_bundle_asked_for_checkpoints_stops_with_one_line(bundles, tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    proc = _run_bundle(bundles["baseline"], tiny_data, run_dir, [*TINY_MODEL_SETS, "train.checkpoint_every=2"],
                       cwd=tmp_path)
    assert _one_error_line(proc).startswith(
        "pgolf: error: pgolf.train.resume.save_checkpoint is left out of this train_gpt.py bundle (resumable "
        "checkpoints")
    assert not (run_dir / "result.json").exists()
