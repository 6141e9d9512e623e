"""What the PostgreSQL store stands on (its pool, writer and reads), and its records other
than sessions and accounts: the handoff outbox, attachment records and monitoring reads
(docs/handoff.md, docs/attachments.md, docs/monitoring.md).

Handoff claims are leases: a claim counts the attempt and pushes ``next_attempt_at`` past
the lease, on rows taken with ``FOR UPDATE SKIP LOCKED``, so two processes never take the
same row and neither waits for the other. A row whose process died mid-delivery is due
again when its lease runs out; nothing releases every claim at start, since another
process may be delivering.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..core.errors import Conflict, NotFound, Unavailable
from ..core.models import Message, NewMessage, Session
from ..core.ports import AttachmentRecord
from ..core.stats import SessionOutcome
from ..core.transcript import Handoff
from .postgres_writer import PostgresWriter, append_many, as_unavailable
from .rows import (
    ATTACHMENT_COLUMNS,
    HANDOFF_COLUMNS,
    OUTCOME_COLUMNS,
    SESSION_FROM,
    attachment_from_row,
    attachment_values,
    check_attachment_room,
    clip,
    handoff_from_row,
    outcome_from_row,
    status_banner_from_row,
)

if TYPE_CHECKING:
    import asyncpg

    from .postgres_writer import Conn

T = TypeVar("T")

_H_COLUMNS = ", ".join("h." + c.strip() for c in HANDOFF_COLUMNS.split(","))


async def new_outbox(
    conn: Conn, session_id: str, backends: Sequence[str], now: float
) -> None:
    """One pending outbox row per backend, in the caller's transaction."""
    if backends:
        await conn.executemany(
            "INSERT INTO handoffs (id, session_id, backend, next_attempt_at, created_at,"
            " updated_at) VALUES ($1, $2, $3, $4, $4, $4)",
            [(str(uuid.uuid4()), session_id, b, now) for b in backends],
        )


