"""The storage contract suite runs once per backend through the ``backend`` fixture.

A backend adds itself to BACKENDS with a small adapter: how to open a store, how to open a
fresh instance on the same database (durability), how to read its outbox table, and how to
make one write fail inside a group-committed batch. PostgreSQL gets a database of its own
per test (tests/pg.py).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from chatd.core.ports import Store
from chatd.store.postgres import PostgresStore
from chatd.store.sqlite import SQLiteStore, SyncOp
from tests.pg import DATABASES


class Backend:
    name = ""
    # Several processes may share the database: a claim stays theirs until its lease ends.
    shared = False
    store: Store

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def reopen(self, *, close_first: bool = True) -> Store:
        """A new store instance on the same database. Without ``close_first`` the old one is
        left as a crashed process would leave it: never told to close."""
        raise NotImplementedError

    async def handoff_rows(self, session_id: str) -> list[dict[str, Any]]:
        """The outbox rows of a session, as committed (read outside the store)."""
        raise NotImplementedError

    async def failing_write(self, session_id: str) -> None:
        """Queue a write that changes the session's topic and then raises RuntimeError, so
        that it shares a batch with writes gathered beside it."""
        raise NotImplementedError

    # How many messages of the session the failing write saw inside its transaction, per
    # attempt: proves it really ran in one batch with the writes gathered beside it.
    failing_write_saw: list[int]

    def commit_counters(self) -> tuple[int, int] | None:
        """(commits, operations committed), or None when the backend does not group."""
        return None

    async def another(self) -> Store:
        """A second live store on the same database, as another process would open it
        (``shared`` backends only)."""
        raise NotImplementedError


class SQLiteBackend(Backend):
    name = "sqlite"

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "contract.db"
        # synchronous=full is the production default: test what operators run.
        self.store = self.sqlite = SQLiteStore(self.path)
        self._abandoned: list[SQLiteStore] = []
        self.failing_write_saw = []

    async def start(self) -> None:
        await self.sqlite.open()

    async def stop(self) -> None:
        for s in (self.sqlite, *self._abandoned):
            await s.close()

    async def reopen(self, *, close_first: bool = True) -> Store:
        if close_first:
            await self.sqlite.close()
        else:
            self._abandoned.append(self.sqlite)
        self.store = self.sqlite = SQLiteStore(self.path)
        await self.sqlite.open()
        return self.store

    async def handoff_rows(self, session_id: str) -> list[dict[str, Any]]:
        uri = self.path.as_uri() + "?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as con:
            con.row_factory = sqlite3.Row
            rows = con.execute(
                "SELECT * FROM handoffs WHERE session_id = ? ORDER BY backend", (session_id,)
            ).fetchall()
            return [dict(r) for r in rows]

    async def failing_write(self, session_id: str) -> None:
        # A plain-function write, as message appends are: it joins their batches.
        def op(c: sqlite3.Connection) -> None:
            c.execute("UPDATE sessions SET topic = 'half-done write' WHERE id = ?", (session_id,))
            row = c.execute(
                "SELECT COUNT(*) FROM messages WHERE session_id = ?", (session_id,)
            ).fetchone()
            self.failing_write_saw.append(int(row[0]))
            raise RuntimeError("simulated driver failure")

        await self.sqlite._write(SyncOp(op))

    def commit_counters(self) -> tuple[int, int] | None:
        return self.sqlite.batches, self.sqlite.batched_ops


class PostgresBackend(Backend):
    name = "postgres"
    shared = True

    def __init__(self, tmp_path: Path) -> None:
        self.url = ""
        self.failing_write_saw = []
        self._abandoned: list[PostgresStore] = []

    async def start(self) -> None:
        self.url = await DATABASES.create()
        self.store = self.pg = PostgresStore(self.url, pool_size=4)
        await self.pg.open()

    async def stop(self) -> None:
        for s in (self.pg, *self._abandoned):
            await s.close()
        await DATABASES.drop(self.url)

    async def reopen(self, *, close_first: bool = True) -> Store:
        if close_first:
            await self.pg.close()
        else:
            self._abandoned.append(self.pg)
        self.store = self.pg = PostgresStore(self.url, pool_size=4)
        await self.pg.open()
        return self.store

    async def another(self) -> Store:
        other = PostgresStore(self.url, pool_size=4)
        await other.open()
        self._abandoned.append(other)
        return other

    async def handoff_rows(self, session_id: str) -> list[dict[str, Any]]:
        import asyncpg

        conn = await asyncpg.connect(self.url)
        try:
            rows = await conn.fetch(
                "SELECT * FROM handoffs WHERE session_id = $1 ORDER BY backend", session_id
            )
            return [dict(r) for r in rows]
        finally:
            await conn.close()

    async def failing_write(self, session_id: str) -> None:
        async def op(conn: Any) -> None:
            await conn.execute(
                "UPDATE sessions SET topic = 'half-done write' WHERE id = $1", session_id
            )
            seen = await conn.fetchval(
                "SELECT COUNT(*) FROM messages WHERE session_id = $1", session_id
            )
            self.failing_write_saw.append(int(seen))
            raise RuntimeError("simulated driver failure")

        await self.pg._write(op)

    def commit_counters(self) -> tuple[int, int] | None:
        return self.pg.batches, self.pg.batched_ops


BACKENDS: dict[str, Callable[[Path], Backend]] = {
    "sqlite": SQLiteBackend, "postgres": PostgresBackend,
}


@pytest.fixture(params=sorted(BACKENDS))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    b = BACKENDS[request.param](tmp_path)
    await b.start()
    yield b
    await b.stop()
