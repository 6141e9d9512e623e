"""Store contract: invariants the database keeps for every process that shares it.

Two store instances on one database stand for two chatd processes. Backends one process
owns (SQLite) run only the tests that hold for a single instance too.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from chatd.core.errors import Conflict, SessionClosed
from chatd.core.models import Sender
from chatd.core.ports import Store
from tests.store.conftest import Backend
from tests.store.helpers import (
    T0,
    add_engineer,
    all_messages,
    assigned,
    create,
    customer,
    end_note,
    ended,
    text,
    waiting_session,
)


async def second(backend: Backend) -> Store:
    if not backend.shared:
        pytest.skip(f"one process owns a {backend.name} database")
    return await backend.another()


async def test_one_open_chat_per_customer(backend: Backend) -> None:
    s = backend.store
    who = customer(1)
    first, _ = await create(s, waiting_session(cust=who))
    with pytest.raises(Conflict):
        await create(s, waiting_session(cust=who, arrival_seq=2))
    # Nothing of the refused one was stored; once the first ends, a new chat may open.
    assert [x.id for x in await s.open_sessions()] == [first.id]
    await s.end_session(ended(first, T0 + 5), end_note(first.id, ts=T0 + 5), [])
    again, _ = await create(s, waiting_session(cust=who, arrival_seq=3))
    assert [x.id for x in await s.open_sessions()] == [again.id]


async def test_appends_from_two_processes_share_one_gap_free_seq(backend: Backend) -> None:
    a, b = backend.store, await second(backend)
    session, _ = await create(a)
    # Each message is sent twice, once through each process (a retry that reached the
    # other one), interleaved, together.
    sends = []
    for i in range(60):
        m = text(session.id, f"m{i}", ts=T0 + i, client_msg_id=f"c{i}")
        sends += [a.append_message(m), b.append_message(dataclasses.replace(m, id=f"x{i}"))]
    results = await asyncio.gather(*sends)
    stored = await all_messages(a, session.id)
    assert [m.seq for m in stored] == list(range(1, 61))
    assert sorted(m.client_msg_id or "" for m in stored) == sorted(f"c{i}" for i in range(60))
    by_cid = {m.client_msg_id: m for m in stored}
    # Of each pair, one stored it and the other was answered with that same message.
    for i in range(60):
        (m1, new1), (m2, new2) = results[2 * i], results[2 * i + 1]
        assert m1 == m2 == by_cid[f"c{i}"]
        assert sorted([new1, new2]) == [False, True]


async def test_a_retry_by_another_sender_is_refused_across_processes(backend: Backend) -> None:
    a, b = backend.store, await second(backend)
    session, _ = await create(a)
    await a.append_message(text(session.id, "mine", client_msg_id="c-1"))
    other = Sender("engineer", "eng-1", "Eng")
    with pytest.raises(Conflict):
        await b.append_message(text(session.id, "theirs", client_msg_id="c-1", sender=other))
    assert [m.body for m in await all_messages(a, session.id)] == ["mine"]


async def test_exactly_one_of_two_processes_accepts(backend: Backend) -> None:
    a, b = backend.store, await second(backend)
    one = await add_engineer(a, "one@example.com")
    two = await add_engineer(a, "two@example.com")
    session, _ = await create(a)
    results = await asyncio.gather(
        a.assign_session(assigned(session, one, T0 + 1), ["waiting"], None),
        b.assign_session(assigned(session, two, T0 + 1), ["waiting"], None),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["Conflict", "NoneType"]
    winner = one if results[0] is None else two
    got = await b.get_session(session.id)
    assert got is not None and got.engineer == winner


async def test_no_message_after_the_end_whichever_process_sends(backend: Backend) -> None:
    a, b = backend.store, await second(backend)
    session, _ = await create(a)
    sends = [b.append_message(text(session.id, f"m{i}", ts=T0 + i)) for i in range(30)]
    ending = a.end_session(ended(session, T0 + 15), end_note(session.id, ts=T0 + 15), [])
    results = await asyncio.gather(*sends[:15], ending, *sends[15:], return_exceptions=True)
    stored = await all_messages(a, session.id)
    assert [m.seq for m in stored] == list(range(1, len(stored) + 1))
    # The end's message is the last one; every send after it was refused.
    assert stored[-1].event == {"type": "ended", "reason": "engineer_ended"}
    refused = [r for r in results if isinstance(r, SessionClosed)]
    assert len(stored) - 1 + len(refused) == 30


async def test_two_processes_never_claim_the_same_handoff(backend: Backend) -> None:
    a, b = backend.store, await second(backend)
    for n in range(20):
        session, _ = await create(a, waiting_session(arrival_seq=n + 1), first="hi")
        await a.end_session(ended(session, T0 + 5), end_note(session.id, ts=T0 + 5), ["file"])
    batches = await asyncio.gather(*(
        store.claim_handoffs(T0 + 10, 3, 60.0, ["file"]) for store in (a, b) * 10
    ))
    ids = [h.id for batch in batches for h in batch]
    assert len(ids) == len(set(ids)) == 20
