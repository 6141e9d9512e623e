"""The desk's lease on PostgreSQL (docs/design.md#one-desk-per-database).

A row of ``desk_lease``, in the shape of River's leader election: taken with
``INSERT … ON CONFLICT DO UPDATE … WHERE expires_at < now()`` when nobody holds it,
renewed by its holder, expiring by the database's clock (no two machines' clocks are
compared). Every change of holder raises ``term``; the holder's writer checks the term
under a share lock at the start of each transaction (``FENCE``), so that a holder that was
paused past its lease, and has been replaced, writes nothing: its check fails, or the new
holder's takeover waits for the transaction it is in.

A holder also keeps a connection of its own that holds a session advisory lock on its term
(``ALIVE``), taken in the transaction that gave it the term. The database releases that
lock as soon as the holder's connection ends: a holder that was killed (``kill -9``, an
exit, a crash of its process) frees it at once, and a process looking for the lease takes
it over then instead of waiting for it to expire. A holder that is only paused, or cut off
from the network without its connection being closed, keeps the lock: the lease expires
first, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .postgres_writer import PostgresWriter

log = logging.getLogger(__name__)

LEASE = "desk"
# The advisory locks that say a term's holder is alive: (ALIVE, term). ("chat", as an int4.)
ALIVE = 0x63686174

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
# Taken from a holder whose connection has ended (its term's ALIVE lock is free), as long
# as nobody took it meanwhile.
_TAKE_OVER = (
    "UPDATE desk_lease SET holder = $2, term = term + 1, acquired_at = now(),"
    " expires_at = now() + $4 * interval '1 second'"
    " WHERE name = $1 AND term = $3 RETURNING term"
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
        on_lost: Callable[[], None], dsn: str,
    ) -> None:
        self._pool = pool
        self._writer = writer
        self.node = node
        self.seconds = seconds
        self._on_lost = on_lost
        self._dsn = dsn
        self._alive: Any = None  # the connection holding (ALIVE, term)
        self.term: int | None = None

    async def acquire(self) -> int | None:
        conn = await self._connection()
        async with conn.transaction():
            term = await conn.fetchval(_ACQUIRE, LEASE, self.node, self.seconds)
            if term is None:
                term = await self._take_from_the_gone(conn)
            if term is None:
                return None
            # In the same transaction: nobody sees the new term before its lock is held.
            await conn.execute("SELECT pg_advisory_lock($1, $2)", ALIVE, int(term))
        self.term = int(term)
        self._writer.fence(self.term, self.seconds, self._on_lost)
        return self.term

    async def _take_from_the_gone(self, conn: Any) -> int | None:
        """The lease, if its holder's connection has ended although it has not expired."""
        seen = await conn.fetchval("SELECT term FROM desk_lease WHERE name = $1", LEASE)
        if seen is None or not await conn.fetchval(
            "SELECT pg_try_advisory_xact_lock($1, $2)", ALIVE, int(seen)
        ):
            return None
        term: int | None = await conn.fetchval(
            _TAKE_OVER, LEASE, self.node, int(seen), self.seconds
        )
        if term is not None:
            log.info("the desk's lease was taken over from a holder that is gone",
                     extra={"term": term})
        return term

    async def _connection(self) -> Any:
        """The lease's own connection, opened again if it ended (its lock with it)."""
        import asyncpg

        if self._alive is not None and not self._alive.is_closed():
            return self._alive
        self._alive = await asyncpg.connect(
            self._dsn, server_settings={"application_name": "chatd lease"}, timeout=10,
            command_timeout=10,
        )
        if self.term is not None:  # still the holder: say so again
            await self._alive.execute("SELECT pg_try_advisory_lock($1, $2)", ALIVE, self.term)
        return self._alive

    async def renew(self) -> bool:
        if self.term is None:
            return False
        # On the lease's own connection: one that ended (and its lock) is opened again.
        conn = await self._connection()
        held = await conn.fetchval(_RENEW, LEASE, self.node, self.term, self.seconds)
        return held is not None

    async def release(self) -> None:
        if self.term is not None:
            conn = await self._connection()
            await conn.execute(_RELEASE, LEASE, self.node, self.term)
            self.term = None
        await self.close()

    async def close(self) -> None:
        """Close the lease's own connection (which ends its lock)."""
        conn, self._alive = self._alive, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=5)
            except Exception:
                conn.terminate()

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
