"""Shared fixtures: a real store (SQLite in a temporary folder, or a PostgreSQL database of
the test's own), a fake clock, and a running chatd app on a loopback port for tests that
talk over real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import socketio
from aiohttp import web
from aiohttp.test_utils import TestServer

from chatd import accounts
from chatd.app import create_app
from chatd.config import Settings
from chatd.core.clock import FakeClock, SystemClock
from chatd.core.models import Engineer, Role
from chatd.core.ports import Store
from chatd.store import store_from_url
from chatd.store.sqlite import SQLiteStore

WIDGET_SECRET = "test-widget-secret-0123456789abcdef-xyz"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_backend() -> str:
    """The storage backend of a test: SQLite here; the end-to-end and handoff tests'
    conftest files run theirs on PostgreSQL as well."""
    return "sqlite"


@pytest.fixture
async def database_url(db_backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh database of the test's backend (tests/pg.py for PostgreSQL, dropped after)."""
    if db_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'chatd.db'}"
        return
    from tests.pg import DATABASES

    url = await DATABASES.create()
    yield url
    await DATABASES.drop(url)


@pytest.fixture
async def store(db_backend: str, database_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    s: Store
    if db_backend == "sqlite":
        s = SQLiteStore(tmp_path / "chatd.db", synchronous="normal")
    else:
        s = store_from_url(database_url, pool_size=4)
    await s.open()
    yield s
    await s.close()


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'chatd.db'}",
        "upload_dir": str(tmp_path / "uploads"),
        # Where the SQLite default puts it (beside the database), whatever the backend.
        "handoff_file_dir": str(tmp_path / "handoff"),
        "widget_secret": WIDGET_SECRET,
        "allow_guests": True,
        "connect_burst": 1000,
        "message_burst": 1000,
        "message_rate": 1000.0,
        # Every test client comes from 127.0.0.1: the per-address and per-connection bounds
        # are raised here, and the tests of those bounds set their own.
        "event_burst": 10_000,
        "event_rate": 1000.0,
        "connections_per_address": 100_000,
        "handshake_burst": 100_000,
        "handshake_rate": 10_000.0,
        "upload_concurrent_per_address": 10_000,
        "abuse_penalty_seconds": 0.0,
        "handshake_rate_total": 100_000.0,
        "history_messages_rate_total": 1_000_000.0,
    }
    values.update(overrides)
    return Settings(**values)


class Chatd:
    """A running chatd app on 127.0.0.1 with helpers to log in and connect clients."""

    def __init__(self, server: TestServer, app: web.Application) -> None:
        self.server = server
        self.app = app
        self.url = str(server.make_url("")).rstrip("/")
        self._clients: list[socketio.AsyncClient] = []

    async def add_engineer(
        self, email: str, name: str = "", role: Role = Role.ENGINEER,
        password: str = "correct horse battery",
    ) -> Engineer:
        from chatd.web import keys

        return await accounts.add_engineer(
            self.app[keys.STORE], SystemClock(), email, name or email.split("@")[0],
            password, role,
        )

    async def login(self, email: str, password: str = "correct horse battery") -> str:
        import aiohttp

        async with aiohttp.ClientSession() as http:
            async with http.post(
                self.url + "/api/login", json={"email": email, "password": password}
            ) as r:
                body = await r.json()
                assert r.status == 200, body
                return str(body["token"])

    async def client(self, namespace: str, auth: dict[str, Any]) -> socketio.AsyncClient:
        c = socketio.AsyncClient(reconnection=False)
        await c.connect(
            self.url, namespaces=[namespace], auth=auth, transports=["websocket"],
            wait_timeout=5,
        )
        self._clients.append(c)
        return c

    async def close_clients(self) -> None:
        for c in self._clients:
            if c.connected:
                await c.disconnect()


@pytest.fixture
async def chatd_factory(
    tmp_path: Path, database_url: str, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> AsyncIterator[Callable[..., Awaitable[Chatd]]]:
    made: list[Chatd] = []

    async def make(clock: Any = None, **overrides: Any) -> Chatd:
        settings = make_settings(tmp_path, **{"database_url": database_url, **overrides})
        app = create_app(settings, clock=clock)
        server = await aiohttp_server(app)
        c = Chatd(server, app)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.close_clients()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Drop every PostgreSQL database this run made (tests/pg.py), even after a failure."""
    import asyncio

    from tests.pg import DATABASES

    asyncio.run(DATABASES.drop_all())
