"""The import graph follows the data flow of docs/architecture.md: no module imports a module above it.

Every `import pgolf...` and `from pgolf... import ...` is read with `ast`, including imports inside functions and
under `if TYPE_CHECKING:` (a function-level import is still an edge, just a hidden one). Each module belongs to one
stage of `STAGES`; an import may only reach the same stage or an earlier one, and the whole graph must be acyclic.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pgolf

PACKAGE = Path(pgolf.__file__).resolve().parent

# Bottom to top, as drawn in docs/architecture.md. A module matches the longest prefix listed.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("pgolf", "pgolf.errors", "pgolf.fileio", "pgolf.progress", "pgolf.suggest", "pgolf.config",
                    "pgolf.config_sources", "pgolf.config_docs", "pgolf.runtime_choices", "pgolf.runtime", "pgolf.official_env")),
    ("data", ("pgolf.data",)),
    ("model", ("pgolf.model",)),
    ("optim", ("pgolf.optim",)),
    ("quant", ("pgolf.quant",)),
    ("artifact", ("pgolf.artifact",)),
    ("eval", ("pgolf.eval",)),
    ("options", ("pgolf.options",)),
    ("bundle", ("pgolf.bundle",)),
    ("train", ("pgolf.train",)),
    ("commands", ("pgolf.cli", "pgolf.__main__", "pgolf.submit", "pgolf.data.commands", "pgolf.sweep")),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The pgolf modules a source file imports anywhere in its body."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "pgolf")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "pgolf":
            for alias in node.names:  # `from pgolf.data import build` imports the submodule
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return found


def stage_of(name: str) -> int:
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(STAGES):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best is None:
        raise AssertionError(f"{name} belongs to no stage of STAGES (add it, and to docs/architecture.md)")
    return best


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def test_every_module_has_a_stage():
    for name in all_modules():
        stage_of(name)


def test_no_module_imports_a_later_stage():
    upward = []
    for name, targets in import_graph().items():
        for target in targets:
            if stage_of(target) > stage_of(name):
                upward.append(f"{name} ({STAGES[stage_of(name)][0]}) imports {target} "
                              f"({STAGES[stage_of(target)][0]})")
    assert not upward, "imports against the data flow:\n" + "\n".join(sorted(upward))


def test_import_graph_is_acyclic():
    graph = import_graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target] if target in path else [node, target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if state.get(target) is None:
                visit(target, path + [target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_the_check_sees_function_level_and_upward_imports(tmp_path):
    """The checker itself can fail: a function-level import of a later stage is reported."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from pgolf.train.trainer import train\n    import pgolf.eval.evaluate\n")
    found = imports_of(source, all_modules())
    assert found == {"pgolf.train.trainer", "pgolf.eval.evaluate"}
    assert stage_of("pgolf.train.trainer") > stage_of("pgolf.model.gpt")


def test_the_trainer_and_its_step_owners_import_only_at_the_top(tmp_path):
    """Issue 21: every import of the trainer (and of the gradient sync and run state its step uses) is at module
    level, so none runs, or hides an edge of the graph, inside the per-step path; the probe shows the check fails."""

    def function_level_imports(path: Path) -> list[str]:
        found = []
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found += [f"{path.name}:{node.lineno} in {fn.name}" for node in ast.walk(fn)
                          if isinstance(node, (ast.Import, ast.ImportFrom))]
        return found

    probe = tmp_path / "probe.py"
    probe.write_text("import os\n\nclass T:\n    def _step(self):\n        from pgolf.optim.muon import Muon\n")
    assert function_level_imports(probe) == ["probe.py:5 in _step"]
    inside = [hit for name in ("trainer", "sync", "state")
              for hit in function_level_imports(PACKAGE / "train" / f"{name}.py")]
    assert not inside, "function-level imports: " + ", ".join(inside)
