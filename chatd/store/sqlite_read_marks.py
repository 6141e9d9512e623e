"""The SQLite store's read marks: how far each side of a chat has read
(docs/protocol.md#read-marks; the coalescing is read_marks.py's)."""

from __future__ import annotations

import sqlite3

from .read_marks import Mark, PendingReadMarks, marks_from_rows
from .sqlite_base import SQLiteBase
from .sqlite_writer import SyncOp

# At most the chat's last seq; a chat without messages (or unknown) gets no row. Never
# lowered: the higher of the stored and the new seq stays.
_UPSERT = (
    "INSERT INTO read_marks (session_id, role, seq)"
    " SELECT ?1, ?2, MIN(?3, MAX(seq)) FROM messages WHERE session_id = ?1"
    " HAVING MAX(seq) IS NOT NULL"
    " ON CONFLICT (session_id, role) DO UPDATE SET seq = MAX(seq, excluded.seq)"
)


class ReadMarksOp(SyncOp):
    """The write of the pending marks, on the database thread. A batch that is rolled
    back and run again one write at a time writes the same marks again."""

    __slots__ = ("marks", "pending")

    def __init__(self, pending: PendingReadMarks) -> None:
        # No super().__init__: ``fn`` is the method below, not a stored function.
        self.pending = pending
        self.marks: list[Mark] | None = None

    def fn(self, c: sqlite3.Connection) -> None:
        if self.marks is None:
            self.marks = self.pending.take()
        c.executemany(_UPSERT, self.marks)


class SQLiteReadMarks(SQLiteBase):
    """ReadMarkStore; relies on SQLiteStore's writer and reader."""

    _read_marks: PendingReadMarks | None = None

    async def mark_read(self, session_id: str, side: str, seq: int) -> None:
        pending = self._read_marks
        if pending is None:
            pending = self._read_marks = PendingReadMarks()
        await pending.add(session_id, side, seq, lambda: self._write(ReadMarksOp(pending)))

    async def read_marks(self, session_id: str) -> dict[str, int]:
        return marks_from_rows(await self._all(
            "SELECT role, seq FROM read_marks WHERE session_id = ?", (session_id,)
        ))
