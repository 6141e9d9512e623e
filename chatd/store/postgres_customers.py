"""A customer's chats in PostgreSQL, mixed into PostgresStore: finding them by customer id
or email, erasing them, and the erasures' audit lines (docs/operations.md#erasure-and-export).

An erasure is one transaction: the customer's chats are read and locked (``FOR UPDATE``),
refused while one is open, and deleted with everything that hangs off them. An upload to
one of them, in any process, takes the same row lock first, so it waits and then finds the
chat gone.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ..core.erasure import CustomerQuery, Erased, Erasure
from ..core.models import Session
from .postgres_records import PostgresBase
from .postgres_writer import OPEN
from .rows import (
    ERASURE_COLUMNS,
    SESSION_COLUMNS,
    SESSION_FROM,
    customer_where,
    erasable,
    erasure_from_row,
    session_from_row,
)

if TYPE_CHECKING:
    from .postgres_writer import Conn

class PostgresCustomers(PostgresBase):
    """CustomerStore; relies on PostgresStore's pool and writer."""

    async def customer_sessions(self, query: CustomerQuery) -> list[Session]:
        where, arg = customer_where(query, "$1", "s.")
        rows = await self._all(
            f"SELECT {SESSION_COLUMNS} {SESSION_FROM} WHERE {where}"
            " ORDER BY s.created_at, s.arrival_seq",
            arg,
        )
        return [session_from_row(r) for r in rows]

    async def erase_customer(self, query: CustomerQuery, erasure: Erasure) -> Erased:
        async def op(conn: Conn) -> Erased:
            return await _erase(conn, query, erasure)

        return await self._write(op)

    async def list_erasures(self, limit: int = 100) -> list[Erasure]:
        rows = await self._all(
            f"SELECT {ERASURE_COLUMNS} FROM erasures ORDER BY erased_at DESC, id LIMIT $1",
            limit,
        )
        return [erasure_from_row(r) for r in rows]


async def _erase(conn: Conn, query: CustomerQuery, erasure: Erasure) -> Erased:
    where, arg = customer_where(query, "$1")
    chats = await conn.fetch(
        f"SELECT id, state, ticket FROM sessions WHERE {where} ORDER BY created_at"
        " FOR UPDATE",
        arg,
    )
    ids, tickets = erasable(chats, OPEN)
    messages = int(await conn.fetchval(
        "SELECT COUNT(*) FROM messages WHERE session_id = ANY($1::text[])", ids
    ))
    names: list[str] = []
    files = 0
    for stored, thumb in await conn.fetch(
        "SELECT stored_name, thumbnail_name FROM attachments"
        " WHERE session_id = ANY($1::text[])",
        ids,
    ):
        files += 1
        names.extend(n for n in (stored, thumb) if n)
    handoffs = undelivered = 0
    for state, ticket in await conn.fetch(
        "SELECT state, ticket FROM handoffs WHERE session_id = ANY($1::text[])", ids
    ):
        handoffs += 1
        if state != "delivered":
            undelivered += 1
        elif ticket and json.loads(ticket) not in tickets:
            tickets.append(json.loads(ticket))
    for table in ("messages", "attachments", "handoffs"):
        await conn.execute(f"DELETE FROM {table} WHERE session_id = ANY($1::text[])", ids)
    await conn.execute("DELETE FROM sessions WHERE id = ANY($1::text[])", ids)
    done = Erasure(
        id=erasure.id, erased_at=erasure.erased_at, requested_by=erasure.requested_by,
        via=erasure.via, subject_hash=erasure.subject_hash, chats=len(ids),
        messages=messages, files=files, handoffs=handoffs,
    )
    await conn.execute(
        f"INSERT INTO erasures ({ERASURE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        done.id, done.erased_at, done.requested_by, done.via, done.subject_hash,
        done.chats, done.messages, done.files, done.handoffs,
    )
    return Erased(done, ids, names, tickets, undelivered)
