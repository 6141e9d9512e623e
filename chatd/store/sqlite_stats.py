"""Monitoring reads and the status banner in SQLite, mixed into SQLiteStore
(docs/monitoring.md)."""

from __future__ import annotations

from typing import Any

from ..core.stats import SessionOutcome
from .rows import OUTCOME_COLUMNS, SESSION_FROM, outcome_from_row, status_banner_from_row
from .sqlite_base import SQLiteBase
from .sqlite_writer import WriteConnection


class SQLiteStats(SQLiteBase):
    """Relies on SQLiteStore's writer and reader."""

    async def session_outcomes(self, since: float) -> list[SessionOutcome]:
        # Both times are indexed (sessions_first_assigned_at, sessions_ended_at): SQLite
        # answers the OR with two index range scans, not a scan of all history.
        rows = await self._all(
            f"SELECT {OUTCOME_COLUMNS} {SESSION_FROM}"
            " WHERE s.origin = 'chat' AND (s.first_assigned_at >= ? OR s.ended_at >= ?)",
            (since, since),
        )
        return [outcome_from_row(r) for r in rows]

    async def status_banner(self) -> dict[str, Any] | None:
        row = await self._one(
            "SELECT text, link, updated_at, updated_by FROM status_banner WHERE id = 1"
        )
        return status_banner_from_row(row)

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

    async def save_engineer_status(
        self, engineer_id: str, status: str, capacity: int, now: float
    ) -> None:
        async def op(conn: WriteConnection) -> None:
            await conn.execute(
                "INSERT INTO engineer_status (engineer_id, status, capacity, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (engineer_id) DO UPDATE SET"
                " status = excluded.status, capacity = excluded.capacity,"
                " updated_at = excluded.updated_at",
                (engineer_id, status, capacity, now),
            )

        await self._write(op)

    async def engineer_statuses(self) -> dict[str, tuple[str, int]]:
        rows = await self._all("SELECT engineer_id, status, capacity FROM engineer_status")
        return {str(r[0]): (str(r[1]), int(r[2])) for r in rows}
