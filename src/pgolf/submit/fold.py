"""Specialising a preset's bundle: fold the technique switches it fixes into constants, then drop dead branches.

A `train_gpt.py` bundle runs one preset. Its technique switches (`frozen_fields`: every bool or str field of the
model, optim and quant sections, and every numeric one the preset leaves at 0, i.e. off) are fixed in the bundle:
`pgolf.config.BUNDLE_FROZEN` holds them and `Config.validate` refuses a config that changes one. So code that
reads such a field can read the constant instead, and `if` branches for techniques the preset does not use become
dead; the bundle's tree shake then drops what only those branches used (BigramHash, the QAT switch, the int8
baseline export, the validation of fields that cannot change, ...).

The folding is type-directed and conservative. A field read is folded only through a variable known to hold the
run's config or one of its sections:
- a function parameter annotated `Config`, `ModelConfig`, `OptimConfig` or `QuantConfig` (`cfg.quant.gptq`,
  `cfg.bigram_rows`), or `self` inside the methods of `pgolf.config.Config`;
- `self.<attr>` in a class whose `__init__` stores such a parameter there and never rebinds it;
- a local name bound once, to one of the above or to a section of a `Config` (`q = self.cfg.quant`).
Any variable bound more than once is left alone, as are f-strings. Config objects are never mutated after
`Config.validate` in the training path, which is what makes a read of the config a read of the constant.
Then `if`/`x if c else y` with a constant condition keep only the taken branch (`and`/`or`/`not`/comparisons of
constants are evaluated first).
"""

from __future__ import annotations

import ast
from collections import Counter
from typing import Any

from pgolf.config import Config

FROZEN_SECTIONS = ("model", "optim", "quant")
CONFIG_TYPES = {"Config": "cfg", "ModelConfig": "model", "OptimConfig": "optim", "QuantConfig": "quant"}
SECTIONS = ("model", "optim", "train", "quant", "eval")


def frozen_fields(cfg: Config) -> dict[str, Any]:
    """The switches a bundle of `cfg`'s preset fixes: bool and str fields, and numeric fields at 0 (off)."""
    out: dict[str, Any] = {}
    for section in FROZEN_SECTIONS:
        for name, value in vars(getattr(cfg, section)).items():
            if isinstance(value, (bool, str)) or (isinstance(value, (int, float)) and value == 0):
                out[f"{section}.{name}"] = value
    return out


def _annotation_kind(arg: ast.arg) -> str | None:
    ann = arg.annotation
    if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
        return CONFIG_TYPES.get(ann.value)
    return CONFIG_TYPES.get(ann.id) if isinstance(ann, ast.Name) else None


def _own_nodes(fn: ast.AST):
    """The nodes of a function's own scope (not inside nested functions, lambdas or classes)."""
    todo = list(ast.iter_child_nodes(fn))
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(node))


def _store_counts(fn: ast.AST) -> Counter:
    """How often each name is bound in a function's own scope (global/nonlocal count as rebinding)."""
    counts: Counter = Counter()
    for node in _own_nodes(fn):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            counts[node.id] += 1
        elif isinstance(node, ast.ExceptHandler) and node.name:
            counts[node.name] += 1
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            counts.update({name: 2 for name in node.names})
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            counts[node.name] += 1
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            counts.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return counts


