"""Shorter names for the names a bundle's modules share, so that code bytes go to code.

python-minifier renames what is private to one module; a name another module imports (`PgolfError`, `Config`,
`atomic_write_json`, ...) must keep one spelling in both, so the minifier leaves it long (docs/BENCHMARKS.md counts
them for the record bundle). A bundle is a closed world (nothing outside it imports from it), so one consistent
renaming of an identifier in every module keeps behaviour, as long as the identifier is never reached through a
spelling the renaming does not touch. `rename_shared` therefore renames an identifier only
when it is

- imported by name from a pgolf module somewhere (the names the minifier cannot rename),
- not in `fixed` (builtins, the entry points stage 2 calls, submodule names) and not a dunder,
- never spelled another way anywhere: an attribute name or identifier-like string (`module.name`,
  `getattr(x, "name")`, fields), a parameter or keyword-argument name (a call into another library may pass it by
  keyword), a class attribute or method name, or a name bound by importing another library.

Every other occurrence of it, in any scope, is a plain name, an import alias, a `def`/`class` name or a
`global`/`nonlocal` declaration, and all of those are renamed together. New names are short, fresh (used nowhere
in the bundle) and given in order of frequency, so the most used names get the shortest spelling.
"""

from __future__ import annotations

import ast
import itertools
import keyword
import string
from collections import Counter
from typing import Callable, Iterator


def word(node: ast.AST) -> str | None:
    """The name `node` spells without being a variable: an attribute name (`module.name`) or an identifier-like
    string (`getattr(x, "name")`, a field name). Either may reach a definition of that name."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
        return node.value
    return None


def _identifiers(tree: ast.Module, is_pgolf: Callable[[ast.ImportFrom], bool]) -> Iterator[tuple[str, str]]:
    """(kind, identifier) for every identifier spelled in `tree`: kind "name" for what the renaming may touch,
    "blocked" for what it may not (parameters, keywords, attributes, identifier strings, names bound by importing
    another library)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):  # class attributes and methods are reached as attributes
            for stmt in node.body:
                if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    yield "blocked", stmt.name
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", None)]
                for target in targets:
                    for leaf in ast.walk(target) if isinstance(target, ast.expr) else ():
                        if isinstance(leaf, ast.Name):
                            yield "blocked", leaf.id
        if isinstance(node, ast.Name):
            yield "name", node.id
        elif isinstance(node, ast.ImportFrom) and is_pgolf(node):
            for alias in node.names:
                yield from (("name", n) for n in (alias.name, alias.asname) if n)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                yield from (("blocked", n) for n in (alias.name.split(".")[0], alias.asname) if n)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield "name", node.name
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            yield from (("name", n) for n in node.names)
        elif isinstance(node, ast.arg):
            yield "blocked", node.arg
        elif isinstance(node, ast.keyword) and node.arg:
            yield "blocked", node.arg
        elif word(node):
            yield "blocked", word(node)
        elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and getattr(node, "name", None):
            yield "name", node.name


def _fresh_names(taken: set[str]) -> Iterator[str]:
    """Identifiers of increasing length that are not in `taken` and are not keywords."""
    first = string.ascii_lowercase
    rest = string.ascii_lowercase + string.digits
    for length in itertools.count(1):
        for head in first:
            for tail in itertools.product(rest, repeat=length - 1):
                name = head + "".join(tail)
                if name not in taken and not keyword.iskeyword(name):
                    yield name


class _Renamer(ast.NodeTransformer):
    """Applies the mapping to every spelling `_identifiers` calls "name" (the others are never in the mapping)."""

    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = mapping

    def new(self, name: str | None) -> str | None:
        return self.mapping.get(name, name) if name else name

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = self.new(node.id)
        return node

    def visit_alias(self, node: ast.alias) -> ast.AST:
        node.name, node.asname = self.new(node.name), self.new(node.asname)
        return node

    def _named(self, node):
        node.name = self.new(node.name)
        return self.generic_visit(node)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = visit_ExceptHandler = _named

    def _declared(self, node):
        node.names = [self.new(n) for n in node.names]
        return node

    visit_Global = visit_Nonlocal = _declared


def rename_shared(trees: dict[str, ast.Module], fixed: set[str],
                  is_pgolf: Callable[[str, ast.ImportFrom], bool]) -> dict[str, str]:
    """Rename, in place and consistently in every tree (module name -> tree), each name imported by name from a
    pgolf module (`is_pgolf(module, node)`) that the module docstring allows; returns the mapping old -> new."""
    counts: Counter = Counter()
    shared: set[str] = set()
    taken: set[str] = set(fixed)
    blocked: set[str] = set(fixed)
    for module, tree in trees.items():
        for kind, name in _identifiers(tree, lambda node: is_pgolf(module, node)):
            taken.add(name)
            if kind == "blocked":
                blocked.add(name)
            else:
                counts[name] += 1
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and is_pgolf(module, node):
                shared.update(alias.name for alias in node.names)
    candidates = sorted((n for n in shared - blocked if not n.startswith("__")), key=lambda n: (-counts[n], n))
    mapping = {old: new for old, new in zip(candidates, _fresh_names(taken)) if len(new) < len(old)}
    renamer = _Renamer(mapping)
    for tree in trees.values():
        renamer.visit(tree)
    return mapping
