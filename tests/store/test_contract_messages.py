"""Store contract: messages get gap-free seqs, retries are idempotent, replay is exact."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from chatd.core.errors import Conflict
from chatd.core.models import MessageKind, NewMessage, Sender
from tests.store.conftest import Backend
from tests.store.helpers import T0, all_messages, create, new_id, text, waiting_session


async def test_appends_get_consecutive_seqs(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s)
    stored = []
    for i in range(5):
        msg, created = await s.append_message(text(session.id, f"m{i}", ts=T0 + i))
        assert created is True
        stored.append(msg)
    assert [m.seq for m in stored] == [1, 2, 3, 4, 5]
    assert await all_messages(s, session.id) == stored


async def test_message_fields_round_trip(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s)
    engineer = Sender("engineer", new_id(), "Zoë Ødegård")
    new = NewMessage(
        id=new_id(), session_id=session.id, ts=T0 + 12.375, sender=engineer,
        kind=MessageKind.TEXT, body="```\nERROR 42 — café\n```\n<b>not html</b>",
        client_msg_id="e-1",
    )
    msg, _ = await s.append_message(new)
    assert (msg.id, msg.ts, msg.sender, msg.kind, msg.body, msg.client_msg_id) == (
        new.id, new.ts, new.sender, new.kind, new.body, new.client_msg_id
    )
    assert (msg.attachment, msg.event) == (None, None)
    assert await all_messages(s, session.id) == [msg]


async def test_attachment_and_event_dicts_round_trip(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s)
    attachment = {
        "id": new_id(), "filename": "crash log ü.txt", "content_type": "text/plain",
        "size": 123_456, "sha256": "ab" * 32, "url": "/api/attachments/x",
        "thumbnail": None, "image": False, "dims": [640, 480],
    }
    event = {"type": "escalation", "kind": "phone", "phone": "+44 20 7946 0000",
             "engineer": {"id": "e1", "name": "Alex"}, "ok": True, "n": 2.5}
    a, _ = await s.append_message(dataclasses.replace(
        text(session.id, "crash log ü.txt", ts=T0 + 1), kind=MessageKind.ATTACHMENT,
        attachment=attachment,
    ))
    e, _ = await s.append_message(dataclasses.replace(
        text(session.id, "Phone call requested", ts=T0 + 2), kind=MessageKind.SYSTEM,
        sender=Sender("system", None, "chatd"), event=event,
    ))
    got = await all_messages(s, session.id)
    assert got == [a, e]
    assert got[0].attachment == attachment and got[0].kind is MessageKind.ATTACHMENT
    assert got[1].event == event and got[1].sender.id is None


async def test_messages_after_is_exact(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s, first="m1")
    other, _ = await create(s, waiting_session(arrival_seq=2), first="elsewhere")
    for i in range(2, 11):
        await s.append_message(text(session.id, f"m{i}", ts=T0 + i))
    await s.append_message(text(other.id, "elsewhere 2", ts=T0 + 3))

    async def seqs(after: int, limit: int) -> list[int]:
        got = await s.messages_after(session.id, after, limit)
        assert all(m.session_id == session.id and m.body == f"m{m.seq}" for m in got)
        return [m.seq for m in got]

    assert await seqs(0, 100) == list(range(1, 11))
    assert await seqs(3, 4) == [4, 5, 6, 7]
    assert await seqs(8, 5) == [9, 10]
    assert await seqs(10, 5) == []
    assert await seqs(0, 1) == [1]
    assert await seqs(9, 1) == [10]
    assert await s.messages_after("no-such-session", 0, 10) == []


async def test_client_msg_id_retry_returns_the_original(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s, first="hello")
    original, created = await s.append_message(
        text(session.id, "restart the service?", ts=T0 + 1, client_msg_id="c-7")
    )
    assert created is True and original.seq == 2
    retry = text(session.id, "restart the service? (resent)", ts=T0 + 9, client_msg_id="c-7")
    again, created = await s.append_message(retry)
    assert created is False
    assert again == original  # the stored one: its id, seq, time and body
    assert [m.seq for m in await all_messages(s, session.id)] == [1, 2]
    # The retry left no hole: the next message follows on directly.
    nxt, _ = await s.append_message(text(session.id, "next", ts=T0 + 10, client_msg_id="c-8"))
    assert nxt.seq == 3


async def test_client_msg_id_of_the_other_side_is_a_conflict_not_a_retry(
    backend: Backend,
) -> None:
    s = backend.store
    session, _ = await create(s)
    await s.append_message(text(session.id, "from the customer", client_msg_id="m-1"))
    engineer = Sender("engineer", new_id(), "Alex")
    with pytest.raises(Conflict):
        await s.append_message(
            text(session.id, "from the engineer", client_msg_id="m-1", sender=engineer)
        )
    assert [m.body for m in await all_messages(s, session.id)] == ["from the customer"]


async def test_client_msg_id_is_scoped_to_its_session(backend: Backend) -> None:
    s = backend.store
    one, _ = await create(s, waiting_session(arrival_seq=1))
    two, _ = await create(s, waiting_session(arrival_seq=2))
    a, created_a = await s.append_message(text(one.id, "a", client_msg_id="c-1"))
    b, created_b = await s.append_message(text(two.id, "b", client_msg_id="c-1"))
    assert created_a and created_b and a.id != b.id
    assert [m.body for m in await all_messages(s, two.id)] == ["b"]


async def test_duplicates_in_one_concurrent_batch_store_once(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s, first="hello")
    sends = [text(session.id, f"try {i}", ts=T0 + i, client_msg_id="same") for i in range(4)]
    sends.insert(2, text(session.id, "different", ts=T0 + 2, client_msg_id="other"))
    results = await asyncio.gather(*(s.append_message(m) for m in sends))
    same = [r for r, m in zip(results, sends, strict=True) if m.client_msg_id == "same"]
    assert sum(created for _, created in same) == 1
    winner = next(msg for msg, created in same if created)
    assert all(msg == winner for msg, _ in same)
    stored = await all_messages(s, session.id)
    assert [m.seq for m in stored] == [1, 2, 3]
    assert sorted(m.client_msg_id or "" for m in stored) == ["", "other", "same"]


async def test_concurrent_appends_are_gap_free_per_session(backend: Backend) -> None:
    s = backend.store
    sessions = []
    for i in range(5):
        session, _ = await create(
            s, waiting_session(arrival_seq=i + 1), first="first" if i % 2 == 0 else None
        )
        sessions.append(session)
    per_session = 60
    # Interleaved across sessions, all in flight at once.
    sends = [
        text(sess.id, f"{sess.id}:{n}", ts=T0 + n, client_msg_id=f"c{n}")
        for n in range(per_session)
        for sess in sessions
    ]
    assert len(sends) == 300
    results = await asyncio.gather(*(s.append_message(m) for m in sends))
    assert all(created for _, created in results)
    for i, sess in enumerate(sessions):
        offset = 1 if i % 2 == 0 else 0
        acked = sorted(msg.seq for msg, _ in results if msg.session_id == sess.id)
        assert acked == list(range(1 + offset, per_session + 1 + offset))
        stored = await all_messages(s, sess.id)
        assert [m.seq for m in stored] == list(range(1, per_session + 1 + offset))
        # What each sender was told is exactly what is stored.
        by_id = {m.id: m for m in stored}
        for msg, _ in results:
            if msg.session_id == sess.id:
                assert by_id[msg.id] == msg
        assert sorted(m.body for m in stored if m.client_msg_id) == sorted(
            f"{sess.id}:{n}" for n in range(per_session)
        )
