"""The SQLite store: SQLiteStore, and its sessions and engineer accounts
(docs/design.md#storage).

SQLiteStore is the default Store. It is made of parts that share one writer and one reader
(sqlite_base.py): the single writer with group commit (sqlite_writer.py), messages and
their appends (sqlite_messages.py), attachment records (sqlite_attachments.py), the handoff
outbox (sqlite_handoff.py) and monitoring reads (sqlite_stats.py). This module opens and
closes them, upgrades the schema (migrations/) and holds the sessions and accounts.
"""

from __future__ import annotations

import logging
import sqlite3 as sqlite3  # importable from here, as the two names below
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import aiosqlite

from ..core.errors import Conflict, SessionClosed
from ..core.models import (
    Engineer,
    EngineerAccount,
    Message,
    NewMessage,
    Role,
    Session,
)
from . import versioned_sql
from .rows import SESSION_COLUMNS, SESSION_FROM, account_from_row, session_from_row
from .sqlite_attachments import SQLiteAttachments
from .sqlite_customers import SQLiteCustomers
from .sqlite_handoff import SQLiteHandoffs
from .sqlite_lease import FileLease, file_lease
from .sqlite_messages import OPEN, MessageLog, SQLiteMessages
from .sqlite_read_marks import SQLiteReadMarks
from .sqlite_retention import SQLiteRetention
from .sqlite_stats import SQLiteStats
from .sqlite_upload_ids import SQLiteUploadIds
from .sqlite_writer import SQLiteWriter, WriteConnection

# Importable from here as before the writer had a module of its own (tests use them).
from .sqlite_writer import SyncOp as SyncOp
from .sqlite_writer import _rollback_sync as _rollback_sync

log = logging.getLogger(__name__)


def migrations() -> list[tuple[int, str]]:
    return list(versioned_sql("migrations"))


