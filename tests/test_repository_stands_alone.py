"""The repository stands alone: nothing in it points at documents or paths outside it.

Everything a user or maintainer needs is in `docs/` (and the READMEs); a reference to a
document that only ever existed outside the repository, or to a machine's own folders, is a
dead end for anyone who clones the project. Also every link to a page of `docs/` must resolve.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve().relative_to(REPO).as_posix()
MAX_TEXT_BYTES = 2_000_000

# Documents that never were part of the repository, and paths of the machines it was built on.
OUTSIDE = [
    re.compile(r"\b(?:desktop-api|performance|test-rig|sip-transfer)\.md\b"),
    re.compile(r"\b(?:STYLE|DESIGN)\.md\b"),
    re.compile(r"(?<![\w.-])(?:\.\./)*shared/"),
    re.compile(r"(?<![\w.-])specs/"),
    re.compile(r"/work/"),
    re.compile(r"call-transfer\.txt"),
    re.compile(r"PROOF_API"),
]
# `configuration.md` exists only as docs/configuration.md: outside docs/ it must say so.
BARE_CONFIGURATION = re.compile(r"(?<![\w/.-])configuration\.md\b")
DOCS_MENTION = re.compile(r"(?<![\w.-])docs/[\w.-]+\.md\b")
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _tracked() -> list[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    return [name for name in out.decode().split("\0") if name]


def _text_files() -> dict[str, str]:
    texts: dict[str, str] = {}
    for name in _tracked():
        path = REPO / name
        if name == THIS or not path.is_file() or path.stat().st_size > MAX_TEXT_BYTES:
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue  # binary (HEP captures, images)
        texts[name] = data.decode("utf-8", "replace")
    return texts


def _where(text: str, start: int) -> int:
    return text.count("\n", 0, start) + 1


def test_no_tracked_file_points_outside_the_repository() -> None:
    found = []
    for name, text in _text_files().items():
        patterns = list(OUTSIDE)
        if not name.startswith("docs/"):
            patterns.append(BARE_CONFIGURATION)
        for pattern in patterns:
            for match in pattern.finditer(text):
                found.append(f"{name}:{_where(text, match.start())}: {match.group(0)!r}")
    assert not found, "references to files outside the repository:\n" + "\n".join(found)


def test_every_docs_page_mentioned_exists() -> None:
    missing = []
    for name, text in _text_files().items():
        for match in DOCS_MENTION.finditer(text):
            if not (REPO / match.group(0)).is_file():
                missing.append(f"{name}:{_where(text, match.start())}: {match.group(0)}")
    assert not missing, "docs/ pages that do not exist:\n" + "\n".join(missing)


def test_links_in_readme_and_docs_resolve() -> None:
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    assert len(pages) > 1
    broken = []
    for page in pages:
        text = page.read_text()
        for match in MD_LINK.finditer(text):
            target = match.group(1)
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL or an anchor on the same page
            path = (page.parent / target.split("#", 1)[0]).resolve()
            inside = path == REPO or REPO in path.parents
            if not inside or not path.exists():
                where = f"{page.relative_to(REPO)}:{_where(text, match.start())}"
                broken.append(f"{where}: {target}")
    assert not broken, "links that do not resolve to a file in the repository:\n" + "\n".join(
        broken
    )
