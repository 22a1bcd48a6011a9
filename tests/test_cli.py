"""Every bad input, tried on the CLI, gives one clean error line on stderr and exit code 2, never a traceback; and
the interface itself: consistent flags, presets and settings that explain themselves."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from pgolf.cli import main


def _fails_cleanly(capsys, argv: list[str], *words: str) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("pgolf: error: ")
    assert "Traceback" not in captured.err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A tiny finished run: (data dir, run dir)."""
    from conftest import TINY_MODEL_SETS
    from pgolf.options import resolve_config
    from pgolf.train.trainer import train

    run = tmp_path_factory.mktemp("cli_run")
    train(resolve_config("cpu-smoke", TINY_MODEL_SETS, environ={}), tiny_data, run, echo=None)
    return tiny_data, run


def _copy_data(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _val_shard(data: Path) -> Path:
    return sorted(data.glob("fineweb_val_*.bin"))[0]


def test_truncated_shard(trained, tmp_path, capsys):
    data, run = trained
    bad = _copy_data(data, tmp_path / "d")
    shard = _val_shard(bad)
    shard.write_bytes(shard.read_bytes()[:-10])
    _fails_cleanly(capsys, ["eval", str(run / "artifact.pgolf"), "--data", str(bad)], shard.name)


def test_wrong_magic(trained, tmp_path, capsys):
    data, run = trained
    bad = _copy_data(data, tmp_path / "d")
    shard = _val_shard(bad)
    raw = bytearray(shard.read_bytes())
    raw[0:4] = np.array([12345], dtype="<i4").tobytes()
    shard.write_bytes(bytes(raw))
    _fails_cleanly(capsys, ["eval", str(run / "artifact.pgolf"), "--data", str(bad)], shard.name, "magic")


def test_corrupt_shard_header_too_short(trained, tmp_path, capsys):
    data, run = trained
    bad = _copy_data(data, tmp_path / "d")
    shard = _val_shard(bad)
    shard.write_bytes(b"\x00" * 100)
    _fails_cleanly(capsys, ["eval", str(run / "artifact.pgolf"), "--data", str(bad)], shard.name)


def test_missing_data_dir(trained, tmp_path, capsys):
    _, run = trained
    _fails_cleanly(capsys, ["eval", str(run / "artifact.pgolf"), "--data", str(tmp_path / "nope")], "nope")


def test_missing_artifact(trained, tmp_path, capsys):
    data, _ = trained
    _fails_cleanly(capsys, ["eval", str(tmp_path / "missing.pgolf"), "--data", str(data)], "missing.pgolf")


def test_damaged_artifact(trained, tmp_path, capsys):
    data, run = trained
    art = tmp_path / "a.pgolf"
    raw = bytearray((run / "artifact.pgolf").read_bytes())
    raw[len(raw) // 2] ^= 0x01
    art.write_bytes(bytes(raw))
    _fails_cleanly(capsys, ["eval", str(art), "--data", str(data)], "a.pgolf", "checksum")
    _fails_cleanly(capsys, ["inspect", str(art)], "a.pgolf")


def test_truncated_artifact(trained, tmp_path, capsys):
    data, run = trained
    art = tmp_path / "t.pgolf"
    art.write_bytes((run / "artifact.pgolf").read_bytes()[:-7])
    _fails_cleanly(capsys, ["eval", str(art), "--data", str(data)], "t.pgolf")


def test_vocab_mismatch_between_model_and_data(trained, tmp_path, capsys):
    data, _ = trained
    from conftest import TINY_MODEL_SETS
    sets = [f"--set={s}" for s in TINY_MODEL_SETS] + ["--set=model.vocab_size=1024"]
    _fails_cleanly(capsys, ["train", "--preset", "cpu-smoke", "--data", str(data), "--run-dir",
                            str(tmp_path / "r"), *sets], "vocabulary mismatch")
    assert not (tmp_path / "r" / "result.json").exists()


def _poison_shard(shard: Path, token: int) -> None:
    raw = bytearray(shard.read_bytes())
    raw[1024 + 2 * 5:1024 + 2 * 6] = np.array([token], dtype="<u2").tobytes()
    shard.write_bytes(bytes(raw))


def test_shards_with_ids_beyond_the_vocabulary(trained, tmp_path, capsys):
    data, run = trained
    from conftest import TINY_MODEL_SETS
    bad = _copy_data(data, tmp_path / "d")
    _poison_shard(sorted(bad.glob("fineweb_train_*.bin"))[0], 900)
    _poison_shard(_val_shard(bad), 900)
    sets = [f"--set={s}" for s in TINY_MODEL_SETS] + ["--set=train.val_loss_every=0"]
    _fails_cleanly(capsys, ["train", "--preset", "cpu-smoke", "--data", str(bad), "--run-dir", str(tmp_path / "r"),
                            *sets], "token id 900", "mismatch")
    _fails_cleanly(capsys, ["eval", str(run / "artifact.pgolf"), "--data", str(bad)], "token id 900")


def test_tokenizer_mismatch_between_artifact_and_data(trained, tmp_path, capsys):
    data, run = trained
    other = tmp_path / "other"
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"document number {i} says hello to the world. " * 20}) + "\n"
                            for i in range(60)))
    main(["data", "build", "--docs", str(docs), "--out", str(other), "--vocab-size", "512", "--val-docs", "10",
          "--quiet", "--workers", "1"])
    capsys.readouterr()
    _fails_cleanly(capsys, ["eval", str(run / "artifact.pgolf"), "--data", str(other)], "tokenizer")


