"""The SQLite store's single writer: the write connection, its thread, and group commit
(docs/design.md#one-writer-group-commit).

In the shape of Datasette's ``Database``: one writer owns the write connection outright, a
plain sqlite3 connection opened on a thread of its own that no other thread touches, and
every write is handed to it as a whole operation, a function of that connection, and
awaited (``SQLiteWriter.write``). Writes come in two kinds:

- plain functions of the sqlite3 connection (``SyncOp``: message appends above all). The
  database thread takes these from the head of the queue itself, batch after batch, and
  answers each batch's callers through the event loop without waiting for it between two
  commits. A batch made only of one kind that comes in floods (``ChunkedOp``) is written
  by that kind a chunk at a time, one statement per chunk, each its own transaction.
- coroutines of a ``WriteConnection`` (everything else): the writer task runs these on
  the event loop, a hop to the database thread per statement.

The writer drains every write queued at that moment into one transaction and commits
once, then answers each caller: many writes cost one fsync, and no caller hears "stored"
before the commit. Each statement lets go of the GIL and must take it back from a busy
event loop, which is why appends go many rows to a statement, and why ``chatd serve``
shortens the interpreter's switch interval (docs/design.md#one-writer-group-commit).

Write operations must raise a DeskError only *before* they change anything; any other
exception rolls the batch back and its operations are retried one transaction each, so
that one bad operation fails alone. After every rollback the writer calls its
``on_rollback`` hook, so that caches of what was written (the message log's) are dropped.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from queue import SimpleQueue
from typing import Any, ClassVar, TypeVar

from ..core.errors import DeskError
from ..tasks import cancel_and_wait

log = logging.getLogger(__name__)

T = TypeVar("T")
WriteOp = Callable[["WriteConnection"], Awaitable[Any]]
# What a write's caller is told, collected on the database thread and given on the loop.
Answer = tuple[asyncio.Future[Any], Any, BaseException | None]
# A call for the database thread, and the future that gets its result.
_Call = tuple[asyncio.Future[Any], Callable[[], Any]]

MAX_BATCH = 512


# ---------------------------------------------------------------------- the connection


class WriteConnection:
    """The write connection: a plain sqlite3 connection that lives on a thread of its own
    (started by ``open``, ended by ``close``). ``run`` hands that thread a whole function of
    the connection, one hop whatever the function does; ``execute`` one statement, for the
    coroutine writes, whose cursors then fetch in a hop each."""

    def __init__(self) -> None:
        self._calls: SimpleQueue[_Call | None] = SimpleQueue()
        self._conn: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: Path) -> WriteConnection:
        self = cls()
        # A daemon, as Datasette's write thread: an interpreter that exits without closing
        # the store is not held up by it (SQLite's journal makes that a crash, not a loss).
        threading.Thread(
            target=_serve, args=(self._calls,), name="chatd-sqlite-writer", daemon=True
        ).start()
        try:
            # Autocommit: the writer opens its transactions itself (BEGIN IMMEDIATE), and a
            # statement outside one is its own transaction.
            self._conn = await self._call(
                functools.partial(sqlite3.connect, path, isolation_level=None)
            )
        except BaseException:
            self._calls.put_nowait(None)
            raise
        return self

    async def close(self) -> None:
        """Close the connection on its thread, then end the thread."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await self._call(conn.close)
        finally:
            self._calls.put_nowait(None)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the connection's thread, in one hop."""
        if self._conn is None:
            raise RuntimeError("the write connection is closed")
        return await self._call(functools.partial(fn, self._conn))

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> WriteCursor:
        """One statement, in one hop."""
        if self._conn is None:
            raise RuntimeError("the write connection is closed")
        cursor = await self._call(functools.partial(self._conn.execute, sql, parameters))
        return WriteCursor(self, cursor)

    async def _call(self, fn: Callable[[], T]) -> T:
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._calls.put_nowait((fut, fn))
        return await fut


class WriteCursor:
    """A statement's cursor on the write connection: ``rowcount`` at once, rows in a hop."""

    __slots__ = ("_conn", "_cursor")

    def __init__(self, conn: WriteConnection, cursor: sqlite3.Cursor) -> None:
        self._conn = conn
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    async def fetchone(self) -> Any:
        return await self._conn._call(self._cursor.fetchone)

    async def fetchall(self) -> list[Any]:
        return await self._conn._call(self._cursor.fetchall)


def _serve(calls: SimpleQueue[_Call | None]) -> None:
    """The database thread: each call in turn, answered on its caller's event loop, until
    the connection is closed (None)."""
    while True:
        call = calls.get()
        if call is None:
            return
        fut, fn = call
        try:
            result = fn()
        except BaseException as exc:  # the caller's to handle, whatever it is
            fut.get_loop().call_soon_threadsafe(_fail, fut, exc)
        else:
            fut.get_loop().call_soon_threadsafe(_succeed, fut, result)


def _succeed(fut: asyncio.Future[Any], result: Any) -> None:
    if not fut.done():  # the caller gave up waiting
        fut.set_result(result)


def _fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


