"""The purge of old closed chats and of orphaned attachment records in PostgreSQL, mixed
into PostgresStore (docs/operations.md).

The searches take a pooled connection of their own. Each purge is one write of the
process's writer (its own savepoint in a group commit), a few statements whatever the
number of chats: the chats are locked with ``FOR UPDATE SKIP LOCKED`` (two processes
purging at once never wait for each other nor purge a chat twice), and an outbox row that
an operator's retry reopened meanwhile rolls the whole purge back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..core.ports import AttachmentRecord, PurgeBatch, PurgeCounts, PurgeRules
from .postgres_records import PostgresBase
from .rows import ATTACHMENT_COLUMNS, attachment_from_row

if TYPE_CHECKING:
    from .postgres_writer import Conn

# As in sqlite_retention.py. Parameters: $2 closed_before, $3 dead_letter_before.
_ELIGIBLE = (
    "s.state IN ('ended', 'abandoned') AND s.ended_at < $2"
    " AND NOT EXISTS (SELECT 1 FROM handoffs h WHERE h.session_id = s.id"
    " AND (h.state = 'pending' OR (h.state = 'failed' AND NOT h.updated_at < $3)))"
)
_ORPHAN = (
    "a.created_at < $1 AND NOT EXISTS (SELECT 1 FROM messages m"
    " WHERE m.session_id = a.session_id AND m.kind = 'attachment'"
    " AND (m.attachment::jsonb ->> 'id') = a.id)"
)
_A_COLUMNS = ", ".join("a." + c.strip() for c in ATTACHMENT_COLUMNS.split(","))


class _Raced(Exception):
    """An outbox row of a chat being purged was reopened by a retry: roll back."""


def _params(rules: PurgeRules) -> tuple[float, float]:
    # No dead-letter period: no failed row is ever old enough, so its chat stays.
    dead = rules.dead_letter_before
    return rules.closed_before, float("-inf") if dead is None else dead


class PostgresRetention(PostgresBase):
    """Retention operations; rely on PostgresStore's pool and writer."""

    async def purge_preview(self, rules: PurgeRules) -> PurgeCounts:
        closed, dead = _params(rules)
        # $1 is a placeholder that is always true: _ELIGIBLE numbers its parameters $2, $3.
        row = await self._one(
            f"WITH c AS (SELECT s.id FROM sessions s WHERE $1::int = 0 AND {_ELIGIBLE})"
            " SELECT (SELECT COUNT(*) FROM c),"
            " (SELECT COUNT(*) FROM messages WHERE session_id IN (SELECT id FROM c)),"
            " (SELECT COUNT(*) FROM attachments WHERE session_id IN (SELECT id FROM c)),"
            " (SELECT COALESCE(SUM(size), 0) FROM attachments"
            "  WHERE session_id IN (SELECT id FROM c)),"
            " (SELECT COUNT(*) FROM handoffs WHERE session_id IN (SELECT id FROM c))",
            0, closed, dead,
        )
        return PurgeCounts(*(int(v) for v in row))

    async def purge_candidates(
        self, rules: PurgeRules, after: tuple[float, str] | None, limit: int
    ) -> list[tuple[float, str]]:
        closed, dead = _params(rules)
        page = ""
        args: list[Any] = [limit, closed, dead]
        if after is not None:
            page = " AND (s.ended_at, s.id) > ($4, $5)"
            args += [after[0], after[1]]
        rows = await self._all(
            f"SELECT s.ended_at, s.id FROM sessions s WHERE {_ELIGIBLE}{page}"
            " ORDER BY s.ended_at, s.id LIMIT $1",
            *args,
        )
        return [(float(r[0]), str(r[1])) for r in rows]

    async def purge_chats(
        self, session_ids: Sequence[str], rules: PurgeRules, max_messages: int
    ) -> PurgeBatch:
        ids = list(session_ids)
        closed, dead = _params(rules)
        budget = max(1, max_messages)

        async def op(conn: Conn) -> PurgeBatch:
            return await _purge(conn, ids, closed, dead, budget)

        try:
            batch: PurgeBatch = await self._write(op)
        except _Raced:
            # Rolled back whole; the reopened chat no longer qualifies next time.
            return PurgeBatch(PurgeCounts(), (), (), tuple(ids))
        return batch

    async def attachment_orphans(
        self, created_before: float, limit: int
    ) -> list[AttachmentRecord]:
        rows = await self._all(
            f"SELECT {_A_COLUMNS} FROM attachments a WHERE {_ORPHAN}"
            " ORDER BY a.created_at, a.id LIMIT $2",
            created_before, limit,
        )
        return [attachment_from_row(tuple(r)) for r in rows]

    async def delete_attachment_orphans(
        self, attachment_ids: Sequence[str], created_before: float
    ) -> list[AttachmentRecord]:
        ids = list(attachment_ids)

        async def op(conn: Conn) -> list[AttachmentRecord]:
            rows = await conn.fetch(
                f"DELETE FROM attachments a WHERE {_ORPHAN} AND a.id = ANY($2::text[])"
                f" RETURNING {_A_COLUMNS}",
                created_before, ids,
            )
            return [attachment_from_row(tuple(r)) for r in rows]

        deleted: list[AttachmentRecord] = await self._write(op)
        return deleted

    async def known_attachment_files(self, names: Sequence[str]) -> set[str]:
        wanted = list(dict.fromkeys(names))
        rows = await self._all(
            "SELECT stored_name FROM attachments WHERE stored_name = ANY($1::text[])"
            " UNION SELECT thumbnail_name FROM attachments"
            " WHERE thumbnail_name = ANY($1::text[])",
            wanted,
        )
        return {str(r[0]) for r in rows}


