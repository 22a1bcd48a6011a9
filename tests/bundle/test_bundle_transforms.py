"""The pieces that make a bundle small: the base-251 self-extracting wrapper (`pgolf.bundle.selfextract`),
annotation stripping, unreachable statements, method pruning, the stubs of what is left out, and what the record
bundle's sources carry."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap

import brotli
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf.bundle import build as bundle, selfextract
from pgolf.errors import PgolfError
from pgolf.bundle.build import analyse, minified_sources, prune_methods
from pgolf.bundle.selfextract import base251_digits, self_extracting_script


def _run_script(script: bytes) -> dict:
    namespace: dict = {"__name__": "not_main", "__file__": "train_gpt.py"}
    exec(compile(script, "train_gpt.py", "exec"), namespace)
    return namespace


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=600), st.sampled_from(["brotli", "lzma2"]))
def test_self_extracting_script_decodes_every_payload_exactly(tail, codec):
    payload = b"RESULT=len(D)\0" + tail
    blob = brotli.compress(payload) if codec == "brotli" else selfextract._lzma(payload)
    script = self_extracting_script(codec, blob)
    assert not set(base251_digits(blob)) & set(selfextract._EXCLUDED)
    namespace = _run_script(script)
    assert namespace["D"] == payload and namespace["RESULT"] == len(payload)


@given(st.binary(max_size=300))
def test_base251_digits_read_back_with_leading_zero_bytes(blob):
    blob = b"\0\0" + blob
    digits = base251_digits(blob)
    number = 0
    for c in digits:
        number = number * 251 + selfextract._ALPHABET.index(c)
    assert number.to_bytes(len(blob), "big") == blob
    assert len(digits) <= len(blob) * 8 / 7.97 + 2  # 0.36% over the raw bytes, not 2.7% (escapes) or 25% (b85)


def test_wrapper_costs_a_fraction_of_a_percent():
    blob = bytes(range(256)) * 100
    script = self_extracting_script("brotli", blob)
    assert len(script) < len(blob) * 1.004 + 200


def _module_tree(source: str) -> ast.Module:
    tree = ast.parse(textwrap.dedent(source))
    bundle._strip_annotations(tree)
    return tree


def test_annotations_go_except_on_class_attributes():
    out = ast.unparse(_module_tree('''
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from heavy import Thing
        limit: int = 3
        declared: str
        def f(x: Thing, *args: int, y: "Thing" = None, **kw: str) -> Thing:
            local: float = 1.0
            return x
        class Record:
            field: int = 0
            name: str
    '''))
    assert "Thing" not in out.replace("TYPE_CHECKING", "")  # the type-only import went with its block
    assert "limit = 3" in out and "declared" not in out and "local = 1.0" in out
    assert "field: int = 0" in out and "name: str" in out
    assert "def f(x, *args, y=None, **kw):" in out


def test_custom_op_functions_keep_their_annotations():
    """torch.library.custom_op infers the operator's schema from the annotations (pgolf/model/kernels.py)."""
    out = ast.unparse(_module_tree('''
        @torch.library.custom_op("pgolf::op", mutates_args=())
        def op(z: torch.Tensor, cap: float) -> torch.Tensor:
            return z
        @op.register_fake
        def _(z: torch.Tensor, cap: float) -> torch.Tensor:
            return z
    '''))
    assert "def op(z: torch.Tensor, cap: float) -> torch.Tensor:" in out
    assert "def _(z, cap):" in out


def test_statements_after_a_jump_are_dropped():
    tree = ast.parse(textwrap.dedent('''
        def export(fit):
            if fit:
                return fitted()
                also_never()
            return plain()

        def loop(items):
            for x in items:
                continue
                never()
            raise ValueError()
            unreachable()
    '''))
    bundle._drop_unreachable(tree)
    out = ast.unparse(tree)
    assert "never" not in out and "unreachable" not in out
    assert "return fitted()" in out and "return plain()" in out and "continue" in out and "raise ValueError()" in out


