"""The SQLite store: one writer with group commit, one reader (docs/design.md#storage).

Every write is handed to the single writer. The writer drains all writes queued at that
moment into one transaction and commits once (message appends: one transaction per 64),
then answers each caller: many messages cost one fsync, and no caller hears "stored"
before the commit. Message appends are plain functions (SyncOp) that the database thread
commits batch after batch on its own; other writes are coroutines run by the writer task.

Write operations must raise a DeskError only *before* they change anything; any other
exception rolls the batch back and its operations are retried one transaction each, so
that one bad operation fails alone.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sqlite3
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from ..core.errors import Conflict, DeskError, SessionClosed
from ..core.models import (
    Customer,
    EndReason,
    Engineer,
    EngineerAccount,
    Message,
    MessageKind,
    NewMessage,
    Role,
    Sender,
    Session,
    SessionState,
    Tier,
)
from ..tasks import cancel_and_wait
from .sqlite_attachments import SQLiteAttachments
from .sqlite_handoff import SQLiteHandoffs
from .sqlite_stats import SQLiteStats

log = logging.getLogger(__name__)

T = TypeVar("T")
WriteOp = Callable[[aiosqlite.Connection], Awaitable[Any]]

OPEN = ("waiting", "offered", "active")
MAX_BATCH = 512

_SESSION_COLUMNS = """
    s.id, s.state, s.topic, s.severity, s.customer_id, s.customer_name, s.customer_email,
    s.customer_account, s.customer_tier, s.created_at, s.arrival_seq, s.engineer_id,
    s.assigned_at, s.first_assigned_at, s.ended_at, s.ended_by, s.end_reason, s.resolution,
    s.ticket, e.email, e.name, e.role, s.request_id
"""
_SESSION_FROM = "FROM sessions s LEFT JOIN engineers e ON e.id = s.engineer_id"
_MESSAGE_COLUMNS = """
    id, session_id, seq, ts, sender_role, sender_id, sender_name, kind, body, client_msg_id,
    attachment, event