def test_invalid_utf8_document(tmp_path, capsys):
    docs = tmp_path / "bad.jsonl"
    docs.write_bytes(b'{"text": "fine"}\n{"text": "bad \xff\xfe bytes"}\n')
    _fails_cleanly(capsys, ["data", "build", "--docs", str(docs), "--out", str(tmp_path / "o"), "--vocab-size",
                            "300", "--val-docs", "1", "--quiet"], "bad.jsonl")
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_missing_docs_file(tmp_path, capsys):
    _fails_cleanly(capsys, ["data", "build", "--docs", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o"),
                            "--vocab-size", "300", "--quiet"], "none.jsonl")


def test_missing_tokenizer_file(tmp_path, capsys):
    docs = tmp_path / "d.jsonl"
    docs.write_text('{"text": "hello"}\n{"text": "world"}\n')
    _fails_cleanly(capsys, ["data", "build", "--docs", str(docs), "--out", str(tmp_path / "o"), "--tokenizer",
                            str(tmp_path / "no.model"), "--val-docs", "1", "--quiet"], "no.model")


def test_artifact_over_the_cap(trained, tmp_path, capsys):
    """An artifact whose bytes plus code bytes exceed 16,000,000 is refused by eval."""
    import torch

    from pgolf.artifact.format import load_artifact, save_artifact
    from pgolf.quant.schemes import quantize_state_dict

    data, run = trained
    art = load_artifact(run / "artifact.pgolf")
    gen = torch.Generator().manual_seed(0)
    big = {"huge": torch.randn(4400, 4400, generator=gen)}  # random int8 rows do not compress below 16 MB
    path = tmp_path / "big.pgolf"
    save_artifact(path, quantize_state_dict(big), config=art.config, tokenizer=art.tokenizer, meta={"code_bytes": 1})
    assert path.stat().st_size > 16_000_000
    _fails_cleanly(capsys, ["eval", str(path), "--data", str(data)], "big.pgolf", "cap")


def test_unknown_preset_and_bad_set(trained, capsys):
    data, _ = trained
    _fails_cleanly(capsys, ["train", "--preset", "nope", "--data", str(data)], "nope")
    _fails_cleanly(capsys, ["train", "--preset", "cpu-smoke", "--data", str(data), "--set", "model.x=1"], "model.x")


