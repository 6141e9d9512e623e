"""Store contract: how concurrent writes are committed (group commit, isolation, shutdown)."""

from __future__ import annotations

import asyncio

import pytest

from tests.store.conftest import Backend
from tests.store.helpers import T0, all_messages, create, text, waiting_session


async def test_concurrent_appends_share_commits(backend: Backend) -> None:
    s = backend.store
    if backend.commit_counters() is None:
        pytest.skip(f"{backend.name} does not group commits")
    session, _ = await create(s)
    before = backend.commit_counters()
    assert before is not None
    n = 100
    results = await asyncio.gather(
        *(s.append_message(text(session.id, f"m{i}", ts=T0 + i)) for i in range(n))
    )
    after = backend.commit_counters()
    assert after is not None
    commits, ops = after[0] - before[0], after[1] - before[1]
    assert ops == n
    assert 1 <= commits < n
    # Grouping changes nothing a caller sees.
    assert sorted(m.seq for m, _ in results) == list(range(1, n + 1))


async def test_a_failing_write_fails_alone_in_its_batch(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s, first="hello")
    other, _ = await create(s, waiting_session(arrival_seq=2))
    before = len(await all_messages(s, session.id))
    results = await asyncio.gather(
        *(s.append_message(text(session.id, f"a{i}", ts=T0 + i)) for i in range(10)),
        s.append_message(text(other.id, "elsewhere", ts=T0)),
        backend.failing_write(session.id),
        *(s.append_message(text(session.id, f"b{i}", ts=T0 + i)) for i in range(10)),
        return_exceptions=True,
    )
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1 and isinstance(failed[0], RuntimeError)
    assert isinstance(results[11], RuntimeError)
    # It really shared a transaction with appends gathered before it.
    assert backend.failing_write_saw and backend.failing_write_saw[0] > before

    acked = [r[0] for r in results if isinstance(r, tuple)]
    assert len(acked) == 21
    stored = await all_messages(s, session.id) + await all_messages(s, other.id)
    assert {m.id: m for m in acked}.items() <= {m.id: m for m in stored}.items()
    assert [m.seq for m in await all_messages(s, session.id)] == list(range(1, 22))
    assert [m.seq for m in await all_messages(s, other.id)] == [1]
    # Its own change was rolled back.
    got = await s.get_session(session.id)
    assert got is not None and got.topic == session.topic
    # The store carries on as before.
    nxt, _ = await s.append_message(text(session.id, "after", ts=T0 + 50))
    assert nxt.seq == 22


async def test_close_finishes_writes_in_flight(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s)
    sends = [
        asyncio.create_task(s.append_message(text(session.id, f"m{i}", ts=T0 + i)))
        for i in range(50)
    ]
    await asyncio.sleep(0)  # every send has reached the store
    await s.close()
    acked = [(await t)[0] for t in sends]
    assert sorted(m.seq for m in acked) == list(range(1, 51))
    fresh = await backend.reopen()
    assert await all_messages(fresh, session.id) == sorted(acked, key=lambda m: m.seq)


async def test_a_write_during_close_is_answered(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s)
    closing = asyncio.create_task(s.close())
    await asyncio.sleep(0)  # close has begun and waits for the writes before it
    late_msg = text(session.id, "sent while shutting down")
    late = asyncio.create_task(s.append_message(late_msg))
    await closing
    # Stored or refused, but never left hanging: a hang fails here, not at the suite timeout.
    try:
        msg, _ = await asyncio.wait_for(late, 30)
    except TimeoutError:
        pytest.fail("a write made while the store was closing was never answered")
    except Exception:
        stored = False
    else:
        stored = msg.seq == 1
        assert stored
    fresh = await backend.reopen()
    assert [m.id for m in await all_messages(fresh, session.id)] == (
        [late_msg.id] if stored else []
    )