"""


def migrations() -> list[tuple[int, str]]:
    folder = resources.files("chatd.store") / "migrations"
    out = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql"):
            out.append((int(name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(out)


def _session_from_row(r: Sequence[Any]) -> Session:
    engineer = None
    if r[11] is not None:
        engineer = Engineer(id=r[11], email=r[19], name=r[20], role=Role(r[21]))
    return Session(
        id=r[0],
        state=SessionState(r[1]),
        topic=r[2],
        severity=r[3],
        customer=Customer(id=r[4], name=r[5], email=r[6], account=r[7], tier=Tier(r[8])),
        created_at=r[9],
        arrival_seq=r[10],
        engineer=engineer,
        assigned_at=r[12],
        first_assigned_at=r[13],
        ended_at=r[14],
        ended_by=r[15],
        end_reason=EndReason(r[16]) if r[16] else None,
        resolution=r[17],
        ticket=json.loads(r[18]) if r[18] else None,
        request_id=r[22],
    )


def _message_from_row(r: Sequence[Any]) -> Message:
    return Message(
        id=r[0],
        session_id=r[1],
        seq=r[2],
        ts=r[3],
        sender=Sender(role=r[4], id=r[5], name=r[6]),
        kind=MessageKind(r[7]),
        body=r[8],
        client_msg_id=r[9],
        attachment=json.loads(r[10]) if r[10] else None,
        event=json.loads(r[11]) if r[11] else None,
    )


def _account_from_row(r: Sequence[Any]) -> EngineerAccount:
    return EngineerAccount(
        engineer=Engineer(id=r[0], email=r[1], name=r[2], role=Role(r[3])),
        password_hash=r[4],
        disabled=bool(r[5]),
        created_at=r[6],
    )


def _dumps(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


class SQLiteStore(SQLiteAttachments, SQLiteHandoffs, SQLiteStats):
    """The default store. ``path`` is a file, or ``:memory:`` is refused (a reader and a
    writer must share the database)."""

    def __init__(self, path: str | Path, *, synchronous: str = "full") -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        # Writes waiting for the writer, oldest first. The event loop appends; the writer
        # takes from the head (on the database thread while it drains SyncOps).
        self._ops: deque[tuple[WriteOp, asyncio.Future[Any]]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # The writer's view of open sessions it has written to: the last seq, and every
        # client_msg_id with its seq (retries are recognised here; the database does not
        # index client_msg_id). Loaded from the database on first use, forgotten when the
        # session ends or a transaction rolls back.
        self._seq: dict[str, int] = {}
        self._client_ids: dict[str, dict[str, int]] = {}
        self._version = 0
        self.batches = 0  # number of commits, for tests and benchmarks
        self.batched_ops = 0

    # ------------------------------------------------------------------ life cycle

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await aiosqlite.connect(self.path, isolation_level=None)
        await self._writer.execute("PRAGMA journal_mode=WAL")
        await self._writer.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
        await self._writer.execute("PRAGMA foreign_keys=ON")
        await self._writer.execute("PRAGMA busy_timeout=5000")
        await self._migrate(self._writer)
        self._reader = await aiosqlite.connect(self.path, isolation_level=None)
        await self._reader.execute("PRAGMA busy_timeout=5000")
        await self._reader.execute("PRAGMA query_only=ON")
        self._task = asyncio.create_task(self._write_loop(), name="chatd-sqlite-writer")

    async def close(self) -> None:
        if self._task is not None:
            # Refuse new writes now: one queued behind the stop marker would never be answered.
            task, self._task = self._task, None
            # Let queued writes finish: they were promised to their callers.
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._ops.append((_stop_op, done))
            self._wake.set()
            await done
            await cancel_and_wait(task)
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    async def ready(self) -> bool:
        try:
            version = await self._one("SELECT MAX(version) FROM schema_version")
        except Exception:  # the database is gone or locked: not ready, and say why in logs
            log.exception("readiness check failed")
            return False
        latest = migrations()[-1][0]
        return (
            version is not None
            and version[0] == latest
            and self._task is not None
            and not self._task.done()
        )

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
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

    # ------------------------------------------------------------------ the writer

    async def _write(self, op: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        if self._task is None:
            raise RuntimeError("the store is not open")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._ops.append((op, fut))
        self._wake.set()
        return await fut

    async def _write_loop(self) -> None:
        conn = self._writer
        assert conn is not None
        loop = asyncio.get_running_loop()
        ops = self._ops
        while True:
            await self._wake.wait()
            self._wake.clear()
            while ops:
                op = ops[0][0]
                if isinstance(op, SyncOp):
                    # The database thread takes the plain-function writes itself, batch
                    # after batch, without waiting for this loop between commits.
                    try:
                        await self._in_writer_thread(lambda c: self._drain_sync(c, loop))
                    except Exception as exc:  # the drain answers its batches; if it
                        # could not, fail the write at the head and carry on
                        log.exception("the database thread failed")
                        if ops and isinstance(ops[0][0], SyncOp):
                            _, fut = ops.popleft()
                            if not fut.done():
                                fut.set_exception(exc)
                    continue
                if op is _stop_op:
                    done = ops.popleft()[1]
                    if not done.done():
                        done.set_result(None)
                    continue
                batch: list[tuple[WriteOp, asyncio.Future[Any]]] = []
                while ops and len(batch) < MAX_BATCH and _is_coroutine_op(ops[0][0]):
                    batch.append(ops.popleft())
                await self._run_batch(conn, batch)

    def _drain_sync(self, c: sqlite3.Connection, loop: asyncio.AbstractEventLoop) -> None:
        """On the database thread: commit the SyncOps at the head of the queue in batches,
        back to back, answering each batch's callers through the event loop, until the
        head is empty or another kind of write. Only this thread takes from the queue
        while it runs (the loop waits for it); the loop only appends."""
        ops = self._ops
        while ops and isinstance(ops[0][0], SyncOp):
            batch: list[tuple[SyncOp, asyncio.Future[Any]]] = []
            while ops and len(batch) < MAX_BATCH and isinstance(ops[0][0], SyncOp):
                batch.append(ops.popleft())  # type: ignore[arg-type]
            try:
                if all(type(op) is AppendOp for op, _ in batch):
                    # chunk by chunk, each committed or failed on its own: never retried
                    # as a whole, which would store committed chunks twice
                    results = self._append_batch_sync(c, batch)  # type: ignore[arg-type]
                else:
                    try:
                        results = _run_sync_batch(c, batch)
                        self.batches += 1
                    except Exception:
                        results = self._one_by_one(c, batch)
            except Exception as exc:  # a bug or a broken connection: tell every caller
                log.exception("a write batch could not be carried out")
                results = [(fut, None, exc) for _, fut in batch]
            self.batched_ops += len(batch)
            loop.call_soon_threadsafe(_resolve, results)

    def _one_by_one(
        self, c: sqlite3.Connection, batch: Sequence[tuple[SyncOp, asyncio.Future[Any]]]
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        """After a failed batch: roll back, then each operation in a transaction of its own,
        so that one bad operation fails alone."""
        _rollback_sync(c)
        self._forget_sessions()  # the caches may hold rows that were rolled back
        if len(batch) > 1:
            log.warning("a write batch failed; retrying its operations one by one",
                        exc_info=True)
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        for item in batch:
            try:
                results += _run_sync_batch(c, [item])
                self.batches += 1
            except Exception as exc:
                _rollback_sync(c)
                self._forget_sessions()
                results.append((item[1], None, exc))
        return results

    def _forget_sessions(self) -> None:
        self._seq.clear()
        self._client_ids.clear()

    def _forget_session(self, session_id: str) -> None:
        self._seq.pop(session_id, None)
        self._client_ids.pop(session_id, None)

    async def _run_batch(
        self, conn: aiosqlite.Connection, batch: list[tuple[WriteOp, asyncio.Future[Any]]]
    ) -> None:
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            await conn.execute("BEGIN IMMEDIATE")
            for op, fut in batch:
                try:
                    results.append((fut, await op(conn), None))
                except DeskError as exc:  # refused before writing anything
                    results.append((fut, None, exc))
            await conn.execute("COMMIT")
        except Exception as exc:
            await self._rollback(conn)
            if len(batch) == 1:
                fut = batch[0][1]
                if not fut.done():
                    fut.set_exception(exc)
                return
            log.warning("a write batch failed; retrying its operations one by one", exc_info=True)
            for item in batch:
                await self._run_batch(conn, [item])
            return
        self.batches += 1
        self.batched_ops += len(batch)
        _resolve(results)

    async def _rollback(self, conn: aiosqlite.Connection) -> None:
        self._forget_sessions()  # the caches may hold rows that were rolled back
        try:
            await conn.execute("ROLLBACK")
        except Exception:  # no transaction was open
            pass

    # ------------------------------------------------------------------ reads

    async def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        assert self._reader is not None
        async with self._reader.execute(sql, args) as cur:
            return await cur.fetchone()

    async def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        assert self._reader is not None
        async with self._reader.execute(sql, args) as cur:
            return list(await cur.fetchall())

    # ------------------------------------------------------------------ engineers

    async def add_engineer(self, account: EngineerAccount) -> None:
        e = account.engineer

        async def op(conn: aiosqlite.Connection) -> None:
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
        return _account_from_row(row) if row else None

    async def list_engineers(self) -> list[EngineerAccount]:
        rows = await self._all(
            "SELECT id, email, name, role, password_hash, disabled, created_at"
            " FROM engineers ORDER BY email"
        )
        return [_account_from_row(r) for r in rows]

    async def set_engineer_disabled(self, email: str, disabled: bool) -> bool:
        async def op(conn: aiosqlite.Connection) -> bool:
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
        async def op(conn: aiosqlite.Connection) -> None:
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
        async def op(conn: aiosqlite.Connection) -> None:
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

        async def op(conn: aiosqlite.Connection) -> Message | None:
            await conn.execute(
                "INSERT INTO sessions (id, state, topic, severity, customer_id, customer_name,"
                " customer_email, customer_account, customer_tier, created_at, arrival_seq,"
                " resume_token_hash, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session.id, session.state.value, session.topic, session.severity, c.id,
                    c.name, c.email, c.account, c.tier.value, session.created_at,
                    session.arrival_seq, resume_token_hash, session.request_id,
                ),
            )
            self._seq[session.id] = 0
            self._client_ids[session.id] = {}
            if first is None:
                return None
            msg, _ = await self._append(conn, first)
            return msg

        return await self._write(op)

    async def next_arrival_seq(self) -> int:
        row = await self._one("SELECT COALESCE(MAX(arrival_seq), 0) FROM sessions")
        return int(row[0])

    async def save_session_state(self, session: Session) -> None:
        async def op(conn: aiosqlite.Connection) -> None:
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
                self._forget_session(session.id)

        await self._write(op)

    async def assign_session(
        self, session: Session, expected_states: Sequence[str], message: NewMessage | None
    ) -> Message | None:
        assert session.engineer is not None
        states = tuple(expected_states)
        marks = ",".join("?" * len(states))
        engineer_id = session.engineer.id

        async def op(conn: aiosqlite.Connection) -> Message | None:
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
        async def op(conn: aiosqlite.Connection) -> Message:
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
            self._forget_session(session.id)
            return msg

        return await self._write(op)

    async def open_sessions(self) -> list[Session]:
        rows = await self._all(
            f"SELECT {_SESSION_COLUMNS} {_SESSION_FROM}"
            " WHERE s.state IN ('waiting', 'offered', 'active')"
            " ORDER BY s.created_at, s.arrival_seq"
        )
        return [_session_from_row(r) for r in rows]

    async def get_session(self, session_id: str) -> Session | None:
        row = await self._one(f"SELECT {_SESSION_COLUMNS} {_SESSION_FROM} WHERE s.id = ?",
                              (session_id,))
        return _session_from_row(row) if row else None

    async def set_resume_token_hash(self, session_id: str, resume_token_hash: str) -> bool:
        async def op(conn: aiosqlite.Connection) -> bool:
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

    # ------------------------------------------------------------------ messages

    async def append_message(self, message: NewMessage) -> tuple[Message, bool]:
        return await self._write(AppendOp(self, message))  # the hot path: see _drain_sync

    async def _append(
        self, conn: aiosqlite.Connection, m: NewMessage, *, require_open: bool = True
    ) -> tuple[Message, bool]:
        return await self._in_writer_thread(
            lambda c: self._append_sync(c, m, require_open=require_open)
        )

    async def _in_writer_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the write connection's own thread, in one hop.

        aiosqlite sends every statement to its connection's thread separately; handing it a
        whole function instead makes a statement sequence (or a whole batch of messages) one
        hop. ``_execute`` and ``_conn`` are aiosqlite internals, kept behind this one method.
        """
        assert self._writer is not None
        return await _on_db_thread(self._writer, fn)

    def _append_sync(
        self, c: sqlite3.Connection, m: NewMessage, *, require_open: bool = True
    ) -> tuple[Message, bool]:
        sid, cid = m.session_id, m.client_msg_id
        known: int | None = None
        ids: dict[str, int] | None = None
        if require_open:
            last, ids = self._open_session(c, sid)
            if cid is not None:
                known = ids.get(cid)
        else:
            row = c.execute(
                "SELECT (SELECT COALESCE(MAX(seq), 0) FROM messages"
                " WHERE session_id = sessions.id) FROM sessions WHERE id = ?",
                (sid,),
            ).fetchone()
            if row is None:
                raise SessionClosed("the session has ended")
            last = int(row[0])
            if cid is not None:
                hit = c.execute(
                    "SELECT seq FROM messages WHERE session_id = ? AND client_msg_id = ?",
                    (sid, cid),
                ).fetchone()
                known = None if hit is None else int(hit[0])
        if known is not None:
            row = c.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ? AND seq = ?",
                (sid, known),
            ).fetchone()
            existing = _message_from_row(row)
            if (existing.sender.role, existing.sender.id) != (m.sender.role, m.sender.id):
                # The other side's id: not a retry of this sender's message. Nothing written.
                raise Conflict("client_msg_id is already used in this session by another sender")
            return existing, False
        seq = last + 1
        c.execute(_insert_messages_sql(1), _message_row(m, seq))
        if ids is not None:
            self._seq[sid] = seq
            if cid is not None:
                ids[cid] = seq
        return Message.stored(m, seq), True

    def _open_session(self, c: sqlite3.Connection, sid: str) -> tuple[int, dict[str, int]]:
        """The last seq and the client_msg_ids of an open session, from the writer's
        caches or else the database (SessionClosed if it is not open)."""
        last = self._seq.get(sid)
        if last is not None:
            return last, self._client_ids[sid]
        row = c.execute(
            "SELECT state, (SELECT COALESCE(MAX(seq), 0) FROM messages"
            " WHERE session_id = sessions.id) FROM sessions WHERE id = ?",
            (sid,),
        ).fetchone()
        if row is None or row[0] not in OPEN:
            raise SessionClosed("the session has ended")
        ids = dict(c.execute(
            "SELECT client_msg_id, seq FROM messages"
            " WHERE session_id = ? AND client_msg_id IS NOT NULL",
            (sid,),
        ).fetchall())
        self._seq[sid], self._client_ids[sid] = int(row[1]), ids
        return int(row[1]), ids

    def _append_batch_sync(
        self, c: sqlite3.Connection, batch: list[tuple[AppendOp, asyncio.Future[Any]]]
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        """Message appends, up to 64 rows in one INSERT statement that is its own
        transaction: one statement a batch rather than BEGIN, an insert each and COMMIT.
        It matters because each statement lets go of the GIL and must take it back from a
        busy event loop. Each chunk of rows commits on its own, so a chunk that fails
        goes one by one by itself, and the chunks before it stay answered as stored."""
        out: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        for start in range(0, len(batch), _ROWS_PER_INSERT):
            chunk = batch[start:start + _ROWS_PER_INSERT]
            try:
                out += self._append_chunk_sync(c, chunk)
                self.batches += 1
            except Exception:
                out += self._one_by_one(c, chunk)
        return out

    def _append_chunk_sync(
        self, c: sqlite3.Connection, chunk: list[tuple[AppendOp, asyncio.Future[Any]]]
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        """One INSERT for the chunk; a chunk holding a retry (a ``client_msg_id`` already
        stored, or twice in the chunk) goes through the one-by-one path instead, which
        answers a retry with the stored message."""
        rows: list[Any] = []
        answers: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        last_seq: dict[str, int] = {}
        new_ids: dict[tuple[str, str], int] = {}
        for op, fut in chunk:
            m = op.message
            sid, cid = m.session_id, m.client_msg_id
            last = last_seq.get(sid)
            if last is None:
                try:
                    last = self._open_session(c, sid)[0]
                except SessionClosed as exc:
                    answers.append((fut, None, exc))
                    continue
            if cid is not None:
                if cid in self._client_ids[sid] or (sid, cid) in new_ids:
                    return _run_sync_batch(c, chunk)
                new_ids[sid, cid] = last + 1
            seq = last_seq[sid] = last + 1
            rows += _message_row(m, seq)
            answers.append((fut, (Message.stored(m, seq), True), None))
        if rows:
            c.execute(_insert_messages_sql(len(rows) // _MESSAGE_FIELDS), rows)
            self._seq.update(last_seq)
            for (sid, cid), seq in new_ids.items():
                self._client_ids[sid][cid] = seq
        return answers

    async def messages_after(self, session_id: str, after_seq: int, limit: int) -> list[Message]:
        rows = await self._all(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ? AND seq > ?"
            " ORDER BY seq LIMIT ?",
            (session_id, after_seq, limit),
        )
        return [_message_from_row(r) for r in rows]


class SyncOp:
    """A write that is a plain function of the sqlite3 connection. The database thread runs
    these itself, batch after batch (SQLiteStore._drain_sync); calling one runs it like a
    coroutine write, in one hop to that thread."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        self.fn = fn

    async def __call__(self, conn: aiosqlite.Connection) -> Any:
        return await _on_db_thread(conn, self.fn)


class AppendOp(SyncOp):
    """A message append: the one write that comes in floods. Batches made only of these
    insert their rows a few statements at a time (SQLiteStore._append_batch_sync)."""

    __slots__ = ("message", "store")

    def __init__(self, store: SQLiteStore, message: NewMessage) -> None:
        # No super().__init__: ``fn`` is the method below, not a stored function.
        self.store = store
        self.message = message

    def fn(self, c: sqlite3.Connection) -> Any:
        return self.store._append_sync(c, self.message)


def _message_row(m: NewMessage, seq: int) -> tuple[Any, ...]:
    return (
        m.id, m.session_id, seq, m.ts, m.sender.role, m.sender.id, m.sender.name,
        m.kind.value, m.body, m.client_msg_id, _dumps(m.attachment), _dumps(m.event),
    )


_MESSAGE_FIELDS = 12
_MESSAGE_PLACEHOLDERS = "(" + ", ".join("?" * _MESSAGE_FIELDS) + ")"
_ROWS_PER_INSERT = 64


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert_messages_sql(rows: int) -> str:
    """An insert of ``rows`` messages (retries are recognised before, by the writer)."""
    return (
        "INSERT INTO messages (id, session_id, seq, ts, sender_role, sender_id,"
        " sender_name, kind, body, client_msg_id, attachment, event) VALUES "
        + ", ".join([_MESSAGE_PLACEHOLDERS] * rows)
    )


async def _on_db_thread(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn(sqlite3_connection)`` on aiosqlite's thread for ``conn`` (its only user)."""
    # aiosqlite's own call path for its methods; it has no public "run this function".
    result: T = await conn._execute(fn, conn._conn)  # type: ignore[no-untyped-call]
    return result


def _resolve(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    """Answer a committed batch's callers (on the event loop)."""
    for fut, value, error in results:
        if fut.done():  # the caller gave up waiting
            continue
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(value)


def _is_coroutine_op(op: WriteOp) -> bool:
    return op is not _stop_op and not isinstance(op, SyncOp)


def _rollback_sync(c: sqlite3.Connection) -> None:
    """Roll back what is open, if anything; best effort (a failed transaction may have
    been rolled back by SQLite already, and a broken connection cannot)."""
    try:
        if c.in_transaction:
            c.execute("ROLLBACK")
    except Exception:
        log.exception("rollback failed")


def _run_sync_batch(
    c: sqlite3.Connection, batch: Sequence[tuple[SyncOp, asyncio.Future[Any]]]
) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
    """One transaction for a batch of SyncOps, on the database thread. Futures are only
    collected here; they are resolved on the event loop after the commit."""
    out: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
    c.execute("BEGIN IMMEDIATE")
    for op, fut in batch:
        try:
            out.append((fut, op.fn(c), None))
        except DeskError as exc:  # refused before writing anything
            out.append((fut, None, exc))
    c.execute("COMMIT")
    return out


async def _stop_op(conn: aiosqlite.Connection) -> None:  # pragma: no cover - a marker
    return None


def _split_sql(script: str) -> list[str]:
    """Statements of a migration file (no semicolons inside literals in our migrations)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