# ---------------------------------------------------------------------- the writes


class SyncOp:
    """A write that is a plain function of the sqlite3 connection. The database thread runs
    these itself, batch after batch (SQLiteWriter._drain_sync); calling one runs it like a
    coroutine write, in one hop to that thread."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        self.fn = fn

    async def __call__(self, conn: WriteConnection) -> Any:
        return await conn.run(self.fn)


class ChunkedOp(SyncOp):
    """A SyncOp of a kind that comes in floods (message appends). A batch made only of ops
    of one such kind is handed to the kind in chunks of at most ``chunk_size``: each chunk
    one statement run in autocommit (its own transaction and commit), rather than BEGIN,
    a statement each and COMMIT (SQLiteWriter._chunked_sync)."""

    __slots__ = ()
    chunk_size: ClassVar[int]

    def write_chunk(
        self, c: sqlite3.Connection, chunk: Sequence[tuple[ChunkedOp, asyncio.Future[Any]]]
    ) -> list[Answer] | None:
        """Store ``chunk`` (ops of this kind, this one first) in one statement run in
        autocommit, and say what to answer each; or None, having written nothing, when the
        chunk cannot be one statement: the writer then runs its ops in one transaction."""
        raise NotImplementedError


# ---------------------------------------------------------------------- the writer


class SQLiteWriter:
    """The one writer of a database: ``open`` the connection (then migrate it), ``start``
    taking writes, ``write`` whole operations, ``stop`` (every write queued before is
    answered), ``close``. ``on_rollback`` is called after every rollback, on whichever
    thread rolled back, while no write runs."""

    def __init__(
        self, path: Path, *, synchronous: str = "full", on_rollback: Callable[[], None]
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self._on_rollback = on_rollback
        self._conn: WriteConnection | None = None
        # Writes waiting for the writer, oldest first. The event loop appends; the writer
        # takes from the head (on the database thread while it drains SyncOps).
        self._ops: deque[tuple[WriteOp, asyncio.Future[Any]]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # number of commits, for tests and benchmarks
        self.batched_ops = 0

    # ------------------------------------------------------------------ life cycle

    async def open(self) -> WriteConnection:
        """Open the write connection; WAL, with ``synchronous`` as the durability level."""
        conn = self._conn = await WriteConnection.open(self.path)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=5000")
        return conn

    def start(self) -> None:
        """Start taking writes (after migrations, which use the connection directly)."""
        self._task = asyncio.create_task(self._write_loop(), name="chatd-sqlite-writer")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Answer every write queued so far, then take no more."""
        if self._task is None:
            return
        # Refuse new writes now: one queued behind the stop marker would never be answered.
        task, self._task = self._task, None
        # Let queued writes finish: they were promised to their callers.
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ops.append((_stop_op, done))
        self._wake.set()
        await done
        await cancel_and_wait(task)

    async def close(self) -> None:
        await self.stop()
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    # ------------------------------------------------------------------ writes

    async def write(self, op: Callable[[WriteConnection], Awaitable[T]]) -> T:
        """Queue a write and wait until it is committed (or refused, or failed)."""
        if self._task is None:
            raise RuntimeError("the store is not open")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._ops.append((op, fut))
        self._wake.set()
        return await fut

    async def _write_loop(self) -> None:
        conn = self._conn
        assert conn is not None
        loop = asyncio.get_running_loop()
        ops = self._ops
        while True:
            await self._wake.wait()
            self._wake.clear()
            while ops:
                op = ops[0][0]
                if isinstance(op, SyncOp):
                    # The database thread takes the plain-function writes itself, batch
                    # after batch, without waiting for this loop between commits.
                    try:
                        await conn.run(lambda c: self._drain_sync(c, loop))
                    except Exception as exc:  # the drain answers its batches; if it
                        # could not, fail the write at the head and carry on
                        log.exception("the database thread failed")
                        if ops and isinstance(ops[0][0], SyncOp):
                            _, fut = ops.popleft()
                            if not fut.done():
                                fut.set_exception(exc)
                    continue
                if op is _stop_op:
                    done = ops.popleft()[1]
                    if not done.done():
                        done.set_result(None)
                    continue
                batch: list[tuple[WriteOp, asyncio.Future[Any]]] = []
                while ops and len(batch) < MAX_BATCH and _is_coroutine_op(ops[0][0]):
                    batch.append(ops.popleft())
                await self._run_batch(conn, batch)

    # ------------------------------------------------------------------ on the database thread

    def _drain_sync(self, c: sqlite3.Connection, loop: asyncio.AbstractEventLoop) -> None:
        """On the database thread: commit the SyncOps at the head of the queue in batches,
        back to back, answering each batch's callers through the event loop, until the
        head is empty or another kind of write. Only this thread takes from the queue
        while it runs (the loop waits for it); the loop only appends."""
        ops = self._ops
        while ops and isinstance(ops[0][0], SyncOp):
            batch: list[tuple[SyncOp, asyncio.Future[Any]]] = []
            while ops and len(batch) < MAX_BATCH and isinstance(ops[0][0], SyncOp):
                batch.append(ops.popleft())  # type: ignore[arg-type]
            try:
                kind = type(batch[0][0])
                if issubclass(kind, ChunkedOp) and all(type(op) is kind for op, _ in batch):
                    # chunk by chunk, each committed or failed on its own: never retried
                    # as a whole, which would store committed chunks twice
                    results = self._chunked_sync(c, batch)  # type: ignore[arg-type]
                else:
                    try:
                        results = _run_sync_batch(c, batch)
                        self.batches += 1
                    except Exception:
                        results = self._one_by_one(c, batch)
            except Exception as exc:  # a bug or a broken connection: tell every caller
                log.exception("a write batch could not be carried out")
                results = [(fut, None, exc) for _, fut in batch]
            self.batched_ops += len(batch)
            loop.call_soon_threadsafe(_resolve, results)

    def _chunked_sync(
        self, c: sqlite3.Connection, batch: list[tuple[ChunkedOp, asyncio.Future[Any]]]
    ) -> list[Answer]:
        """A batch of one ChunkedOp kind, up to ``chunk_size`` ops in one statement that is
        its own transaction: one statement a chunk rather than BEGIN, a statement each and
        COMMIT. It matters because each statement lets go of the GIL and must take it back
        from a busy event loop. Each chunk commits on its own, so a chunk that fails goes
        one by one by itself, and the chunks before it stay answered as stored."""
        out: list[Answer] = []
        size = batch[0][0].chunk_size
        for start in range(0, len(batch), size):
            chunk = batch[start:start + size]
            try:
                answers = chunk[0][0].write_chunk(c, chunk)
                if answers is None:
                    answers = _run_sync_batch(c, chunk)
                out += answers
                self.batches += 1
            except Exception:
                out += self._one_by_one(c, chunk)
        return out

    def _one_by_one(
        self, c: sqlite3.Connection, batch: Sequence[tuple[SyncOp, asyncio.Future[Any]]]
    ) -> list[Answer]:
        """After a failed batch: roll back, then each operation in a transaction of its own,
        so that one bad operation fails alone."""
        _rollback_sync(c)
        self._on_rollback()  # caches may hold rows that were rolled back
        if len(batch) > 1:
            log.warning("a write batch failed; retrying its operations one by one",
                        exc_info=True)
        results: list[Answer] = []
        for item in batch:
            try:
                results += _run_sync_batch(c, [item])
                self.batches += 1
            except Exception as exc:
                _rollback_sync(c)
                self._on_rollback()
                results.append((item[1], None, exc))
        return results

    # ------------------------------------------------------------------ on the event loop

    async def _run_batch(
        self, conn: WriteConnection, batch: list[tuple[WriteOp, asyncio.Future[Any]]]
    ) -> None:
        results: list[Answer] = []
        try:
            await conn.execute("BEGIN IMMEDIATE")
            for op, fut in batch:
                try:
                    results.append((fut, await op(conn), None))
                except DeskError as exc:  # refused before writing anything
                    results.append((fut, None, exc))
            await conn.execute("COMMIT")
        except Exception as exc:
            await self._rollback(conn)
            if len(batch) == 1:
                fut = batch[0][1]
                if not fut.done():
                    fut.set_exception(exc)
                return
            log.warning("a write batch failed; retrying its operations one by one", exc_info=True)
            for item in batch:
                await self._run_batch(conn, [item])
            return
        self.batches += 1
        self.batched_ops += len(batch)
        _resolve(results)

    async def _rollback(self, conn: WriteConnection) -> None:
        self._on_rollback()  # caches may hold rows that were rolled back
        try:
            await conn.execute("ROLLBACK")
        except Exception:  # no transaction was open
            pass


