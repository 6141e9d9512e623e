"""Which part of chatd may import what: an allow-list per package and top-level module.

Imports point inward (docs/design.md#who-imports-whom): the domain core imports nothing but
the standard library, so it stays testable with a fake clock and no network; storage,
handoff and the web layer build on it; only app.py and cli.py wire everything together.
Every import of every file under chatd/ is checked, lazy ones inside functions included.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

# ---------------------------------------------------------------------------------------
# The table. Each part of chatd may import, besides the standard library and its own
# modules, exactly what its row lists. A name allows itself and everything under it
# ("chatd.core" allows chatd.core.desk, "aiohttp" allows aiohttp.web). Outside chatd.handoff,
# handoff modules are named one by one: the rest of it (worker, backends) is its own.
#
#   chatd.core      the standard library only (and itself)
#   chatd.store     core, and its driver: aiosqlite, sqlite3
#   chatd.handoff   core, config, files, store, tasks; aiohttp
#   chatd.web       everything but app, cli, sim, store and the handoff internals
#   chatd.sim       core and store
#   top-level modules: see their rows
#
# A new import outside a row fails the test below with the file, the line and the row.
# Widen a row only when the dependency points inward; a new package or top-level module
# needs a row of its own.
# ---------------------------------------------------------------------------------------
ALLOWED: dict[str, tuple[str, ...]] = {
    # The package itself: its version, nothing else.
    "chatd": (),
    # The domain core: models, errors, matching, sessions, transcripts.
    "chatd.core": (),
    # Stopping background tasks.
    "chatd.tasks": (),
    # The garbage collector's policy for chatd serve.
    "chatd.memory": (),
    # The storage ports of the core, implemented on SQLite and on PostgreSQL.
    "chatd.store": ("chatd.core", "chatd.tasks", "aiosqlite", "sqlite3", "asyncpg"),
    # Outbox worker and ticket backends. (store: StoreURLError and sqlite_path.)
    "chatd.handoff": (
        "chatd.config", "chatd.core", "chatd.files", "chatd.store", "chatd.tasks",
        "aiohttp", "chatd.objects",
    ),
    # Socket.IO namespaces, HTTP routes, auth, payload schemas.
    "chatd.web": (
        "chatd.accounts", "chatd.alert_webhook", "chatd.config", "chatd.core", "chatd.files",
        "chatd.handoff.service", "chatd.logs", "chatd.metrics", "chatd.tasks",
        "aiohttp", "engineio", "jwt", "msgspec", "socketio", "chatd.erasure", "chatd.objects",
        "chatd.limits",
    ),
    # Limits per address and per person: this process's, or in Redis for all of them.
    "chatd.limits": ("chatd.config", "chatd.core", "chatd.store", "redis"),
    # Attachments in an S3-compatible object store (aiobotocore, imported when configured).
    "chatd.objects": ("chatd.config", "chatd.core", "chatd.files", "aiobotocore"),
    # Days replayed through the real desk.
    "chatd.sim": ("chatd.core", "chatd.store"),
    # Engineer accounts and their password hashes.
    "chatd.accounts": ("chatd.core", "argon2"),
    # Alerts posted to a webhook, with the handoff's retry policy and status checks.
    "chatd.alert_webhook": (
        "chatd.core", "chatd.handoff.base", "chatd.handoff.policy", "chatd.tasks", "aiohttp",
    ),
    # Settings: checks the store URL and the webhook settings where they are defined.
    "chatd.config": ("chatd.handoff.webhook", "chatd.store"),
    # Attachments on disk: the upload folder, streamed uploads, thumbnails put in place.
    "chatd.files": ("chatd.core", "chatd.images", "chatd.kinds", "aiofiles"),
    # What an attachment is: its type from the bytes, the name it is shown under.
    "chatd.kinds": ("chatd.core", "filetype"),
    # Image decoding (Pillow) and the fair executor decodes take turns on.
    "chatd.images": ("chatd.core", "chatd.kinds", "PIL"),
    # Structured logs of desk events.
    "chatd.logs": ("chatd.core",),
    # Prometheus instruments.
    "chatd.metrics": ("chatd.core", "chatd.tasks", "aiohttp", "prometheus_client"),
    # create_app: the one place that wires everything.
    "chatd.app": (
        "chatd.config", "chatd.core", "chatd.handoff.service", "chatd.metrics", "chatd.store",
        "chatd.web", "aiohttp", "chatd.retention", "chatd.cluster",
    ),
    # Several processes on one desk: Redis's fan-out and the calls to the desk's process.
    "chatd.cluster": ("chatd.core", "chatd.tasks", "chatd.web", "msgspec", "redis", "socketio"),
    # The purge of old chats and orphans: the store's ports, the upload folder, and where
    # the file handoff keeps its transcripts.
    "chatd.retention": (
        "chatd.config", "chatd.core", "chatd.files", "chatd.handoff.service", "chatd.tasks",
        "aiohttp", "chatd.objects",
    ),
    # The command line; handoff and simulate have their own cli modules.
    "chatd.cli": (
        "chatd.accounts", "chatd.app", "chatd.config", "chatd.core", "chatd.handoff.cli",
        "chatd.logs", "chatd.memory", "chatd.sim.cli", "chatd.store", "aiohttp", "argon2",
        "uvloop", "chatd.retention", "chatd.erasure", "chatd.backup", "chatd.objects",
    ),
    # chatd backup and restore: a SQLite file (read and written with sqlite3 itself), the
    # upload folder and where the file handoff keeps its transcripts.
    "chatd.backup": ("chatd.config", "chatd.store", "chatd.handoff.service", "sqlite3"),
    # A customer erased or exported: the store's ports, the upload folder, and where the
    # file handoff keeps its transcripts.
    "chatd.erasure": (
        "chatd.config", "chatd.core", "chatd.files", "chatd.handoff.service", "chatd.objects",
    ),
    "chatd.__main__": ("chatd.cli",),
}

# The standard library, less what counts as a database driver: the core must not reach
# SQLite, so sqlite3 is allowed only where a row names it.
DRIVERS = frozenset({"sqlite3"})
STDLIB = frozenset(sys.stdlib_module_names) - DRIVERS

CHATD = Path(__file__).resolve().parent.parent / "chatd"
FILES = sorted(CHATD.rglob("*.py"))


def part_of(rel: Path) -> str:
    """The row a file falls under: chatd/core/desk.py -> chatd.core, chatd/app.py ->
    chatd.app, chatd/__init__.py -> chatd."""
    if len(rel.parts) > 1:
        return f"chatd.{rel.parts[0]}"
    return "chatd" if rel.stem == "__init__" else f"chatd.{rel.stem}"


def package_of(rel: Path) -> str:
    """The package relative imports resolve against: chatd/core/desk.py -> chatd.core."""
    return ".".join(["chatd", *rel.parent.parts])


def imports(source: str, package: str) -> list[tuple[int, str]]:
    """(line, name) of every import in a source file, relative ones resolved against
    ``package``. ``from X import y`` counts as X.y (y may be a module or a name in X)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return sorted(found)


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def allowed(part: str, name: str) -> bool:
    if name.split(".")[0] in STDLIB:
        return True
    # Its own modules (the root package's own would be all of chatd: it has none).
    if part != "chatd" and under(name, part):
        return True
    return any(under(name, entry) for entry in ALLOWED[part])


