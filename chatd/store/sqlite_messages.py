"""Messages in SQLite: appends, each message's ``seq``, retries recognised by their
``client_msg_id``, and the writer's caches of open sessions that make these cheap
(docs/design.md#order-gaps-and-retries).

Appends are the one write that comes in floods. Each is an ``AppendOp``, a plain function
of the write connection that the database thread runs itself (sqlite_writer.py); a batch
made only of appends is stored up to 64 rows per ``INSERT``. The ``MessageLog`` is used on
that thread only (or by a coroutine write, while the thread runs nothing else).
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Sequence
from typing import Any, cast

from ..core.errors import Conflict, SessionClosed
from ..core.models import Message, NewMessage
from .rows import MESSAGE_COLUMNS, dumps, message_from_row
from .sqlite_base import SQLiteBase
from .sqlite_writer import Answer, ChunkedOp, WriteConnection

OPEN = ("waiting", "offered", "active")

_MESSAGE_FIELDS = 12
_MESSAGE_PLACEHOLDERS = "(" + ", ".join("?" * _MESSAGE_FIELDS) + ")"
_ROWS_PER_INSERT = 64


class SQLiteMessages(SQLiteBase):
    """The store's message operations."""

    async def append_message(self, message: NewMessage) -> tuple[Message, bool]:
        # the hot path: see SQLiteWriter._drain_sync
        return await self._writer.write(AppendOp(self._messages, message))

    async def messages_after(self, session_id: str, after_seq: int, limit: int) -> list[Message]:
        rows = await self._all(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = ? AND seq > ?"
            " ORDER BY seq LIMIT ?",
            (session_id, after_seq, limit),
        )
        return [message_from_row(r) for r in rows]


class MessageLog:
    """The writer's view of open sessions it has written to: the last seq, and every
    client_msg_id with its seq (retries are recognised here; the database does not index
    client_msg_id). Loaded from the database on first use, forgotten when the session ends
    or a transaction rolls back."""

    def __init__(self) -> None:
        self._seq: dict[str, int] = {}
        self._client_ids: dict[str, dict[str, int]] = {}

    def session_created(self, session_id: str) -> None:
        """A session written in this transaction: open, and without messages yet."""
        self._seq[session_id] = 0
        self._client_ids[session_id] = {}

    def forget_session(self, session_id: str) -> None:
        self._seq.pop(session_id, None)
        self._client_ids.pop(session_id, None)

    def forget_all(self) -> None:
        self._seq.clear()
        self._client_ids.clear()

    async def append(
        self, conn: WriteConnection, m: NewMessage, *, require_open: bool = True
    ) -> tuple[Message, bool]:
        """An append inside a coroutine write (a session's first, or its closing, message):
        one hop to the database thread, in that write's transaction."""
        return await conn.run(lambda c: self.append_sync(c, m, require_open=require_open))

    def append_sync(
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
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = ? AND seq = ?",
                (sid, known),
            ).fetchone()
            existing = message_from_row(row)
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

    def write_chunk(
        self, c: sqlite3.Connection, chunk: Sequence[tuple[AppendOp, asyncio.Future[Any]]]
    ) -> list[Answer] | None:
        """One INSERT for the chunk; a chunk holding a retry (a ``client_msg_id`` already
        stored, or twice in the chunk) is not written here (None): the writer runs it one
        append at a time in one transaction, which answers a retry with the stored message."""
        rows: list[Any] = []
        answers: list[Answer] = []
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
                    return None
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


class AppendOp(ChunkedOp):
    """A message append: the one write that comes in floods. Batches made only of these
    insert their rows a few statements at a time (MessageLog.write_chunk)."""

    __slots__ = ("message", "log")
    chunk_size = _ROWS_PER_INSERT

    def __init__(self, log: MessageLog, message: NewMessage) -> None:
        # No super().__init__: ``fn`` is the method below, not a stored function.
        self.log = log
        self.message = message

    def fn(self, c: sqlite3.Connection) -> Any:
        return self.log.append_sync(c, self.message)

    def write_chunk(
        self, c: sqlite3.Connection, chunk: Sequence[tuple[ChunkedOp, asyncio.Future[Any]]]
    ) -> list[Answer] | None:
        # The writer hands a kind only chunks of its own ops.
        return self.log.write_chunk(
            c, cast("Sequence[tuple[AppendOp, asyncio.Future[Any]]]", chunk)
        )


def _message_row(m: NewMessage, seq: int) -> tuple[Any, ...]:
    return (
        m.id, m.session_id, seq, m.ts, m.sender.role, m.sender.id, m.sender.name,
        m.kind.value, m.body, m.client_msg_id, dumps(m.attachment), dumps(m.event),
    )


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert_messages_sql(rows: int) -> str:
    """An insert of ``rows`` messages (retries are recognised before, by the writer)."""
    return (
        "INSERT INTO messages (id, session_id, seq, ts, sender_role, sender_id,"
        " sender_name, kind, body, client_msg_id, attachment, event) VALUES "
        + ", ".join([_MESSAGE_PLACEHOLDERS] * rows)
    )
