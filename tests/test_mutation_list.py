"""The mutation check's list follows the code: every mutant's snippet occurs exactly once in its file and every test
file it names exists. The check itself takes minutes and runs in CI after the suite (scripts/mutation_check.py); this
catches a stale snippet in seconds, before CI spends its budget to find it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _mutants():
    spec = importlib.util.spec_from_file_location("mutation_check", REPO / "scripts" / "mutation_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mutation_check", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.MUTANTS


@pytest.mark.parametrize("mutant", _mutants(), ids=lambda m: m.name)
def test_each_mutant_snippet_occurs_once_and_its_tests_exist(mutant):
    text = (REPO / "src" / "pgolf" / mutant.file).read_text()
    assert text.count(mutant.find) == 1, f"{mutant.name}: snippet found {text.count(mutant.find)} times in {mutant.file}"
    assert mutant.find != mutant.replace
    for test in mutant.tests:
        assert (REPO / test).is_file(), f"{mutant.name}: {test} does not exist"