class PostgresBase:
    """The pool, the writer, and the ways the parts of the store use them."""

    _pool: asyncpg.Pool[Any] | None
    _writer: PostgresWriter

    def _the_pool(self) -> asyncpg.Pool[Any]:
        if self._pool is None:
            raise Unavailable("the store is closed; try again")
        return self._pool

    async def _write(self, op: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``op`` in the writer's next transaction; its result once committed."""
        result: T = await self._writer.write(op)
        return result

    async def _read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        if self._pool is None:
            raise Unavailable("the store is closed; try again")
        try:
            async with self._pool.acquire() as conn:
                return await fn(conn)
        except Exception as exc:
            err = as_unavailable(exc)
            if err is exc:
                raise
            raise err from exc

    async def _all(self, sql: str, *args: Any) -> list[Any]:
        return list(await self._read(lambda c: c.fetch(sql, *args)))

    async def _one(self, sql: str, *args: Any) -> Any:
        return await self._read(lambda c: c.fetchrow(sql, *args))


class PostgresRecords(PostgresBase):
    """The outbox, attachment records and monitoring reads."""

    # ------------------------------------------------------------------ the worker's side

    async def claim_handoffs(
        self, now: float, limit: int, lease: float, backends: Sequence[str]
    ) -> list[Handoff]:
        names = list(backends)
        if not names or limit <= 0:
            return []

        async def op(conn: Conn) -> list[Handoff]:
            rows = await conn.fetch(
                "WITH due AS (SELECT id, next_attempt_at FROM handoffs WHERE state = 'pending'"
                "  AND next_attempt_at <= $1 AND backend = ANY($3::text[])"
                "  ORDER BY next_attempt_at, created_at LIMIT $4 FOR UPDATE SKIP LOCKED)"
                " UPDATE handoffs h SET attempts = h.attempts + 1, claimed_at = $1,"
                " next_attempt_at = $2, updated_at = $1 FROM due WHERE h.id = due.id"
                f" RETURNING {_H_COLUMNS}, due.next_attempt_at",
                now, now + lease, names, limit,
            )
            # Earliest due first, as they were taken.
            rows.sort(key=lambda r: (r[-1], r[6], r[0]))
            return [handoff_from_row(r) for r in rows]

        return await self._write(op)

    async def release_handoff_claims(self, now: float) -> int:
        """Release the claims whose lease has run out (their process died mid-delivery).
        Live claims stay: with a shared database, another process may hold them."""

        async def op(conn: Conn) -> int:
            status = await conn.execute(
                "UPDATE handoffs SET claimed_at = NULL, updated_at = $1"
                " WHERE state = 'pending' AND claimed_at IS NOT NULL AND next_attempt_at <= $1",
                now,
            )
            return int(status.split()[-1])

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
        ticket_json = json.dumps(ticket, separators=(",", ":")) if ticket else None

        async def op(conn: Conn) -> bool:
            session_id = await conn.fetchval(
                "UPDATE handoffs SET state = 'delivered', claimed_at = NULL, delivered_at = $1,"
                " updated_at = $1, result = $2, ticket = $3, last_status = $4,"
                " last_response = $5, last_error = NULL WHERE id = $6 AND state = 'pending'"
                " RETURNING session_id",
                now, result, ticket_json, status, clip(response), handoff_id,
            )
            if session_id is None or ticket_json is None:
                return False
            done = await conn.execute(
                "UPDATE sessions SET ticket = $1 WHERE id = $2 AND ticket IS NULL",
                ticket_json, session_id,
            )
            return bool(done == "UPDATE 1")

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
        async def op(conn: Conn) -> None:
            await conn.execute(
                "UPDATE handoffs SET claimed_at = NULL, next_attempt_at = $1, updated_at = $2,"
                " last_error = $3, last_status = $4, last_response = $5"
                " WHERE id = $6 AND state = 'pending'",
                next_attempt_at, now, error, status, clip(response), handoff_id,
            )

        await self._write(op)

    async def handoff_failed(
        self, handoff_id: str, now: float, error: str, status: int | None, response: str | None
    ) -> None:
        async def op(conn: Conn) -> None:
            await conn.execute(
                "UPDATE handoffs SET state = 'failed', claimed_at = NULL, updated_at = $1,"
                " last_error = $2, last_status = $3, last_response = $4"
                " WHERE id = $5 AND state = 'pending'",
                now, error, status, clip(response), handoff_id,
            )

        await self._write(op)

    async def handoff_counts(self) -> dict[str, int]:
        rows = await self._all("SELECT state, COUNT(*) FROM handoffs GROUP BY state")
        counts = {"pending": 0, "delivered": 0, "failed": 0}
        counts.update({str(r[0]): int(r[1]) for r in rows})
        return counts

    async def next_handoff_due(self, backends: Sequence[str]) -> float | None:
        if not backends:
            return None
        row = await self._one(
            "SELECT MIN(next_attempt_at) FROM handoffs WHERE state = 'pending'"
            " AND backend = ANY($1::text[])",
            list(backends),
        )
        return float(row[0]) if row and row[0] is not None else None

    # ------------------------------------------------------------------ operators' side

    async def list_handoffs(self, state: str | None = None, limit: int = 100) -> list[Handoff]:
        rows = await self._all(
            f"SELECT {HANDOFF_COLUMNS} FROM handoffs WHERE $1::text IS NULL OR state = $1"
            " ORDER BY created_at DESC, id LIMIT $2",
            state, limit,
        )
        return [handoff_from_row(r) for r in rows]

    async def get_handoff(self, handoff_id: str) -> Handoff | None:
        row = await self._one(f"SELECT {HANDOFF_COLUMNS} FROM handoffs WHERE id = $1",
                              handoff_id)
        if row is not None:
            return handoff_from_row(row)
        if len(handoff_id) < 8 or any(ch in handoff_id for ch in "%_\\"):
            return None
        rows = await self._all(
            f"SELECT {HANDOFF_COLUMNS} FROM handoffs WHERE id LIKE $1 LIMIT 2",
            handoff_id + "%",
        )
        return handoff_from_row(rows[0]) if len(rows) == 1 else None

    async def session_handoffs(self, session_id: str) -> list[Handoff]:
        rows = await self._all(
            f"SELECT {HANDOFF_COLUMNS} FROM handoffs WHERE session_id = $1 ORDER BY backend",
            session_id,
        )
        return [handoff_from_row(r) for r in rows]

    async def retry_handoff(self, handoff_id: str, now: float) -> Handoff:
        async def op(conn: Conn) -> Handoff:
            state = await conn.fetchval(
                "SELECT state FROM handoffs WHERE id = $1 FOR UPDATE", handoff_id
            )
            if state is None:
                raise NotFound(f"no handoff {handoff_id}")
            if state == "delivered":
                raise Conflict("this handoff was delivered already")
            row = await conn.fetchrow(
                "UPDATE handoffs SET state = 'pending', next_attempt_at = $1, requeued_at = $1,"
                " updated_at = $1 WHERE id = $2 AND claimed_at IS NULL"
                f" RETURNING {HANDOFF_COLUMNS}",
                now, handoff_id,
            )
            if row is None:  # in flight right now: its attempt decides
                row = await conn.fetchrow(
                    f"SELECT {HANDOFF_COLUMNS} FROM handoffs WHERE id = $1", handoff_id
                )
            assert row is not None  # locked in this transaction
            return handoff_from_row(row)

        return await self._write(op)

    async def retry_failed_handoffs(self, now: float) -> int:
        async def op(conn: Conn) -> int:
            status = await conn.execute(
                "UPDATE handoffs SET state = 'pending', next_attempt_at = $1, requeued_at = $1,"
                " updated_at = $1 WHERE state = 'failed'",
                now,
            )
            return int(status.split()[-1])

        return await self._write(op)

    async def session_origin(self, session_id: str) -> str | None:
        row = await self._one("SELECT origin FROM sessions WHERE id = $1", session_id)
        return str(row[0]) if row else None

    async def create_offline_ticket(
        self,
        session: Session,
        resume_token_hash: str,
        messages: Sequence[NewMessage],
        handoff_backends: Sequence[str],
    ) -> list[Message]:
        c = session.customer
        now = session.ended_at if session.ended_at is not None else session.created_at

        async def op(conn: Conn) -> list[Message]:
            await conn.execute(
                "INSERT INTO sessions (id, state, topic, severity, customer_id, customer_name,"
                " customer_email, customer_account, customer_tier, created_at, arrival_seq,"
                " ended_at, ended_by, resume_token_hash, origin)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,"
                " 'offline')",
                session.id, session.state.value, session.topic, session.severity, c.id,
                c.name, c.email, c.account, c.tier.value, session.created_at,
                session.arrival_seq, session.ended_at, session.ended_by, resume_token_hash,
            )
            stored = []
            for result in await append_many(conn, list(messages), require_open=False):
                if isinstance(result, BaseException):
                    raise result
                stored.append(result[0])
            await new_outbox(conn, session.id, handoff_backends, now)
            return stored

        return await self._write(op)

    # ------------------------------------------------------------------ attachments

    async def add_attachment(
        self, attachment: AttachmentRecord, max_count: int, max_bytes: int
    ) -> None:
        a = attachment

        async def op(conn: Conn) -> None:
            # The chat's row lock orders uploads of one chat, whichever process takes them,
            # so that two cannot pass its limits together.
            state = await conn.fetchval(
                "SELECT state FROM sessions WHERE id = $1 FOR UPDATE", a.session_id
            )
            usage = await conn.fetchrow(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM attachments WHERE session_id = $1",
                a.session_id,
            )
            check_attachment_room(state, usage, a.size, max_count, max_bytes)
            await conn.execute(
                f"INSERT INTO attachments ({ATTACHMENT_COLUMNS}) VALUES"
                " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                *attachment_values(a),
            )

        await self._write(op)

    async def get_attachment(self, attachment_id: str) -> AttachmentRecord | None:
        row = await self._one(
            f"SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE id = $1", attachment_id
        )
        return attachment_from_row(row) if row else None

    async def session_attachments(self, session_id: str) -> list[AttachmentRecord]:
        rows = await self._all(
            f"SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE session_id = $1"
            " ORDER BY created_at, id",
            session_id,
        )
        return [attachment_from_row(r) for r in rows]

    async def session_attachment_usage(self, session_id: str) -> tuple[int, int]:
        row = await self._one(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM attachments WHERE session_id = $1",
            session_id,
        )
        return (int(row[0]), int(row[1])) if row else (0, 0)

    async def delete_attachment(self, attachment_id: str) -> None:
        async def op(conn: Conn) -> None:
            await conn.execute("DELETE FROM attachments WHERE id = $1", attachment_id)

        await self._write(op)

    # ------------------------------------------------------------------ monitoring

    async def session_outcomes(self, since: float) -> list[SessionOutcome]:
        rows = await self._all(
            f"SELECT {OUTCOME_COLUMNS} {SESSION_FROM}"
            " WHERE s.origin = 'chat' AND (s.first_assigned_at >= $1 OR s.ended_at >= $1)",
            since,
        )
        return [outcome_from_row(r) for r in rows]

    async def status_banner(self) -> dict[str, Any] | None:
        row = await self._one(
            "SELECT text, link, updated_at, updated_by FROM status_banner WHERE id = 1"
        )
        return status_banner_from_row(row)

    async def set_status_banner(
        self, text: str | None, link: str | None, now: float, by: str | None
    ) -> None:
        async def op(conn: Conn) -> None:
            if text is None:
                await conn.execute("DELETE FROM status_banner")
                return
            await conn.execute(
                "INSERT INTO status_banner (id, text, link, updated_at, updated_by)"
                " VALUES (1, $1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET text = excluded.text,"
                " link = excluded.link, updated_at = excluded.updated_at,"
                " updated_by = excluded.updated_by",
                text, link, now, by,
            )

        await self._write(op)

    async def save_engineer_status(
        self, engineer_id: str, status: str, capacity: int, now: float
    ) -> None:
        async def op(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO engineer_status (engineer_id, status, capacity, updated_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (engineer_id) DO UPDATE SET"
                " status = excluded.status, capacity = excluded.capacity,"
                " updated_at = excluded.updated_at",
                engineer_id, status, capacity, now,
            )

        await self._write(op)

    async def engineer_statuses(self) -> dict[str, tuple[str, int]]:
        async def read(conn: Conn) -> dict[str, tuple[str, int]]:
            rows = await conn.fetch("SELECT engineer_id, status, capacity FROM engineer_status")
            return {str(r[0]): (str(r[1]), int(r[2])) for r in rows}

        return await self._read(read)
