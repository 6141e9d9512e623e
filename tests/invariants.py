"""What must hold in a chatd database whatever happened to the process that wrote it.

``check_store_invariants(url, expected)`` picks the backend's reader by the URL's scheme, as
the store itself does. A backend supplies two things: its own integrity checks and its
message rows in ``(session_id, seq)`` order; the checks on the rows are shared. PostgreSQL's
own checks verify by query what its schema guarantees (gap-free seqs, unique
``client_msg_id``s, one open chat per customer, each chat's counter at its last seq).

Run it on a database no process is writing to.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Coroutine, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from chatd.store import sqlite_path

T = TypeVar("T")


@dataclass(frozen=True)
class Expected:
    """A message a client was told about (in an acknowledgement, an event or a history):
    the database must hold it exactly so."""

    session_id: str
    id: str
    seq: int
    body: str
    client_msg_id: str | None


@dataclass(frozen=True)
class Row:
    session_id: str
    seq: int
    id: str
    body: str
    client_msg_id: str | None


@dataclass
class Report:
    sessions: int = 0
    messages: int = 0  # rows read and checked
    expected: int = 0  # client-known messages compared with their rows
    violations: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Backend:
    integrity: Callable[[str], list[str]]  # problems the backend itself finds
    rows: Callable[[str], Iterator[Row]]  # every message, ordered by session_id then seq


def check_store_invariants(url: str, expected: Iterable[Expected] = ()) -> Report:
    """Check the database at ``url``: the backend's integrity, every chat's seqs gap-free from
    1, no ``client_msg_id`` twice in a chat, and every ``expected`` message stored with its
    id, seq and body. Violations are listed (at most 50 of each kind), not raised."""
    scheme = urlsplit(url).scheme
    backend = _BACKENDS.get(scheme)
    if backend is None:
        raise ValueError(f"no invariant checks for database URL scheme {scheme!r}")
    report = Report()
    report.violations.extend(backend.integrity(url))
    by_key: dict[tuple[str, int], Row] = {}
    gaps: list[str] = []
    dups: list[str] = []
    session: str | None = None
    next_seq = 1
    cmids: set[str] = set()
    for row in backend.rows(url):
        report.messages += 1
        if row.session_id != session:
            session, next_seq, cmids = row.session_id, 1, set()
            report.sessions += 1
        if row.seq != next_seq:
            gaps.append(f"chat {row.session_id}: seq {row.seq} where {next_seq} was due")
        next_seq = row.seq + 1
        if row.client_msg_id is not None:
            if row.client_msg_id in cmids:
                dups.append(f"chat {row.session_id}: client_msg_id {row.client_msg_id!r} "
                            f"stored twice (again at seq {row.seq})")
            cmids.add(row.client_msg_id)
        by_key[(row.session_id, row.seq)] = row
    wrong: list[str] = []
    for e in expected:
        report.expected += 1
        got = by_key.get((e.session_id, e.seq))
        if got is None:
            wrong.append(f"chat {e.session_id}: message {e.id} (seq {e.seq}) is not stored")
        elif (got.id, got.body, got.client_msg_id) != (e.id, e.body, e.client_msg_id):
            wrong.append(f"chat {e.session_id}: seq {e.seq} is {got.id} "
                         f"{got.client_msg_id!r} {got.body[:40]!r}, was told {e.id} "
                         f"{e.client_msg_id!r} {e.body[:40]!r}")
    for kind in (gaps, dups, wrong):
        report.violations.extend(kind[:50])
        if len(kind) > 50:
            report.violations.append(f"... and {len(kind) - 50} more like the last")
    return report


def _sqlite_connect(url: str) -> sqlite3.Connection:
    return sqlite3.connect(sqlite_path(url))


def _sqlite_integrity(url: str) -> list[str]:
    with closing(_sqlite_connect(url)) as conn:
        problems = [f"integrity_check: {r[0]}"
                    for r in conn.execute("PRAGMA integrity_check") if r[0] != "ok"]
        problems += [f"foreign_key_check: {tuple(r)}"
                     for r in conn.execute("PRAGMA foreign_key_check")]
    return problems


def _sqlite_rows(url: str) -> Iterator[Row]:
    with closing(_sqlite_connect(url)) as conn:
        cur = conn.execute(
            "SELECT session_id, seq, id, body, client_msg_id FROM messages "
            "ORDER BY session_id, seq"
        )
        for r in cur:
            yield Row(*r)


def _in_a_thread(fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on a loop of its own: the checks are called from async tests too."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, fn()).result()


# What PostgreSQL itself must guarantee, checked by query (each row is one violation).
_PG_CHECKS = {
    "gap in a chat's seqs": (
        "SELECT session_id, seq FROM (SELECT session_id, seq, row_number() OVER"
        " (PARTITION BY session_id ORDER BY seq) AS n FROM messages) m WHERE seq <> n"
    ),
    "client_msg_id stored twice in a chat": (
        "SELECT session_id, client_msg_id FROM messages WHERE client_msg_id IS NOT NULL"
        " GROUP BY session_id, client_msg_id HAVING COUNT(*) > 1"
    ),
    "customer with two open chats": (
        "SELECT customer_id, COUNT(*) FROM sessions WHERE state IN ('waiting', 'offered',"
        " 'active') GROUP BY customer_id HAVING COUNT(*) > 1"
    ),
    "chat counter behind its messages": (
        "SELECT s.id, s.last_seq, MAX(m.seq) FROM sessions s JOIN messages m"
        " ON m.session_id = s.id GROUP BY s.id, s.last_seq HAVING MAX(m.seq) <> s.last_seq"
    ),
    "message of no chat": (
        "SELECT m.session_id FROM messages m LEFT JOIN sessions s ON s.id = m.session_id"
        " WHERE s.id IS NULL"
    ),
}


def _pg_integrity(url: str) -> list[str]:
    import asyncpg

    async def check() -> list[str]:
        conn = await asyncpg.connect(url)
        try:
            problems = []
            for what, sql in _PG_CHECKS.items():
                problems += [f"{what}: {tuple(r)}" for r in await conn.fetch(sql + " LIMIT 50")]
            return problems
        finally:
            await conn.close()

    return _in_a_thread(check)


def _pg_rows(url: str) -> Iterator[Row]:
    import asyncpg

    async def read() -> list[Row]:
        conn = await asyncpg.connect(url)
        try:
            return [Row(*r) for r in await conn.fetch(
                "SELECT session_id, seq, id, body, client_msg_id FROM messages"
                " ORDER BY session_id COLLATE \"C\", seq"
            )]
        finally:
            await conn.close()

    yield from _in_a_thread(read)


_BACKENDS: dict[str, Backend] = {
    "sqlite": Backend(_sqlite_integrity, _sqlite_rows),
    "postgresql": Backend(_pg_integrity, _pg_rows),
    "postgres": Backend(_pg_integrity, _pg_rows),
}
