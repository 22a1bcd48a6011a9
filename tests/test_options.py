"""`pgolf.options.check_options`: a bad eval choice (`eval.mode`, `eval.compile`, an entry of `eval.report_modes`) is
refused with one line naming the field and the allowed values (and the closest, when one is close); the config
commands and every config error run without importing torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pgolf.config_sources import NON_CONFIG_ENV
from pgolf.errors import PgolfError
from pgolf.eval.names import EVAL_MODES
from pgolf.options import resolve_config
from pgolf.runtime import COMPILE_MODES


@pytest.mark.parametrize("override, words", [
    ("eval.mode=bogus", r"eval\.mode='bogus' must be one of flat, sliding"),
    ("eval.compile=max", r"eval\.compile='max' must be one of auto, on, off"),
    ("eval.compile=", r"eval\.compile='' must be one of"),
    ("eval.report_modes=bogus", r"eval\.report_modes='bogus': 'bogus' must be one of flat, sliding"),
    ("eval.report_modes=flat,slidng", r"eval\.report_modes='flat,slidng': 'slidng' must be one of"),
    ("eval.report_modes=Flat", r"eval\.report_modes='Flat': 'Flat' must be one of"),
])
def test_bad_eval_choices_are_one_clear_error(override, words):
    with pytest.raises(PgolfError, match=words) as info:
        resolve_config("baseline", [override], environ={})
    assert "\n" not in str(info.value)


def test_good_eval_choices_resolve():
    for mode in COMPILE_MODES:
        assert resolve_config("baseline", [f"eval.compile={mode}"], environ={}).eval.compile == mode
    every = ",".join(EVAL_MODES)
    assert resolve_config("baseline", [f"eval.report_modes={every}"], environ={}).eval.report_modes == every
    # split as the trainer splits it: blanks around names and empty entries are fine
    assert resolve_config("baseline", ["eval.report_modes= flat , sliding ,"], environ={})
    assert resolve_config("baseline", ["eval.report_modes="], environ={}).eval.report_modes == ""


def test_shipped_presets_pass_the_eval_checks():
    cfg = resolve_config("record", environ={})
    assert cfg.eval.report_modes and cfg.eval.compile in COMPILE_MODES


def test_eval_choices_are_checked_in_a_config_read_back_from_json():
    from pgolf.options import config_from_dict

    data = resolve_config("baseline", environ={}).to_dict()
    data["eval"]["report_modes"] = "flat,nope"
    with pytest.raises(PgolfError, match=r"eval\.report_modes"):
        config_from_dict(data)
    data["eval"]["report_modes"], data["eval"]["compile"] = "", "yes"
    with pytest.raises(PgolfError, match=r"eval\.compile"):
        config_from_dict(data)


def test_ttt_targets_are_checked_by_the_lora_code():
    """`ttt.targets` names adapters of `pgolf.model.lora` (the earlier linear-layer names still read)."""
    with pytest.raises(PgolfError, match=r"ttt\.targets='q,attn' must name some of q, k, v, o, mlp, head"):
        resolve_config("baseline", ["ttt.targets=q,attn"], environ={})
    with pytest.raises(PgolfError, match=r"ttt\.targets=''"):
        resolve_config("baseline", ["ttt.targets="], environ={})
    assert resolve_config("baseline", ["ttt.targets=attn.c_q, v,head"], environ={}).ttt.targets == "attn.c_q, v,head"


@pytest.mark.parametrize("override, hint", [
    ("eval.mode=slidng", "did you mean 'sliding'?"),
    ("eval.report_modes=flat,Flat", "did you mean 'flat'?"),
    ("train.loader=pakced", "did you mean 'packed'?"),
    ("quant.codec=zlip", "did you mean 'zlib'?"),
])
def test_a_mistyped_choice_says_which_was_meant(override, hint):
    with pytest.raises(PgolfError) as info:
        resolve_config("baseline", [override], environ={})
    assert str(info.value).endswith(hint) and "\n" not in str(info.value)
    with pytest.raises(PgolfError) as info:
        resolve_config("baseline", ["eval.mode=foo"], environ={})
    assert "did you mean" not in str(info.value)  # nothing close: the allowed list alone


def test_registries_beside_their_code_name_what_options_checks():
    """The loaders and codecs keep their implementations in a registry beside the code; `pgolf.options` checks the
    torch-free lists of `pgolf.data.choices` and `pgolf.artifact.choices`, which must name the same entries."""
    from pgolf.artifact.choices import LEVELS
    from pgolf.artifact.codecs import CODECS
    from pgolf.data.choices import LOADER_NAMES
    from pgolf.data.loader import LOADERS

    assert LOADER_NAMES == tuple(LOADERS)
    assert sorted(LEVELS) == sorted(CODECS)


# A fresh interpreter runs one pgolf command and reports its exit code and whether torch was imported.
PROBE = """
import json, sys
from pgolf.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # --help
    code = exc.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules}), file=sys.stderr)
"""


@pytest.mark.parametrize("argv, env, code, error", [
    (["--help"], {}, 0, None),
    (["presets"], {}, 0, None),
    (["config", "show", "--preset", "record"], {}, 0, None),
    (["config", "show", "--set", "train.iteratons=5"], {}, 2, "did you mean train.iterations?"),
    (["config", "show", "--set", "eval.mode=foo"], {}, 2, "eval.mode='foo' must be one of"),
    (["config", "show", "--set", "quant.bits=attn=9"], {}, 2, "quant.bits: attn=9 is outside"),
    (["config", "show"], {"PGOLF_TRAIN_ITERATONS": "5"}, 2, "did you mean PGOLF_TRAIN_ITERATIONS?"),
    (["config", "show"], {"PGOLF_TRAIN_SEED": "x"}, 2, "cannot read 'x' as int"),
])
def test_config_commands_and_config_errors_never_import_torch(argv, env, code, error):
    """Issue 24: --help, presets, config show and every config or override error answer without importing torch
    (every named choice is checked against the torch-free `choices` modules)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PGOLF_") or k in NON_CONFIG_ENV}
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], env={**environ, **env}, capture_output=True,
                          text=True, timeout=60)
    lines = done.stderr.strip().splitlines()
    assert json.loads(lines[-1]) == {"code": code, "torch": False}, done.stderr
    if error is None:
        assert len(lines) == 1 and done.stdout
    else:
        assert len(lines) == 2 and lines[0].startswith("pgolf: error: ") and error in lines[0]
