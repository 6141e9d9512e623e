"""The desk's lease on PostgreSQL (docs/design.md#one-desk-per-database).

A row of ``desk_lease``, in the shape of River's leader election: taken with
``INSERT … ON CONFLICT DO UPDATE … WHERE expires_at < now()`` when nobody holds it,
renewed by its holder, expiring by the database's clock (no two machines' clocks are
compared). Every change of holder raises ``term``; the holder's writer checks the term
under a share lock at the start of each transaction (``FENCE``), so that a holder that was
paused past its lease, and has been replaced, writes nothing: its check fails, or the new
holder's takeover waits for the transaction it is in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .postgres_writer import PostgresWriter

LEASE = "desk"

# Taken when free (never held, or expired); the term goes up by one at each taking.
_ACQUIRE = (
    "INSERT INTO desk_lease AS l (name, holder, term, expires_at)"
    " VALUES ($1, $2, 1, now() + $3 * interval '1 second')"
    " ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, term = l.term + 1,"
    " acquired_at = now(), expires_at = EXCLUDED.expires_at"
    " WHERE l.expires_at < now()"
    " RETURNING term"
)
# Extended by its holder, in its term. Also after it expired, as long as nobody took it
# meanwhile: nobody else can have written in between, since taking it raises the term.
_RENEW = (
    "UPDATE desk_lease SET expires_at = now() + $4 * interval '1 second'"
    " WHERE name = $1 AND holder = $2 AND term = $3 RETURNING term"
)
_RELEASE = (
    "UPDATE desk_lease SET expires_at = now() - interval '1 second'"
    " WHERE name = $1 AND holder = $2 AND term = $3"
)
# The fencing check, first in each of the holder's write transactions. FOR SHARE: a
# takeover's UPDATE of the row waits until this transaction has ended.
FENCE = "SELECT term FROM desk_lease WHERE name = 'desk' FOR SHARE"


class PostgresLease:
    """The lease as ``node`` holds it (``pool`` gives the store's connection pool, whose
    ``writer`` is fenced with the term once it is taken)."""

    def __init__(
        self, pool: Callable[[], Any], writer: PostgresWriter, node: str, seconds: float,
        on_lost: Callable[[], None],
    ) -> None:
        self._pool = pool
        self._writer = writer
        self.node = node
        self.seconds = seconds
        self._on_lost = on_lost
        self.term: int | None = None

    async def acquire(self) -> int | None:
        async with self._pool().acquire() as conn:
            term = await conn.fetchval(_ACQUIRE, LEASE, self.node, self.seconds)
        if term is None:
            return None
        self.term = int(term)
        self._writer.fence(self.term, self.seconds, self._on_lost)
        return self.term

    async def renew(self) -> bool:
        if self.term is None:
            return False
        async with self._pool().acquire() as conn:
            held = await conn.fetchval(_RENEW, LEASE, self.node, self.term, self.seconds)
        return held is not None

    async def release(self) -> None:
        if self.term is None:
            return
        async with self._pool().acquire() as conn:
            await conn.execute(_RELEASE, LEASE, self.node, self.term)
        self.term = None

    async def holder(self) -> tuple[str, int, float] | None:
        """(holder, term, seconds until it expires) of the lease now, if it was ever taken."""
        async with self._pool().acquire() as conn:
            row = await conn.fetchrow(
                "SELECT holder, term, EXTRACT(EPOCH FROM expires_at - now()) FROM desk_lease"
                " WHERE name = $1", LEASE,
            )
        return None if row is None else (str(row[0]), int(row[1]), float(row[2]))

    def describe(self) -> str:
        return "another chatd process holds the desk's lease in this database"
