"""Security audit (issue 15): nothing in pgolf unpickles, evaluates or shells out on data it reads.

Every module of the package is parsed with `ast` and checked for: unpickling (`pickle`, `cPickle`, `dill`, `shelve`,
`marshal`, `joblib` imports and their loaders), `torch.load` without `weights_only=True`, `numpy.load` with
`allow_pickle=True`, `yaml.load`/`unsafe_load`, `eval`/`exec` outside the self-extracting bundle (`bundle/
selfextract.py`, whose stub is the submission's own code), `os.system`/`os.popen`, and `subprocess` calls with
`shell=True`. The checker is itself tested on snippets that must be flagged.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pgolf

PACKAGE = Path(pgolf.__file__).resolve().parent
EXEC_ALLOWED = {"bundle/selfextract.py"}
UNPICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "shelve", "marshal", "joblib", "cloudpickle"}


def _dotted(node: ast.AST) -> str:
    """`a.b.c` for an attribute chain or a name, '' otherwise."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def problems(source: str, rel: str) -> list[str]:
    """Every unsafe construct in `source` (a module at package-relative path `rel`), as `rel:line: what`."""
    tree = ast.parse(source, filename=rel)
    found = []
    aliases: dict[str, str] = {}  # local name -> module it stands for (import torch as t)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                if a.name.split(".")[0] in UNPICKLING_MODULES:
                    found.append(f"{rel}:{node.lineno}: imports {a.name}")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[0] in UNPICKLING_MODULES:
                found.append(f"{rel}:{node.lineno}: imports from {module}")
            for a in node.names:
                aliases[a.asname or a.name] = f"{module}.{a.name}"
                if a.name in ("load", "loads", "Unpickler") and module.split(".")[0] in ("torch", "numpy", "yaml"):
                    found.append(f"{rel}:{node.lineno}: imports {module}.{a.name} by name (call it qualified)")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        head, _, rest = name.partition(".")
        full = f"{aliases.get(head, head)}.{rest}" if rest else aliases.get(head, head)
        where = f"{rel}:{node.lineno}"
        if full in ("eval", "exec", "builtins.eval", "builtins.exec") and rel not in EXEC_ALLOWED:
            found.append(f"{where}: {full}() outside the self-extracting bundle")
        elif full == "torch.load" and not _is_true(_keyword(node, "weights_only")):
            found.append(f"{where}: torch.load without weights_only=True")
        elif full in ("numpy.load", "np.load") and _is_true(_keyword(node, "allow_pickle")):
            found.append(f"{where}: numpy.load with allow_pickle=True")
        elif full in ("yaml.load", "yaml.unsafe_load", "yaml.load_all", "yaml.full_load"):
            found.append(f"{where}: {full} (use yaml.safe_load)")
        elif full in ("os.system", "os.popen"):
            found.append(f"{where}: {full}")
        elif full.startswith("subprocess.") and _is_true(_keyword(node, "shell")):
            found.append(f"{where}: {full} with shell=True")
        elif full.split(".")[0] in UNPICKLING_MODULES:
            found.append(f"{where}: {full}")
    return found


def package_sources() -> list[tuple[str, str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50, f"found only {len(files)} modules under {PACKAGE}"
    return [(p.relative_to(PACKAGE).as_posix(), p.read_text(encoding="utf-8")) for p in files]


def test_the_package_has_no_unsafe_loading_or_execution():
    found = [line for rel, src in package_sources() for line in problems(src, rel)]
    assert found == [], "\n".join(found)


def test_the_bundle_stub_is_the_only_exec():
    """selfextract.py is allowed exec because its generated stub runs the submission's own (bundled) code; nothing
    else may, and the CLI commands that read other people's files (eval, verify, inspect) import no exec path."""
    assert (PACKAGE / "bundle" / "selfextract.py").is_file()
    src = (PACKAGE / "bundle" / "selfextract.py").read_text(encoding="utf-8")
    assert "exec(" in src  # what the exception is for; if it goes away, drop it from EXEC_ALLOWED
    for rel in ("cli.py", "submit/verify.py", "eval/evaluate.py", "artifact/format.py"):
        text = (PACKAGE / rel).read_text(encoding="utf-8")
        assert "selfextract" not in text, f"{rel} reaches the self-extracting stub"


@pytest.mark.parametrize("snippet, what", [
    ("import torch\ntorch.load('x')", "torch.load without weights_only"),
    ("import torch\ntorch.load('x', weights_only=False)", "torch.load without weights_only"),
    ("import torch as T\nT.load('x', map_location='cpu')", "torch.load without weights_only"),
    ("from torch import load\n", "by name"),
    ("import pickle\n", "imports pickle"),
    ("from pickle import loads\n", "imports from pickle"),
    ("import marshal\nmarshal.loads(b'')", "marshal"),
    ("eval('1+1')", "eval() outside"),
    ("exec('x=1')", "exec() outside"),
    ("import builtins\nbuiltins.exec('x=1')", "exec() outside"),
    ("import yaml\nyaml.load(s)", "yaml.load"),
    ("import numpy as np\nnp.load('a.npy', allow_pickle=True)", "allow_pickle"),
    ("import subprocess\nsubprocess.run('ls', shell=True)", "shell=True"),
    ("import subprocess as sp\nsp.check_output('ls', shell=True)", "shell=True"),
    ("import os\nos.system('ls')", "os.system"),
])
def test_the_checker_flags(snippet, what):
    found = problems(snippet, "x.py")
    assert found and any(what in f for f in found), found


@pytest.mark.parametrize("snippet", [
    "import torch\ntorch.load('x', weights_only=True)",
    "import numpy as np\nnp.load('a.npy')",
    "import subprocess\nsubprocess.run(['ls'])",
    "model.eval()",
    "import yaml\nyaml.safe_load(s)",
])
def test_the_checker_passes_safe_code(snippet):
    assert problems(snippet, "x.py") == []


def test_exec_is_allowed_only_in_selfextract():
    assert problems("exec('x')", "bundle/selfextract.py") == []
