"""The SQLite writer's two paths: plain-function writes (message appends), which the
database thread commits batch after batch by itself, and coroutine writes (everything
else), which the writer task runs a statement at a time. Writes of both kinds keep the
order they were made in, and a failure in either fails alone."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from chatd.core.errors import Conflict, SessionClosed
from chatd.core.models import Sender, SessionState
from chatd.store.sqlite import SQLiteStore
from tests.store.helpers import T0, all_messages, create, end_note, ended, text, waiting_session


@pytest.fixture
async def store(tmp_path: Path) -> SQLiteStore:
    s = SQLiteStore(tmp_path / "writer.db")
    await s.open()
    yield s  # type: ignore[misc]
    await s.close()


async def test_writes_of_both_kinds_keep_their_order(store: SQLiteStore) -> None:
    session, _ = await create(store)
    before = [store.append_message(text(session.id, f"before {i}", ts=T0 + i)) for i in range(5)]
    end = store.end_session(
        ended(session, T0 + 10), end_note(session.id, ts=T0 + 10), ["file"]
    )
    after = store.append_message(text(session.id, "after the end", ts=T0 + 11))
    results = await asyncio.gather(*before, end, after, return_exceptions=True)

    # Made before the end (a coroutine write): stored. Made after it: refused.
    assert [m.seq for m, _ in results[:5]] == [1, 2, 3, 4, 5]  # type: ignore[misc]
    assert results[5].seq == 6  # type: ignore[union-attr]
    assert isinstance(results[6], SessionClosed)
    stored = await all_messages(store, session.id)
    assert [m.body for m in stored] == [f"before {i}" for i in range(5)] + [stored[5].body]


async def test_a_failing_coroutine_write_fails_alone_in_its_batch(store: SQLiteStore) -> None:
    sessions = [(await create(store, waiting_session(arrival_seq=i)))[0] for i in range(1, 6)]

    def rename(session_id: str, topic: str, fail: bool = False):  # type: ignore[no-untyped-def]
        async def op(conn: aiosqlite.Connection) -> None:
            await conn.execute("UPDATE sessions SET topic = ? WHERE id = ?", (topic, session_id))
            if fail:
                raise RuntimeError("simulated driver failure")

        return op

    batches_before = store.batches
    results = await asyncio.gather(
        *(store._write(rename(s.id, f"renamed {i}")) for i, s in enumerate(sessions[:4])),
        store._write(rename(sessions[4].id, "half-done", fail=True)),
        return_exceptions=True,
    )
    assert results[:4] == [None] * 4
    assert isinstance(results[4], RuntimeError)
    # one failed batch, then each of its five writes in a transaction of its own
    assert store.batches - batches_before == 4
    topics = [(await store.get_session(s.id)).topic for s in sessions]  # type: ignore[union-attr]
    assert topics == [f"renamed {i}" for i in range(4)] + [sessions[4].topic]


async def test_every_append_is_answered_under_a_stream_of_writes(store: SQLiteStore) -> None:
    # Appends keep arriving while the database thread commits; none is left unanswered,
    # and they share commits.
    session, _ = await create(store)
    batches_before = store.batches

    async def sender(k: int) -> list[int]:
        seqs = []
        for i in range(20):
            msg, _ = await store.append_message(text(session.id, f"{k}/{i}", ts=T0 + i))
            seqs.append(msg.seq)
        return seqs

    per_sender = await asyncio.wait_for(asyncio.gather(*(sender(k) for k in range(10))), 60)
    assert sorted(seq for seqs in per_sender for seq in seqs) == list(range(1, 201))
    assert all(seqs == sorted(seqs) for seqs in per_sender)
    assert store.batches - batches_before < 200
    assert len(await all_messages(store, session.id)) == 200


async def test_a_retry_inside_a_batch_is_answered_with_the_stored_message(
    store: SQLiteStore,
) -> None:
    session, _ = await create(store)
    engineer = Sender("engineer", "eng-1", "Alex")
    first = text(session.id, "hello", client_msg_id="c-1")
    retry = text(session.id, "hello", client_msg_id="c-1")
    stolen = text(session.id, "not yours", client_msg_id="c-1", sender=engineer)
    others = [text(session.id, f"other {i}", client_msg_id=f"o-{i}") for i in range(3)]
    results = await asyncio.gather(
        store.append_message(others[0]),
        store.append_message(first),
        store.append_message(others[1]),
        store.append_message(retry),
        store.append_message(stolen),
        store.append_message(others[2]),
        return_exceptions=True,
    )
    (o0, new0), (m1, new1), (o1, _), (m2, new2) = results[:4]  # type: ignore[misc]
    assert new0 and new1 and not new2
    assert m2 == m1 and m2.id == first.id
    assert isinstance(results[4], Conflict)
    stored = await all_messages(store, session.id)
    assert [m.seq for m in stored] == [1, 2, 3, 4]
    assert [m.id for m in stored] == [others[0].id, first.id, others[1].id, others[2].id]


async def test_a_session_closed_by_a_state_change_takes_no_more_messages(
    store: SQLiteStore,
) -> None:
    session, _ = await create(store)
    await store.append_message(text(session.id, "written while open", client_msg_id="c1"))
    closed = dataclasses.replace(session, state=SessionState.ABANDONED)
    await store.save_session_state(closed)
    with pytest.raises(SessionClosed):
        await store.append_message(text(session.id, "too late", client_msg_id="c2"))
    # a retry of a message from when it was open is refused the same way
    with pytest.raises(SessionClosed):
        await store.append_message(text(session.id, "written while open", client_msg_id="c1"))
    assert [m.body for m in await all_messages(store, session.id)] == ["written while open"]


async def test_a_failing_row_fails_alone_in_a_batch_of_several_inserts(
    store: SQLiteStore,
) -> None:
    # 70 appends: the first 64 rows are one insert, the rest another, which holds a retry
    # of the first message (so it goes one by one) and a row the database refuses.
    session, _ = await create(store)
    msgs = [text(session.id, f"m{i}", client_msg_id=f"c{i}") for i in range(70)]
    msgs[65] = text(session.id, "m0", client_msg_id="c0")
    msgs[66] = dataclasses.replace(msgs[66], body=None)  # type: ignore[arg-type]
    results = await asyncio.gather(
        *(store.append_message(m) for m in msgs), return_exceptions=True
    )
    assert [i for i, r in enumerate(results) if isinstance(r, BaseException)] == [66]
    first, created = results[0]  # type: ignore[misc]
    assert created and results[65] == (first, False)
    fresh = [r for i, r in enumerate(results) if i not in (65, 66)]
    assert all(created for _, created in fresh)  # type: ignore[misc]
    rows = await all_messages(store, session.id)
    assert [m.seq for m in rows] == list(range(1, 69))
    assert sorted(m.id for m in rows) == sorted(m.id for m, _ in fresh)  # type: ignore[misc]


async def test_the_writer_survives_a_failing_rollback(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A broken disk can make even ROLLBACK fail. Every caller is still answered, nothing
    # is stored twice, and the writer goes on.
    import chatd.store.sqlite_writer as sqlite_module

    real = sqlite_module._rollback_sync

    def failing(c: Any) -> None:
        real(c)
        raise sqlite_module.sqlite3.OperationalError("disk I/O error (simulated)")

    session, _ = await create(store)
    monkeypatch.setattr(sqlite_module, "_rollback_sync", failing)
    msgs = [text(session.id, f"m{i}") for i in range(100)]  # no client_msg_id, as uploads
    msgs[70] = dataclasses.replace(msgs[70], body=None)  # type: ignore[arg-type]
    sends = [asyncio.ensure_future(store.append_message(m)) for m in msgs]
    done, pending = await asyncio.wait(sends, timeout=30)
    assert not pending
    monkeypatch.setattr(sqlite_module, "_rollback_sync", real)
    stored = await all_messages(store, session.id)
    assert len({m.body for m in stored}) == len(stored)  # nothing twice
    acked = [t.result()[0] for t in sends if t.exception() is None]
    assert {m.id for m in acked} <= {m.id for m in stored}
    after, _ = await store.append_message(text(session.id, "still writing"))
    assert after.seq == max(m.seq for m in stored) + 1