def _resolve(results: list[Answer]) -> None:
    """Answer a committed batch's callers (on the event loop)."""
    for fut, value, error in results:
        if fut.done():  # the caller gave up waiting
            continue
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(value)


def _is_coroutine_op(op: WriteOp) -> bool:
    return op is not _stop_op and not isinstance(op, SyncOp)


def _rollback_sync(c: sqlite3.Connection) -> None:
    """Roll back what is open, if anything; best effort (a failed transaction may have
    been rolled back by SQLite already, and a broken connection cannot)."""
    try:
        if c.in_transaction:
            c.execute("ROLLBACK")
    except Exception:
        log.exception("rollback failed")


def _run_sync_batch(
    c: sqlite3.Connection, batch: Sequence[tuple[SyncOp, asyncio.Future[Any]]]
) -> list[Answer]:
    """One transaction for a batch of SyncOps, on the database thread. Futures are only
    collected here; they are resolved on the event loop after the commit."""
    out: list[Answer] = []
    c.execute("BEGIN IMMEDIATE")
    for op, fut in batch:
        try:
            out.append((fut, op.fn(c), None))
        except DeskError as exc:  # refused before writing anything
            out.append((fut, None, exc))
    c.execute("COMMIT")
    return out


async def _stop_op(conn: WriteConnection) -> None:  # pragma: no cover - a marker
    return None
