"""`pgolf.options.check_options`: a bad eval choice (`eval.mode`, `eval.compile`, an entry of `eval.report_modes`) is
refused with one line naming the field and the allowed values."""

from __future__ import annotations

import pytest

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
