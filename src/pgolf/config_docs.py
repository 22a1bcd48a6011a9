"""What the settings mean, for people: each field's one-line doc and each shipped preset's description.

`pgolf config show` and `pgolf presets` print these. The docs are the attribute docstrings written under every field
of the dataclasses in `pgolf.config` (read from the source with `ast`, so there is one place to write them), and a
preset's description is the first sentence of its TOML header comment.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from typing import Any

from pgolf.config import SECTIONS, Config


def preset_description(name: str) -> str:
    """The first sentence of a shipped preset's header comment (up to the first ':' or '. ')."""
    header = []
    for line in (resources.files("pgolf") / "presets" / f"{name}.toml").read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("#").strip())
    text = " ".join(" ".join(header).split())
    cut = min((i for i in (text.find(": "), text.find(". ")) if i >= 0), default=len(text))
    return text[:cut].rstrip(":.")


def field_docs(section_class: type) -> dict[str, str]:
    """{field: its one-line doc}, from the attribute docstrings (the string literal under each field) of a config
    dataclass, read from its source."""
    import ast
    import inspect
    import textwrap

    body = ast.parse(textwrap.dedent(inspect.getsource(section_class))).body[0].body
    docs = {}
    for stmt, after in zip(body, body[1:]):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[stmt.target.id] = " ".join(after.value.value.split())
    return docs


def describe_config(cfg: Config) -> list[tuple[str, Any, str]]:
    """Every setting of `cfg` as (section.field, value, one-line doc), in declaration order."""
    rows = []
    for section in SECTIONS:
        obj = getattr(cfg, section)
        docs = field_docs(type(obj))
        rows += [(f"{section}.{f.name}", getattr(obj, f.name), docs.get(f.name, "")) for f in dataclasses.fields(obj)]
    return rows
