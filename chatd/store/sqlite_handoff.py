"""The handoff outbox in SQLite, mixed into SQLiteStore (docs/handoff.md).

Rows are written by ``end_session`` (and ``create_offline_ticket``) in the transaction that
closes the session. A worker claims due rows here: a claim counts the attempt, stamps
``claimed_at`` and pushes ``next_attempt_at`` past the attempt's lease, all in one write, so
two claims can never take the same row. A row still claimed when the process starts again
was cut off mid-delivery and is released to be retried at once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from ..core.errors import Conflict, NotFound
from ..core.models import Message, NewMessage, Session
from ..core.transcript import Handoff
from .rows import HANDOFF_COLUMNS, clip, handoff_from_row
from .sqlite_base import SQLiteBase
from .sqlite_writer import WriteConnection


class SQLiteHandoffs(SQLiteBase):
    """Outbox operations; relies on SQLiteStore's writer, reader and message append."""

    # ------------------------------------------------------------------ the worker's side

    async def claim_handoffs(
        self, now: float, limit: int, lease: float, backends: Sequence[str]
    ) -> list[Handoff]:
        """Take up to ``limit`` due pending rows of these backends, oldest due first."""
        names = tuple(backends)
        if not names or limit <= 0:
            return []
        marks = ",".join("?" * len(names))

        async def op(conn: WriteConnection) -> list[Handoff]:
            cur = await conn.execute(
                f"UPDATE handoffs SET attempts = attempts + 1, claimed_at = ?,"
                f" next_attempt_at = ?, updated_at = ? WHERE id IN ("
                f"  SELECT id FROM handoffs WHERE state = 'pending' AND next_attempt_at <= ?"
                f"  AND backend IN ({marks}) ORDER BY next_attempt_at, created_at LIMIT ?"
                f") RETURNING {HANDOFF_COLUMNS}",
                (now, now + lease, now, now, *names, limit),
            )
            return [handoff_from_row(r) for r in await cur.fetchall()]

        return await self._write(op)

    async def release_handoff_claims(self, now: float) -> int:
        """Make every claimed pending row due now: at start-up, these are deliveries that
        were in flight when the previous process died."""

        async def op(conn: WriteConnection) -> int:
            cur = await conn.execute(
                "UPDATE handoffs SET claimed_at = NULL, next_attempt_at = ?, updated_at = ?"
                " WHERE state = 'pending' AND claimed_at IS NOT NULL",
                (now, now),
            )
            return int(cur.rowcount)

        return await self._write(op)

    async def handoff_delivered(
        self,
        handoff_id: str,
        now: float,
        result: str,
        ticket: dict[str, Any] | None,
        status: int | None,
        response: str | None,
    ) -> bool:
        """Mark a row delivered; a ticket reference is also stored on the session unless it
        already has one. True when the session's ticket was set by this call."""
        ticket_json = json.dumps(ticket, separators=(",", ":")) if ticket else None

        async def op(conn: WriteConnection) -> bool:
            cur = await conn.execute(
                "UPDATE handoffs SET state = 'delivered', claimed_at = NULL, delivered_at = ?,"
                " updated_at = ?, result = ?, ticket = ?, last_status = ?, last_response = ?,"
                " last_error = NULL WHERE id = ? AND state = 'pending' RETURNING session_id",
                (now, now, result, ticket_json, status, clip(response), handoff_id),
            )
            row = await cur.fetchone()
            if row is None or ticket_json is None:
                return False
            cur = await conn.execute(
                "UPDATE sessions SET ticket = ? WHERE id = ? AND ticket IS NULL",
                (ticket_json, row[0]),
            )
            return cur.rowcount == 1

        return await self._write(op)

    async def handoff_retry_later(
        self,
        handoff_id: str,
        now: float,
        next_attempt_at: float,
        error: str,
        status: int | None,
        response: str | None,
    ) -> None:
        async def op(conn: WriteConnection) -> None:
            await conn.execute(
                "UPDATE handoffs SET claimed_at = NULL, next_attempt_at = ?, updated_at = ?,"
                " last_error = ?, last_status = ?, last_response = ?"
                " WHERE id = ? AND state = 'pending'",
                (next_attempt_at, now, error, status, clip(response), handoff_id),
            )

        await self._write(op)

    async def handoff_failed(
        self,
        handoff_id: str,
        now: float,
        error: str,
        status: int | None,
        response: str | None,
    ) -> None:
        """Dead-letter a row: it stays, with the last answer, until an operator retries it."""

        async def op(conn: WriteConnection) -> None:
            await conn.execute(
                "UPDATE handoffs SET state = 'failed', claimed_at = NULL, updated_at = ?,"
                " last_error = ?, last_status = ?, last_response = ?"
                " WHERE id = ? AND state = 'pending'",
                (now, error, status, clip(response), handoff_id),
            )

        await self._write(op)

    async def handoff_counts(self) -> dict[str, int]:
        rows = await self._all("SELECT state, COUNT(*) FROM handoffs GROUP BY state")
        counts = {"pending": 0, "delivered": 0, "failed": 0}
        counts.update({str(r[0]): int(r[1]) for r in rows})
        return counts

    async def next_handoff_due(self, backends: Sequence[str]) -> float | None:
        names = tuple(backends)
        if not names:
            return None
        marks = ",".join("?" * len(names))
        row = await self._one(
            "SELECT MIN(next_attempt_at) FROM handoffs WHERE state = 'pending'"
            f" AND backend IN ({marks})",
            names,
        )
        return float(row[0]) if row and row[0] is not None else None

    # ------------------------------------------------------------------ operators' side

    async def list_handoffs(self, state: str | None = None, limit: int = 100) -> list[Handoff]:
        if state is None:
            rows = await self._all(
                f"SELECT {HANDOFF_COLUMNS} FROM handoffs ORDER BY created_at DESC, id LIMIT ?",
                (limit,),
            )
        else:
            rows = await self._all(
                f"SELECT {HANDOFF_COLUMNS} FROM handoffs WHERE state = ?"
                " ORDER BY created_at DESC, id LIMIT ?",
                (state, limit),
            )
        return [handoff_from_row(r) for r in rows]

    async def get_handoff(self, handoff_id: str) -> Handoff | None:
        """A row by its id, or by a prefix of at least 8 characters that only it has."""
        row = await self._one(f"SELECT {HANDOFF_COLUMNS} FROM handoffs WHERE id = ?", (handoff_id,))
        if row is not None:
            return handoff_from_row(row)
        if len(handoff_id) < 8 or any(ch in handoff_id for ch in "%_"):
            return None
        rows = await self._all(
            f"SELECT {HANDOFF_COLUMNS} FROM handoffs WHERE id LIKE ? LIMIT 2", (handoff_id + "%",)
        )
        return handoff_from_row(rows[0]) if len(rows) == 1 else None

    async def session_handoffs(self, session_id: str) -> list[Handoff]:
        rows = await self._all(
            f"SELECT {HANDOFF_COLUMNS} FROM handoffs WHERE session_id = ? ORDER BY backend",
            (session_id,),
        )
        return [handoff_from_row(r) for r in rows]

    async def retry_handoff(self, handoff_id: str, now: float) -> Handoff:
        """Make a failed (or waiting) row due now, with a fresh dead-letter horizon.
        NotFound when unknown, Conflict when already delivered."""

        async def op(conn: WriteConnection) -> Handoff:
            cur = await conn.execute("SELECT state FROM handoffs WHERE id = ?", (handoff_id,))
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"no handoff {handoff_id}")
            if row[0] == "delivered":
                raise Conflict("this handoff was delivered already")
            cur = await conn.execute(
                "UPDATE handoffs SET state = 'pending', next_attempt_at = ?, requeued_at = ?,"
                " updated_at = ? WHERE id = ? AND claimed_at IS NULL"
                f" RETURNING {HANDOFF_COLUMNS}",
                (now, now, now, handoff_id),
            )
            updated = await cur.fetchone()
            if updated is None:
                # In flight right now: its attempt decides; nothing to do.
                cur = await conn.execute(
                    f"SELECT {HANDOFF_COLUMNS} FROM handoffs WHERE id = ?", (handoff_id,)
                )
                updated = await cur.fetchone()
            assert updated is not None  # the row was read in this transaction
            return handoff_from_row(updated)

        return await self._write(op)

    async def retry_failed_handoffs(self, now: float) -> int:
        async def op(conn: WriteConnection) -> int:
            cur = await conn.execute(
                "UPDATE handoffs SET state = 'pending', next_attempt_at = ?, requeued_at = ?,"
                " updated_at = ? WHERE state = 'failed'",
                (now, now, now),
            )
            return int(cur.rowcount)

        return await self._write(op)

    # ------------------------------------------------------------------ sessions

    async def session_origin(self, session_id: str) -> str | None:
        row = await self._one("SELECT origin FROM sessions WHERE id = ?", (session_id,))
        return str(row[0]) if row else None

    async def create_offline_ticket(
        self,
        session: Session,
        resume_token_hash: str,
        messages: Sequence[NewMessage],
        handoff_backends: Sequence[str],
    ) -> list[Message]:
        """Store a ticket left without a chat: a closed session of origin 'offline', its
        messages and one outbox row per backend, in one transaction."""
        c = session.customer
        now = session.ended_at if session.ended_at is not None else session.created_at

        async def op(conn: WriteConnection) -> list[Message]:
            await conn.execute(
                "INSERT INTO sessions (id, state, topic, severity, customer_id, customer_name,"
                " customer_email, customer_account, customer_tier, created_at, arrival_seq,"
                " ended_at, ended_by, resume_token_hash, origin)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'offline')",
                (
                    session.id, session.state.value, session.topic, session.severity, c.id,
                    c.name, c.email, c.account, c.tier.value, session.created_at,
                    session.arrival_seq, session.ended_at, session.ended_by,
                    resume_token_hash,
                ),
            )
            stored = []
            for m in messages:
                msg, _ = await self._append(conn, m, require_open=False)
                stored.append(msg)
            for backend in handoff_backends:
                await conn.execute(
                    "INSERT INTO handoffs (id, session_id, backend, next_attempt_at,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (str(uuid.uuid4()), session.id, backend, now, now, now),
                )
            return stored

        return await self._write(op)
