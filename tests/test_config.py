"""Config: presets, overrides, environment variables and validation."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pgolf.config import SECTIONS, Config
from pgolf.config_sources import env_overrides, preset_names
from pgolf.runtime import launch_env
from pgolf.config_docs import describe_config, field_docs, preset_description
from pgolf.errors import PgolfError
from pgolf.options import resolve_config


def test_shipped_presets_resolve():
    assert {"baseline", "cpu-smoke"} <= set(preset_names())
    for name in preset_names():
        cfg = resolve_config(name, environ={})
        assert cfg.preset == name


def test_baseline_preset_equals_dataclass_defaults():
    """The baseline preset spells out the defaults; the two must never drift apart."""
    preset = resolve_config("baseline", environ={}).to_dict()
    defaults = Config().to_dict()
    assert preset == defaults


def test_set_overrides_and_types():
    cfg = resolve_config("baseline", ["model.num_layers=11", "train.compile=off", "model.tie_embeddings=false",
                                      "train.train_batch_tokens=786_432", "train.micro_batch_tokens=98304"],
                         environ={})
    assert cfg.model.num_layers == 11 and cfg.train.compile == "off" and cfg.model.tie_embeddings is False
    assert cfg.train.train_batch_tokens == 786_432


def test_environment_overrides_apply_before_set():
    env = {"PGOLF_TRAIN_SEED": "7", "PGOLF_MODEL_NUM_LAYERS": "3", "UNRELATED": "x"}
    assert ("train", "seed", "7") in env_overrides(env)
    cfg = resolve_config("baseline", ["model.num_layers=5"], environ=env)
    assert cfg.train.seed == 7 and cfg.model.num_layers == 5


@pytest.mark.parametrize("name", ["PGOLF_MODLE_NUM_LAYERS", "PGOLF_SEED", "PGOLF_MODEL"])
def test_environment_variable_without_a_known_section_is_refused(name):
    with pytest.raises(PgolfError, match=f"{name}: .*MODEL, OPTIM, TRAIN, QUANT, EVAL"):
        resolve_config("baseline", environ={name: "3"})
    assert env_overrides({"PGOLF_SHARED_DATA": "/x"}) == []  # the test suite's folder, not an override


def test_every_field_of_every_section_has_a_one_line_doc():
    """The attribute docstring under each field is what `pgolf config show` prints."""
    cfg = Config()
    for section in SECTIONS:
        obj = getattr(cfg, section)
        docs = field_docs(type(obj))
        for f in dataclasses.fields(obj):
            assert docs.get(f.name, "").strip(), f"{section}.{f.name} has no docstring"
            assert len(docs[f.name]) <= 120, f"{section}.{f.name}: doc longer than one line"
    rows = describe_config(cfg)
    assert len(rows) == sum(len(dataclasses.fields(getattr(cfg, s))) for s in SECTIONS) and all(r[2] for r in rows)


def test_field_docs_read_attribute_docstrings_only():
    @dataclasses.dataclass
    class Example:
        """Class doc."""

        a: int = 1
        """Doc of a,
        on two lines."""
        b: int = 2  # a comment is not a doc
        c: str = "x"
        """Doc of c."""

    assert field_docs(Example) == {"a": "Doc of a, on two lines.", "c": "Doc of c."}


def test_every_shipped_preset_has_a_description():
    for name in preset_names():
        text = preset_description(name)
        assert text and "\n" not in text and not text.startswith("#"), name
    assert preset_description("cpu-smoke").startswith("A baseline-shaped model")


@pytest.mark.parametrize("override, words", [
    ("model.nope=1", "unknown setting model.nope"),
    ("bogus.x=1", "unknown config section"),
    ("model.num_layers=abc", "cannot read 'abc' as int"),
    ("model.num_layers", "expected section.field=value"),
    ("model.model_dim=500", "not divisible"),
    ("train.micro_batch_tokens=3000", "multiple"),
])
def test_bad_overrides_are_one_clear_error(override, words):
    with pytest.raises(PgolfError, match=words):
        resolve_config("baseline", [override], environ={})


def test_unknown_preset_lists_known_ones():
    with pytest.raises(PgolfError, match="unknown preset 'nope'.*baseline"):
        resolve_config("nope", environ={})


def _one_line(preset="baseline", sets=(), environ=None) -> str:
    with pytest.raises(PgolfError) as info:
        resolve_config(preset, list(sets), environ=environ or {})
    assert "\n" not in str(info.value)
    return str(info.value)


def test_a_mistyped_name_says_which_was_meant(tmp_path):
    """Issue 24: an unknown setting (in --set, a PGOLF_ variable, a preset file), section or preset names the closest
    known ones (difflib) in its one line, spelled as it was given; a name close to none lists the known ones."""
    assert _one_line(sets=["train.iteratons=5"]).endswith(
        "unknown setting train.iteratons; did you mean train.iterations?")
    assert "; did you mean train.iterations" in _one_line(sets=["model.iterations=5"])  # another section's, first
    assert _one_line(sets=["trian.seed=5"]).endswith("unknown config section 'trian'; did you mean train.seed?")
    assert _one_line(environ={"PGOLF_TRAIN_ITERATONS": "5"}) == (
        "environment PGOLF_TRAIN_ITERATONS: unknown setting train.iteratons; did you mean PGOLF_TRAIN_ITERATIONS?")
    assert _one_line(environ={"PGOLF_TRIAN_SEED": "5"}).endswith("; did you mean PGOLF_TRAIN_SEED?")
    assert _one_line(environ={"PGOLF_SHARED_DAT": "x"}).endswith("; did you mean PGOLF_SHARED_DATA?")
    preset = tmp_path / "mine.toml"
    preset.write_text("[train]\niteratons = 5\n")
    assert _one_line(str(preset)).endswith("unknown setting train.iteratons; did you mean train.iterations?")
    assert _one_line("recrod").startswith("unknown preset 'recrod'; did you mean record? (known: baseline")
    far = _one_line(sets=["train.zzzzqq=1"])
    assert "did you mean" not in far and far.endswith(")") and "known: body_dtype" in far


def test_grad_accum_keeps_global_batch():
    cfg = resolve_config("baseline", environ={})
    for world in (1, 2, 4, 8):
        accum = cfg.grad_accum_steps(world)
        assert accum * world * cfg.train.micro_batch_tokens == cfg.train.train_batch_tokens
    assert cfg.grad_accum_steps(1) == 8 and cfg.grad_accum_steps(8) == 1  # the official 8 // world_size
    with pytest.raises(PgolfError, match="world size 3"):
        cfg.grad_accum_steps(3)


def test_config_round_trips_through_json():
    cfg = resolve_config("cpu-smoke", ["train.seed=3"], environ={})
    again = Config.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again.to_dict() == cfg.to_dict()


def test_launch_env_reads_torchrun_variables():
    env = launch_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert env.rank == 1 and env.world_size == 2 and env.distributed
    assert not launch_env({}).distributed
    with pytest.raises(PgolfError):
        launch_env({"RANK": "x"})


def test_codec_and_level_are_checked_when_the_config_is_built():
    from pgolf.options import resolve_config
    from pgolf.errors import PgolfError

    with pytest.raises(PgolfError, match="level must be an integer 0..9"):
        resolve_config("record-cpu", ["quant.codec=zlib"])  # the preset's level 11 is a brotli quality
    with pytest.raises(PgolfError, match="unknown codec"):
        resolve_config("baseline", ["quant.codec=gzip"])
    assert resolve_config("record-cpu", ["quant.codec=zlib", "quant.level=9"]).quant.codec == "zlib"


def _notes(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("pgolf: note:")]


def test_ttt_is_its_own_section_and_new_names_read_without_a_note(capsys):
    cfg = resolve_config("baseline", ["ttt.rank=4", "ttt.targets=q,k"], environ={"PGOLF_TTT_LR": "0.5"})
    assert (cfg.ttt.rank, cfg.ttt.targets, cfg.ttt.lr) == (4, "q,k", 0.5)
    assert not any(f.name.startswith("ttt") for f in dataclasses.fields(cfg.eval))  # the defaults live in one place
    assert _notes(capsys) == []


def test_old_flat_ttt_names_map_to_the_ttt_section_with_one_note(tmp_path, capsys):
    """`eval.ttt_*` from a preset, a PGOLF_ variable and --set: each reaches its ttt field; one note for all."""
    preset = tmp_path / "old.toml"
    preset.write_text('[eval]\nmode = "lora-ttt"\nttt_rank = 4\nttt_targets = "q,v"\n', encoding="utf-8")
    cfg = resolve_config(str(preset), ["eval.ttt_lr=0.25", "eval.ttt_warm_start_a=true"],
                         environ={"PGOLF_EVAL_TTT_CHUNK": "32"})
    assert (cfg.eval.mode, cfg.ttt.rank, cfg.ttt.targets, cfg.ttt.lr, cfg.ttt.warm_start_a, cfg.ttt.chunk) == \
        ("lora-ttt", 4, "q,v", 0.25, True, 32)
    notes = _notes(capsys)
    assert len(notes) == 1
    for old in ("eval.ttt_rank", "eval.ttt_targets", "eval.ttt_lr", "eval.ttt_warm_start_a", "eval.ttt_chunk"):
        assert old in notes[0]
    # each way on its own: the same field, one note
    for kw in (dict(overrides=["eval.ttt_phases=5"]), dict(environ={"PGOLF_EVAL_TTT_PHASES": "5"})):
        assert resolve_config("baseline", **{"environ": {}, **kw}).ttt.phases == 5
        assert len(_notes(capsys)) == 1
    with pytest.raises(PgolfError, match="unknown setting eval.ttt_nope"):  # not a ttt field: still unknown
        resolve_config("baseline", ["eval.ttt_nope=1"], environ={})


def test_a_config_embedded_before_the_ttt_section_reads_back(capsys):
    """An artifact's or run directory's config.json written with the flat `eval.ttt_*` names."""
    want = resolve_config("record", environ={}).to_dict()
    old = {k: dict(v) if isinstance(v, dict) else v for k, v in want.items()}
    old["eval"].update({f"ttt_{k}": v for k, v in old.pop("ttt").items()})
    assert Config.from_dict(json.loads(json.dumps(old))).to_dict() == want
    assert len(_notes(capsys)) == 1
    assert Config.from_dict(want).to_dict() == want and _notes(capsys) == []


def test_ttt_values_are_checked():
    with pytest.raises(PgolfError, match="ttt.chunk, ttt.rank"):
        resolve_config("baseline", ["ttt.rank=0"], environ={})
    with pytest.raises(PgolfError, match="ttt.chunk, ttt.rank"):
        resolve_config("baseline", ["eval.ttt_chunk=0"], environ={})
    with pytest.raises(PgolfError, match=r"ttt\.targets='q,x' must name some of q, k, v"):
        resolve_config("baseline", ["ttt.targets=q,x"], environ={})
