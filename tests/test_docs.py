"""Every relative link and anchor in the docs, and every docs citation in the code, resolves.

What is checked:

- In README.md, CHANGES.md and docs/*.md: markdown links ``[text](target)`` and bare
  references to a markdown file (``design.md#matching`` in prose or in backticks).
- In the code (chatd/, static/src/, tests/, bench/, also deploy/, scripts/, the Makefile
  and pyproject.toml; comments, docstrings and strings alike): citations of a markdown
  file, ``docs/design.md#matching`` or ``waits.md``.

How a target resolves:

- A markdown link is relative to the file that contains it, as GitHub renders it.
- A bare reference (in a doc or in the code) is relative to the repository root, or else
  to docs/: ``docs/waits.md`` and ``waits.md`` are the same page. An anchor cut by a line
  break after a hyphen (``docs/security.md#cookies-origins-and-`` then
  ``cross-site-requests``) is joined to the next line's first word.
- External links (``http:``, ``https:``, ``mailto:``…) are not checked.
- An anchor must be one of the target's headings in GitHub's form: the heading's text
  without backticks, emphasis and link targets, lower-cased, every character but letters,
  digits, ``-``, ``_`` and spaces dropped, spaces turned into ``-``; a repeated heading gets
  ``-1``, ``-2``… Headings inside fenced code blocks do not count; ``<a id=…>`` and
  ``<a name=…>`` count too. Anchors into files other than markdown are not checked.

Each test lists every broken link with its file and line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

DOC_FILES = sorted([ROOT / "README.md", ROOT / "CHANGES.md", *DOCS.glob("*.md")])
# Where code may cite the docs. This file is left out: its examples are broken on purpose.
CODE_SUFFIXES = {".py", ".js", ".css", ".html", ".sql", ".sh", ".toml", ".yml", ".yaml", ".json"}
CODE_FILES = sorted(
    path
    for folder in ("chatd", "static/src", "tests", "bench", "deploy", "scripts")
    for path in (ROOT / folder).rglob("*")
    if path.suffix in CODE_SUFFIXES and path != Path(__file__).resolve()
) + [ROOT / "Makefile", ROOT / "pyproject.toml"]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
HTML_ANCHOR = re.compile(r"<a\s[^>]*\b(?:id|name)=[\"']([^\"']+)[\"']", re.IGNORECASE)
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
MD_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
# A markdown file named in prose or code: an optional folder path, the name, an optional
# anchor. Not part of a longer path or word on either side.
BARE = re.compile(r"(?<![\w./:-])((?:[\w.-]+/)*[\w.-]+\.md)(?![\w])(?:#([\w-]+))?")
CONTINUATION = re.compile(r"^[\s#/*\"']*([\w-]+)")


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading's text (before numbering repeats)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def outside_fences(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) for every line that is not in a fenced code block."""
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        m = FENCE.match(line)
        if fence is None:
            if m:
                fence = m.group(1)
                continue
            yield number, line
        elif m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
            if not line.strip().strip(fence[0]):
                fence = None


_anchor_cache: dict[Path, frozenset[str]] = {}


def anchors(path: Path) -> frozenset[str]:
    """Every anchor a markdown file offers."""
    if path not in _anchor_cache:
        found: set[str] = set()
        seen: dict[str, int] = {}
        for _, line in outside_fences(path.read_text(encoding="utf-8")):
            found.update(HTML_ANCHOR.findall(line))
            m = HEADING.match(line)
            if not m:
                continue
            base = slug(m.group(2) or "")
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
        _anchor_cache[path] = frozenset(found)
    return _anchor_cache[path]


class Ref(NamedTuple):
    line: int
    target: str  # as written
    path: str  # the file part, possibly empty (an anchor in the same file)
    anchor: str | None


def check(ref: Ref, candidates: list[Path]) -> str | None:
    """Why ``ref`` is broken, or None. ``candidates`` are where its file may be, in order."""
    target = next((c for c in candidates if c.exists()), None)
    if target is None:
        return "no such file"
    if ref.anchor is None or target.suffix != ".md" or target.is_dir():
        return None
    if unquote(ref.anchor) not in anchors(target):
        return f"no heading with the anchor #{ref.anchor} in {rel(target)}"
    return None


