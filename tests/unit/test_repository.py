"""Self-containment of the repository: no tracked file points at a design document kept outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# This file spells out what it looks for, so it is the one file not searched.
THIS_FILE = Path(__file__).resolve().relative_to(ROOT).as_posix()
OUTSIDE = re.compile(
    r"DESIGN\b|[Dd]esign\.md\b"  # the design document by name
    r"|\.\./shared\b|/work/shared\b"  # the folder beside the checkout it was kept in
    r"|\b[Dd]esign (?:doc|document)s?\b"  # a design document in prose
)
# Citing "section 3" of a document: the same line must name the file, one of this repository's.
SECTION = re.compile(r"\bsection\s+\d|§\s*\d", re.IGNORECASE)


def tracked_texts() -> dict[str, str]:
    """Every file git tracks (code, manifests, docs) that reads as text, by its path."""
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    texts = {}
    for name in listing.decode().split("\0"):
        path = ROOT / name
        if not name or name == THIS_FILE or not path.is_file():
            continue  # a file deleted in the working tree is not read
        try:
            texts[name] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # weights and other binary files
    return texts


@pytest.fixture(scope="module")
def texts() -> dict[str, str]:
    found = tracked_texts()
    assert {"README.md", "inference/messages.py"} <= set(found), "git ls-files listed no sources"
    return found


def lines_matching(texts: dict[str, str], pattern: re.Pattern[str]) -> list[tuple[str, int, str]]:
    return [
        (name, number, line.strip())
        for name, text in texts.items()
        for number, line in enumerate(text.splitlines(), start=1)
        if pattern.search(line)
    ]


def test_no_file_points_at_a_design_document_outside_the_repository(texts: dict[str, str]) -> None:
    pointers = [f"{name}:{number}: {line}" for name, number, line in lines_matching(texts, OUTSIDE)]
    assert pointers == [], "point at docs/contract.md, or reword:\n" + "\n".join(pointers)


def test_every_cited_section_names_a_file_of_the_repository(texts: dict[str, str]) -> None:
    unresolved = [
        f"{name}:{number}: {line}"
        for name, number, line in lines_matching(texts, SECTION)
        if not any(path in line for path in texts if "/" in path or "." in path)
    ]
    assert unresolved == [], "a section is cited without naming its file:\n" + "\n".join(unresolved)


@pytest.mark.parametrize(
    "pointer", ["see DESIGN.md section 3", "(design.md, 3.2)", "../shared/DESIGN.md", "in the design document"]
)
def test_a_pointer_outside_is_found(pointer: str) -> None:
    assert OUTSIDE.search(pointer)


@pytest.mark.parametrize(
    "line", ["def test_defaults_match_the_design", "designated in writing", "shared memory", "/dev/shm"]
)
def test_ordinary_words_are_not_pointers(line: str) -> None:
    assert not OUTSIDE.search(line)


def test_a_section_is_a_citation_only_with_its_number() -> None:
    assert SECTION.search("as section 8.1 says")
    assert not SECTION.search("Sections 1 through 9 of this document")
    assert not SECTION.search("the first section")
