"""`pgolf bundle`: one self-contained, self-extracting `train_gpt.py` for a preset (docs/rules.md#code-bytes,
docs/rules.md#submission-process).

A submission ships a single `train_gpt.py`, and the records count the size of a minified, compressed,
self-extracting wrapper (the 2-line LZMA2 + base85 scripts from 2026-04-09, and the runtime
`_compressed_code_size` of PR #1530 onward). This module builds exactly such a file from the pgolf sources:

1. reachability (`analyse`): from `pgolf.cli.train_main`, every `pgolf` module reached by `import pgolf...` /
   `from pgolf... import ...` (including imports inside functions, read with `ast`), and within each module only
   the top-level definitions that kept code can reach (a conservative, name-based tree shake: a name used as an
   attribute or identifier-like string anywhere keeps every definition of that name, except import bindings).
   Modules in `NOT_AT_TRAIN_TIME` (data download, ablations, this tool) are left out when imported inside a
   function only (a module-level import still pulls them in), and the functions in `LEFT_OUT` (resuming and
   writing checkpoints, measuring a bundle: what a submission never runs) are kept as stubs whose bodies are not
   followed; either one, reached at run time, raises one PgolfError saying it is left out of the bundle, never a
   NameError or a bare ModuleNotFoundError. Before the shake, annotations, `if TYPE_CHECKING:`
   blocks and statements after a `return`/`raise`/`continue`/`break` go, so the shake also drops what only those
   used. After it, unused import names and methods nothing can call go (`prune_methods`);
2. names shortened (`minified_sources`): names one module imports from another get one short spelling everywhere
   (`pgolf.bundle.rename`), then python-minifier drops docstrings and comments and renames locals and
   module-private names (builtins are left unaliased: the compressor sees their repetition across modules);
3. one payload: a small stage-2 loader, a NUL, then `path NUL source NUL ...` for the modules and the preset's
   TOML, compressed with raw LZMA2 or brotli in four file orders, keeping the smallest, and written as the digits
   of one base-251 number in a string literal of a 4-line latin-1 script (`pgolf.bundle.selfextract`). At run time
   stage 2 installs an in-memory `importlib` finder/loader (with a resource reader for `pgolf/presets`) ahead of
   everything on `sys.meta_path`, then runs `pgolf train --preset NAME` with the command-line arguments.

Every transform works on ordinary Python: none asks the library for a particular shape (dispatch tables as dict
literals, annotations that steer folding, flag constants), and code the bundle cannot prove unused stays. So every
preset's bundle carries the same modules and definitions; only the preset's TOML and name differ. The output
depends only on the sources and the preset, so the same checkout always gives a byte-identical bundle, which is why
`pgolf.bundle.code_bytes` can count its size once per preset and cache it.
"""

from __future__ import annotations

import ast
import builtins
import copy
import functools
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pgolf.bundle.rename import rename_shared, word
from pgolf.bundle.selfextract import smallest_script
from pgolf.errors import PgolfError
from pgolf.options import resolve_config

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = (("pgolf.cli", "train_main"),)
NOT_AT_TRAIN_TIME = {
    "pgolf.__main__": "the `python -m pgolf` entry point; the bundle has its own",
    "pgolf.data.hub": "downloads the official export from the Hugging Face Hub",
    "pgolf.train.ablate": "runs technique ablations, not one training run",
    "pgolf.bundle.build": "this tool; a running bundle counts its own file instead",
    "pgolf.train.tracking": "TensorBoard and W&B tracking (train.tensorboard, train.wandb_project)",
}
# Top-level functions a submission never runs, shipped as stubs that raise one PgolfError naming the function and
# why: (module, function) -> what it is for. A submission runs `python train_gpt.py` the official way
# (pgolf.official_env: settings in the environment, no arguments), so it cannot resume, and a checkpoint it wrote
# could only be resumed by the package; and a running bundle counts its own file, never builds one. Each entry must
# name a top-level function (`_check_left_out`), so a rename cannot leave the table stale.
LEFT_OUT = {
    ("pgolf.cli", "_resumed_config"): "resuming a checkpointed run: pgolf train --resume",
    ("pgolf.train.resume", "check_resume"): "resuming a checkpointed run: pgolf train --resume",
    ("pgolf.train.resume", "load_checkpoint"): "resuming a checkpointed run: pgolf train --resume",
    ("pgolf.train.resume", "save_checkpoint"): "resumable checkpoints (train.checkpoint_every, SIGINT/SIGTERM)",
    ("pgolf.bundle.code_bytes", "bundle_code_bytes"): "building a bundle; a running bundle counts its own file",
    ("pgolf.bundle.code_bytes", "source_code_bytes"): "building a bundle; a running bundle counts its own file",
    ("pgolf.data.overlap", "compare_splits"): "the train/val leak scan: pgolf data build/import/verify (a bundle "
                                              "adopting the official data folder does not rescan it)",
}


