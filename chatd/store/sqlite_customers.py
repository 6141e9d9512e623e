"""A customer's chats in SQLite, mixed into SQLiteStore: finding them by customer id or
email, erasing them, and the erasures' audit lines (docs/operations.md#erasure-and-export).

An erasure is one write of the single writer: it reads the customer's chats, refuses while
one is open, and deletes the chats with everything that hangs off them in the same
transaction, so a chat opened meanwhile can never be half erased.
"""

from __future__ import annotations

import json
import sqlite3

from ..core.erasure import CustomerQuery, Erased, Erasure
from ..core.models import Session
from .rows import (
    ERASURE_COLUMNS,
    SESSION_COLUMNS,
    SESSION_FROM,
    customer_where,
    erasable,
    erasure_from_row,
    session_from_row,
)
from .sqlite_base import SQLiteBase
from .sqlite_messages import OPEN
from .sqlite_writer import WriteConnection

# Host parameters per statement, well under SQLite's limit.
CHUNK = 500


class SQLiteCustomers(SQLiteBase):
    """CustomerStore; relies on SQLiteStore's writer and reader."""

    async def customer_sessions(self, query: CustomerQuery) -> list[Session]:
        where, arg = customer_where(query, "?", "s.")
        rows = await self._all(
            f"SELECT {SESSION_COLUMNS} {SESSION_FROM} WHERE {where}"
            " ORDER BY s.created_at, s.arrival_seq",
            (arg,),
        )
        return [session_from_row(r) for r in rows]

    async def erase_customer(self, query: CustomerQuery, erasure: Erasure) -> Erased:
        async def op(conn: WriteConnection) -> Erased:
            erased = await conn.run(lambda c: _erase(c, query, erasure))
            for sid in erased.session_ids:
                self._messages.forget_session(sid)
            return erased

        return await self._write(op)

    async def list_erasures(self, limit: int = 100) -> list[Erasure]:
        rows = await self._all(
            f"SELECT {ERASURE_COLUMNS} FROM erasures ORDER BY erased_at DESC, id LIMIT ?",
            (limit,),
        )
        return [erasure_from_row(r) for r in rows]


def _erase(c: sqlite3.Connection, query: CustomerQuery, erasure: Erasure) -> Erased:
    where, arg = customer_where(query, "?")
    chats = c.execute(
        f"SELECT id, state, ticket FROM sessions WHERE {where} ORDER BY created_at", (arg,)
    ).fetchall()
    ids, tickets = erasable(chats, OPEN)
    messages = files = handoffs = undelivered = 0
    names: list[str] = []
    for i in range(0, len(ids), CHUNK):
        chunk = ids[i : i + CHUNK]
        marks = ",".join("?" * len(chunk))
        messages += c.execute(
            f"SELECT COUNT(*) FROM messages WHERE session_id IN ({marks})", chunk
        ).fetchone()[0]
        for stored, thumb in c.execute(
            f"SELECT stored_name, thumbnail_name FROM attachments WHERE session_id IN ({marks})",
            chunk,
        ).fetchall():
            files += 1
            names.extend(n for n in (stored, thumb) if n)
        for state, ticket in c.execute(
            f"SELECT state, ticket FROM handoffs WHERE session_id IN ({marks})", chunk
        ).fetchall():
            handoffs += 1
            if state != "delivered":
                undelivered += 1
            elif ticket and json.loads(ticket) not in tickets:
                tickets.append(json.loads(ticket))
        for table in ("messages", "attachments", "handoffs"):
            c.execute(f"DELETE FROM {table} WHERE session_id IN ({marks})", chunk)
        c.execute(f"DELETE FROM sessions WHERE id IN ({marks})", chunk)
    done = Erasure(
        id=erasure.id, erased_at=erasure.erased_at, requested_by=erasure.requested_by,
        via=erasure.via, subject_hash=erasure.subject_hash, chats=len(ids),
        messages=int(messages), files=files, handoffs=handoffs,
    )
    c.execute(
        f"INSERT INTO erasures ({ERASURE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (done.id, done.erased_at, done.requested_by, done.via, done.subject_hash,
         done.chats, done.messages, done.files, done.handoffs),
    )
    return Erased(done, ids, names, tickets, undelivered)