def test_methods_nothing_can_call_are_pruned_until_stable():
    trees = {"m": ast.parse(textwrap.dedent('''
        import torch
        class Base:
            def used(self): return self.helper()
            def helper(self): return 1
            def only_from_dead(self): return 2
            def dead(self): return self.only_from_dead()
            def __repr__(self): return "Base"
        class Child(Base):
            def dead_too(self): return 3
        class Net(torch.nn.Module):
            def forward(self, x): return x
            def hook_a_library_may_call(self): pass
        class Deeper(Net):
            def extra_repr(self): return ""
        Child().used()
    '''))}
    dropped = prune_methods(trees)
    assert dropped == ["Base.dead", "Base.only_from_dead", "Child.dead_too"]
    out = ast.unparse(trees["m"])
    assert "def used" in out and "def helper" in out and "__repr__" in out
    assert "forward" in out and "hook_a_library_may_call" in out  # a library base class may call them
    assert "extra_repr" in out  # ... also through a pgolf class in between


@pytest.fixture(scope="module")
def record_sources() -> dict[str, str]:
    return minified_sources(analyse())


def test_record_bundle_sources_keep_what_runs_and_drop_what_never_does(record_sources):
    assert "TextIO" not in record_sources["pgolf/train/trainer.py"]  # its only use was an annotation
    assert "pgolf/bundle/build.py" not in record_sources  # the tool, never at train time
    loader = record_sources["pgolf/data/loader.py"]
    assert all(name in loader for name in ("'sequential'", "'shuffled'", "'packed'"))  # every choice travels


def test_left_out_functions_become_stubs_and_what_only_they_used_goes(record_sources):
    resume = record_sources["pgolf/train/resume.py"]
    assert resume.count("is left out of this train_gpt.py bundle") == 3  # check, load and save: stubs only
    assert "state_dict" not in resume and "world_size" not in resume  # their bodies are gone
    checkpoint = record_sources["pgolf/train/checkpoint.py"]
    assert "PGCKPT01" not in checkpoint and "sha256" not in checkpoint  # the container is no longer reached
    assert "'checkpoint.json'" in checkpoint  # what a fresh run uses (clearing an old run's outputs) stays
    code_bytes = record_sources["pgolf/bundle/code_bytes.py"]
    assert "minifier" not in code_bytes and "bundle_file" in code_bytes  # a bundle counts its own file


def test_a_stub_raises_one_pgolf_error_naming_the_function():
    namespace: dict = {}
    exec(compile(ast.Module(body=[bundle._stub("pgolf.train.resume", "save_checkpoint")], type_ignores=[]),
                 "stub", "exec"), namespace)
    with pytest.raises(PgolfError, match=r"^pgolf\.train\.resume\.save_checkpoint is left out of this train_gpt\.py "
                                         r"bundle \(resumable checkpoints .*\); run it with the pgolf package$"):
        namespace["save_checkpoint"]("run", 1, 2.0, stop_after=None)


def test_a_stale_left_out_entry_stops_the_build(monkeypatch):
    monkeypatch.setitem(bundle.LEFT_OUT, ("pgolf.train.resume", "no_such_function"), "gone")
    with pytest.raises(PgolfError, match="LEFT_OUT names pgolf.train.resume.no_such_function"):
        analyse()


def test_an_excluded_module_imported_at_run_time_is_one_clear_error(tmp_path):
    """A NOT_AT_TRAIN_TIME module that kept code imports inside a function ships as a stub: taking that path in a
    bundle raises PgolfError (one `pgolf: error:` line from the CLI), not ModuleNotFoundError or NameError."""
    closure = analyse((("pgolf.data.commands", "_cmd_data_fineweb"),))
    assert closure.excluded == {"pgolf.data.hub"}
    sources = minified_sources(closure)
    assert "is left out of this train_gpt.py bundle" in sources["pgolf/data/hub.py"]
    _, script, _ = selfextract.smallest_script("baseline", [list(sources.items())])
    path = tmp_path / "train_gpt.py"
    path.write_bytes(script)
    driver = textwrap.dedent(f"""
        import runpy
        runpy.run_path({str(path)!r}, run_name="not_main")  # installs the bundle's finder, runs nothing
        import pgolf.data.commands
        try:
            pgolf.data.commands._cmd_data_fineweb(None)
        except Exception as exc:  # the bundle's PgolfError, under its short bundle name
            print(type(exc).__module__, exc)
    """)
    out = subprocess.run([sys.executable, "-I", "-c", driver], capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ("pgolf.errors pgolf.data.hub is left out of this train_gpt.py bundle (downloads the "
                                  "official export from the Hugging Face Hub); run it with the pgolf package")
