"""The domain core imports no transport, database or serialisation library (STYLE.md):
it must stay testable with a fake clock and no network."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CHATD = Path(__file__).resolve().parent.parent / "chatd"
CORE_FILES = sorted((CHATD / "core").rglob("*.py"))

FORBIDDEN = (
    "aiohttp",
    "socketio",
    "engineio",
    "aiosqlite",
    "sqlite3",
    "aiofiles",
    "jwt",
    "argon2",
    "msgspec",
    "chatd.web",
    "chatd.store",
    "chatd.app",
)


def package_of(path: Path) -> str:
    """The dotted package a file belongs to, e.g. chatd/core/desk.py -> chatd.core."""
    return ".".join(["chatd", *path.relative_to(CHATD).parent.parts])


def imported_modules(source: str, package: str) -> set[str]:
    """Every module a source file imports (relative imports resolved against ``package``).
    For ``from X import y`` both X and X.y count, since y may be a module."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def forbidden(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))


def test_core_modules_are_found() -> None:
    assert {p.name for p in CORE_FILES} >= {"desk.py", "models.py", "ports.py", "clock.py"}


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(CHATD)))
def test_core_imports_no_infrastructure(path: Path) -> None:
    modules = imported_modules(path.read_text(encoding="utf-8"), package_of(path))
    bad = forbidden(modules)
    assert not bad, f"{path.name} imports {', '.join(bad)}: chatd/core must stay stdlib-only"


@pytest.mark.parametrize(
    "source",
    [
        "import aiohttp",
        "from aiohttp import web",
        "import socketio.asyncio_server",
        "import engineio",
        "from sqlite3 import connect",
        "import aiosqlite as db",
        "import jwt",
        "from argon2 import PasswordHasher",
        "import msgspec.json",
        "from chatd.store.sqlite import SQLiteStore",
        "from ..web import sockets",
        "from .. import app",
        "from ..store import sqlite",
        "def f():\n    import aiofiles\n",
    ],
)
def test_checker_catches_forbidden_imports(source: str) -> None:
    assert forbidden(imported_modules(source, "chatd.core")), source


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "import json",
        "from .models import Session",
        "from . import errors",
        "from chatd.core.clock import Clock",
        "from .. import __version__",
    ],
)
def test_checker_allows_the_core_and_the_standard_library(source: str) -> None:
    assert forbidden(imported_modules(source, "chatd.core")) == []
