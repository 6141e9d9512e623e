"""The purge of old closed chats and of orphaned attachment records in SQLite, mixed into
SQLiteStore (docs/operations.md).

The searches run on the reader, so a scan over years of chats never holds the writer. Each
purge is a plain-function write (``SyncOp``) that the database thread runs in one go, in
the single writer's order like every other write: it re-checks each chat it is given in
its own transaction and deletes at most ``max_messages`` messages, so a message append
waits behind it for a few milliseconds at most.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ..core.ports import AttachmentRecord, PurgeBatch, PurgeCounts, PurgeRules
from .rows import ATTACHMENT_COLUMNS, attachment_from_row
from .sqlite_base import SQLiteBase
from .sqlite_writer import SyncOp

# A chat may go: closed before the cut-off, and no handoff still owed (pending), nor one
# dead-lettered too recently to be given up on. Parameters: closed_before, dead_letter_before.
_ELIGIBLE = (
    "s.state IN ('ended', 'abandoned') AND s.ended_at < ?"
    " AND NOT EXISTS (SELECT 1 FROM handoffs h WHERE h.session_id = s.id"
    " AND (h.state = 'pending' OR (h.state = 'failed' AND NOT h.updated_at < ?)))"
)
# An attachment's message names it: an attachment message of its chat with its id.
_ORPHAN = (
    "a.created_at < ? AND NOT EXISTS (SELECT 1 FROM messages m"
    " WHERE m.session_id = a.session_id AND m.kind = 'attachment'"
    " AND json_extract(m.attachment, '$.id') = a.id)"
)
_A_COLUMNS = ", ".join("a." + c.strip() for c in ATTACHMENT_COLUMNS.split(","))


def _params(rules: PurgeRules) -> tuple[float, float]:
    # No dead-letter period: no failed row is ever old enough, so its chat stays.
    dead = rules.dead_letter_before
    return rules.closed_before, float("-inf") if dead is None else dead


class SQLiteRetention(SQLiteBase):
    """Retention operations; rely on SQLiteStore's writer and reader."""

    async def purge_preview(self, rules: PurgeRules) -> PurgeCounts:
        chosen = f"SELECT s.id FROM sessions s WHERE {_ELIGIBLE}"
        row = await self._one(
            f"WITH c AS ({chosen}) SELECT"
            " (SELECT COUNT(*) FROM c),"
            " (SELECT COUNT(*) FROM messages WHERE session_id IN (SELECT id FROM c)),"
            " (SELECT COUNT(*) FROM attachments WHERE session_id IN (SELECT id FROM c)),"
            " (SELECT COALESCE(SUM(size), 0) FROM attachments"
            "  WHERE session_id IN (SELECT id FROM c)),"
            " (SELECT COUNT(*) FROM handoffs WHERE session_id IN (SELECT id FROM c))",
            _params(rules),
        )
        return PurgeCounts(*(int(v) for v in row))

    async def purge_candidates(
        self, rules: PurgeRules, after: tuple[float, str] | None, limit: int
    ) -> list[tuple[float, str]]:
        page = ""
        args: tuple[object, ...] = _params(rules)
        if after is not None:
            page = " AND (s.ended_at > ? OR (s.ended_at = ? AND s.id > ?))"
            args += (after[0], after[0], after[1])
        rows = await self._all(
            f"SELECT s.ended_at, s.id FROM sessions s WHERE {_ELIGIBLE}{page}"
            " ORDER BY s.ended_at, s.id LIMIT ?",
            (*args, limit),
        )
        return [(float(r[0]), str(r[1])) for r in rows]

    async def purge_chats(
        self, session_ids: Sequence[str], rules: PurgeRules, max_messages: int
    ) -> PurgeBatch:
        ids = list(session_ids)
        params = _params(rules)

        def op(c: sqlite3.Connection) -> PurgeBatch:
            return _purge(c, ids, params, max(1, max_messages))

        batch: PurgeBatch = await self._write(SyncOp(op))
        return batch

    async def attachment_orphans(
        self, created_before: float, limit: int
    ) -> list[AttachmentRecord]:
        rows = await self._all(
            f"SELECT {_A_COLUMNS} FROM attachments a WHERE {_ORPHAN}"
            " ORDER BY a.created_at, a.id LIMIT ?",
            (created_before, limit),
        )
        return [attachment_from_row(r) for r in rows]

    async def delete_attachment_orphans(
        self, attachment_ids: Sequence[str], created_before: float
    ) -> list[AttachmentRecord]:
        ids = list(attachment_ids)

        def op(c: sqlite3.Connection) -> list[AttachmentRecord]:
            out = []
            for attachment_id in ids:  # each re-checked: its message may have come since
                row = c.execute(
                    f"DELETE FROM attachments AS a WHERE a.id = ? AND {_ORPHAN}"
                    f" RETURNING {ATTACHMENT_COLUMNS}",
                    (attachment_id, created_before),
                ).fetchone()
                if row is not None:
                    out.append(attachment_from_row(row))
            return out

        deleted: list[AttachmentRecord] = await self._write(SyncOp(op))
        return deleted

    async def known_attachment_files(self, names: Sequence[str]) -> set[str]:
        wanted = list(dict.fromkeys(names))
        known: set[str] = set()
        for i in range(0, len(wanted), 400):
            chunk = wanted[i:i + 400]
            marks = ",".join("?" * len(chunk))
            rows = await self._all(
                f"SELECT stored_name FROM attachments WHERE stored_name IN ({marks})"
                f" UNION SELECT thumbnail_name FROM attachments"
                f" WHERE thumbnail_name IN ({marks})",
                (*chunk, *chunk),
            )
            known.update(str(r[0]) for r in rows)
        return known


