"""What every part of the SQLite store stands on: its single writer, its reader and its
message log, and the three ways the parts use them (``_write``, ``_one``/``_all``,
``_append``).

SQLiteStore (sqlite.py) is made of parts, one per kind of record (sessions and accounts,
messages, attachments, the handoff outbox, monitoring reads); each part is a class built on
``SQLiteBase``, and SQLiteStore makes the objects they share.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import aiosqlite

from ..core.models import Message, NewMessage
from .sqlite_writer import SQLiteWriter, WriteConnection

if TYPE_CHECKING:  # sqlite_messages builds on this module
    from .sqlite_messages import MessageLog

T = TypeVar("T")


class SQLiteBase:
    """The objects every part of SQLiteStore uses: ``_writer``, the one writer (every write
    goes through it, as a whole operation); ``_reader``, a read-only connection (in WAL
    mode reads do not wait for the writer); ``_messages``, the writer's message log."""

    _writer: SQLiteWriter
    _reader: aiosqlite.Connection | None
    _messages: MessageLog

    async def _write(self, op: Callable[[WriteConnection], Awaitable[T]]) -> T:
        """Run ``op`` in the writer's next transaction; its result once committed."""
        return await self._writer.write(op)

    async def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        assert self._reader is not None
        async with self._reader.execute(sql, args) as cur:
            return await cur.fetchone()

    async def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        assert self._reader is not None
        async with self._reader.execute(sql, args) as cur:
            return list(await cur.fetchall())

    async def _append(
        self, conn: WriteConnection, m: NewMessage, *, require_open: bool = True
    ) -> tuple[Message, bool]:
        """Append a message inside a write (``op(conn)``), in its transaction."""
        return await self._messages.append(conn, m, require_open=require_open)
