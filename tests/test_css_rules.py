"""The console's and the monitor's stylesheets share their common rules through
static/src/shared/ instead of each carrying a copy: a rule (same selector, same
declarations, inside the same at-rule) in both files, or one repeating a shared rule,
fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "static" / "src"
CONSOLE = SRC / "console" / "console.css"
MONITOR = SRC / "monitor" / "monitor.css"
SHARED = sorted((SRC / "shared").glob("*.css"))

Rule = tuple[str, str, tuple[str, ...]]  # (enclosing at-rules, selector, declarations)


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _selector(text: str) -> str:
    return ", ".join(_squash(part) for part in text.split(","))


def _declarations(body: str) -> tuple[str, ...]:
    found = []
    for decl in body.split(";"):
        if ":" not in decl:
            continue
        prop, value = decl.split(":", 1)
        found.append(f"{_squash(prop).lower()}: {_squash(value)}")
    return tuple(sorted(found))


def parse_rules(css: str) -> list[Rule]:
    """Every style rule of a stylesheet, with the at-rules (@media, @supports) around it.
    A @keyframes block counts as one rule, its frames as its declarations."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    rules: list[Rule] = []
    stack: list[str] = []  # the open at-rules' preludes
    i = 0
    start = 0
    while i < len(css):
        c = css[i]
        if c == ";":
            # the end of a statement at-rule (@import, @charset): nothing to compare
            start = i + 1
        elif c == "{":
            prelude = _squash(css[start:i])
            if prelude.startswith("@keyframes"):
                depth, j = 1, i + 1
                while depth:
                    depth += {"{": 1, "}": -1}.get(css[j], 0)
                    j += 1
                body = _squash(css[i + 1 : j - 1])
                rules.append((" ".join(stack), prelude, (body,)))
                i, start = j, j
                continue
            if prelude.startswith("@"):
                stack.append(prelude)
                start = i + 1
            else:
                end = css.index("}", i)
                rules.append((" ".join(stack), _selector(prelude), _declarations(css[i + 1 : end])))
                i = end
                start = end + 1
        elif c == "}":
            if stack:
                stack.pop()
            start = i + 1
        i += 1
    return rules


def rule_set(path: Path) -> set[Rule]:
    return set(parse_rules(path.read_text(encoding="utf-8")))


def show(rule: Rule) -> str:
    where, selector, decls = rule
    return f"{where + ' ' if where else ''}{selector} {{ {'; '.join(decls)} }}"


def test_the_parser_finds_rules_inside_media_queries_and_ignores_order_and_spacing() -> None:
    a = parse_rules(
        "@import 'x.css';\n/* c { d: e } */ .a,.b { color: red; margin:0 }\n"
        "@media (max-width: 10px) { .a { color: red } }\n@keyframes k { from { x: 1 } }"
    )
    b = parse_rules(".a, .b {margin: 0;\n  color:  red;}")
    assert a[0] == b[0] == ("", ".a, .b", ("color: red", "margin: 0"))
    assert a[1] == ("@media (max-width: 10px)", ".a", ("color: red",))
    assert a[2][1] == "@keyframes k"
    assert len(a) == 3


def test_the_console_and_the_monitor_share_no_rule() -> None:
    both = rule_set(CONSOLE) & rule_set(MONITOR)
    assert not both, "in both console.css and monitor.css (move them to static/src/shared/):\n" + (
        "\n".join(sorted(show(r) for r in both))
    )


@pytest.mark.parametrize("page", [CONSOLE, MONITOR], ids=["console", "monitor"])
def test_a_page_repeats_no_shared_rule_and_imports_the_shared_base(page: Path) -> None:
    shared: set[Rule] = set()
    for path in SHARED:
        shared |= rule_set(path)
    repeated = rule_set(page) & shared
    assert not repeated, f"{page.name} repeats rules of static/src/shared/:\n" + "\n".join(
        sorted(show(r) for r in repeated)
    )
    text = page.read_text(encoding="utf-8")
    assert '@import "../shared/base.css";' in text
