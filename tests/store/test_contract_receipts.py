"""Store contract: read marks (how far each side of a chat has read) are kept per side,
never move back, never pass the chat's last message, survive a restart, and a flood of
them costs one write (docs/protocol.md#read-marks)."""

from __future__ import annotations

import asyncio
import random

import pytest

from chatd.core.ports import Store
from tests.store.conftest import Backend
from tests.store.helpers import T0, create, text


async def chat_with(store: Store, messages: int) -> str:
    session, _ = await create(store)
    for i in range(messages):
        await store.append_message(text(session.id, f"m{i}", ts=T0 + i))
    return session.id


async def test_each_side_keeps_its_own_mark_and_a_lower_seq_never_moves_it_back(
    backend: Backend,
) -> None:
    s = backend.store
    sid = await chat_with(s, 6)
    assert await s.read_marks(sid) == {"customer": 0, "engineer": 0}
    await s.mark_read(sid, "customer", 3)
    assert await s.read_marks(sid) == {"customer": 3, "engineer": 0}
    await s.mark_read(sid, "engineer", 6)
    await s.mark_read(sid, "customer", 2)  # a late receipt from another tab
    assert await s.read_marks(sid) == {"customer": 3, "engineer": 6}
    await s.mark_read(sid, "customer", 5)
    assert await s.read_marks(sid) == {"customer": 5, "engineer": 6}


async def test_a_mark_past_the_last_message_is_kept_at_the_last_message(
    backend: Backend,
) -> None:
    s = backend.store
    sid = await chat_with(s, 4)
    await s.mark_read(sid, "engineer", 1_000_000)
    assert await s.read_marks(sid) == {"customer": 0, "engineer": 4}
    await s.append_message(text(sid, "a fifth", ts=T0 + 9))
    await s.mark_read(sid, "engineer", 5)
    assert (await s.read_marks(sid))["engineer"] == 5


async def test_a_chat_without_messages_or_unknown_gets_no_mark(backend: Backend) -> None:
    s = backend.store
    empty = await chat_with(s, 0)
    await s.mark_read(empty, "customer", 3)
    await s.mark_read("no-such-chat", "customer", 3)
    assert await s.read_marks(empty) == {"customer": 0, "engineer": 0}
    assert await s.read_marks("no-such-chat") == {"customer": 0, "engineer": 0}


async def test_marks_are_stored_when_acknowledged_and_survive_a_restart(
    backend: Backend,
) -> None:
    sid = await chat_with(backend.store, 3)
    await backend.store.mark_read(sid, "customer", 2)
    await backend.store.mark_read(sid, "engineer", 3)
    # As a crashed process leaves it: never told to close.
    again = await backend.reopen(close_first=False)
    assert await again.read_marks(sid) == {"customer": 2, "engineer": 3}


async def test_a_flood_of_marks_is_one_write_keeping_the_highest_per_chat_and_side(
    backend: Backend,
) -> None:
    s = backend.store
    chats = [await chat_with(s, 40) for _ in range(3)]
    marks = [(sid, side, seq) for sid in chats for side in ("customer", "engineer")
             for seq in range(1, 41)]
    random.Random(7).shuffle(marks)
    counters = backend.commit_counters()
    assert counters is not None
    await asyncio.gather(*(s.mark_read(*m) for m in marks))
    after = backend.commit_counters()
    assert after is not None
    # 240 receipts arrived together: one write stored them, six rows.
    assert after[1] - counters[1] == 1
    for sid in chats:
        assert await s.read_marks(sid) == {"customer": 40, "engineer": 40}


async def test_marks_beside_message_appends_leave_the_appends_whole(backend: Backend) -> None:
    s = backend.store
    sid = await chat_with(s, 1)

    async def customer_reads(upto: int) -> None:
        await s.mark_read(sid, "customer", upto)

    results = await asyncio.gather(*(
        coro for i in range(60) for coro in (
            s.append_message(text(sid, f"e{i}", ts=T0 + 10 + i, client_msg_id=f"e{i}")),
            customer_reads(i + 1),
        )
    ))
    stored = [r for r in results if r is not None]
    assert sorted(m.seq for m, _ in stored) == list(range(2, 62))
    # The receipts named seqs up to 60, each at most the last seq when it was written.
    assert 1 <= (await s.read_marks(sid))["customer"] <= 60
    await s.mark_read(sid, "customer", 61)
    assert (await s.read_marks(sid))["customer"] == 61


async def test_a_mark_in_a_batch_that_fails_is_still_stored(backend: Backend) -> None:
    s = backend.store
    sid = await chat_with(s, 5)
    failing = asyncio.ensure_future(backend.failing_write(sid))
    await s.mark_read(sid, "engineer", 4)
    with pytest.raises(RuntimeError):
        await failing
    assert await s.read_marks(sid) == {"customer": 0, "engineer": 4}
