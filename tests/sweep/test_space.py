"""The space file of `pgolf sweep`: what it searches, its conditionals, and every bad input as one line, exit 2."""

from __future__ import annotations

import pytest

from pgolf.cli import main as sweep_main
from pgolf.errors import PgolfError
from pgolf.options import resolve_config
from pgolf.sweep.space import load_space, parse_space, set_text

GOOD = """
[optim.matrix_lr]
low = 0.01
high = 0.1
log = true

[model.num_layers]
low = 2
high = 6
step = 2

[optim.matrix_optimizer]
choices = ["muon", "soap"]

["optim.muon_weight_decay"]
low = 0.0
high = 0.1
when = "optim.matrix_optimizer == 'muon'"

[model.smear_gate]
choices = [true, false]
when = "model.num_layers in [4, 6]"
"""


def test_a_space_reads_every_kind_of_parameter():
    space = parse_space(GOOD)
    # TOML groups the tables by section; a conditional parameter comes after the one its condition reads
    names = [p.name for p in space.params]
    assert sorted(names) == sorted(["optim.matrix_lr", "model.num_layers", "optim.matrix_optimizer",
                                    "optim.muon_weight_decay", "model.smear_gate"])
    assert names.index("optim.muon_weight_decay") > names.index("optim.matrix_optimizer")
    assert names.index("model.smear_gate") > names.index("model.num_layers")
    lr, layers, opt, wd, smear = (space.params[names.index(n)] for n in (
        "optim.matrix_lr", "model.num_layers", "optim.matrix_optimizer", "optim.muon_weight_decay", "model.smear_gate"))
    assert (lr.type, lr.low, lr.high, lr.log) == ("float", 0.01, 0.1, True)
    assert (layers.type, layers.step) == ("int", 2)
    assert opt.choices == ("muon", "soap") and smear.choices == (True, False)
    assert str(wd.when) == "optim.matrix_optimizer == 'muon'"
    assert str(smear.when) == "model.num_layers in [4, 6]"


def test_conditionals_follow_the_sampled_values():
    import optuna

    space, base = parse_space(GOOD), resolve_config("cpu-smoke", [], environ={})
    fixed = {"optim.matrix_lr": 0.02, "model.num_layers": 2, "optim.matrix_optimizer": "soap"}
    assert space.sample(optuna.trial.FixedTrial(fixed), base) == fixed  # neither condition holds
    both = {"optim.matrix_lr": 0.02, "model.num_layers": 4, "optim.matrix_optimizer": "muon",
            "optim.muon_weight_decay": 0.05, "model.smear_gate": False}
    assert space.sample(optuna.trial.FixedTrial(both), base) == both
    assert set(space.sets(both)) >= {"optim.muon_weight_decay=0.05", "model.smear_gate=false"}
    # the --set texts give back exactly the sampled values
    cfg = resolve_config("cpu-smoke", space.sets(both), environ={})
    assert (cfg.optim.matrix_lr, cfg.model.num_layers, cfg.model.smear_gate) == (0.02, 4, False)


def test_a_condition_on_a_field_not_searched_reads_the_base_config():
    import optuna

    space = parse_space('[optim.ema_decay]\nlow = 0.9\nhigh = 0.99\nwhen = "train.loader == \'packed\'"\n')
    base = resolve_config("cpu-smoke", [], environ={})
    assert base.train.loader != "packed"
    assert space.sample(optuna.trial.FixedTrial({}), base) == {}
    packed = resolve_config("cpu-smoke", ["train.loader=packed"], environ={})
    assert space.sample(optuna.trial.FixedTrial({"optim.ema_decay": 0.95}), packed) == {"optim.ema_decay": 0.95}


def test_set_text_round_trips_floats_exactly():
    value = 0.1 + 0.2
    assert float(set_text(value)) == value and set_text(True) == "true" and set_text(3) == "3"


