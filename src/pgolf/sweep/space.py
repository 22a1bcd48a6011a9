"""The search space file of `pgolf sweep` (SPACE.toml): which `--set` fields a study searches, and over what.

One table per field, named like the field (docs/sweep.md#the-space-file):

    [optim.matrix_lr]                    # a float: low/high, optionally log = true or step = 0.01
    low = 0.01
    high = 0.1
    log = true

    [model.num_layers]                   # an int: low/high (integers), optionally step or log
    low = 2
    high = 6

    [model.mlp_activation]               # any type: a list of choices
    choices = ["relu2", "leaky_relu2"]

    [optim.muon_weight_decay]            # searched only when the condition holds
    low = 0.0
    high = 0.1
    when = "optim.matrix_optimizer == 'muon'"

A condition is `SECTION.FIELD == VALUE` (or `!=`, `in [...]`, `not in [...]`) on another searched field (its value
in the trial: it is sampled first) or on any other field (the base config's value). Everything is checked against
the config's own fields and types before a trial starts; each problem is one line naming the file and the field.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgolf.config import SECTIONS, Config
from pgolf.errors import PgolfError

SPEC_KEYS = ("choices", "high", "log", "low", "step", "when")
_OPS = {ast.Eq: "==", ast.NotEq: "!=", ast.In: "in", ast.NotIn: "not in"}


def field_types(cfg: Config | None = None) -> dict[str, str]:
    """Every setting as "section.field" -> its type name ("int", "float", "bool", "str")."""
    cfg = cfg or Config()
    return {f"{s}.{f.name}": str(f.type) for s in SECTIONS for f in dataclasses.fields(getattr(cfg, s))}


def set_text(value: Any) -> str:
    """A value as `--set` reads it back: true/false, repr of a float (exact), the rest as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def shown(value: Any) -> str:
    """A value for people: floats to 4 significant digits (`set_text` keeps them exact for the runs)."""
    return f"{value:.4g}" if isinstance(value, float) else set_text(value)


SETTING_KIND = {"int": "an integer", "float": "a number", "bool": "a true/false", "str": "a text"}
VALUE_KIND = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "text"}


def _value_fits(value: Any, type_name: str) -> bool:
    if type_name == "bool":
        return isinstance(value, bool)
    if type_name == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, str)


@dataclass(frozen=True)
class Condition:
    """`field op value(s)`: whether a conditional parameter is searched in a trial."""

    field: str
    op: str
    values: tuple

    def holds(self, sampled: dict[str, Any], base: Config) -> bool:
        if self.field in sampled:
            current = sampled[self.field]
        else:
            section, name = self.field.split(".")
            current = getattr(getattr(base, section), name)
        inside = current in self.values
        return inside if self.op in ("==", "in") else not inside

    def __str__(self) -> str:
        shown = repr(self.values[0]) if self.op in ("==", "!=") else repr(list(self.values))
        return f"{self.field} {self.op} {shown}"


@dataclass(frozen=True)
class Param:
    """One searched field: a range (`low`..`high`, `log`, `step`) or a list of `choices`; `when`: a condition."""

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple | None = None
    when: Condition | None = None

    def suggest(self, trial) -> Any:
        """The value of this field for an Optuna trial."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)

    def describe(self) -> str:
        if self.choices is not None:
            what = "one of " + ", ".join(map(set_text, self.choices))
        else:
            what = f"{set_text(self.low)}..{set_text(self.high)}" + (" log" if self.log else "") + (
                f" step {set_text(self.step)}" if self.step is not None else "")
        return f"{self.name}: {what}" + (f" when {self.when}" if self.when else "")


@dataclass(frozen=True)
class Space:
    """The parameters of a study, each after the parameter its condition reads (otherwise in file order)."""

    params: tuple[Param, ...]
    text: str  # the file as read: a study remembers it, so every worker searches the same space

    def sample(self, trial, base: Config) -> dict[str, Any]:
        """Each parameter whose condition holds, suggested by the trial's sampler, in file order."""
        values: dict[str, Any] = {}
        for param in self.params:
            if param.when is None or param.when.holds(values, base):
                values[param.name] = param.suggest(trial)
        return values

    def sets(self, values: dict[str, Any]) -> list[str]:
        return [f"{name}={set_text(value)}" for name, value in values.items()]

    def shown(self, values: dict[str, Any]) -> str:
        return " ".join(f"{name}={shown(value)}" for name, value in values.items())


