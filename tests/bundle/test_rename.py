"""Shortening the names a bundle's modules share: consistent, behaviour-preserving, and never where it could break."""

from __future__ import annotations

import ast
import sys
import textwrap
import types

from pgolf.bundle.rename import rename_shared

PACKAGE = "fakepkg"


def _trees(**sources: str) -> dict[str, ast.Module]:
    return {f"{PACKAGE}.{name}": ast.parse(textwrap.dedent(src)) for name, src in sources.items()}


def _is_ours(module: str, node: ast.ImportFrom) -> bool:
    return (node.module or "").split(".")[0] == PACKAGE


def _load(trees: dict[str, ast.Module], monkeypatch) -> dict[str, types.ModuleType]:
    """Execute the (renamed) trees as the modules of a throwaway package, in order."""
    package = types.ModuleType(PACKAGE)
    package.__path__ = []
    monkeypatch.setitem(sys.modules, PACKAGE, package)
    modules = {}
    for name, tree in trees.items():
        module = types.ModuleType(name)
        monkeypatch.setitem(sys.modules, name, module)
        exec(compile(ast.fix_missing_locations(tree), name, "exec"), module.__dict__)
        modules[name] = module
    return modules


def test_shared_names_are_renamed_consistently_and_behaviour_is_kept(monkeypatch):
    trees = _trees(
        errors="""
            class PgolfError(Exception):
                pass
            def describe_failure(value):
                return f"bad {value}"
        """,
        user="""
            from fakepkg.errors import PgolfError, describe_failure
            def check(value):
                try:
                    if value < 0:
                        raise PgolfError(describe_failure(value))
                    return value
                except PgolfError as exc:
                    return str(exc)
            def again(value):
                global describe_failure
                return describe_failure(value)
        """,
    )
    mapping = rename_shared(trees, fixed=set(), is_pgolf=_is_ours)
    assert set(mapping) == {"PgolfError", "describe_failure"}
    assert all(len(new) < len(old) for old, new in mapping.items())
    text = "".join(ast.unparse(t) for t in trees.values())
    assert "PgolfError" not in text and "describe_failure" not in text
    user = _load(trees, monkeypatch)[f"{PACKAGE}.user"]
    assert user.check(3) == 3 and user.check(-2) == "bad -2" and user.again(5) == "bad 5"


def test_names_reached_another_way_keep_their_spelling():
    trees = _trees(
        lib="""
            import os.path
            from os import sep
            def by_attribute(): pass
            def by_keyword(): pass
            def by_string(): pass
            def as_parameter(): pass
            def fixed_one(): pass
            def kept_short(): pass
            class Thing:
                def method_name(self): pass
                field_name = 1
            def method_name(): pass
            def field_name(): pass
            def __dunder__(): pass
        """,
        user="""
            import fakepkg.lib as lib
            from fakepkg.lib import (by_attribute, by_keyword, by_string, as_parameter, fixed_one, method_name,
                                     field_name, __dunder__, sep, kept_short)
            lib.by_attribute()
            call(by_keyword=1)
            getattr(lib, "by_string")
            def f(as_parameter): return as_parameter
            fixed_one(); method_name(); field_name(); __dunder__(); kept_short()
        """,
    )
    mapping = rename_shared(trees, fixed={"fixed_one"}, is_pgolf=_is_ours)
    assert mapping == {"kept_short": mapping["kept_short"]}  # the only name no other spelling reaches
    assert "sep" not in mapping  # bound by importing another library


def test_new_names_are_fresh_and_the_most_used_gets_the_shortest():
    trees = _trees(
        lib="""
            def rarely_used(): pass
            def used_everywhere(): pass
            a = b = c = 1
        """,
        user="""
            from fakepkg.lib import rarely_used, used_everywhere
            used_everywhere(); used_everywhere(); used_everywhere(); rarely_used()
        """,
    )
    before = {n.id for t in trees.values() for n in ast.walk(t) if isinstance(n, ast.Name)}
    mapping = rename_shared(trees, fixed=set(), is_pgolf=_is_ours)
    assert not set(mapping.values()) & before
    assert len(mapping["used_everywhere"]) <= len(mapping["rarely_used"])
    assert mapping["used_everywhere"] < mapping["rarely_used"]