class SQLiteStore(
    SQLiteMessages, SQLiteAttachments, SQLiteHandoffs, SQLiteStats, SQLiteCustomers,
    SQLiteUploadIds, SQLiteRetention, SQLiteReadMarks,
):
    """The default store. ``path`` is a file, or ``:memory:`` is refused (a reader and a
    writer must share the database)."""

    # One process per database file: a second one refuses to start.
    standby_possible = False

    def desk_lease(self, node: str, seconds: float, on_lost: Callable[[], None]) -> FileLease:
        del seconds
        return file_lease(self.path, node, on_lost)

    def __init__(self, path: str | Path, *, synchronous: str = "full") -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self._messages = MessageLog()
        self._writer = SQLiteWriter(
            self.path, synchronous=synchronous, on_rollback=self._messages.forget_all
        )
        self._reader = None
        self._version = 0

    @property
    def batches(self) -> int:
        """Commits so far, for tests and benchmarks."""
        return self._writer.batches

    @property
    def batched_ops(self) -> int:
        """Writes committed so far."""
        return self._writer.batched_ops

    # ------------------------------------------------------------------ life cycle

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await self._migrate(await self._writer.open())
        self._reader = await aiosqlite.connect(self.path, isolation_level=None)
        await self._reader.execute("PRAGMA busy_timeout=5000")
        await self._reader.execute("PRAGMA query_only=ON")
        self._writer.start()

    async def close(self) -> None:
        # Writes queued before are answered; then the reader, and last the writer, close.
        await self._writer.stop()
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.close()
        await self._writer.close()

    async def ready(self) -> bool:
        try:
            version = await self._one("SELECT MAX(version) FROM schema_version")
        except Exception:  # the database is gone or locked: not ready, and say why in logs
            log.exception("readiness check failed")
            return False
        latest = migrations()[-1][0]
        return version is not None and version[0] == latest and self._writer.running

    async def _migrate(self, conn: WriteConnection) -> None:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
        )
        row = await (await conn.execute("SELECT MAX(version) FROM schema_version")).fetchone()
        current = (row[0] if row else None) or 0
        for version, sql in migrations():
            if version <= current:
                continue
            await conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _split_sql(sql):
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
                await conn.execute("COMMIT")
            except Exception:
                await conn.execute("ROLLBACK")
                raise
            log.info("database migrated to version %d", version)
            current = version
        self._version = current

    # ------------------------------------------------------------------ engineers

    async def add_engineer(self, account: EngineerAccount) -> None:
        e = account.engineer

        async def op(conn: WriteConnection) -> None:
            cur = await conn.execute("SELECT 1 FROM engineers WHERE email = ?", (e.email,))
            if await cur.fetchone():
                raise Conflict(f"an engineer with email {e.email} exists already")
            await conn.execute(
                "INSERT INTO engineers (id, email, name, role, password_hash, disabled,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    e.id, e.email, e.name, e.role.value, account.password_hash,
                    int(account.disabled), account.created_at,
                ),
            )

        await self._write(op)

    async def engineer_account(self, email: str) -> EngineerAccount | None:
        row = await self._one(
            "SELECT id, email, name, role, password_hash, disabled, created_at"
            " FROM engineers WHERE email = ?",
            (email,),
        )
        return account_from_row(row) if row else None

    async def list_engineers(self) -> list[EngineerAccount]:
        rows = await self._all(
            "SELECT id, email, name, role, password_hash, disabled, created_at"
            " FROM engineers ORDER BY email"
        )
        return [account_from_row(r) for r in rows]

    async def set_engineer_disabled(self, email: str, disabled: bool) -> bool:
        async def op(conn: WriteConnection) -> bool:
            cur = await conn.execute(
                "UPDATE engineers SET disabled = ? WHERE email = ? RETURNING id",
                (int(disabled), email),
            )
            row = await cur.fetchone()
            if row is None:
                return False
            if disabled:
                await conn.execute(
                    "UPDATE engineer_tokens SET revoked_at = strftime('%s', 'now')"
                    " WHERE engineer_id = ? AND revoked_at IS NULL",
                    (row[0],),
                )
            return True

        return await self._write(op)

    async def add_token(
        self, token_hash: str, engineer_id: str, created_at: float, expires_at: float
    ) -> None:
        async def op(conn: WriteConnection) -> None:
            await conn.execute(
                "DELETE FROM engineer_tokens WHERE expires_at < ?", (created_at - 86_400,)
            )
            await conn.execute(
                "INSERT INTO engineer_tokens (token_hash, engineer_id, created_at, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (token_hash, engineer_id, created_at, expires_at),
            )

        await self._write(op)

    async def engineer_for_token(self, token_hash: str, now: float) -> Engineer | None:
        row = await self._one(
            "SELECT e.id, e.email, e.name, e.role FROM engineer_tokens t"
            " JOIN engineers e ON e.id = t.engineer_id"
            " WHERE t.token_hash = ? AND t.revoked_at IS NULL AND t.expires_at > ?"
            " AND e.disabled = 0",
            (token_hash, now),
        )
        if row is None:
            return None
        return Engineer(id=row[0], email=row[1], name=row[2], role=Role(row[3]))

    async def revoke_token(self, token_hash: str) -> None:
        async def op(conn: WriteConnection) -> None:
            await conn.execute(
                "UPDATE engineer_tokens SET revoked_at = strftime('%s', 'now')"
                " WHERE token_hash = ? AND revoked_at IS NULL",
                (token_hash,),
            )

        await self._write(op)

    async def live_tokens(self, token_hashes: Iterable[str], now: float) -> set[str]:
        hashes = list(set(token_hashes))
        live: set[str] = set()
        for i in range(0, len(hashes), 500):
            chunk = hashes[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = await self._all(
                "SELECT t.token_hash FROM engineer_tokens t"
                " JOIN engineers e ON e.id = t.engineer_id"
                f" WHERE t.token_hash IN ({marks}) AND t.revoked_at IS NULL"
                " AND t.expires_at > ? AND e.disabled = 0",
                (*chunk, now),
            )
            live.update(r[0] for r in rows)
        return live

    # ------------------------------------------------------------------ sessions

    async def create_session(
        self, session: Session, resume_token_hash: str, first: NewMessage | None
    ) -> Message | None:
        c = session.customer
        row = (
            session.id, session.state.value, session.topic, session.severity,
            c.id, c.name, c.email, c.account, c.tier.value, session.created_at,
            session.arrival_seq, resume_token_hash, session.request_id,
        )

        def insert(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO sessions (id, state, topic, severity, customer_id,"
                    " customer_name, customer_email, customer_account, customer_tier,"
                    " created_at, arrival_seq, resume_token_hash, request_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
            except sqlite3.IntegrityError as exc:
                if "customer_id" in str(exc):
                    raise Conflict(
                        "you already have an open chat; resume it or end it first"
                    ) from None
                raise Conflict("this session exists already") from None
            self._messages.session_created(session.id)

        if first is None:
            # A plain function of the connection: the database thread runs a surge of
            # these in one batch by itself, without a hop to and from the event loop each.
            await self._write(SyncOp(insert))
            return None

        async def op(conn: WriteConnection) -> Message | None:
            await conn.run(insert)
            msg, _ = await self._append(conn, first)
            return msg

        return await self._write(op)

    async def next_arrival_seq(self) -> int:
        row = await self._one("SELECT COALESCE(MAX(arrival_seq), 0) FROM sessions")
        return int(row[0])

    async def save_session_state(self, session: Session) -> None:
        async def op(conn: WriteConnection) -> None:
            await conn.execute(
                "UPDATE sessions SET state = ?, engineer_id = ?, assigned_at = ?"
                " WHERE id = ? AND state IN ('waiting', 'offered', 'active')",
                (
                    session.state.value,
                    session.engineer.id if session.engineer else None,
                    session.assigned_at,
                    session.id,
                ),
            )
            if session.state.value not in OPEN:  # the writer's caches hold open sessions only
                self._messages.forget_session(session.id)

        await self._write(op)

    async def assign_session(
        self, session: Session, expected_states: Sequence[str], message: NewMessage | None
    ) -> Message | None:
        assert session.engineer is not None
        states = tuple(expected_states)
        marks = ",".join("?" * len(states))
        engineer_id = session.engineer.id

        async def op(conn: WriteConnection) -> Message | None:
            cur = await conn.execute(
                "UPDATE sessions SET state = 'active', engineer_id = ?, assigned_at = ?,"
                " first_assigned_at = COALESCE(first_assigned_at, ?)"
                f" WHERE id = ? AND state IN ({marks})",
                (engineer_id, session.assigned_at, session.assigned_at, session.id, *states),
            )
            if cur.rowcount != 1:
                raise Conflict("the session was assigned or closed meanwhile")
            if message is None:
                return None
            msg, _ = await self._append(conn, message)
            return msg

        return await self._write(op)

    async def end_session(
        self, session: Session, message: NewMessage, handoff_backends: Sequence[str]
    ) -> Message:
        async def op(conn: WriteConnection) -> Message:
            cur = await conn.execute(
                "UPDATE sessions SET state = ?, ended_at = ?, ended_by = ?, end_reason = ?,"
                " resolution = ? WHERE id = ? AND state IN ('waiting', 'offered', 'active')",
                (
                    session.state.value,
                    session.ended_at,
                    session.ended_by,
                    session.end_reason.value if session.end_reason else None,
                    session.resolution,
                    session.id,
                ),
            )
            if cur.rowcount != 1:
                raise SessionClosed("the session has ended")
            msg, _ = await self._append(conn, message, require_open=False)
            now = session.ended_at or message.ts
            for backend in handoff_backends:
                await conn.execute(
                    "INSERT INTO handoffs (id, session_id, backend, next_attempt_at,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (str(uuid.uuid4()), session.id, backend, now, now, now),
                )
            self._messages.forget_session(session.id)
            return msg

        return await self._write(op)

    async def open_sessions(self) -> list[Session]:
        rows = await self._all(
            f"SELECT {SESSION_COLUMNS} {SESSION_FROM}"
            " WHERE s.state IN ('waiting', 'offered', 'active')"
            " ORDER BY s.created_at, s.arrival_seq"
        )
        return [session_from_row(r) for r in rows]

    async def get_session(self, session_id: str) -> Session | None:
        row = await self._one(f"SELECT {SESSION_COLUMNS} {SESSION_FROM} WHERE s.id = ?",
                              (session_id,))
        return session_from_row(row) if row else None

    async def set_resume_token_hash(self, session_id: str, resume_token_hash: str) -> bool:
        async def op(conn: WriteConnection) -> bool:
            cur = await conn.execute(
                "UPDATE sessions SET resume_token_hash = ? WHERE id = ?"
                " AND state IN ('waiting', 'offered', 'active')",
                (resume_token_hash, session_id),
            )
            return cur.rowcount == 1

        return await self._write(op)

    async def resume_token_hash(self, session_id: str) -> str | None:
        row = await self._one("SELECT resume_token_hash FROM sessions WHERE id = ?",
                              (session_id,))
        return str(row[0]) if row else None

    async def recent_handle_times(self, since: float, limit: int) -> list[float]:
        rows = await self._all(
            "SELECT ended_at - assigned_at FROM sessions WHERE state = 'ended'"
            " AND assigned_at IS NOT NULL AND ended_at >= ? ORDER BY ended_at DESC LIMIT ?",
            (since, limit),
        )
        return [float(r[0]) for r in rows]


def _split_sql(script: str) -> list[str]:
    """Statements of a migration file (no semicolons inside literals in our migrations)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
