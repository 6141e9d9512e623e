"""The PostgreSQL store's read marks: how far each side of a chat has read
(docs/protocol.md#read-marks; the coalescing is read_marks.py's)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .postgres_records import PostgresBase
from .read_marks import Mark, PendingReadMarks, marks_from_rows

if TYPE_CHECKING:
    from .postgres_writer import Conn

# At most the chat's last seq (its counter, read without a lock); a chat without messages
# (or unknown) gets no row. Never lowered: the higher of the stored and the new seq stays.
_UPSERT = (
    "INSERT INTO read_marks (session_id, role, seq)"
    " SELECT v.sid, v.side, LEAST(v.seq, s.last_seq)"
    " FROM unnest($1::text[], $2::text[], $3::bigint[]) AS v(sid, side, seq)"
    " JOIN sessions s ON s.id = v.sid WHERE s.last_seq >= 1"
    " ON CONFLICT (session_id, role) DO UPDATE SET seq = GREATEST(read_marks.seq, excluded.seq)"
)


class ReadMarksOp:
    """The write of the pending marks: one statement, under its savepoint in the writer's
    transaction. A batch run again one write at a time writes the same marks again."""

    __slots__ = ("marks", "pending")

    def __init__(self, pending: PendingReadMarks) -> None:
        self.pending = pending
        self.marks: list[Mark] | None = None

    async def __call__(self, conn: Conn) -> None:
        if self.marks is None:
            self.marks = self.pending.take()
        if self.marks:
            await conn.execute(
                _UPSERT, [m[0] for m in self.marks], [m[1] for m in self.marks],
                [m[2] for m in self.marks],
            )


class PostgresReadMarks(PostgresBase):
    """ReadMarkStore; relies on PostgresStore's pool and writer."""

    _read_marks: PendingReadMarks | None = None

    async def mark_read(self, session_id: str, side: str, seq: int) -> None:
        pending = self._read_marks
        if pending is None:
            pending = self._read_marks = PendingReadMarks()
        await pending.add(session_id, side, seq, lambda: self._write(ReadMarksOp(pending)))

    async def read_marks(self, session_id: str) -> dict[str, int]:
        async def read(conn: Conn) -> dict[str, int]:
            return marks_from_rows(await conn.fetch(
                "SELECT role, seq FROM read_marks WHERE session_id = $1", session_id
            ))

        return await self._read(read)
