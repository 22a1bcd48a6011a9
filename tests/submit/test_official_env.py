"""A bundled train_gpt.py run the official way: no arguments, settings from the official environment variables."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from conftest import TINY_MODEL_SETS
from pgolf.cli import train_main
from pgolf.errors import PgolfError
from pgolf.official_env import OFFICIAL_FIELDS, official_run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_official_and_record_names_map_to_fields():
    run = official_run({"DATA_PATH": "/d", "SEED": "3", "VAL_BATCH_SIZE": "8192", "XSA_LAST_N": "4", "PATH": "/bin",
                        "COMPILE": "on"})
    assert run.data.as_posix() == "/d" and run.run_id is None
    # official names, a record's spelling of a pgolf field; PATH is not a setting; COMPILE is ambiguous (train/eval)
    assert run.sets == ["train.seed=3", "train.val_batch_tokens=8192", "model.xsa_last_n=4"]


def test_every_official_name_is_a_real_field():
    from pgolf.config_sources import parse_override
    from pgolf.options import resolve_config
    for name, field in OFFICIAL_FIELDS.items():
        section, key, _ = parse_override(f"{field}=1")
        assert hasattr(getattr(resolve_config("baseline", []), section), key), name


def test_an_unsupported_official_name_is_an_error():
    with pytest.raises(PgolfError, match="CONTROL_TENSOR_NAME_PATTERNS: not supported"):
        official_run({"CONTROL_TENSOR_NAME_PATTERNS": "attn_scale"})


def _snapshot(folder):
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_no_arguments_trains_from_the_environment(tiny_data, tmp_path, monkeypatch, capsys):
    """An official-style folder (shards and tokenizer, no manifest) is trained on without being written to; the run
    writes what the official script writes: logs/RUN_ID.txt with the official lines, the artifact beside it."""
    official = tmp_path / "datasets"
    official.mkdir()
    for f in tiny_data.glob("fineweb_*.bin"):
        shutil.copy(f, official / f.name)
    tok = next(tiny_data.glob("*.model"))
    before = _snapshot(official)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for text in TINY_MODEL_SETS:
        key, value = text.split("=", 1)
        monkeypatch.setenv(key.split(".", 1)[1].upper(), value)
    monkeypatch.setenv("DATA_PATH", str(official))
    monkeypatch.setenv("TOKENIZER_PATH", str(tok))
    monkeypatch.setenv("RUN_ID", "official")
    monkeypatch.setenv("SEED", "5")
    assert train_main([], preset="cpu-smoke") == 0
    result = json.loads((tmp_path / "logs" / "official" / "result.json").read_text())
    assert result["steps"] == 6 and result["seed"] == 5
    assert _snapshot(official) == before  # nothing written, nothing touched
    log = (tmp_path / "logs" / "official.txt").read_text()
    assert re.search(r"^Code size: \d+ bytes", log, re.M) and "final_int8_zlib_roundtrip_exact val_loss:" in log
    assert (tmp_path / "logs" / "official" / "artifact.pgolf").is_file() and not (tmp_path / "runs").exists()
    assert "official environment: data" in capsys.readouterr().err
    assert len(list((tmp_path / "cache" / "pgolf" / "data-views").iterdir())) == 1

    monkeypatch.delenv("RUN_ID")  # as the official script: a fresh UUID, a second run beside the first
    assert train_main([], preset="cpu-smoke") == 0
    assert len(list((tmp_path / "logs").glob("*.txt"))) == 2
    assert _snapshot(official) == before

    monkeypatch.setenv("INT8_KEEP_FLOAT_FP32_NAME_PATTERNS", "x")
    assert train_main([], preset="cpu-smoke") == 2
    assert "INT8_KEEP_FLOAT_FP32_NAME_PATTERNS: not supported" in capsys.readouterr().err


def test_ttt_fields_take_their_ttt_prefix():
    """`[ttt]` fields are `TTT_<FIELD>` (the names of the old eval.ttt_* fields); torchrun's RANK is not ttt.rank."""
    run = official_run({"TTT_RANK": "16", "TTT_LR": "0.001", "RANK": "3", "LR": "9", "TTT_WARM_START_A": "1"})
    assert run.sets == ["ttt.lr=0.001", "ttt.rank=16", "ttt.warm_start_a=1"]