class _Folder(ast.NodeTransformer):
    def __init__(self, frozen: dict[str, Any], module: str, names: dict[str, Any] | None = None) -> None:
        self.frozen = frozen
        self.module = module
        self.names = names or {}  # global constants a bundle fixes (pgolf.IN_BUNDLE), read as bare names
        self.env: dict[str, str] = {}  # variable -> "cfg" or a section name
        self.self_attrs: dict[str, str] = {}  # self.<attr> -> kind, inside the current class
        self.folded = 0

    # -------------------------------------------------------------- what a variable holds
    def kind(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return self.env.get(node.id)
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self" and "self" not in self.env:
                return self.self_attrs.get(node.attr)
            if self.kind(node.value) == "cfg" and node.attr in SECTIONS:
                return node.attr
        return None

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        saved = self.self_attrs
        self.self_attrs = self._class_attrs(node)
        self.generic_visit(node)
        self.self_attrs = saved
        return node

    def _class_attrs(self, cls: ast.ClassDef) -> dict[str, str]:
        """`self.<attr> = <config parameter>` stored once, in `__init__`, and nowhere else in the class."""
        stores: Counter = Counter()
        kinds: dict[str, str] = {}
        for node in ast.walk(cls):
            if isinstance(node, ast.Attribute) and not isinstance(node.ctx, ast.Load) and isinstance(
                    node.value, ast.Name) and node.value.id == "self":
                stores[node.attr] += 1
        for fn in cls.body:
            if isinstance(fn, ast.FunctionDef) and fn.name == "__init__":
                params = {a.arg: _annotation_kind(a) for a in fn.args.args + fn.args.kwonlyargs}
                counts = _store_counts(fn)
                for node in _own_nodes(fn):
                    if (isinstance(node, ast.Assign) and len(node.targets) == 1
                            and isinstance(node.targets[0], ast.Attribute)
                            and isinstance(node.targets[0].value, ast.Name) and node.targets[0].value.id == "self"
                            and isinstance(node.value, ast.Name) and params.get(node.value.id)
                            and counts.get(node.value.id, 0) == 0):
                        kinds[node.targets[0].attr] = params[node.value.id]
        return {attr: kind for attr, kind in kinds.items() if stores.get(attr) == 1}

    def _function(self, node) -> ast.AST:
        saved = self.env
        counts = _store_counts(node)
        env = {k: v for k, v in saved.items() if counts.get(k, 0) == 0}
        args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
        for arg in args:
            env.pop(arg.arg, None)
            kind = _annotation_kind(arg)
            if kind and counts.get(arg.arg, 0) == 0:
                env[arg.arg] = kind
        if (self.module == "pgolf.config" and args and args[0].arg == "self" and counts.get("self", 0) == 0
                and getattr(node, "_pgolf_class", None) == "Config"):
            env["self"] = "cfg"
        self.env = env
        for stmt in _own_nodes(node):  # aliases bound exactly once: q = cfg.quant; m, t = self.model, self.train
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                target, value = stmt.targets[0], stmt.value
                pairs = (zip(target.elts, value.elts) if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
                         and len(target.elts) == len(value.elts) else [(target, value)])
                for t, v in pairs:
                    if isinstance(t, ast.Name) and counts.get(t.id) == 1:
                        kind = self.kind(v)
                        if kind:
                            env[t.id] = kind
        self.generic_visit(node)
        self.env = saved
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        saved = self.env
        self.env = {k: v for k, v in saved.items() if k not in {a.arg for a in node.args.args}}
        self.generic_visit(node)
        self.env = saved
        return node

    def visit_JoinedStr(self, node: ast.JoinedStr) -> ast.AST:
        return node  # f-strings stay as written

    # -------------------------------------------------------------- folding
    def visit_Name(self, node: ast.Name) -> ast.AST:
        if isinstance(node.ctx, ast.Load) and node.id in self.names:
            self.folded += 1
            return ast.copy_location(ast.Constant(self.names[node.id]), node)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if isinstance(node.ctx, ast.Load):
            section = self.kind(node.value)
            key = f"{section}.{node.attr}"
            if section in FROZEN_SECTIONS and key in self.frozen:
                self.folded += 1
                return ast.copy_location(ast.Constant(self.frozen[key]), node)
        return self.generic_visit(node)

    def visit_If(self, node: ast.If) -> Any:
        self.generic_visit(node)
        known, value = _constant(node.test)
        if not known:
            return node
        return (node.body if value else node.orelse) or None

    def visit_IfExp(self, node: ast.IfExp) -> ast.AST:
        self.generic_visit(node)
        known, value = _constant(node.test)
        if not known:
            return node
        return node.body if value else node.orelse

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        self.generic_visit(node)
        values = list(node.values)
        while len(values) > 1:  # a leading constant either decides the result or drops out
            known, value = _constant(values[0])
            if not known:
                break
            if bool(value) == isinstance(node.op, ast.Or):
                return values[0]
            values.pop(0)
        if len(values) == 1:
            return values[0]
        node.values = values
        return node

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        return _folded(node)

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        return _folded(node)


_CONSTANT_NODES = (ast.Constant, ast.Tuple, ast.List, ast.Set, ast.BoolOp, ast.UnaryOp, ast.Compare, ast.BinOp,
                   ast.Load, ast.boolop, ast.unaryop, ast.cmpop, ast.operator)


def _constant(node: ast.AST) -> tuple[bool, Any]:
    """(True, value) when `node` is built of constants only (and evaluates), else (False, None)."""
    if not all(isinstance(n, _CONSTANT_NODES) for n in ast.walk(node)):
        return False, None
    try:
        return True, eval(compile(ast.fix_missing_locations(ast.Expression(node)), "<fold>", "eval"),
                          {"__builtins__": {}})
    except Exception:  # e.g. 1 / 0: leave it for run time
        return False, None


def _folded(node: ast.AST) -> ast.AST:
    known, value = _constant(node)
    if known and isinstance(value, (bool, int, float, str, type(None))):
        return ast.copy_location(ast.Constant(value), node)
    return node


_JUMPS = (ast.Return, ast.Raise, ast.Continue, ast.Break)


def statement_blocks(tree: ast.AST):
    """(node, field, statements) for every statement list in `tree` (bodies, `else` and `finally` blocks)."""
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list):
                yield node, field, block


def _drop_unreachable(tree: ast.AST) -> None:
    """Statements after a `return`/`raise`/`continue`/`break` in the same block never run (folding leaves such
    tails, e.g. the non-fitter export after `if quant.fit: return ...` became `return ...`)."""
    for _, _, block in statement_blocks(tree):
        for i, stmt in enumerate(block):
            if isinstance(stmt, _JUMPS):
                del block[i + 1:]
                break


def _fill_empty_blocks(tree: ast.AST) -> None:
    """A block whose statements were all folded away gets `pass` (an `else` may simply go)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and getattr(node, "body", None) == []:
            node.body = [ast.Pass()]


def fold_frozen(tree: ast.Module, module: str, frozen: dict[str, Any], names: dict[str, Any] | None = None) -> int:
    """Fold reads of the `frozen` fields in `tree` (module docstring), and bare-name reads of the global
    constants `names` (`{"IN_BUNDLE": True}` in a bundle); returns how many reads were folded."""
    for cls in ast.walk(tree):
        if isinstance(cls, ast.ClassDef):
            for fn in cls.body:
                if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    fn._pgolf_class = cls.name
    folder = _Folder(frozen, module, names)
    folder.visit(tree)
    _drop_unreachable(tree)
    _fill_empty_blocks(tree)
    ast.fix_missing_locations(tree)
    return folder.folded