def _purge(
    c: sqlite3.Connection, ids: list[str], params: tuple[float, float], budget: int
) -> PurgeBatch:
    """On the database thread, in the writer's transaction: purge ``ids`` in order within
    ``budget`` messages."""
    chats = messages = attachments = size = outbox = 0
    files: list[str] = []
    transcripts: list[str] = []
    left: list[str] = []
    for i, sid in enumerate(ids):
        if budget <= 0:
            left = ids[i:]
            break
        eligible = c.execute(
            f"SELECT 1 FROM sessions s WHERE s.id = ? AND {_ELIGIBLE}", (sid, *params)
        ).fetchone()
        if eligible is None:
            continue  # reopened to a handoff retry, or purged already: not this time
        # The outbox rows go first: once they are gone no retry can ask for this
        # transcript, so a chat cut short by the budget is finished later without harm.
        rows = c.execute(
            "DELETE FROM handoffs WHERE session_id = ? RETURNING backend, state", (sid,)
        ).fetchall()
        outbox += len(rows)
        if any(r[0] == "file" and r[1] == "delivered" for r in rows):
            transcripts.append(sid)
        gone = c.execute(
            "DELETE FROM messages WHERE rowid IN"
            " (SELECT rowid FROM messages WHERE session_id = ? ORDER BY seq LIMIT ?)",
            (sid, budget),
        ).rowcount
        messages += gone
        budget -= gone
        if budget <= 0 and c.execute(
            "SELECT 1 FROM messages WHERE session_id = ? LIMIT 1", (sid,)
        ).fetchone():
            left = ids[i:]
            break
        for stored, thumb, n in c.execute(
            "DELETE FROM attachments WHERE session_id = ?"
            " RETURNING stored_name, thumbnail_name, size",
            (sid,),
        ).fetchall():
            attachments += 1
            size += int(n)
            files += [stored] if thumb is None else [stored, thumb]
        c.execute("DELETE FROM sessions WHERE id = ?", (sid,))
        chats += 1
    return PurgeBatch(
        PurgeCounts(chats, messages, attachments, size, outbox),
        tuple(files), tuple(transcripts), tuple(left),
    )
