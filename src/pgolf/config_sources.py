"""Where a run's settings come from, in order, each overriding the last: the `pgolf.config` defaults (the
official naive baseline), a preset (a TOML file in `pgolf/presets/`, or any path, one table per section), then
`PGOLF_<SECTION>_<FIELD>` environment variables (the challenge's torchrun convention), then `--set
section.field=value` from the command line. This is the only module that reads the environment for settings
(`NON_CONFIG_ENV` lists the `PGOLF_` variables that are not settings). Named choices are checked after it, by
`pgolf.options.resolve_config`, which is what commands use."""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from pgolf.config import SECTIONS, Config, assign_setting, closest_settings, current_name, env_name, note_old_names
from pgolf.errors import PgolfError
from pgolf.suggest import did_you_mean


def preset_names() -> list[str]:
    """Names of the presets shipped with pgolf."""
    folder = resources.files("pgolf") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_preset(name_or_path: str) -> dict[str, Any]:
    """Read a preset by shipped name (`baseline`) or by path to a TOML file."""
    path = Path(name_or_path)
    try:
        if path.suffix == ".toml" or path.exists():
            text = path.read_text(encoding="utf-8")
        else:
            resource = resources.files("pgolf") / "presets" / f"{name_or_path}.toml"
            if not resource.is_file():
                raise PgolfError(f"unknown preset {name_or_path!r}" + did_you_mean(name_or_path, preset_names())
                                 + f" (known: {', '.join(preset_names())})")
            text = resource.read_text(encoding="utf-8")
        return tomllib.loads(text)
    except OSError as exc:
        raise PgolfError(f"{path}: cannot read preset: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PgolfError(f"{name_or_path}: invalid TOML: {exc}") from None


def _apply_sets(cfg: Config, overrides: list[str], old: list[str], sections: tuple[str, ...] | None = None,
                refusal: str = "") -> None:
    for text in overrides:
        section, key, value = parse_override(text)
        if sections is not None and current_name(section, key)[0] not in sections:
            raise PgolfError(f"--set {text}: {refusal or 'section not allowed here'}")
        assign_setting(cfg, section, key, value, source=f"--set {text}", old=old)


def apply_overrides(cfg: Config, overrides: list[str], sections: tuple[str, ...] | None = None,
                    refusal: str = "") -> None:
    """`--set section.field=value` texts on a built config (e.g. an artifact's), in order, then `validate`; an
    override outside `sections` (None: any) is refused with the reason `refusal`."""
    old: list[str] = []
    _apply_sets(cfg, overrides, old, sections, refusal)
    note_old_names(old)
    cfg.validate()


def parse_override(text: str) -> tuple[str, str, str]:
    """Split `section.field=value`."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise PgolfError(f"--set {text!r}: expected section.field=value, e.g. model.num_layers=11")
    key, value = text.split("=", 1)
    section, name = key.strip().split(".", 1)
    return section, name, value.strip()


NON_CONFIG_ENV = ("PGOLF_SHARED_DATA", "PGOLF_DIST_TIMEOUT", "PGOLF_TEST_RANK_EXIT", "PGOLF_PROGRESS_SECONDS")
"""`PGOLF_` variables that are not config overrides (the test suite's shared data folder, the process group's
collective timeout, the rank-death test hook of `pgolf.runtime` and the period of `pgolf.progress`'s lines)."""


def env_overrides(environ: Mapping[str, str] | None = None) -> list[tuple[str, str, str]]:
    """`PGOLF_<SECTION>_<FIELD>=value` variables as (section, field, value), e.g. PGOLF_TRAIN_SEED=7. Any other
    `PGOLF_` variable (except NON_CONFIG_ENV) is a PgolfError, so a misspelled section is not silently ignored."""
    environ = os.environ if environ is None else environ
    out = []
    for name, value in sorted(environ.items()):
        if not name.startswith("PGOLF_") or name in NON_CONFIG_ENV:
            continue
        section, _, key = name[len("PGOLF_"):].lower().partition("_")
        if section not in SECTIONS or not key:
            raise PgolfError(f"environment {name}: not PGOLF_<SECTION>_<FIELD> with a known section "
                             f"({', '.join(s.upper() for s in SECTIONS)})"
                             + closest_settings(section, key, env_name, also=NON_CONFIG_ENV))
        out.append((section, key, value))
    return out


def build_config(preset: str = "baseline", overrides: list[str] | None = None,
                 environ: Mapping[str, str] | None = None) -> Config:
    """Defaults, then the preset, then environment variables, then `--set` overrides; `validate`d. Named choices are
    checked by `pgolf.options.resolve_config`, which is what commands use."""
    data = load_preset(preset)
    cfg = Config(preset=Path(preset).stem if preset.endswith(".toml") else preset)
    old: list[str] = []  # old setting names read (one note for all of them)
    for section, values in data.items():
        if not isinstance(values, dict):
            raise PgolfError(f"preset {preset}: top-level key {section!r} must be a table like [model]")
        for key, value in values.items():
            assign_setting(cfg, section, key, value, source=f"preset {preset}", old=old)
    for section, key, value in env_overrides(environ):
        assign_setting(cfg, section, key, value, source=f"environment {env_name(section, key)}", old=old, spell=env_name)
    _apply_sets(cfg, overrides or [], old)
    note_old_names(old)
    cfg.validate()
    return cfg