def rule(part: str) -> str:
    return f"{part} may import only " + ", ".join(["the standard library", "itself",
                                                  *ALLOWED[part]])


def violations(rel: Path, source: str) -> list[str]:
    """One message per import of the file at ``rel`` (relative to chatd/) outside its row."""
    part = part_of(rel)
    where = f"chatd/{rel.as_posix()}"
    if part not in ALLOWED:
        return [f"{where} belongs to {part}, which has no row in ALLOWED "
                "(tests/test_layering.py): add one"]
    return [
        f"{where}:{line} imports {name}, but {rule(part)} (ALLOWED in tests/test_layering.py)"
        for line, name in imports(source, package_of(rel))
        if not allowed(part, name)
    ]


# ---------------------------------------------------------------------------------------
# The code as it is


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CHATD)))
def test_imports_stay_inside_the_allow_list(path: Path) -> None:
    rel = path.relative_to(CHATD)
    bad = violations(rel, path.read_text(encoding="utf-8"))
    assert not bad, "\n".join(bad)


def test_every_file_is_found() -> None:
    parts = {part_of(p.relative_to(CHATD)) for p in FILES}
    assert parts >= {"chatd.core", "chatd.store", "chatd.web", "chatd.handoff", "chatd.app"}
    assert {p.name for p in FILES if part_of(p.relative_to(CHATD)) == "chatd.core"} >= {
        "desk.py", "models.py", "ports.py", "clock.py",
    }


