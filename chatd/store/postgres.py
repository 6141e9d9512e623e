"""The PostgreSQL store: PostgresStore, its life cycle and migrations, sessions and
engineer accounts (docs/scaling.md).

Built on asyncpg with a connection pool. Writes go through the process's writer
(postgres_writer.py: group commit, appends); reads take a pooled connection of their own.
The outbox, attachment records and monitoring reads are in postgres_records.py. Every
invariant is the database's (docs/scaling.md#what-the-database-guarantees), so that several
processes can share one database.

Migrations are the versioned files of ``migrations_postgres/``, applied at start in one
transaction under a transaction-scoped advisory lock: processes starting together migrate
once, and the lock is released with the transaction (which stays correct behind a
transaction-pooling PgBouncer).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

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
from .postgres_customers import PostgresCustomers
from .postgres_lease import PostgresLease
from .postgres_read_marks import PostgresReadMarks
from .postgres_records import PostgresRecords, new_outbox
from .postgres_retention import PostgresRetention
from .postgres_upload_ids import PostgresUploadIds
from .postgres_writer import AppendOp, PostgresWriter, append_many
from .rows import (
    ACCOUNT_COLUMNS,
    MESSAGE_COLUMNS,
    SESSION_COLUMNS,
    SESSION_FROM,
    account_from_row,
    message_from_row,
    session_from_row,
)

if TYPE_CHECKING:

    from .postgres_writer import Conn

log = logging.getLogger(__name__)

# pg_advisory_xact_lock's key for migrations: any constant of chatd's own ("chatd" in ASCII).
MIGRATION_LOCK = 0x6368617464


def migrations() -> list[tuple[int, str]]:
    return list(versioned_sql("migrations_postgres"))


class PostgresStore(
    PostgresRecords, PostgresRetention, PostgresCustomers, PostgresUploadIds,
    PostgresReadMarks,
):
    """A Store on PostgreSQL 13 or later. ``dsn`` is a postgresql:// URL; ``pool_size`` the
    most connections this process opens (the writer uses one at a time)."""

    def __init__(self, dsn: str, *, pool_size: int = 10) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self._pool = None
        self._writer = PostgresWriter(self._the_pool)
        self._leases: list[PostgresLease] = []  # their connections end with the store
        self._version = 0

    @property
    def batches(self) -> int:
        """Commits so far, for tests and benchmarks."""
        return self._writer.batches

    # A second process on the same database stands by, and takes over when the lease
    # holder goes (docs/scaling.md#one-desk-per-database).
    standby_possible = True

    def desk_lease(
        self, node: str, seconds: float, on_lost: Callable[[], None]
    ) -> PostgresLease:
        lease = PostgresLease(self._the_pool, self._writer, node, seconds, on_lost, self.dsn)
        self._leases.append(lease)
        return lease

    @property
    def batched_ops(self) -> int:
        """Writes committed so far."""
        return self._writer.batched_ops

    # ------------------------------------------------------------------ life cycle

    async def open(self) -> None:
        import asyncpg

        self._pool = await asyncpg.create_pool(
            self.dsn,
            # No floor to keep: after a database restart the pool reconnects on demand,
            # instead of retrying (and logging a trace) in the background.
            min_size=0,
            max_size=self.pool_size,
            # Acknowledged means on disk: never let a role's or database's default turn
            # synchronous commit off under chatd.
            # Custom plans: a desk starts empty and grows, and a plan cached while a table
            # was small (a scan of all messages) would outlive its use.
            server_settings={
                "synchronous_commit": "on", "application_name": "chatd",
                "plan_cache_mode": "force_custom_plan",
            },
            command_timeout=60,
        )
        try:
            await self._migrate()
        except BaseException:
            await self._pool.close()
            self._pool = None
            raise
        self._writer.start()

    async def close(self) -> None:
        await self._writer.stop()
        for lease in self._leases:
            await lease.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def ready(self) -> bool:
        if self._pool is None or not self._writer.running:
            return False
        try:
            async with self._pool.acquire(timeout=2) as conn:
                version = await conn.fetchval(
                    "SELECT MAX(version) FROM schema_version", timeout=2
                )
        except Exception as exc:  # down or restarting: not ready, and say why in logs
            log.warning("readiness check failed: %s", exc)
            return False
        return version is not None and int(version) == migrations()[-1][0]

    async def _migrate(self) -> None:
        assert self._pool is not None
        known = migrations()
        async with self._pool.acquire() as conn, conn.transaction():
            # Processes starting together wait here; the lock ends with the transaction.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
            )
            current = int(await conn.fetchval(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version"
            ))
            if current > known[-1][0]:
                raise RuntimeError(
                    f"the database's schema (version {current}) is newer than this chatd"
                    f" knows (version {known[-1][0]}): run the newer chatd"
                )
            for version, sql in known:
                if version <= current:
                    continue
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_version VALUES ($1)", version)
                log.info("database migrated to version %d", version)
                current = version
        self._version = current

    # ------------------------------------------------------------------ messages

    async def append_message(self, message: NewMessage) -> tuple[Message, bool]:
        result: tuple[Message, bool] = await self._writer.write(AppendOp(message))
        return result

    async def messages_after(self, session_id: str, after_seq: int, limit: int) -> list[Message]:

        rows = await self._all(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 AND seq > $2"
            " ORDER BY seq LIMIT $3",
            session_id, after_seq, limit,
        )
        return [message_from_row(r) for r in rows]

    # ------------------------------------------------------------------ engineers

    async def add_engineer(self, account: EngineerAccount) -> None:
        import asyncpg

        e = account.engineer

        async def op(conn: Conn) -> None:
            try:
                await conn.execute(
                    f"INSERT INTO engineers ({ACCOUNT_COLUMNS})"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    e.id, e.email, e.name, e.role.value, account.password_hash,
                    account.disabled, account.created_at,
                )
            except asyncpg.UniqueViolationError:
                raise Conflict(f"an engineer with email {e.email} exists already") from None

        await self._write(op)

    async def engineer_account(self, email: str) -> EngineerAccount | None:
        row = await self._one(
            f"SELECT {ACCOUNT_COLUMNS} FROM engineers WHERE lower(email) = lower($1)", email
        )
        return account_from_row(row) if row else None

    async def list_engineers(self) -> list[EngineerAccount]:
        rows = await self._all(f"SELECT {ACCOUNT_COLUMNS} FROM engineers ORDER BY email")
        return [account_from_row(r) for r in rows]

    async def set_engineer_disabled(self, email: str, disabled: bool) -> bool:
        async def op(conn: Conn) -> bool:
            engineer_id = await conn.fetchval(
                "UPDATE engineers SET disabled = $1 WHERE lower(email) = lower($2) RETURNING id",
                disabled, email,
            )
            if engineer_id is None:
                return False
            if disabled:
                await conn.execute(
                    "UPDATE engineer_tokens SET revoked_at = extract(epoch FROM now())"
                    " WHERE engineer_id = $1 AND revoked_at IS NULL",
                    engineer_id,
                )
            return True

        return await self._write(op)

    async def add_token(
        self, token_hash: str, engineer_id: str, created_at: float, expires_at: float
    ) -> None:
        async def op(conn: Conn) -> None:
            await conn.execute(
                "DELETE FROM engineer_tokens WHERE expires_at < $1", created_at - 86_400
            )
            await conn.execute(
                "INSERT INTO engineer_tokens (token_hash, engineer_id, created_at, expires_at)"
                " VALUES ($1, $2, $3, $4)",
                token_hash, engineer_id, created_at, expires_at,
            )

        await self._write(op)

    async def engineer_for_token(self, token_hash: str, now: float) -> Engineer | None:
        row = await self._one(
            "SELECT e.id, e.email, e.name, e.role FROM engineer_tokens t"
            " JOIN engineers e ON e.id = t.engineer_id"
            " WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND t.expires_at > $2"
            " AND NOT e.disabled",
            token_hash, now,
        )
        if row is None:
            return None
        return Engineer(id=row[0], email=row[1], name=row[2], role=Role(row[3]))

    async def revoke_token(self, token_hash: str) -> None:
        async def op(conn: Conn) -> None:
            await conn.execute(
                "UPDATE engineer_tokens SET revoked_at = extract(epoch FROM now())"
                " WHERE token_hash = $1 AND revoked_at IS NULL",
                token_hash,
            )

        await self._write(op)

    async def live_tokens(self, token_hashes: Iterable[str], now: float) -> set[str]:
        rows = await self._all(
            "SELECT t.token_hash FROM engineer_tokens t JOIN engineers e"
            " ON e.id = t.engineer_id WHERE t.token_hash = ANY($1::text[])"
            " AND t.revoked_at IS NULL AND t.expires_at > $2 AND NOT e.disabled",
            list(set(token_hashes)), now,
        )
        return {r[0] for r in rows}

    # ------------------------------------------------------------------ sessions

    async def create_session(
        self, session: Session, resume_token_hash: str, first: NewMessage | None
    ) -> Message | None:
        import asyncpg

        c = session.customer

        async def op(conn: Conn) -> Message | None:
            try:
                await conn.execute(
                    "INSERT INTO sessions (id, state, topic, severity, customer_id,"
                    " customer_name, customer_email, customer_account, customer_tier,"
                    " created_at, arrival_seq, resume_token_hash, request_id)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                    session.id, session.state.value, session.topic, session.severity, c.id,
                    c.name, c.email, c.account, c.tier.value, session.created_at,
                    session.arrival_seq, resume_token_hash, session.request_id,
                )
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name == "sessions_one_open_per_customer":
                    raise Conflict(
                        "you already have an open chat; resume it or end it first"
                    ) from None
                raise Conflict("this session exists already") from None
            if first is None:
                return None
            return _stored(await append_many(conn, [first]))

        return await self._write(op)

    async def next_arrival_seq(self) -> int:
        row = await self._one("SELECT COALESCE(MAX(arrival_seq), 0) FROM sessions")
        return int(row[0])

    async def save_session_state(self, session: Session) -> None:
        async def op(conn: Conn) -> None:
            await conn.execute(
                "UPDATE sessions SET state = $1, engineer_id = $2, assigned_at = $3"
                " WHERE id = $4 AND state IN ('waiting', 'offered', 'active')",
                session.state.value,
                session.engineer.id if session.engineer else None,
                session.assigned_at,
                session.id,
            )

        await self._write(op)

    async def assign_session(
        self, session: Session, expected_states: Sequence[str], message: NewMessage | None
    ) -> Message | None:
        assert session.engineer is not None
        states = list(expected_states)
        engineer_id = session.engineer.id

        async def op(conn: Conn) -> Message | None:
            # The conditional update is the exactly-once accept: of two racing accepts,
            # whichever process they run in, one finds the state already changed.
            status = await conn.execute(
                "UPDATE sessions SET state = 'active', engineer_id = $1, assigned_at = $2,"
                " first_assigned_at = COALESCE(first_assigned_at, $2)"
                " WHERE id = $3 AND state = ANY($4::text[])",
                engineer_id, session.assigned_at, session.id, states,
            )
            if status != "UPDATE 1":
                raise Conflict("the session was assigned or closed meanwhile")
            if message is None:
                return None
            return _stored(await append_many(conn, [message]))

        return await self._write(op)

    async def end_session(
        self, session: Session, message: NewMessage, handoff_backends: Sequence[str]
    ) -> Message:
        async def op(conn: Conn) -> Message:
            status = await conn.execute(
                "UPDATE sessions SET state = $1, ended_at = $2, ended_by = $3, end_reason = $4,"
                " resolution = $5 WHERE id = $6 AND state IN ('waiting', 'offered', 'active')",
                session.state.value,
                session.ended_at,
                session.ended_by,
                session.end_reason.value if session.end_reason else None,
                session.resolution,
                session.id,
            )
            if status != "UPDATE 1":
                raise SessionClosed("the session has ended")
            msg = _stored(await append_many(conn, [message], require_open=False))
            await new_outbox(
                conn, session.id, handoff_backends, session.ended_at or message.ts
            )
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
        row = await self._one(
            f"SELECT {SESSION_COLUMNS} {SESSION_FROM} WHERE s.id = $1", session_id
        )
        return session_from_row(row) if row else None

    async def set_resume_token_hash(self, session_id: str, resume_token_hash: str) -> bool:
        async def op(conn: Conn) -> bool:
            status = await conn.execute(
                "UPDATE sessions SET resume_token_hash = $1 WHERE id = $2"
                " AND state IN ('waiting', 'offered', 'active')",
                resume_token_hash, session_id,
            )
            return bool(status == "UPDATE 1")

        return await self._write(op)

    async def resume_token_hash(self, session_id: str) -> str | None:
        row = await self._one(
            "SELECT resume_token_hash FROM sessions WHERE id = $1", session_id
        )
        return str(row[0]) if row else None

    async def recent_handle_times(self, since: float, limit: int) -> list[float]:
        rows = await self._all(
            "SELECT ended_at - assigned_at FROM sessions WHERE state = 'ended'"
            " AND assigned_at IS NOT NULL AND ended_at >= $1 ORDER BY ended_at DESC LIMIT $2",
            since, limit,
        )
        return [float(r[0]) for r in rows]


def _stored(results: list[Any]) -> Message:
    """The one message of an append inside a write, or its error raised."""
    (result,) = results
    if isinstance(result, BaseException):
        raise result
    message: Message = result[0]
    return message
