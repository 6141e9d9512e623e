"""The PostgreSQL store's writer: group commit, and message appends whose invariants the
database keeps (docs/scaling.md#what-the-database-guarantees).

Every write of a process goes through one ``PostgresWriter``. Writes that arrive while a
transaction is being committed wait for it and then share the next one, so that a flood of
messages costs one commit per batch, not per message. Inside a batch, each write other than
an append runs under a savepoint of its own: one that fails is rolled back alone, and the
others commit. Appends gathered together are stored by a few statements for the whole run
of them (``append_many``).

Nothing here relies on this process's memory to keep an invariant, so several processes can
share the database:

- a chat's ``seq`` comes from its counter (``sessions.last_seq``), read and advanced under
  the row's lock (``FOR UPDATE``) in the append's own transaction: gap-free, whichever
  process appends;
- a retry is recognised by its ``client_msg_id``, looked up after that lock is taken, and a
  unique index stands behind the lookup;
- a chat that has ended takes no messages: its state is read under the same lock.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..core.errors import Conflict, Fenced, SessionClosed, Unavailable
from ..core.models import Message, NewMessage
from .postgres_lease import FENCE
from .rows import MESSAGE_COLUMNS, dumps, message_from_row

if TYPE_CHECKING:
    from typing import TypeAlias

    from asyncpg.pool import PoolConnectionProxy

    # Every connection the store uses is lent by its pool.
    Conn: TypeAlias = PoolConnectionProxy[Any]

log = logging.getLogger(__name__)

T = TypeVar("T")
Op = Callable[["Conn"], Awaitable[Any]]

OPEN = ("waiting", "offered", "active")
# Writes committed together at most: bounds a transaction's size and the wait of the last.
MAX_BATCH = 512

# The rows and the chats' counters, in one statement.
_INSERT_MESSAGES = (
    f"WITH inserted AS (INSERT INTO messages ({MESSAGE_COLUMNS}) SELECT * FROM unnest("
    "$1::text[], $2::text[], $3::bigint[], $4::float8[], $5::text[], $6::text[], $7::text[],"
    " $8::text[], $9::text[], $10::text[], $11::text[], $12::text[]))"
    " UPDATE sessions s SET last_seq = v.seq FROM unnest($13::text[], $14::bigint[])"
    " AS v(id, seq) WHERE s.id = v.id"
)
_M_COLUMNS = ", ".join("m." + c.strip() for c in MESSAGE_COLUMNS.split(","))


Result = tuple[Message, bool] | BaseException


async def append_many(
    conn: Conn, messages: Sequence[NewMessage], *, require_open: bool = True
) -> list[Result]:
    """Append ``messages`` in the caller's transaction, in order: for each, the stored
    message and whether it is new, or the error that refused it alone (SessionClosed,
    Conflict). A retry (a ``client_msg_id`` already stored for the chat, or given twice
    here) is answered with the message stored first."""
    sids = sorted({m.session_id for m in messages})
    keys = [(m.session_id, m.client_msg_id) for m in messages if m.client_msg_id is not None]
    # One round trip: lock the chats' counters in one order (ids sorted, so two processes
    # never deadlock) and find the messages these client_msg_ids name already. A retry
    # committed elsewhere while this waited for the lock is not seen here; the unique index
    # refuses it then, and the writer runs the batch again one write at a time.
    rows = await conn.fetch(
        "WITH locked AS (SELECT id, state, last_seq FROM sessions WHERE id = ANY($1::text[])"
        " ORDER BY id FOR UPDATE)"
        f" SELECT l.id, l.state, l.last_seq, {_M_COLUMNS} FROM locked l LEFT JOIN"
        " (messages m JOIN unnest($2::text[], $3::text[]) AS k(sid, cid)"
        " ON m.session_id = k.sid AND m.client_msg_id = k.cid) ON m.session_id = l.id",
        sids, [k[0] for k in keys], [k[1] for k in keys],
    )
    last = {r[0]: int(r[2]) for r in rows}
    is_open = {r[0]: r[1] in OPEN for r in rows}
    known: dict[tuple[str, str], Message] = {}
    for r in rows:
        if r[3] is not None:
            known[r[4], r[12]] = message_from_row(tuple(r)[3:])
    out: list[Result] = []
    new: list[tuple[NewMessage, int]] = []
    for m in messages:
        sid = m.session_id
        if sid not in last or (require_open and not is_open[sid]):
            out.append(SessionClosed("the session has ended"))
            continue
        if m.client_msg_id is not None:
            earlier = known.get((sid, m.client_msg_id))
            if earlier is not None:
                if (earlier.sender.role, earlier.sender.id) != (m.sender.role, m.sender.id):
                    out.append(Conflict(
                        "client_msg_id is already used in this session by another sender"
                    ))
                else:
                    out.append((earlier, False))
                continue
        seq = last[sid] = last[sid] + 1
        stored = Message.stored(m, seq)
        if m.client_msg_id is not None:
            known[sid, m.client_msg_id] = stored
        new.append((m, seq))
        out.append((stored, True))
    if new:
        columns: list[list[Any]] = [[] for _ in range(12)]
        for m, seq in new:
            for i, value in enumerate((
                m.id, m.session_id, seq, m.ts, m.sender.role, m.sender.id, m.sender.name,
                m.kind.value, m.body, m.client_msg_id, dumps(m.attachment), dumps(m.event),
            )):
                columns[i].append(value)
        moved = sorted({m.session_id for m, _ in new})
        await conn.execute(_INSERT_MESSAGES, *columns, moved, [last[sid] for sid in moved])
    return out


class AppendOp:
    """A message append waiting for the writer: it joins the other appends of its batch."""

    __slots__ = ("message",)

    def __init__(self, message: NewMessage) -> None:
        self.message = message


Item = tuple["AppendOp | Op", "asyncio.Future[Any]"]


class PostgresWriter:
    """One writer per process: batches of writes, one transaction each (group commit), on
    a connection of its own borrowed from the pool (and given back when it breaks)."""

    def __init__(self, pool: Callable[[], Any], *, max_batch: int = MAX_BATCH) -> None:
        self._pool = pool  # the store's pool (raises Unavailable once it is closed)
        self._max_batch = max_batch
        self._queue: collections.deque[Item] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._conn: Conn | None = None
        self._closing = False
        self.batches = 0  # commits so far (tests, benchmarks)
        self.batched_ops = 0  # writes committed so far
        # The desk lease's term this process's writes carry (None: no check), how long a
        # transaction of this writer may stay idle, and who is told when it was replaced.
        self._term: int | None = None
        self._idle_ms = 0
        self._conn_idle_ms = 0  # the setting the writer's connection has now
        self._on_fenced: Callable[[], None] | None = None
        self._fenced = False

    def fence(self, term: int, seconds: float, on_fenced: Callable[[], None]) -> None:
        """Check ``term`` first in every later transaction: once another process holds the
        lease, every write is refused with Fenced and ``on_fenced`` is called (once).

        The writer's transactions may stay idle at most ``seconds`` (PostgreSQL ends them):
        a process paused inside one cannot hold the lease's row, and so a takeover, for
        longer."""
        self._term = term
        self._idle_ms = max(1000, int(seconds * 1000))
        self._on_fenced = on_fenced

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._closing

    def start(self) -> None:
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name="pg-writer")

    async def stop(self) -> None:
        """Commit the writes queued so far, then stop; later writes are refused."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self._give_back()

    async def write(self, op: AppendOp | Op) -> Any:
        if self._fenced:
            raise Fenced("another chatd process runs the desk now; reconnect")
        if self._closing or self._task is None:
            raise Unavailable("the store is closed; try again")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((op, fut))
        self._wake.set()
        return await fut

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
            try:
                await self._commit(batch)
            except Exception:  # never leave the writer dead: answer the batch and go on
                log.exception("database write failed")
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(Unavailable("the write failed; try again"))

    async def _connection(self) -> Conn:
        if self._conn is None or self._conn.is_closed():
            await self._give_back()
            self._conn = await self._pool().acquire()
            self._conn_idle_ms = 0
        if self._idle_ms != self._conn_idle_ms:
            await self._conn.execute(f"SET idle_in_transaction_session_timeout = {self._idle_ms}")
            self._conn_idle_ms = self._idle_ms
        return self._conn

    async def _give_back(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a broken one is closed by the pool
                await self._pool().release(conn)

    async def _commit(self, batch: list[Item]) -> None:
        try:
            conn = await self._connection()
            async with conn.transaction():
                if self._term is not None:
                    await self._check_term(conn)
                answers = await self._apply(conn, batch)
        except Fenced as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        except Exception as exc:
            if is_connection_error(exc) or len(batch) == 1:
                if is_connection_error(exc):
                    await self._give_back()
                err = as_unavailable(exc)
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(err)
                return
            # A write the database refused took the whole transaction with it: run the
            # batch again one write at a time, so that it fails alone.
            for item in batch:
                await self._commit([item])
            return
        self.batches += 1
        self.batched_ops += sum(1 for _, _, error in answers if error is None)
        for fut, value, error in answers:
            if fut.done():  # the caller was cancelled: its write stands
                continue
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(value)

    async def _check_term(self, conn: Conn) -> None:
        if self._fenced:
            raise Fenced("another chatd process runs the desk now; reconnect")
        term = await conn.fetchval(FENCE)
        if term != self._term:
            self._fenced = True
            log.error("the desk's lease has passed to another process: nothing more is"
                      " written from this one", extra={"term": self._term, "now": term})
            if self._on_fenced is not None:
                self._on_fenced()
            raise Fenced("another chatd process runs the desk now; reconnect")

    async def _apply(
        self, conn: Conn, batch: list[Item]
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        answers: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        i = 0
        while i < len(batch):
            op, fut = batch[i]
            if isinstance(op, AppendOp):
                j = i
                while j < len(batch) and isinstance(batch[j][0], AppendOp):
                    j += 1
                run = batch[i:j]
                results = await append_many(
                    conn, [a.message for a, _ in run if isinstance(a, AppendOp)]
                )
                answers += [
                    (f, None, r) if isinstance(r, BaseException) else (f, r, None)
                    for (_, f), r in zip(run, results, strict=True)
                ]
                i = j
                continue
            try:
                async with conn.transaction():  # a savepoint: this write fails alone
                    answers.append((fut, await op(conn), None))
            except Exception as exc:
                if is_connection_error(exc):
                    raise
                answers.append((fut, None, exc))
            i += 1
        return answers


def is_connection_error(exc: BaseException) -> bool:
    """True for errors that say the database could not be reached or the link broke, as
    opposed to a statement it refused."""
    import asyncpg

    return isinstance(exc, (
        OSError,
        asyncio.TimeoutError,
        asyncpg.exceptions.PostgresConnectionError,
        asyncpg.exceptions.InterfaceError,
        asyncpg.exceptions.CannotConnectNowError,
        asyncpg.exceptions.AdminShutdownError,
        asyncpg.exceptions.CrashShutdownError,
    ))


def as_unavailable(exc: BaseException) -> BaseException:
    if isinstance(exc, Exception) and is_connection_error(exc):
        err = Unavailable("the database is unavailable; try again shortly")
        err.__cause__ = exc
        return err
    return exc
