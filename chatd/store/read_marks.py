"""Read marks on their way to the database
(docs/protocol.md#read-marks); the backends' writes are in sqlite_read_marks.py and
postgres_read_marks.py.

Every ``message:read`` raises its side's mark, but only the highest seq per chat and side
matters: ``PendingReadMarks`` keeps that one and queues one write for all of them,
``WRITE_DELAY`` after the first mark that has no write waiting. Marks that arrive
meanwhile, and while the write waits in the writer's queue, join it: however many chats
and receipts, the writer gets at most one write of marks per ``WRITE_DELAY``, not one per
receipt nor one per batch of messages. That write joins the batch it is queued with (on
SQLite, the database thread's transaction of plain-function writes; on PostgreSQL, a
savepoint in the batch's transaction), so it adds a statement, not a commit (on SQLite
the appends of that one batch are then inserted one statement each rather than a chunk
at a time: at most once per ``WRITE_DELAY``). The write
takes the marks when the writer runs it (not when it is queued); a mark added after that
goes into the next write. Each caller is answered once the write holding its mark has
committed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

Mark = tuple[str, str, int]  # session id, side ("customer" or "engineer"), seq

# Seconds between the first pending mark and its write. A receipt's "Read" reaches the
# other side that much later, which nobody notices; the message path sees one small write
# in that time, whatever the number of receipts.
WRITE_DELAY = 0.05


class PendingReadMarks:
    """The highest unwritten seq per chat and side, and the write that will take them."""

    def __init__(self, delay: float = WRITE_DELAY) -> None:
        self.delay = delay
        # The SQLite write takes the marks on the database thread: hence a lock.
        self._lock = threading.Lock()
        self._marks: dict[tuple[str, str], int] = {}
        self._write: asyncio.Task[None] | None = None

    async def add(
        self, session_id: str, side: str, seq: int, write: Callable[[], Awaitable[Any]]
    ) -> None:
        """Raise the pending mark, queue ``write()`` unless one is queued already, and wait
        until the write that takes this mark has committed."""
        with self._lock:
            key = (session_id, side)
            if seq > self._marks.get(key, 0):
                self._marks[key] = seq
            task = self._write
            if task is None:
                task = self._write = asyncio.ensure_future(self._run(write))
        # One caller giving up does not cancel the write the others wait for.
        await asyncio.shield(task)

    def take(self) -> list[Mark]:
        """The marks to write now; the next mark queues a new write."""
        with self._lock:
            marks, self._marks = self._marks, {}
            self._write = None
        return [(sid, side, seq) for (sid, side), seq in marks.items()]

    async def _run(self, write: Callable[[], Awaitable[Any]]) -> None:
        try:
            await asyncio.sleep(self.delay)
            await write()
        except BaseException:
            # Refused before it took the marks (the store is closing): they stay pending,
            # and the next mark queues a new write.
            with self._lock:
                if self._write is asyncio.current_task():
                    self._write = None
            raise


def marks_from_rows(rows: Any) -> dict[str, int]:
    """``{"customer": seq, "engineer": seq}`` from (side, seq) rows; 0 for a side without."""
    out = {"customer": 0, "engineer": 0}
    for side, seq in rows:
        out[str(side)] = int(seq)
    return out
