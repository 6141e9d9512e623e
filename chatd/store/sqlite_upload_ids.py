"""Uploads recognised by the client's upload id in SQLite, mixed into SQLiteStore
(docs/attachments.md#retrying-an-upload).

The id is looked up and the attachment recorded in one write of the single writer, so two
attempts of one upload cannot both be stored; a unique index on (chat, upload id) stands
behind the lookup.
"""

from __future__ import annotations

from ..core.models import Message
from ..core.ports import AttachmentRecord
from .rows import (
    ATTACHMENT_COLUMNS,
    MESSAGE_COLUMNS,
    attachment_from_row,
    attachment_values,
    check_attachment_room,
    message_from_row,
)
from .sqlite_base import SQLiteBase
from .sqlite_writer import WriteConnection


class SQLiteUploadIds(SQLiteBase):
    """UploadStore; relies on SQLiteStore's writer and reader."""

    async def add_attachment_once(
        self, attachment: AttachmentRecord, upload_id: str, max_count: int, max_bytes: int
    ) -> AttachmentRecord:
        a = attachment

        async def op(conn: WriteConnection) -> AttachmentRecord:
            cur = await conn.execute(
                f"SELECT {ATTACHMENT_COLUMNS} FROM attachments"
                " WHERE session_id = ? AND upload_id = ?",
                (a.session_id, upload_id),
            )
            first = await cur.fetchone()
            if first is not None:
                return attachment_from_row(first)
            cur = await conn.execute("SELECT state FROM sessions WHERE id = ?", (a.session_id,))
            row = await cur.fetchone()
            cur = await conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM attachments WHERE session_id = ?",
                (a.session_id,),
            )
            usage = await cur.fetchone()
            check_attachment_room(row[0] if row else None, usage, a.size, max_count, max_bytes)
            await conn.execute(
                f"INSERT INTO attachments ({ATTACHMENT_COLUMNS}, upload_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*attachment_values(a), upload_id),
            )
            return a

        return await self._write(op)

    async def attachment_for_upload(
        self, session_id: str, upload_id: str
    ) -> AttachmentRecord | None:
        row = await self._one(
            f"SELECT {ATTACHMENT_COLUMNS} FROM attachments"
            " WHERE session_id = ? AND upload_id = ?",
            (session_id, upload_id),
        )
        return attachment_from_row(row) if row else None

    async def attachment_message(self, session_id: str, attachment_id: str) -> Message | None:
        row = await self._one(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = ?"
            " AND kind = 'attachment' AND json_extract(attachment, '$.id') = ?"
            " ORDER BY seq LIMIT 1",
            (session_id, attachment_id),
        )
        return message_from_row(row) if row else None
