"""Monitoring reads and the status banner in SQLite, mixed into SQLiteStore
(docs/monitoring.md)."""

from __future__ import annotations

from typing import Any

from ..core.stats import SessionOutcome
from .sqlite_base import SQLiteBase
from .sqlite_writer import WriteConnection


class SQLiteStats(SQLiteBase):
    """Relies on SQLiteStore's writer and reader."""

    async def session_outcomes(self, since: float) -> list[SessionOutcome]:
        # Both times are indexed (sessions_first_assigned_at, sessions_ended_at): SQLite
        # answers the OR with two index range scans, not a scan of all history.
        rows = await self._all(
            "SELECT s.created_at, s.first_assigned_at, s.ended_at, s.state, s.engineer_id,"
            " e.name FROM sessions s LEFT JOIN engineers e ON e.id = s.engineer_id"
            " WHERE s.origin = 'chat' AND (s.first_assigned_at >= ? OR s.ended_at >= ?)",
            (since, since),
        )
        return [
            SessionOutcome(
                created_at=float(r[0]),
                first_assigned_at=None if r[1] is None else float(r[1]),
                ended_at=None if r[2] is None else float(r[2]),
                state=str(r[3]),
                engineer_id=r[4],
                engineer_name=r[5],
            )
            for r in rows
        ]

    async def status_banner(self) -> dict[str, Any] | None:
        row = await self._one(
            "SELECT text, link, updated_at, updated_by FROM status_banner WHERE id = 1"
        )
        if row is None:
            return None
        return {"text": row[0], "link": row[1], "updated_at": float(row[2]),
                "updated_by": row[3]}

    async def set_status_banner(
        self, text: str | None, link: str | None, now: float, by: str | None
    ) -> None:
        async def op(conn: WriteConnection) -> None:
            if text is None:
                await conn.execute("DELETE FROM status_banner")
                return
            await conn.execute(
                "INSERT INTO status_banner (id, text, link, updated_at, updated_by)"
                " VALUES (1, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET text = excluded.text,"
                " link = excluded.link, updated_at = excluded.updated_at,"
                " updated_by = excluded.updated_by",
                (text, link, now, by),
            )

        await self._write(op)