async def _purge(
    conn: Conn, ids: list[str], closed: float, dead: float, budget: int
) -> PurgeBatch:
    """In the writer's transaction: purge ``ids`` in order within ``budget`` messages."""
    rows = await conn.fetch(
        f"SELECT s.id, s.last_seq FROM sessions s WHERE s.id = ANY($1::text[])"
        f" AND {_ELIGIBLE} FOR UPDATE SKIP LOCKED",
        ids, closed, dead,
    )
    # last_seq is how many messages a chat ever had: at least as many as are left.
    sizes = {str(r[0]): int(r[1]) for r in rows}
    order = [sid for sid in ids if sid in sizes]
    whole: list[str] = []
    partial: str | None = None
    left: list[str] = []
    room = budget
    for k, sid in enumerate(order):
        if sizes[sid] <= room:
            whole.append(sid)
            room -= sizes[sid]
            continue
        if not whole:
            partial = sid  # larger than a whole batch: in slices, one call each
        left = order[k:]
        break
    taken = whole + ([partial] if partial else [])
    if not taken:
        return PurgeBatch(PurgeCounts(), (), (), tuple(left))
    # The outbox rows go first (see sqlite_retention.py). Deleted whatever their state,
    # each as committed now: one that a retry made pending since the search shows here.
    outbox = await conn.fetch(
        "DELETE FROM handoffs WHERE session_id = ANY($1::text[])"
        " RETURNING session_id, backend, state, updated_at",
        taken,
    )
    if any(r[2] == "pending" or (r[2] == "failed" and not r[3] < dead) for r in outbox):
        raise _Raced("a handoff of a chat being purged was retried meanwhile")
    transcripts = sorted({str(r[0]) for r in outbox if r[1] == "file" and r[2] == "delivered"})
    messages = 0
    finished = list(whole)
    if whole:
        status = await conn.execute(
            "DELETE FROM messages WHERE session_id = ANY($1::text[])", whole
        )
        messages += int(status.split()[-1])
    if partial is not None:
        status = await conn.execute(
            "DELETE FROM messages WHERE session_id = $1 AND seq IN (SELECT seq FROM messages"
            " WHERE session_id = $1 ORDER BY seq LIMIT $2)",
            partial, budget,
        )
        messages += int(status.split()[-1])
        more = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE session_id = $1)", partial
        )
        if more:
            left = order  # the partial chat first, again
        else:
            finished.append(partial)
            left = order[1:]
    files: list[str] = []
    attachments = size = 0
    if finished:
        for stored, thumb, n in await conn.fetch(
            "DELETE FROM attachments WHERE session_id = ANY($1::text[])"
            " RETURNING stored_name, thumbnail_name, size",
            finished,
        ):
            attachments += 1
            size += int(n)
            files += [stored] if thumb is None else [stored, thumb]
        await conn.execute("DELETE FROM sessions WHERE id = ANY($1::text[])", finished)
    return PurgeBatch(
        PurgeCounts(len(finished), messages, attachments, size, len(outbox)),
        tuple(files), tuple(transcripts), tuple(left),
    )
