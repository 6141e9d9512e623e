"""Attachment records in SQLite, mixed into SQLiteStore (docs/attachments.md).

The limits of a session (count and total bytes) are checked inside the single writer, in the
same transaction as the insert, so that concurrent uploads cannot pass them together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core.errors import Conflict, SessionClosed, TooLarge
from ..core.ports import AttachmentRecord
from .sqlite_base import SQLiteBase
from .sqlite_writer import WriteConnection

_COLUMNS = """
    id, session_id, uploader_role, uploader_id, filename, content_type, size, sha256,
    stored_name, thumbnail_name, thumbnail_type, created_at
"""


def _record(r: Sequence[Any]) -> AttachmentRecord:
    return AttachmentRecord(
        id=r[0],
        session_id=r[1],
        uploader_role=r[2],
        uploader_id=r[3],
        filename=r[4],
        content_type=r[5],
        size=int(r[6]),
        sha256=r[7],
        stored_name=r[8],
        thumbnail_name=r[9],
        thumbnail_type=r[10],
        created_at=float(r[11]),
    )


class SQLiteAttachments(SQLiteBase):
    """Attachment operations; relies on SQLiteStore's writer and reader."""

    async def add_attachment(
        self, attachment: AttachmentRecord, max_count: int, max_bytes: int
    ) -> None:
        a = attachment

        async def op(conn: WriteConnection) -> None:
            cur = await conn.execute("SELECT state FROM sessions WHERE id = ?", (a.session_id,))
            row = await cur.fetchone()
            if row is None or row[0] not in ("waiting", "offered", "active"):
                raise SessionClosed("the session has ended")
            cur = await conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM attachments WHERE session_id = ?",
                (a.session_id,),
            )
            usage = await cur.fetchone()
            count, used = (int(usage[0]), int(usage[1])) if usage else (0, 0)
            if count >= max_count:
                raise Conflict(
                    f"this chat has reached its limit of {max_count} attachments",
                    limit=max_count,
                )
            if used + a.size > max_bytes:
                raise TooLarge(
                    f"this chat's attachments would pass their limit of {max_bytes} bytes",
                    limit=max_bytes,
                )
            await conn.execute(
                f"INSERT INTO attachments ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    a.id, a.session_id, a.uploader_role, a.uploader_id, a.filename,
                    a.content_type, a.size, a.sha256, a.stored_name, a.thumbnail_name,
                    a.thumbnail_type, a.created_at,
                ),
            )

        await self._write(op)

    async def get_attachment(self, attachment_id: str) -> AttachmentRecord | None:
        row = await self._one(f"SELECT {_COLUMNS} FROM attachments WHERE id = ?", (attachment_id,))
        return _record(row) if row else None

    async def session_attachments(self, session_id: str) -> list[AttachmentRecord]:
        rows = await self._all(
            f"SELECT {_COLUMNS} FROM attachments WHERE session_id = ? ORDER BY created_at, id",
            (session_id,),
        )
        return [_record(r) for r in rows]

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