def test_console_entry_point_prints_one_line(tmp_path):
    """The installed `python -m pgolf` really exits non-zero with one line and no traceback."""
    proc = subprocess.run([sys.executable, "-m", "pgolf", "inspect", str(tmp_path / "none.pgolf")],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("pgolf: error:")


def test_inspect_lists_tensors(trained, capsys):
    _, run = trained
    assert main(["inspect", str(run / "artifact.pgolf")]) == 0
    out = capsys.readouterr().out
    assert "blocks" in out or "tok_emb" in out


def test_data_fineweb_from_a_local_mirror_writes_a_usable_data_dir(tiny_data, tmp_path, capsys):
    """`pgolf data fineweb --hub-dir` lays out the official tree and writes a manifest that train/eval accept."""
    from pgolf.data.manifest import check_data_dir, read_manifest

    src_manifest = read_manifest(tiny_data)
    root = tmp_path / "mirror" / "datasets"
    ds = root / "datasets" / "fineweb10B_sp512"
    ds.mkdir(parents=True)
    (root / "tokenizers").mkdir()
    for split in ("train", "val"):
        for i, name in enumerate(src_manifest["splits"][split]["files"]):
            shutil.copyfile(tiny_data / name, ds / f"fineweb_{split}_{i:06d}.bin")
    shutil.copyfile(tiny_data / "tokenizer.model", root / "tokenizers" / "fineweb_512_bpe.model")
    (root / "manifest.json").write_text(json.dumps({
        "datasets": [{"name": "fineweb10B_sp512", "tokenizer_name": "sp512",
                      "stats": {"files_train": len(src_manifest["splits"]["train"]["files"]),
                                "files_val": len(src_manifest["splits"]["val"]["files"])}}],
        "tokenizers": [{"name": "sp512", "model_path": "tokenizers/fineweb_512_bpe.model"}]}))
    assert main(["data", "fineweb", "--variant", "sp512", "--train-shards", "1", "--out", str(tmp_path / "out"),
                 "--hub-dir", str(tmp_path / "mirror"), "--quiet"]) == 0
    out = tmp_path / "out" / "datasets" / "fineweb10B_sp512"
    manifest, _ = check_data_dir(out, expected_vocab=512)
    assert manifest["splits"]["val"] == src_manifest["splits"]["val"]  # docs (BOS count), tokens, bytes, files
    assert "downloaded" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ the interface itself

def _docs_file(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"text": f"Document {i}: the cat sat on mat number {i}. " * 4}) + "\n"
                            for i in range(n)), encoding="utf-8")
    return path