def test_every_row_names_what_exists() -> None:
    def exists(name: str) -> bool:
        path = CHATD.joinpath(*name.split(".")[1:])
        return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()

    parts = {part_of(p.relative_to(CHATD)) for p in FILES}
    assert set(ALLOWED) <= parts, f"rows for nothing: {sorted(set(ALLOWED) - parts)}"
    stale = sorted(
        f"{part}: {entry}"
        for part, entries in ALLOWED.items()
        for entry in entries
        if entry.startswith("chatd.") and not exists(entry)
    )
    assert not stale, f"rows naming modules that do not exist: {stale}"


# ---------------------------------------------------------------------------------------
# The checker itself


def test_a_forbidden_import_is_reported_with_file_line_name_and_rule() -> None:
    source = '"""A core module."""\n\nimport json\nimport prometheus_client\n'
    [message] = violations(Path("core/desk.py"), source)
    assert message.startswith("chatd/core/desk.py:4 imports prometheus_client, but ")
    assert message.endswith(
        "chatd.core may import only the standard library, itself "
        "(ALLOWED in tests/test_layering.py)"
    )


@pytest.mark.parametrize(
    ("file", "source"),
    [
        ("core/desk.py", "import prometheus_client"),
        ("core/desk.py", "import aiohttp"),
        ("core/desk.py", "from aiohttp import web"),
        ("core/desk.py", "import socketio.asyncio_server"),
        ("core/desk.py", "import engineio"),
        ("core/desk.py", "from sqlite3 import connect"),
        ("core/desk.py", "import aiosqlite as db"),
        ("core/desk.py", "import jwt"),
        ("core/desk.py", "from argon2 import PasswordHasher"),
        ("core/desk.py", "import msgspec.json"),
        ("core/desk.py", "from PIL import Image"),
        ("core/desk.py", "def f():\n    import aiofiles\n"),
        ("core/desk.py", "from chatd.store.sqlite import SQLiteStore"),
        ("core/desk.py", "from ..web import sockets"),
        ("core/desk.py", "from .. import app"),
        ("core/desk.py", "from .. import config"),
        ("core/desk.py", "from ..config import Settings"),
        ("core/desk.py", "from ..handoff import worker"),
        ("core/desk.py", "from ..tasks import cancel_and_wait"),
        ("core/__init__.py", "from ..store import sqlite"),
        ("web/sockets.py", "from ..handoff import worker"),
        ("web/sockets.py", "from ..handoff.worker import HandoffWorker"),
        ("web/sockets.py", "from ..store.sqlite import SQLiteStore"),
        ("web/sockets.py", "from ..store import store_from_url"),
        ("web/http.py", "import chatd.app"),
        ("store/sqlite.py", "import aiohttp"),
        ("store/sqlite.py", "from ..web import keys"),
        ("handoff/worker.py", "from ..web.keys import DESK"),
        ("sim/run.py", "import aiohttp"),
        ("__init__.py", "from . import app"),
        ("tasks.py", "from .core.clock import Clock"),
    ],
)
def test_checker_catches_forbidden_imports(file: str, source: str) -> None:
    assert violations(Path(file), source), source


@pytest.mark.parametrize(
    ("file", "source"),
    [
        ("core/desk.py", "import asyncio"),
        ("core/desk.py", "import json"),
        ("core/desk.py", "from __future__ import annotations"),
        ("core/desk.py", "from .models import Session"),
        ("core/desk.py", "from . import errors"),
        ("core/desk.py", "from chatd.core.clock import Clock"),
        ("core/__init__.py", "from .desk import Desk"),
        ("store/sqlite.py", "import sqlite3"),
        ("store/sqlite.py", "def f():\n    import aiosqlite\n"),
        ("store/sqlite.py", "from ..core.ports import Store"),
        ("web/monitoring.py", "from ..handoff.service import HANDOFF"),
        ("web/http.py", "from .. import accounts"),
        ("web/http.py", "from aiohttp import web"),
        ("app.py", "from .web import sockets"),
        ("cli.py", "from .handoff import cli as handoff_cli"),
    ],
)
def test_checker_allows_what_the_rows_list(file: str, source: str) -> None:
    assert violations(Path(file), source) == []


def test_a_file_outside_every_row_is_reported() -> None:
    [message] = violations(Path("newthing.py"), "import json")
    assert "chatd/newthing.py belongs to chatd.newthing, which has no row" in message
