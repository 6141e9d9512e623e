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
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..core.errors import Conflict, SessionClosed, Unavailable
from ..core.models import Message, NewMessage
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

_INSERT_MESSAGES = (
    f"INSERT INTO messages ({MESSAGE_COLUMNS}) SELECT * FROM unnest("
    "$1::text[], $2::text[], $3::bigint[], $4::float8[], $5::text[], $6::text[], $7::text[],"
    " $8::text[], $9::text[], $10::text[], $11::text[], $12::text[])"
)


Result = tuple[Message, bool] | BaseException


async def append_many(
    conn: Conn, messages: Sequence[NewMessage], *, require_open: bool = True
) -> list[Result]:
    """Append ``messages`` in the caller's transaction, in order: for each, the stored
    message and whether it is new, or the error that refused it alone (SessionClosed,
    Conflict). A retry (a ``client_msg_id`` already stored for the chat, or given twice
    here) is answered with the message stored first."""
    sids = sorted({m.session_id for m in messages})
    # Lock the chats' counters in one order (ids sorted): two processes never deadlock.
    rows = await conn.fetch(
        "SELECT id, state, last_seq FROM sessions WHERE id = ANY($1::text[])"
        " ORDER BY id FOR UPDATE",
        sids,
    )
    last = {r[0]: int(r[2]) for r in rows}
    is_open = {r[0]: r[1] in OPEN for r in rows}
    keys = [(m.session_id, m.client_msg_id) for m in messages if m.client_msg_id is not None]
    known: dict[tuple[str, str], Message] = {}
    if keys:
        for r in await conn.fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages m JOIN unnest($1::text[], $2::text[])"
            " AS k(sid, cid) ON m.session_id = k.sid AND m.client_msg_id = k.cid",
            [k[0] for k in keys], [k[1] for k in keys],
        ):
            known[r[1], r[9]] = message_from_row(r)
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
        await conn.execute(_INSERT_MESSAGES, *columns)
        moved = {m.session_id for m, _ in new}
        await conn.execute(
            "UPDATE sessions s SET last_seq = v.seq FROM unnest($1::text[], $2::bigint[])"
            " AS v(id, seq) WHERE s.id = v.id",
            sorted(moved), [last[sid] for sid in sorted(moved)],
        )
    return out


class AppendOp:
    """A message append waiting for the writer: it joins the other appends of its batch."""

    __slots__ = ("message",)

    def __init__(self, message: NewMessage) -> None:
        self.message = message


Item = tuple["AppendOp | Op", "asyncio.Future[Any]"]


class PostgresWriter:
    """One writer per process: batches of writes, one transaction each (group commit)."""

    def __init__(self, acquire: Callable[[], Any], *, max_batch: int = MAX_BATCH) -> None:
        self._acquire = acquire  # the pool's acquire(): an async context manager
        self._max_batch = max_batch
        self._queue: collections.deque[Item] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.batches = 0  # commits so far (tests, benchmarks)
        self.batched_ops = 0  # writes committed so far

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

    async def write(self, op: AppendOp | Op) -> Any:
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

    async def _commit(self, batch: list[Item]) -> None:
        answers: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            async with self._acquire() as conn, conn.transaction():
                answers = await self._apply(conn, batch)
        except BaseException as exc:
            err = as_unavailable(exc)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(err)
            if isinstance(exc, Exception):
                return
            raise
        self.batches += 1
        self.batched_ops += sum(1 for _, value, error in answers if error is None)
        for fut, value, error in answers:
            if fut.done():  # the caller was cancelled: its write stands
                continue
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(value)

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
                answers += await self._appends(conn, batch[i:j])
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

    async def _appends(
        self, conn: Conn, run: list[Item]
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        messages = [op.message for op, _ in run if isinstance(op, AppendOp)]
        try:
            async with conn.transaction():
                results = await append_many(conn, messages)
        except Exception as exc:
            if is_connection_error(exc) or len(run) == 1:
                if is_connection_error(exc):
                    raise
                return [(run[0][1], None, exc)]
            # One message the database refuses (say, a NUL character in its body) must
            # not take its batch with it: store them one by one.
            out = []
            for item in run:
                out += await self._appends(conn, [item])
            return out
        return [
            (fut, None, r) if isinstance(r, BaseException) else (fut, r, None)
            for (_, fut), r in zip(run, results, strict=True)
        ]


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