def test_data_and_run_dir_flags_are_spelled_the_same_everywhere(capsys):
    """--data names a data directory and --run-dir an output folder in every command; the old spellings still
    parse but are not advertised."""
    from pgolf.cli import build_parser

    parser = build_parser()
    common = ["--data", "d", "--run-dir", "r"]
    for argv in (["train", *common], ["run", *common], ["ablate", "--preset", "p", "--toggle", "xsa", *common]):
        args = parser.parse_args(argv)
        assert (args.data, args.run_dir) == (Path("d"), Path("r")), argv
    for argv in (["eval", "a"], ["legality", "a", "--mode", "flat"]):
        assert parser.parse_args([*argv, "--data", "d"]).data == Path("d")
    assert parser.parse_args(["run"]).data == Path("data/demo")
    assert parser.parse_args(["run", "--data-dir", "old"]).data == Path("old")
    assert parser.parse_args(["ablate", "--preset", "p", "--toggle", "x", "--data", "d", "--out", "o"]).run_dir \
        == Path("o")
    for command in ("run", "ablate"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "--run-dir" in text and "--data " in text and "--data-dir" not in text and "--out" not in text


def _every_action(parser, prog="pgolf"):
    """(command, argparse action) for every argument of every (sub)command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _every_action(sub, f"{prog} {name}")
        else:
            yield prog, action


def test_every_argument_of_every_command_has_help():
    """Issue 24: --quiet, --out, --train-shards, bench's --preset and the rest each say what they do in --help; the
    legality --mode help names every eval mode from the registry (the TTT modes too)."""
    from pgolf.cli import build_parser
    from pgolf.eval.names import EVAL_MODES, TTT_MODES

    actions = list(_every_action(build_parser()))
    silent = [f"{prog} {'/'.join(a.option_strings) or a.dest}" for prog, a in actions if not a.help]
    assert not silent, f"arguments without help: {', '.join(silent)}"
    commands = {prog for prog, _ in actions}
    assert commands >= {"pgolf data demo", "pgolf data fineweb", "pgolf data verify", "pgolf bench", "pgolf verify"}
    mode = next(a for prog, a in actions if prog == "pgolf legality" and "--mode" in a.option_strings)
    assert TTT_MODES and all(name in mode.help for name in EVAL_MODES)


def test_the_data_commands_live_outside_the_cli_module():
    """Issue 24: the `data` commands are pgolf/data/commands.py's; cli.py imports that module inside a function
    only, so a train_gpt.py bundle (which follows the imports of `train_main`) never carries them."""
    import ast

    import pgolf.cli
    from pgolf.data import commands

    tree = ast.parse(Path(pgolf.cli.__file__).read_text(encoding="utf-8"))
    top_level = {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
    nested = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} - top_level
    assert "pgolf.data.commands" in nested and "pgolf.data.commands" not in top_level
    assert not [name for name in vars(pgolf.cli) if name.startswith("_cmd_data")]
    assert pgolf.cli.build_parser().parse_args(["data", "demo"]).func is commands._cmd_data_demo


def test_misspelled_environment_section_is_one_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("PGOLF_MODLE_NUM_LAYERS", "3")
    _fails_cleanly(capsys, ["config", "show"], "PGOLF_MODLE_NUM_LAYERS", "MODEL, OPTIM, TRAIN, QUANT, EVAL")
    monkeypatch.delenv("PGOLF_MODLE_NUM_LAYERS")
    monkeypatch.setenv("PGOLF_MODEL_NUM_LAYERS", "3")
    monkeypatch.setenv("PGOLF_SHARED_DATA", "/elsewhere")  # the test suite's own variable is not an override
    assert main(["config", "show"]) == 0
    assert "model.num_layers = 3 " in capsys.readouterr().out


def test_presets_lists_each_shipped_preset_with_its_description(capsys):
    from pgolf.config_sources import preset_names

    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == preset_names()
    for line in lines:
        description = line.split(None, 1)[1]
        assert len(description) > 20 and not description.startswith("#")


def test_config_show_lists_every_field_with_its_doc_as_a_loadable_preset(tmp_path, capsys):
    from pgolf.options import resolve_config

    assert main(["config", "show", "--preset", "record-cpu", "--set", "train.seed=7"]) == 0
    out = capsys.readouterr().out
    expected = resolve_config("record-cpu", ["train.seed=7"], environ={}).to_dict()
    expected.pop("preset")
    assert tomllib.loads(out) == expected
    settings = [line for line in out.splitlines() if not line.startswith("#")]
    assert len(settings) == sum(len(section) for section in expected.values())
    for line in settings:
        assert line.split("  # ", 1)[1].strip(), line
    (tmp_path / "shown.toml").write_text(out)
    assert resolve_config(str(tmp_path / "shown.toml"), environ={}).to_dict() == {**expected, "preset": "shown"}


@pytest.mark.parametrize("argv, words", [
    (["train", "--data", "d", "--max-seconds", "-5"], ("--max-seconds", "'-5'")),
    (["train", "--data", "d", "--max-seconds", "nan"], ("--max-seconds",)),
    (["train", "--data", "d", "--max-steps", "0"], ("--max-steps", "positive")),
    (["train", "--data", "d", "--seed", "-1"], ("--seed",)),
    (["run", "--max-steps", "-3"], ("--max-steps",)),
    (["ablate", "--preset", "p", "--toggle", "x", "--data", "d", "--max-seconds", "-1"], ("--max-seconds",)),
    (["eval", "a", "--data", "d", "--stride", "0"], ("--stride", "positive")),
    (["eval", "a", "--data", "d", "--stride", "-64"], ("--stride",)),
    (["eval", "a", "--data", "d", "--seq-len", "0"], ("--seq-len",)),
    (["eval", "a", "--data", "d", "--max-seconds", "-1"], ("--max-seconds",)),
    (["eval", "a", "--data", "d", "--max-tokens", "x"], ("--max-tokens", "'x'")),
    (["legality", "a", "--data", "d", "--mode", "flat", "--stride", "0"], ("--stride",)),
    (["legality", "a", "--data", "d", "--mode", "flat", "--perturbations", "0"], ("--perturbations",)),
    (["data", "build", "--docs", "x", "--out", "o", "--vocab-size", "300", "--val-docs", "0"], ("--val-docs",)),
    (["data", "build", "--docs", "x", "--out", "o", "--vocab-size", "300", "--shard-size", "-1"], ("--shard-size",)),
    (["data", "fineweb", "--train-shards", "-1"], ("--train-shards",)),
    (["config", "show", "--set", "train.seed=-1"], ("train.seed",)),
    (["config", "show", "--set", "train.iterations=0"], ("train.iterations",)),
    (["eval"], ("eval:", "required")),
    (["nosuch"], ("invalid choice",)),
])
def test_nonsense_on_the_command_line_is_refused_in_one_line(capsys, monkeypatch, tmp_path, argv, words):
    monkeypatch.chdir(tmp_path)  # were a flag accepted, nothing lands in the checkout
    _fails_cleanly(capsys, argv, *words)


def test_zero_max_seconds_still_means_no_cap():
    from pgolf.cli import build_parser

    args = build_parser().parse_args(["train", "--data", "d", "--max-seconds", "0", "--seed", "0"])
    assert (args.max_seconds, args.seed) == (0.0, 0)


def test_data_that_is_a_file_is_not_called_missing(trained, tmp_path, capsys):
    _, run = trained
    (tmp_path / "f").write_text("x")
    line = _fails_cleanly(capsys, ["eval", str(run / "artifact.pgolf"), "--data", str(tmp_path / "f")], "not a")
    assert "does not exist" not in line


def test_default_val_docs_too_large_says_what_to_pass(tmp_path, capsys):
    docs = _docs_file(tmp_path / "docs.jsonl", 60)
    _fails_cleanly(capsys, ["data", "build", "--docs", str(docs), "--out", str(tmp_path / "o"), "--vocab-size", "300",
                            "--quiet"], "60 documents read", "default of 50,000", "--val-docs N, fewer than 60")
    assert not (tmp_path / "o").exists()


def test_output_directory_that_is_a_file_exits_2_before_work(tiny_data, tmp_path, capsys, monkeypatch):
    from conftest import TINY_MODEL_SETS

    monkeypatch.chdir(tmp_path)

    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    sets = [f"--set={s}" for s in TINY_MODEL_SETS]
    _fails_cleanly(capsys, ["train", "--preset", "cpu-smoke", "--data", str(tiny_data), "--run-dir", str(taken),
                            *sets], "run directory", "is a file")
    _fails_cleanly(capsys, ["train", "--preset", "cpu-smoke", "--data", str(tiny_data), "--run-dir",
                            str(taken / "sub"), *sets], "is a file")
    _fails_cleanly(capsys, ["ablate", "--preset", "cpu-smoke", "--toggle", "xsa", "--data", str(tiny_data),
                            "--run-dir", str(taken)], "is a file")
    _fails_cleanly(capsys, ["run", "--data", str(taken)], "is a file")
    _fails_cleanly(capsys, ["data", "demo", "--out", str(taken), "--quiet"], "is a file")
    assert taken.read_text() == "not a folder"


def test_run_never_overwrites_a_damaged_data_directory_with_the_demo(tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = _copy_data(tiny_data, tmp_path / "mine")
    _val_shard(mine).unlink()
    _fails_cleanly(capsys, ["run", "--data", str(mine)], "fineweb_val")
    assert not (mine / "demo_docs.jsonl").exists()


def test_rebuilding_the_same_data_gives_identical_bytes(tmp_path, capsys):
    """The tokenizer (and so the manifest's sha256) does not depend on where or when it was built, so a rebuilt
    data directory still accepts artifacts trained on the first build."""
    docs = _docs_file(tmp_path / "docs.jsonl", 40)
    outs = [tmp_path / "one", tmp_path / "elsewhere" / "two"]
    for out in outs:
        assert main(["data", "build", "--docs", str(docs), "--out", str(out), "--vocab-size", "300",
                     "--val-docs", "5", "--quiet", "--workers", "1"]) == 0
    capsys.readouterr()
    assert (outs[0] / "tokenizer.model").read_bytes() == (outs[1] / "tokenizer.model").read_bytes()
    assert (outs[0] / "manifest.json").read_text() == (outs[1] / "manifest.json").read_text()


def test_eval_says_when_a_ttt_mode_adapted_nothing(trained, capsys):
    """A val split shorter than one SGD chunk: `sgd-ttt` scores as `sliding`, and says so (issue 23)."""
    data, run = trained
    assert main(["eval", str(run / "artifact.pgolf"), "--data", str(data), "--mode", "sgd-ttt", "--stride", "32",
                 "--max-tokens", "2048", "--set", "ttt.chunk_tokens=1000000", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "warning: sgd-ttt adapted 0 times: the val split is shorter than one adaptation unit" in out


def test_run_twice_never_replaces_the_first_run(tiny_data, tmp_path, monkeypatch, capsys):
    """A second `pgolf run` trains into a fresh directory; `--run-dir` holding a run is refused unless --overwrite
    (issue 24: a second run used to replace runs/demo)."""
    from conftest import TINY_MODEL_SETS

    monkeypatch.chdir(tmp_path)
    first = tmp_path / "runs" / "demo"
    first.mkdir(parents=True)
    (first / "result.json").write_text("{}")
    sets = [f"--set={s}" for s in TINY_MODEL_SETS] + ["--set=train.val_loss_every=0", "--max-steps", "2"]
    assert main(["run", "--data", str(tiny_data), *sets]) == 0
    assert (tmp_path / "runs" / "demo-2" / "result.json").is_file() and (first / "result.json").read_text() == "{}"
    capsys.readouterr()
    _fails_cleanly(capsys, ["run", "--data", str(tiny_data), "--run-dir", str(first), *sets], "not empty",
                   "--overwrite")
    assert (first / "result.json").read_text() == "{}"


def test_data_build_refuses_to_rebuild_a_data_directory_in_place(tiny_data, tmp_path, capsys):
    out = tmp_path / "data"
    shutil.copytree(tiny_data, out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"text": "a new document " * 50}) + "\n" + json.dumps({"text": "another " * 50}) + "\n")
    _fails_cleanly(capsys, ["data", "build", "--docs", str(docs), "--out", str(out), "--vocab-size", "300",
                            "--val-docs", "1"], "not empty", "--overwrite")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    _fails_cleanly(capsys, ["data", "demo", "--out", str(out)], "not empty", "--overwrite")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_eval_on_cuda_without_cuda_names_the_flag(trained, capsys):
    data, run = trained
    _fails_cleanly(capsys, ["eval", str(run / "artifact.pgolf"), "--data", str(data), "--device", "cuda"],
                   "--device=cuda but CUDA is not available")


def test_bundle_and_bench_refuse_to_replace_a_file_unless_told(tmp_path, capsys):
    """Both refuse before any work (building a bundle, measuring) and leave the file as it was."""
    out = tmp_path / "train_gpt.py"
    out.write_text("mine")
    _fails_cleanly(capsys, ["bundle", "--preset", "baseline", "--out", str(out)], "exists: pass --overwrite")
    result = tmp_path / "bench.json"
    result.write_text("{}")
    _fails_cleanly(capsys, ["bench", "--preset", "cpu-smoke", "--json", str(result)], "exists: pass --overwrite")
    assert out.read_text() == "mine" and result.read_text() == "{}"