@dataclass(frozen=True)
class Bundle:
    """A built bundle: the file's bytes and what went into it."""

    data: bytes
    preset: str
    modules: tuple[str, ...]
    resources: tuple[str, ...]
    codec: str
    source_bytes: int
    minified_bytes: int

    def report(self, out: str | Path) -> str:
        """The one line `pgolf bundle` prints after writing the bundle to `out`."""
        return (f"wrote {out}: {len(self.data)} bytes (code_bytes for preset {self.preset}; {len(self.modules)} "
                f"modules, {self.source_bytes} source bytes -> {self.minified_bytes} minified -> {self.codec}, "
                f"base-251 literal)")


def _module_path(name: str) -> Path | None:
    """The source file of a pgolf module, or None when `name` is not one."""
    base = PACKAGE_ROOT.parent.joinpath(*name.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


class _Module:
    """One pgolf module's top-level statements, with the names each binds and the code each references."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self.package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        self.tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        _strip_annotations(self.tree)
        _drop_unreachable(self.tree)
        self.binds: dict[str, list[ast.stmt]] = {}  # top-level name -> the statements that bind it
        self.always: list[ast.stmt] = []  # statements kept whenever the module is imported
        for node in self.tree.body:
            names = _bound_names(node)
            if names is None:
                self.always.append(node)
            for bound in names or ():
                self.binds.setdefault(bound, []).append(node)

    def reachable_by_word(self, name: str) -> bool:
        """Whether an attribute or string spelled `name` may reach a top-level binding here: any definition may be
        read as `module.name` or `getattr(module, "name")`, but a name bound only by an import (`import zlib`) is
        not how anyone reaches that other module, so words do not keep imports."""
        return any(not isinstance(node, (ast.Import, ast.ImportFrom)) for node in self.binds.get(name, ()))

    def absolute(self, node: ast.ImportFrom) -> str:
        """The absolute module name of a `from ... import` (relative imports resolved against this package)."""
        if not node.level:
            return node.module or ""
        parts = self.package.split(".")
        anchor = parts[:len(parts) - node.level + 1]
        return ".".join(anchor + ([node.module] if node.module else []))


def statement_blocks(tree: ast.AST):
    """(node, field, statements) for every statement list in `tree` (bodies, `else` and `finally` blocks)."""
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list):
                yield node, field, block


def _defines_custom_op(node: ast.AST) -> bool:
    """Whether a function is decorated with `...custom_op(...)` (pgolf/model/kernels.py)."""
    for decorator in getattr(node, "decorator_list", []):
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name == "custom_op":
            return True
    return False


def _strip_annotations(tree: ast.Module) -> None:
    """Drop what never runs: annotations of parameters, returns and variables outside class bodies (class
    attribute annotations stay: dataclasses and NamedTuples read them) and `if TYPE_CHECKING:` blocks, so that
    the imports only they used (`typing` names, type-only pgolf imports) drop out of the bundle too. A
    `torch.library.custom_op` function keeps its annotations: torch reads them to infer the operator's schema."""
    class_level = {id(stmt) for node in ast.walk(tree) if isinstance(node, ast.ClassDef) for stmt in node.body}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and not _defines_custom_op(node):
            if not isinstance(node, ast.Lambda):
                node.returns = None
            args = node.args
            for arg in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
                if arg is not None:
                    arg.annotation = None
    for node, field, block in list(statement_blocks(tree)):
        kept = []
        for stmt in block:
            if (isinstance(stmt, ast.If) and isinstance(stmt.test, ast.Name) and stmt.test.id == "TYPE_CHECKING"
                    and not stmt.orelse):
                continue
            if isinstance(stmt, ast.AnnAssign) and id(stmt) not in class_level:
                if stmt.value is None:
                    continue
                stmt = ast.copy_location(ast.Assign(targets=[stmt.target], value=stmt.value), stmt)
            kept.append(stmt)
        setattr(node, field, kept or ([ast.Pass()] if field == "body" else []))
    ast.fix_missing_locations(tree)


_JUMPS = (ast.Return, ast.Raise, ast.Continue, ast.Break)


def _drop_unreachable(tree: ast.AST) -> None:
    """Statements after a `return`/`raise`/`continue`/`break` in the same block never run."""
    for _, _, block in statement_blocks(tree):
        for i, stmt in enumerate(block):
            if isinstance(stmt, _JUMPS):
                del block[i + 1:]
                break


def _bound_names(node: ast.stmt) -> list[str] | None:
    """Top-level names a prunable statement binds, or None for a statement that must always run: anything with
    effects (expressions, control flow, `import a.b`, `from __future__`) and every binding of a dunder name."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        names = [node.name]
    elif isinstance(node, ast.ImportFrom):
        if node.module == "__future__" or any(a.name == "*" for a in node.names):
            return None
        names = [a.asname or a.name for a in node.names]
    elif isinstance(node, ast.Import):
        if any("." in a.name and not a.asname for a in node.names):
            return None  # `import a.b` also makes `a.b` reachable as an attribute: keep it as written
        names = [a.asname or a.name for a in node.names]
    elif isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if isinstance(node, ast.AnnAssign) and node.value is None:
            return None
        names = []
        for target in targets:
            elts = target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]
            if not all(isinstance(e, ast.Name) for e in elts):
                return None
            names += [e.id for e in elts]
    else:
        return None
    return None if any(n.startswith("__") for n in names) else names


@dataclass
class _Uses:
    """What a piece of code refers to: bare names, attribute names and identifier-like strings (any of which may
    name a top-level definition somewhere), and the pgolf imports it executes."""

    names: set[str]
    words: set[str]
    imports: list[tuple[str, str | None]]  # (module, imported name or None for the module itself)


def _uses(mod: _Module, node: ast.AST) -> _Uses:
    names: set[str] = set()
    words: set[str] = set()
    imports: list[tuple[str, str | None]] = []
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            names.add(child.id)
        elif word(child):
            words.add(word(child))
        elif isinstance(child, ast.Import):
            imports += [(alias.name, None) for alias in child.names]
        elif isinstance(child, ast.ImportFrom):
            base = mod.absolute(child)
            imports += [(base, alias.name) for alias in child.names]
    return _Uses(names, words, imports)


def _is_pgolf(module: str) -> bool:
    return module.split(".")[0] == "pgolf" and _module_path(module) is not None


@dataclass
class Closure:
    """The result of the reachability analysis: kept modules and, per module, the kept top-level names."""

    modules: dict[str, _Module]
    kept: dict[str, set[str]]
    excluded: set[str]
    stubbed: set[tuple[str, str]] = field(default_factory=set)  # the LEFT_OUT functions reached
    entries: tuple[tuple[str, str], ...] = ENTRY_POINTS  # what the analysis started from

    def source(self, name: str) -> str:
        """The module's source with unreachable top-level definitions and unused import names removed, and each
        reached LEFT_OUT function replaced by its stub."""
        mod = self.modules[name]
        kept = self.kept[name]
        body = []
        for node in mod.tree.body:
            bound = _bound_names(node)
            if isinstance(node, ast.FunctionDef) and (name, node.name) in self.stubbed:
                body.append(_stub(name, node.name))
            elif bound is None:
                body.append(node)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                aliases = [a for a in node.names if (a.asname or a.name) in kept]
                if aliases:
                    node = copy.copy(node)
                    node.names = aliases
                    body.append(node)
            elif any(n in kept for n in bound):
                body.append(node)
        return ast.unparse(ast.fix_missing_locations(ast.Module(body=body, type_ignores=[])))

    def shipped(self) -> list[str]:
        """The modules the bundle carries, sorted: the kept ones and a stub for each excluded one."""
        return sorted(set(self.modules) | self.excluded)

    def shipped_source(self, name: str) -> str:
        return _excluded_stub(name) if name in self.excluded else self.source(name)

    def absolute(self, module: str, node: ast.ImportFrom) -> str:
        """The absolute module name of a `from ... import` in a shipped module (stubs import absolutely)."""
        return self.modules[module].absolute(node) if module in self.modules else node.module or ""


def _left_out_message(what: str, why: str) -> str:
    return f"{what} is left out of this train_gpt.py bundle ({why}); run it with the pgolf package"


def _stub(module: str, name: str) -> ast.FunctionDef:
    """What a reached LEFT_OUT function becomes in the bundle: a function that raises one PgolfError saying so."""
    message = _left_out_message(f"{module}.{name}", LEFT_OUT[module, name])
    return ast.parse(f"def {name}(*args, **kwargs):\n    from pgolf.errors import PgolfError\n"
                     f"    raise PgolfError({message!r})").body[0]


def _excluded_stub(module: str) -> str:
    """The source a bundle ships for a NOT_AT_TRAIN_TIME module that kept code imports inside a function: importing
    it raises one PgolfError saying so."""
    message = _left_out_message(module, NOT_AT_TRAIN_TIME[module])
    return f"from pgolf.errors import PgolfError\nraise PgolfError({message!r})"


def _check_left_out() -> None:
    """Every LEFT_OUT entry names a top-level function of a pgolf module (so a rename cannot leave it stale)."""
    for module, name in LEFT_OUT:
        path = _module_path(module)
        tree = ast.parse(path.read_text(encoding="utf-8")) if path else None
        if tree is None or not any(isinstance(node, ast.FunctionDef) and node.name == name for node in tree.body):
            raise PgolfError(f"bundle: LEFT_OUT names {module}.{name}, which is not a top-level function")


def analyse(entries: tuple[tuple[str, str], ...] = ENTRY_POINTS) -> Closure:
    """Reachability from `entries` ((module, function) pairs) over modules and their top-level definitions.

    Conservative by construction: a definition is kept when its name is used as a bare name in its own module,
    imported by name from another, or appears anywhere as an attribute name or identifier-like string (so
    `module.func`, `getattr(obj, "func")` and methods keep it). Statements with effects always run. A LEFT_OUT
    function that is reached is kept as a stub: what only its body used is not followed.
    """
    _check_left_out()
    modules: dict[str, _Module] = {}
    kept: dict[str, set[str]] = {}
    words: set[str] = set()
    excluded: set[str] = set()
    todo: list[tuple[str, str]] = []  # (module, name) to keep
    stubbed: set[tuple[str, str]] = set()

    def use(mod: _Module, uses: _Uses, *, lazy: bool) -> None:
        for name in uses.names:
            if name in mod.binds:
                todo.append((mod.name, name))
        for word in uses.words - words:
            words.add(word)
            for other in modules.values():
                if other.reachable_by_word(word):
                    todo.append((other.name, word))
        for base, name in uses.imports:
            if base in NOT_AT_TRAIN_TIME and lazy:
                excluded.add(base)  # imported inside a function only: a path training never takes
                load(base.rpartition(".")[0])  # its stub's package
                keep_pgolf_error()  # its stub's one import
                continue
            if not _is_pgolf(base):
                continue
            load(base)
            if name is None:
                continue
            if _is_pgolf(f"{base}.{name}"):
                load(f"{base}.{name}")
            else:
                todo.append((base, name))

    def keep_pgolf_error() -> None:
        load("pgolf.errors")
        todo.append(("pgolf.errors", "PgolfError"))

    def load(name: str) -> None:
        if name in modules:
            return
        path = _module_path(name)
        if path is None:
            raise PgolfError(f"bundle: {name} is not a pgolf module")
        mod = modules[name] = _Module(name, path)
        kept[name] = set()
        parts = name.split(".")
        for i in range(1, len(parts)):
            load(".".join(parts[:i]))  # importing a.b.c runs a and a.b first
        for word in words:
            if mod.reachable_by_word(word):
                todo.append((name, word))
        for node in mod.always:
            use(mod, _uses(mod, node), lazy=False)

    for module, function in entries:
        load(module)
        todo.append((module, function))
    while todo:
        module, name = todo.pop()
        if name in kept[module]:
            continue
        mod = modules[module]
        kept[module].add(name)
        if name not in mod.binds:
            continue  # bound by a statement that always runs (a dunder, a name set inside `if`/`try`)
        if (module, name) in LEFT_OUT:
            stubbed.add((module, name))
            keep_pgolf_error()  # the stub's one import
            continue
        for node in mod.binds[name]:
            if isinstance(node, ast.ImportFrom):
                base = mod.absolute(node)
                chosen = [a for a in node.names if (a.asname or a.name) == name]
                use(mod, _Uses(set(), set(), [(base, a.name) for a in chosen]), lazy=False)
            else:
                lazy = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                use(mod, _uses(mod, node), lazy=lazy)
    return Closure(modules=modules, kept=kept, excluded=excluded - set(modules), stubbed=stubbed, entries=entries)


def import_closure(entries: tuple[tuple[str, str], ...] = ENTRY_POINTS) -> list[str]:
    """The pgolf modules a training run from the bundle can import, sorted."""
    return sorted(analyse(entries).modules)


def resolve_preset(preset: str) -> tuple[str, str]:
    """(name, TOML text) of a shipped preset name or a path to a TOML file; the TOML must parse."""
    path = Path(preset)
    if path.suffix == ".toml" or path.exists():
        name = path.stem
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PgolfError(f"{path}: cannot read preset: {exc.strerror}") from None
    else:
        name = preset
        shipped = PACKAGE_ROOT / "presets" / f"{preset}.toml"
        if not shipped.is_file():
            known = ", ".join(sorted(p.stem for p in (PACKAGE_ROOT / "presets").glob("*.toml")))
            raise PgolfError(f"bundle: unknown preset {preset!r} (known: {known})")
        text = shipped.read_text(encoding="utf-8")
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PgolfError(f"{preset}: invalid TOML: {exc}") from None
    if not name or "/" in name or "\0" in name:
        raise PgolfError(f"bundle: cannot use {name!r} as a preset name")
    return name, text


@functools.lru_cache(maxsize=256)
def minify_source(source: str, filename: str, preserve: frozenset[str] | None = None) -> str:
    """Behaviour-preserving minification: docstrings, comments, long local names and redundant syntax go.
    Module-level names are renamed too, except those in `preserve` (the names another module imports or reads as
    an attribute, `preserved_globals`); without `preserve` none are. Annotations are left to `_strip_annotations`,
    which has already removed all but those that run (class attributes, custom ops)."""
    import python_minifier

    return python_minifier.minify(source, filename=filename, remove_literal_statements=True, remove_annotations=False,
                                  rename_globals=preserve is not None, preserve_globals=sorted(preserve or ()),
                                  hoist_literals=False, remove_asserts=False, remove_debug=False,
                                  prefer_single_line=True)


def prune_methods(trees: dict[str, ast.Module]) -> list[str]:
    """Drop, in place, the methods nothing in the bundle can call: non-dunder methods of classes whose bases are
    all pgolf classes (or none, so no library calls them by name, as torch calls `forward`) whose name appears
    nowhere else in the bundle as a name, attribute or identifier-like string. Repeats until nothing changes (a
    dropped method may have been the only caller of another); returns `Class.method` for each dropped one."""
    classes = [node for tree in trees.values() for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    pure = {cls.name for cls in classes}  # shrinks to the names whose every class has only pure bases, transitively
    while True:
        impure = {cls.name for cls in classes if cls.keywords or not all(
            isinstance(b, ast.Name) and b.id in pure for b in cls.bases)}
        if not impure & pure:
            break
        pure -= impure
    prunable = [cls for cls in classes if cls.name in pure]
    dropped: list[str] = []
    while True:
        words: Counter = Counter()
        for tree in trees.values():
            for node in ast.walk(tree):
                spelled = node.id if isinstance(node, ast.Name) else word(node)
                if spelled:
                    words[spelled] += 1
        dead = [(cls, fn) for cls in prunable for fn in cls.body
                if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and not fn.name.startswith("__")
                and not words[fn.name]]
        if not dead:
            return sorted(dropped)
        for cls, fn in dead:
            cls.body.remove(fn)
            cls.body = cls.body or [ast.Pass()]
            dropped.append(f"{cls.name}.{fn.name}")


def never_renamed(entries: tuple[tuple[str, str], ...] = ENTRY_POINTS) -> set[str]:
    """Names no renaming may touch: builtins and the entry points (those stage 2 calls, by default)."""
    return set(dir(builtins)) | {function for _, function in entries}


def preserved_globals(closure: Closure, trees: dict[str, ast.Module]) -> frozenset[str]:
    """Module-level names the minifier must not rename in a bundle: those imported by name from a pgolf module,
    those used anywhere as an attribute or identifier-like string (`module.name`, `getattr(x, "name")`, fields),
    the entry points stage 2 calls, and dunders. Every other module-level name is private to its module (the
    bundle is a closed world: nothing outside it imports from it), so renaming it keeps behaviour. Builtins are
    preserved too: the minifier would otherwise alias them per module (`D=len`), which shortens each module but
    hides the repetition across modules from the compressor (docs/BENCHMARKS.md has the measurement)."""
    names = never_renamed(closure.entries)
    for module, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and _is_pgolf(closure.absolute(module, node)):
                names.update(alias.name for alias in node.names)
            elif word(node):
                names.add(word(node))
            elif isinstance(node, ast.Name) and node.id.startswith("__"):
                names.add(node.id)
    return frozenset(names)


def _strip_toml(text: str) -> str:
    """A preset without comments and blank lines (the parsed values are unchanged)."""
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            lines.append(line)
    out = "\n".join(lines) + "\n"
    return out if tomllib.loads(out) == tomllib.loads(text) else text


def minified_sources(closure: Closure) -> dict[str, str]:
    """The closure's modules as the bundle ships them, path -> source: kept definitions only, uncallable methods
    pruned, shared names shortened (`pgolf.bundle.rename`), then minified with private names renamed."""
    modules = closure.shipped()
    trees = {module: ast.parse(closure.shipped_source(module)) for module in modules}
    prune_methods(trees)
    submodules = {module.rpartition(".")[2] for module in modules}  # `from pgolf.eval import ttt` names a module
    rename_shared(trees, never_renamed(closure.entries) | submodules,
                  lambda module, node: _is_pgolf(closure.absolute(module, node)))
    preserve = preserved_globals(closure, trees)
    out: dict[str, str] = {}
    for module in modules:
        rel = _module_path(module).relative_to(PACKAGE_ROOT.parent).as_posix()
        minified = minify_source(ast.unparse(trees[module]), rel, preserve)
        if "\0" in minified:
            raise PgolfError(f"bundle: {rel} contains a NUL character, which the bundle format uses as separator")
        out[rel] = minified
    return out


def _file_orders(modules: list[tuple[str, str]], preset: tuple[str, str]) -> list[list[tuple[str, str]]]:
    """The file orders a bundle tries (stage 2 reads any order): which one compresses best changes with the
    sources, so the build keeps the smallest, deterministically."""
    return [modules + [preset], [preset] + modules, modules[::-1] + [preset], [preset] + modules[::-1]]


def build_bundle(preset: str) -> Bundle:
    """Build the bundle for `preset` (a shipped name or a TOML path); deterministic in the sources."""
    name, toml_text = resolve_preset(preset)
    resolve_config(preset, environ={})  # refuse a preset that no run could use
    closure = analyse()
    modules = list(minified_sources(closure).items())
    resource = f"pgolf/presets/{name}.toml"
    preset_file = (resource, _strip_toml(toml_text))
    codec, data, packed_bytes = smallest_script(name, _file_orders(modules, preset_file))
    source_bytes = sum(mod.path.stat().st_size for mod in closure.modules.values())
    return Bundle(data=data, preset=name, modules=tuple(sorted(closure.modules)), resources=(resource,), codec=codec,
                  source_bytes=source_bytes, minified_bytes=packed_bytes)


def write_bundle(preset: str, out: str | Path) -> Bundle:
    """Build the bundle for `preset` and write it to `out` (atomically)."""
    from pgolf.fileio import atomic_write_bytes

    bundle = build_bundle(preset)
    atomic_write_bytes(Path(out), bundle.data)
    return bundle