def rel(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def bare_refs(lines: list[tuple[int, str]]) -> Iterator[Ref]:
    """Bare citations of markdown files, anchors cut at a hyphen joined again."""
    for i, (number, line) in enumerate(lines):
        masked = URL.sub(lambda m: " " * len(m.group(0)), line)
        for m in BARE.finditer(masked):
            anchor = m.group(2)
            if anchor and anchor.endswith("-") and not masked[m.end() :].strip(" \t)."):
                following = lines[i + 1][1] if i + 1 < len(lines) else ""
                more = CONTINUATION.match(following)
                if more:
                    anchor += more.group(1)
            target = m.group(1) + (f"#{anchor}" if anchor else "")
            yield Ref(number, target, m.group(1), anchor)


def bare_candidates(path: str) -> list[Path]:
    return [ROOT / path, DOCS / path]


def doc_problems(doc: Path) -> list[str]:
    problems: list[str] = []
    lines = list(outside_fences(doc.read_text(encoding="utf-8")))
    prose: list[tuple[int, str]] = []
    for number, line in lines:
        spans = CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)
        without_links = line
        for m in MD_LINK.finditer(spans):
            without_links = (
                without_links[: m.start()] + " " * (m.end() - m.start()) + without_links[m.end() :]
            )
            target = m.group(1)
            if not target or EXTERNAL.match(target):
                continue
            path, _, anchor = target.partition("#")
            ref = Ref(number, target, path, anchor or None)
            where = doc if not path else (doc.parent / unquote(path))
            why = check(ref, [where])
            if why:
                problems.append(f"{rel(doc)}:{number}: ({target}): {why}")
        prose.append((number, without_links))
    for ref in bare_refs(prose):
        why = check(ref, bare_candidates(ref.path))
        if why:
            problems.append(f"{rel(doc)}:{ref.line}: {ref.target}: {why}")
    return problems


def code_problems(source: Path) -> list[str]:
    lines = list(enumerate(source.read_text(encoding="utf-8").splitlines(), start=1))
    problems: list[str] = []
    for ref in bare_refs(lines):
        why = check(ref, bare_candidates(ref.path))
        if why:
            problems.append(f"{rel(source)}:{ref.line}: {ref.target}: {why}")
    return problems


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("## 1. Transport", "1-transport"),
        ("### `engineer:status` (event)", "engineerstatus-event"),
        ("## `GET /api/stats`", "get-apistats"),
        ("## Cookies, origins and cross-site requests", "cookies-origins-and-cross-site-requests"),
        ("### Request Tracker (`rt`)", "request-tracker-rt"),
        ("### Under [siege](x.md)", "under-siege"),
        ("## The desk's state", "the-desks-state"),
        ("### `snake_case` – and more", "snake_case--and-more"),
    ],
)
def test_anchor_is_githubs(heading: str, anchor: str) -> None:
    m = HEADING.match(heading)
    assert m is not None
    assert slug(m.group(2)) == anchor


def test_repeated_headings_are_numbered(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# A\n## Notes\n```\n## Notes\n```\n## Notes\n### Notes\n", encoding="utf-8")
    assert anchors(page) == {"a", "notes", "notes-1", "notes-2"}


def test_a_cut_anchor_is_joined_to_the_next_line() -> None:
    lines = [(1, '"""Refused (docs/security.md#cookies-origins-and-'), (2, "cross-site-requests).")]
    (ref,) = bare_refs(lines)
    assert ref.anchor == "cookies-origins-and-cross-site-requests"


def test_docs_links_and_anchors_resolve() -> None:
    problems = [p for doc in DOC_FILES for p in doc_problems(doc)]
    assert not problems, "broken links in the docs:\n" + "\n".join(problems)


def test_docs_cited_in_code_exist() -> None:
    problems = [p for source in CODE_FILES for p in code_problems(source)]
    assert not problems, "broken docs citations in the code:\n" + "\n".join(problems)


def test_design_layout_names_every_module() -> None:
    """docs/design.md's layout names every module and package of chatd/ as it is."""
    text = (DOCS / "design.md").read_text(encoding="utf-8")
    section = text.split("## The parts and the direction of imports", 1)[1]
    layout = section.split("```", 2)[1]
    named = set(re.findall(r"[\w.]+\.py|\w+/", layout))
    chatd = ROOT / "chatd"
    wanted = {p.name for p in chatd.rglob("*.py") if p.name != "__init__.py"}
    wanted |= {f"{p.parent.name}/" for p in chatd.rglob("__init__.py") if p.parent != chatd}
    missing = sorted(wanted - named)
    assert not missing, f"docs/design.md's layout does not name: {', '.join(missing)}"