BAD = [
    ("optim.matrix_lr = [", "invalid TOML"),
    ("", "no parameters"),
    ("[optm.matrix_lr]\nlow = 0.1\nhigh = 0.2\n", "unknown config section 'optm'"),
    ("[optim.matrx_lr]\nlow = 0.1\nhigh = 0.2\n", "unknown setting optim.matrx_lr (did you mean optim.matrix_lr?)"),
    ("[optim]\nmatrix_lr = 0.04\n", "optim.matrix_lr: expected a table with low and high, or choices"),
    ("[optim.matrix_lr]\nlow = 0.1\nhi = 0.2\n", "unknown key 'hi'"),
    ("[optim.matrix_lr]\nlow = 0.1\n", "high is missing"),
    ("[optim.matrix_lr]\nlow = 0.2\nhigh = 0.1\n", "low 0.2 must be below high 0.1"),
    ("[optim.matrix_lr]\nlow = 0.1\nhigh = 0.1\n", "low 0.1 must be below high 0.1"),
    ("[optim.matrix_lr]\nlow = 0.0\nhigh = 0.1\nlog = true\n", "log = true needs low > 0, got 0.0"),
    ("[optim.matrix_lr]\nlow = 0.01\nhigh = 0.1\nlog = true\nstep = 0.01\n", "step and log = true cannot go"),
    ("[optim.matrix_lr]\nlow = 0.01\nhigh = 0.1\nstep = 0.5\n", "step 0.5 must be above 0 and at most"),
    ("[optim.matrix_lr]\nlow = 0.01\nhigh = 0.1\nlog = 1\n", "log must be true or false"),
    ("[model.num_layers]\nlow = 2.5\nhigh = 6\n", "model.num_layers is an integer setting: low must be an integer"),
    ("[optim.matrix_lr]\nlow = 'a'\nhigh = 0.1\n", "low must be a number"),
    ("[model.mlp_activation]\nlow = 1\nhigh = 2\n", "is a text setting: give choices"),
    ("[model.mlp_activation]\nchoices = []\n", "choices must be a non-empty list"),
    ("[model.mlp_activation]\nchoices = ['relu2', 3]\n", "choice 3 is not text"),
    ("[model.mlp_activation]\nchoices = ['relu2', 'relu2']\n", "a choice is listed twice"),
    ("[model.num_layers]\nchoices = [2, 3]\nlow = 1\n", "give either choices or a range, not both"),
    ("[optim.matrix_lr]\nlow = 0.01\nhigh = 0.1\n[\"optim.matrix_lr\"]\nlow = 0.01\nhigh = 0.1\n", "listed twice"),
    ("[optim.matrix_lr]\nlow = 0.01\nhigh = 0.1\nwhen = 'optim.matrix_optimizer = 1'\n",
     "expected SECTION.FIELD == VALUE"),
    ("[optim.matrix_lr]\nlow = 0.01\nhigh = 0.1\nwhen = 'optim.matrx_optimizer == \"soap\"'\n",
     "unknown setting optim.matrx_optimizer"),
    ("[optim.matrix_lr]\nlow = 0.01\nhigh = 0.1\nwhen = 'model.num_layers == \"four\"'\n",
     "model.num_layers is an integer setting; 'four' is not an integer"),
    ("[optim.matrix_lr]\nlow = 0.01\nhigh = 0.1\nwhen = 'model.num_layers in 4'\n", "in needs a list"),
    ("[optim.matrix_lr]\nlow = 0.01\nhigh = 0.1\nwhen = 'optim.scalar_lr > 1'\n", "expected SECTION.FIELD =="),
    ("[optim.matrix_lr]\nlow = 0.01\nhigh = 0.1\nwhen = 'optim.scalar_lr == 0.1'\n[optim.scalar_lr]\nlow = 0.01\n"
     "high = 0.1\nwhen = 'optim.matrix_lr == 0.1'\n", "the conditions go round in a circle: optim.matrix_lr -> "
     "optim.scalar_lr -> optim.matrix_lr"),
    ("[optim.matrix_optimizer]\nchoices = ['muon']\n[optim.matrix_lr]\nlow = 0.01\nhigh = 0.1\n"
     "when = \"optim.matrix_optimizer == 'adam'\"\n", "'adam' is not one of optim.matrix_optimizer's choices"),
    ("[optim.matrix_lr]\nlow = 0.01\nhigh = 0.1\nwhen = 'optim.matrix_lr == 0.1'\n", "refers to the field itself"),
]


@pytest.mark.parametrize("text, expected", BAD, ids=[expected.split(":")[0][:40] for _, expected in BAD])
def test_a_bad_space_file_is_one_line_and_exit_2(tmp_path, capsys, text, expected):
    space = tmp_path / "space.toml"
    space.write_text(text, encoding="utf-8")
    code = sweep_main(["sweep", "--preset", "cpu-smoke", "--space", str(space), "--trials", "2",
                       "--data", str(tmp_path / "no-data"), "--out", str(tmp_path / "study")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"pgolf: error: {space}"), err
    assert expected in err, err
    assert not (tmp_path / "study").exists()  # refused before anything is written


def test_a_missing_space_file_and_missing_flags_are_one_line(tmp_path, capsys):
    with pytest.raises(PgolfError, match="cannot read the space file"):
        load_space(tmp_path / "absent.toml")
    assert sweep_main(["sweep", "--preset", "cpu-smoke", "--trials", "2"]) == 2
    err = capsys.readouterr().err
    assert err == "pgolf: error: sweep: --space, --data are required to run a study (or: pgolf sweep report " \
                  "STUDY_DIR)\n"


def test_a_field_both_searched_and_fixed_is_refused(tmp_path, capsys):
    space = tmp_path / "space.toml"
    space.write_text("[optim.matrix_lr]\nlow = 0.01\nhigh = 0.1\n", encoding="utf-8")
    assert sweep_main(["sweep", "--preset", "cpu-smoke", "--space", str(space), "--trials", "2", "--data",
                       str(tmp_path), "--set", "optim.matrix_lr=0.05"]) == 2
    assert "optim.matrix_lr is both searched" in capsys.readouterr().err


def test_the_example_of_docs_sweep_md_is_a_valid_space():
    import re
    from pathlib import Path

    page = Path(__file__).resolve().parents[2] / "docs" / "sweep.md"
    if not page.is_file():
        pytest.skip("no docs/ beside the tests (installed package only)")
    example = re.search(r"```toml\n(.*?)```", page.read_text(encoding="utf-8"), re.S).group(1)
    space = parse_space(example, "docs/sweep.md")
    assert len(space.params) == 6 and any(p.when is not None for p in space.params)
