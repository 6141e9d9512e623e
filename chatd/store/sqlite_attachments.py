"""Attachment records in SQLite, mixed into SQLiteStore (docs/attachments.md).

The limits of a session (count and total bytes) are checked inside the single writer, in the
same transaction as the insert, so that concurrent uploads cannot pass them together.
"""

from __future__ import annotations

from ..core.ports import AttachmentRecord
from .rows import (
    ATTACHMENT_COLUMNS,
    attachment_from_row,
    attachment_values,
    check_attachment_room,
)
from .sqlite_base import SQLiteBase
from .sqlite_writer import WriteConnection


class SQLiteAttachments(SQLiteBase):
    """Attachment operations; relies on SQLiteStore's writer and reader."""

    async def add_attachment(
        self, attachment: AttachmentRecord, max_count: int, max_bytes: int
    ) -> None:
        a = attachment

        async def op(conn: WriteConnection) -> None:
            cur = await conn.execute("SELECT state FROM sessions WHERE id = ?", (a.session_id,))
            row = await cur.fetchone()
            cur = await conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM attachments WHERE session_id = ?",
                (a.session_id,),
            )
            usage = await cur.fetchone()
            check_attachment_room(
                row[0] if row else None, usage, a.size, max_count, max_bytes
            )
            await conn.execute(
                f"INSERT INTO attachments ({ATTACHMENT_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                attachment_values(a),
            )

        await self._write(op)

    async def get_attachment(self, attachment_id: str) -> AttachmentRecord | None:
        row = await self._one(
            f"SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE id = ?", (attachment_id,)
        )
        return attachment_from_row(row) if row else None

    async def session_attachments(self, session_id: str) -> list[AttachmentRecord]:
        rows = await self._all(
            f"SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE session_id = ?"
            " ORDER BY created_at, id",
            (session_id,),
        )
        return [attachment_from_row(r) for r in rows]

    async def session_attachment_usage(self, session_id: str) -> tuple[int, int]:
        row = await self._one(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM attachments WHERE session_id = ?",
            (session_id,),
        )
        return (int(row[0]), int(row[1])) if row else (0, 0)

    async def delete_attachment(self, attachment_id: str) -> None:
        async def op(conn: WriteConnection) -> None:
            await conn.execute("DELETE FROM attachments WHERE id = ?", (attachment_id,))

        await self._write(op)
