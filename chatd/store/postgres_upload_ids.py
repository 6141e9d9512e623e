"""Uploads recognised by the client's upload id in PostgreSQL, mixed into PostgresStore
(docs/attachments.md#retrying-an-upload).

The chat's row lock (``FOR UPDATE``, as add_attachment takes it) orders the attempts of one
upload, whichever processes take them: the second finds the first's record and writes
nothing. A unique index on (chat, upload id) stands behind the lookup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.models import Message
from ..core.ports import AttachmentRecord
from .postgres_records import PostgresBase
from .rows import (
    ATTACHMENT_COLUMNS,
    MESSAGE_COLUMNS,
    attachment_from_row,
    attachment_values,
    check_attachment_room,
    message_from_row,
)

if TYPE_CHECKING:
    from .postgres_writer import Conn


class PostgresUploadIds(PostgresBase):
    """UploadStore; relies on PostgresStore's pool and writer."""

    async def add_attachment_once(
        self, attachment: AttachmentRecord, upload_id: str, max_count: int, max_bytes: int
    ) -> AttachmentRecord:
        a = attachment

        async def op(conn: Conn) -> AttachmentRecord:
            state = await conn.fetchval(
                "SELECT state FROM sessions WHERE id = $1 FOR UPDATE", a.session_id
            )
            first = await conn.fetchrow(
                f"SELECT {ATTACHMENT_COLUMNS} FROM attachments"
                " WHERE session_id = $1 AND upload_id = $2",
                a.session_id, upload_id,
            )
            if first is not None:
                return attachment_from_row(first)
            usage = await conn.fetchrow(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM attachments WHERE session_id = $1",
                a.session_id,
            )
            check_attachment_room(state, usage, a.size, max_count, max_bytes)
            await conn.execute(
                f"INSERT INTO attachments ({ATTACHMENT_COLUMNS}, upload_id) VALUES"
                " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                *attachment_values(a), upload_id,
            )
            return a

        result: AttachmentRecord = await self._write(op)
        return result

    async def attachment_for_upload(
        self, session_id: str, upload_id: str
    ) -> AttachmentRecord | None:
        row = await self._one(
            f"SELECT {ATTACHMENT_COLUMNS} FROM attachments"
            " WHERE session_id = $1 AND upload_id = $2",
            session_id, upload_id,
        )
        return attachment_from_row(row) if row else None

    async def attachment_message(self, session_id: str, attachment_id: str) -> Message | None:
        row = await self._one(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = $1"
            " AND kind = 'attachment' AND (attachment::jsonb ->> 'id') = $2"
            " ORDER BY seq LIMIT 1",
            session_id, attachment_id,
        )
        return message_from_row(row) if row else None
