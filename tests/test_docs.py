"""The repository stands alone: every `docs/PAGE.md#anchor` cited in code, tests or docs names a real page and
heading, and no source cites a specification that is not in the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CITATION = re.compile(r"docs/([A-Za-z0-9_.-]+\.md)(?:#([a-z0-9-]+))?")
SOURCES = [*ROOT.glob("src/**/*.py"), *ROOT.glob("src/**/*.toml"), *ROOT.glob("tests/**/*.py"),
           *ROOT.glob("benchmarks/*.py"), *ROOT.glob("scripts/*.py"), *ROOT.glob("docs/*.md"), ROOT / "README.md"]

if not (ROOT / "docs").is_dir():
    pytest.skip("no docs/ beside the tests (installed package only)", allow_module_level=True)


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, in_code = set(), False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            found.add(slug(line.lstrip("#")))
    return found


def test_slug_matches_github():
    assert slug("Score-first test-time training") == "score-first-test-time-training"
    assert slug("Eval time limit (600 s)") == "eval-time-limit-600-s"
    assert slug("BigramHash") == "bigramhash"


def test_every_docs_citation_resolves():
    cache: dict[str, set[str]] = {}
    broken = []
    for source in SOURCES:
        if source.name.startswith("_") or source == Path(__file__).resolve():
            continue
        for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
            for page, anchor in CITATION.findall(line):
                path = ROOT / "docs" / page
                if not path.is_file():
                    broken.append(f"{source.relative_to(ROOT)}:{number}: docs/{page} does not exist")
                    continue
                if anchor and anchor not in cache.setdefault(page, anchors(path)):
                    broken.append(f"{source.relative_to(ROOT)}:{number}: docs/{page} has no heading #{anchor}")
    assert not broken, "\n".join(broken)


def test_no_source_cites_the_external_spec():
    offenders = [f"{p.relative_to(ROOT)}" for p in SOURCES
                 if p != Path(__file__).resolve() and "CHALLENGE.md" in p.read_text(encoding="utf-8")]
    assert not offenders, f"CHALLENGE.md is not in the repository; cite docs/rules.md or docs/techniques.md: {offenders}"