def load_space(path: str | Path) -> Space:
    """Read and check SPACE.toml (module docstring); a problem is one PgolfError line naming the file and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PgolfError(f"{path}: cannot read the space file: {exc.strerror or exc}") from None
    return parse_space(text, str(path))


def parse_space(text: str, where: str = "space") -> Space:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PgolfError(f"{where}: invalid TOML: {exc}") from None
    types = field_types()
    specs: dict[str, Any] = {}
    for key, value in data.items():
        if "." in key:  # ["optim.matrix_lr"]: the field's --set name, quoted
            entries = [(key, value)]
        elif key in SECTIONS and isinstance(value, dict):
            entries = [(f"{key}.{name}", spec) for name, spec in value.items()]
        elif key in SECTIONS:
            raise PgolfError(f"{where}: {key} = {value!r}: expected tables like [{key}.FIELD] with low/high or choices")
        else:
            raise PgolfError(f"{where}: unknown config section {key!r} in [{key}...] (known: {', '.join(SECTIONS)})")
        for name, spec in entries:
            if name in specs:
                raise PgolfError(f"{where}: {name} is listed twice")
            specs[name] = spec
    if not specs:
        raise PgolfError(f"{where}: no parameters (add a table like [optim.matrix_lr] with low = ... and high = ...)")
    params = [_param(name, spec, types, where) for name, spec in specs.items()]
    return Space(_in_order(params, where), text)


def _unknown(name: str, types: dict[str, str], where: str) -> PgolfError:
    close = difflib.get_close_matches(name, types, n=1)
    hint = f"did you mean {close[0]}?" if close else "pgolf config show lists the settings"
    return PgolfError(f"{where}: unknown setting {name} ({hint})")


def _param(name: str, spec: Any, types: dict[str, str], where: str) -> Param:
    if name not in types:
        raise _unknown(name, types, where)
    type_name = types[name]
    at = f"{where}: {name}"
    if not isinstance(spec, dict):
        raise PgolfError(f"{at}: expected a table with low and high, or choices; got {spec!r}")
    extra = sorted(set(spec) - set(SPEC_KEYS))
    if extra:
        raise PgolfError(f"{at}: unknown key {extra[0]!r} (known: {', '.join(SPEC_KEYS)})")
    when = _condition(spec["when"], name, types, at) if "when" in spec else None
    if "choices" in spec:
        return _choices_param(name, type_name, spec, when, at)
    if "low" not in spec or "high" not in spec:
        missing = "low" if "low" not in spec else "high"
        raise PgolfError(f"{at}: {missing} is missing (a range needs low and high; or give choices = [...])")
    if type_name not in ("int", "float"):
        raise PgolfError(f"{at} is {SETTING_KIND[type_name]} setting: give choices = [...], not a range")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    for key, value in (("low", low), ("high", high)) + ((("step", step),) if step is not None else ()):
        if not _value_fits(value, type_name):
            raise PgolfError(f"{at} is {SETTING_KIND[type_name]} setting: {key} must be {VALUE_KIND[type_name]}, "
                             f"got {value!r}")
    if not isinstance(log, bool):
        raise PgolfError(f"{at}: log must be true or false, got {log!r}")
    if not low < high:
        raise PgolfError(f"{at}: low {low!r} must be below high {high!r}")
    if log and low <= 0:
        raise PgolfError(f"{at}: log = true needs low > 0, got {low!r}")
    if step is not None and log:
        raise PgolfError(f"{at}: step and log = true cannot go together (Optuna samples a log range continuously)")
    if step is not None and not 0 < step <= high - low:
        raise PgolfError(f"{at}: step {step!r} must be above 0 and at most high - low ({high - low!r})")
    return Param(name, type_name, low=low, high=high, log=log, step=step, when=when)


def _choices_param(name: str, type_name: str, spec: dict, when: Condition | None, at: str) -> Param:
    ranged = sorted(set(spec) & {"low", "high", "log", "step"})
    if ranged:
        raise PgolfError(f"{at}: give either choices or a range, not both (drop {', '.join(ranged)})")
    choices = spec["choices"]
    if not isinstance(choices, list) or not choices:
        raise PgolfError(f"{at}: choices must be a non-empty list, got {choices!r}")
    for value in choices:
        if not _value_fits(value, type_name):
            raise PgolfError(f"{at} is {SETTING_KIND[type_name]} setting: choice {value!r} is not "
                             f"{VALUE_KIND[type_name]}")
    if len(set(map(repr, choices))) != len(choices):
        raise PgolfError(f"{at}: a choice is listed twice in {choices!r}")
    return Param(name, type_name, choices=tuple(choices), when=when)


def _condition(text: Any, name: str, types: dict[str, str], at: str) -> Condition:
    form = "expected SECTION.FIELD == VALUE (or !=, in [...], not in [...])"
    if not isinstance(text, str):
        raise PgolfError(f"{at}: when must be a string, {form}; got {text!r}")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise PgolfError(f"{at}: when = {text!r}: {form}") from None
    if not (isinstance(tree, ast.Compare) and len(tree.ops) == 1 and type(tree.ops[0]) in _OPS
            and isinstance(tree.left, ast.Attribute) and isinstance(tree.left.value, ast.Name)):
        raise PgolfError(f"{at}: when = {text!r}: {form}")
    field = f"{tree.left.value.id}.{tree.left.attr}"
    op = _OPS[type(tree.ops[0])]
    if field not in types:
        raise _unknown(field, types, f"{at}: when = {text!r}")
    if field == name:
        raise PgolfError(f"{at}: when = {text!r} refers to the field itself")
    try:
        value = ast.literal_eval(tree.comparators[0])
    except ValueError:
        raw = ast.unparse(tree.comparators[0])
        value = {"true": True, "false": False}.get(raw, raw)  # TOML-style booleans, bare words as text
        if not isinstance(value, bool):
            raise PgolfError(f"{at}: when = {text!r}: {raw} is not a value (quote text: '{raw}')") from None
    values = tuple(value) if op in ("in", "not in") and isinstance(value, (list, tuple)) else None
    if op in ("in", "not in") and values is None:
        raise PgolfError(f"{at}: when = {text!r}: {op} needs a list, e.g. {field} {op} [1, 2]")
    values = values if values is not None else (value,)
    for v in values:
        if not _value_fits(v, types[field]):
            raise PgolfError(f"{at}: when = {text!r}: {field} is {SETTING_KIND[types[field]]} setting; {v!r} is "
                             f"not {VALUE_KIND[types[field]]}")
    return Condition(field, op, values)


def _in_order(params: list[Param], where: str) -> tuple[Param, ...]:
    """`params` with each one after the searched parameter its condition reads; a condition on a choice that the
    parameter it reads cannot take, and conditions that go round in a circle, are refused."""
    by_name = {p.name: p for p in params}
    for p in params:
        read = by_name.get(p.when.field) if p.when else None
        if read is not None and read.choices is not None:
            missing = [v for v in p.when.values if v not in read.choices]
            if missing:
                raise PgolfError(f"{where}: {p.name}: when = \"{p.when}\": {missing[0]!r} is not one of "
                                 f"{read.name}'s choices")
    ordered: list[Param] = []
    placed: set[str] = set()

    def place(p: Param, chain: list[str]) -> None:
        if p.name in placed:
            return
        if p.name in chain:
            raise PgolfError(f"{where}: the conditions go round in a circle: {' -> '.join([*chain, p.name])}")
        if p.when is not None and p.when.field in by_name:
            place(by_name[p.when.field], [*chain, p.name])
        placed.add(p.name)
        ordered.append(p)

    for p in params:
        place(p, [])
    return tuple(ordered)
