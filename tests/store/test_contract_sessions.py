"""Store contract: sessions from request to end (create, read, assign, save, end)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from chatd.core.errors import Conflict, SessionClosed
from chatd.core.models import EndReason, MessageKind, NewMessage, Role, SessionState, Tier
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
    system,
    text,
    waiting_session,
)

WAITING_OR_OFFERED = (SessionState.OFFERED.value, SessionState.WAITING.value)
ACTIVE = (SessionState.ACTIVE.value,)


def join_note(session_id: str, ts: float) -> NewMessage:
    return system(session_id, "Alex joined the chat", {"type": "assigned"}, ts=ts)


# ---------------------------------------------------------------------------- create / get


async def test_create_session_without_first_message(backend: Backend) -> None:
    s = backend.store
    session, msg = await create(s)
    assert msg is None
    assert await all_messages(s, session.id) == []
    assert await s.get_session(session.id) == session


async def test_a_surge_of_new_chats_is_stored_and_a_second_open_chat_refused(
    backend: Backend,
) -> None:
    """Hundreds of chats created at once (group-committed together), one customer among
    them asking twice: every other chat is stored, in full, and only the second chat of
    that customer is refused, whichever of the two came first."""
    s = backend.store
    twice = customer(7)
    sessions = [waiting_session(arrival_seq=n + 1) for n in range(300)]
    sessions[150] = waiting_session(arrival_seq=151, cust=twice)
    sessions[151] = waiting_session(arrival_seq=152, cust=twice)
    results = await asyncio.gather(
        *(s.create_session(x, f"hash-{x.id}", None) for x in sessions),
        return_exceptions=True,
    )
    refused = [i for i, r in enumerate(results) if isinstance(r, Conflict)]
    assert len(refused) == 1 and refused[0] in (150, 151), results[148:154]
    assert all(r is None for i, r in enumerate(results) if i != refused[0])
    stored = await s.open_sessions()
    assert [x.id for x in stored] == [x.id for i, x in enumerate(sessions) if i != refused[0]]
    again = await s.get_session(sessions[42].id)
    assert again is not None and again.customer == sessions[42].customer
    assert again.arrival_seq == 43 and again.state is SessionState.WAITING
    assert await s.resume_token_hash(sessions[42].id) == f"hash-{sessions[42].id}"
    # Stored chats take messages at once (seq 1), the refused one none.
    msg, created = await s.append_message(text(sessions[299].id, "hello"))
    assert created and msg.seq == 1


async def test_first_message_is_stored_with_seq_1(backend: Backend) -> None:
    s = backend.store
    session = waiting_session()
    first = text(session.id, "My build fails", ts=T0 + 0.5, client_msg_id="c0")
    msg = await s.create_session(session, "resume-hash", first)
    assert msg is not None
    assert (msg.seq, msg.id, msg.body, msg.client_msg_id) == (1, first.id, first.body, "c0")
    assert await all_messages(s, session.id) == [msg]
    # Retrying the first message by its client_msg_id finds it rather than storing it twice.
    again, created = await s.append_message(dataclasses.replace(first, id="other-id"))
    assert (again, created) == (msg, False)


async def test_get_session_round_trips_every_field(backend: Backend) -> None:
    s = backend.store
    eng = await add_engineer(s, "alex@vendor.example", name="Alex Ng", role=Role.LEAD)
    cust = customer(7, tier=Tier.PREMIER)
    session = waiting_session(
        created_at=T0 + 10.125, arrival_seq=42, topic="Licence server unreachable",
        severity=1, cust=cust,
    )
    await create(s, session)
    got = await s.get_session(session.id)
    assert got == session
    assert got is not None and got.customer == cust and got.customer.tier is Tier.PREMIER

    active = assigned(session, eng, T0 + 70.25)
    await s.assign_session(active, WAITING_OR_OFFERED, None)
    got = await s.get_session(session.id)
    assert got == active
    assert got is not None and got.engineer == eng
    assert (got.assigned_at, got.first_assigned_at) == (T0 + 70.25, T0 + 70.25)

    done = ended(active, T0 + 400.5, resolution="Restarted the licence service")
    await s.end_session(done, end_note(session.id, ts=T0 + 400.5), [])
    got = await s.get_session(session.id)
    assert got == done
    assert got is not None
    assert (got.state, got.ended_at, got.ended_by, got.end_reason, got.resolution) == (
        SessionState.ENDED, T0 + 400.5, "engineer", EndReason.ENGINEER_ENDED,
        "Restarted the licence service",
    )


async def test_get_unknown_session_is_none(backend: Backend) -> None:
    assert await backend.store.get_session("no-such-session") is None
    assert await backend.store.resume_token_hash("no-such-session") is None


async def test_resume_token_hash_is_kept_per_session(backend: Backend) -> None:
    s = backend.store
    one, _ = await create(s, waiting_session(arrival_seq=1), resume_hash="hash-one")
    two, _ = await create(s, waiting_session(arrival_seq=2), resume_hash="hash-two")
    assert await s.resume_token_hash(one.id) == "hash-one"
    assert await s.resume_token_hash(two.id) == "hash-two"


async def test_resume_token_of_an_open_session_can_be_replaced(backend: Backend) -> None:
    s = backend.store
    one, _ = await create(s, waiting_session(arrival_seq=1), resume_hash="hash-one")
    two, _ = await create(s, waiting_session(arrival_seq=2), resume_hash="hash-two")
    assert await s.set_resume_token_hash(one.id, "hash-one-again") is True
    assert await s.resume_token_hash(one.id) == "hash-one-again"
    assert await s.resume_token_hash(two.id) == "hash-two"
    await s.end_session(ended(two, T0 + 5), end_note(two.id, ts=T0 + 5), [])
    assert await s.set_resume_token_hash(two.id, "too-late") is False
    assert await s.resume_token_hash(two.id) == "hash-two"
    assert await s.set_resume_token_hash("no-such-session", "x") is False


async def test_request_id_is_kept_with_the_session(backend: Backend) -> None:
    s = backend.store
    asked = dataclasses.replace(waiting_session(arrival_seq=1), request_id="req-1")
    plain, _ = await create(s, waiting_session(arrival_seq=2))
    await create(s, asked)
    assert (await s.get_session(asked.id)) == asked
    assert {x.id: x.request_id for x in await s.open_sessions()} == {
        asked.id: "req-1", plain.id: None
    }
    fresh = await backend.reopen()
    assert (await fresh.get_session(asked.id)) == asked


# ---------------------------------------------------------------------------- the queue


async def test_next_arrival_seq_is_the_largest_stored(backend: Backend) -> None:
    s = backend.store
    assert await s.next_arrival_seq() == 0
    await create(s, waiting_session(arrival_seq=3))
    first, _ = await create(s, waiting_session(arrival_seq=9))
    await create(s, waiting_session(arrival_seq=5))
    assert await s.next_arrival_seq() == 9
    # Ended sessions still count: a restart must never hand out an arrival seq twice.
    await s.end_session(
        ended(first, T0 + 1, state=SessionState.ABANDONED, reason=EndReason.CANCELLED,
              by="customer"),
        end_note(first.id, ts=T0 + 1), [],
    )
    assert await s.next_arrival_seq() == 9


async def test_open_sessions_in_arrival_order_without_closed_ones(backend: Backend) -> None:
    s = backend.store
    eng = await add_engineer(s, "alex@vendor.example")
    # Stored out of order on purpose; ties on created_at are broken by arrival_seq.
    c = waiting_session(created_at=T0 + 30, arrival_seq=3)
    a = waiting_session(created_at=T0 + 10, arrival_seq=1)
    b2 = waiting_session(created_at=T0 + 20, arrival_seq=7)
    b1 = waiting_session(created_at=T0 + 20, arrival_seq=2)
    gone = waiting_session(created_at=T0 + 5, arrival_seq=0)
    done = waiting_session(created_at=T0 + 6, arrival_seq=4)
    for sess in (c, a, b2, gone, b1, done):
        await create(s, sess)

    offered = dataclasses.replace(b1, state=SessionState.OFFERED)
    await s.save_session_state(offered)
    active = assigned(c, eng, T0 + 40)
    await s.assign_session(active, WAITING_OR_OFFERED, None)
    await s.end_session(
        ended(gone, T0 + 50, state=SessionState.ABANDONED, reason=EndReason.ABANDONED,
              by="system"),
        end_note(gone.id, ts=T0 + 50), [],
    )
    done_active = assigned(done, eng, T0 + 41)
    await s.assign_session(done_active, WAITING_OR_OFFERED, None)
    await s.end_session(ended(done_active, T0 + 60), end_note(done.id, ts=T0 + 60), [])

    got = await s.open_sessions()
    assert [x.id for x in got] == [a.id, b1.id, b2.id, c.id]
    assert got == [a, offered, b2, active]


# ---------------------------------------------------------------------------- save state


async def test_save_session_state_persists_offer_and_requeue(backend: Backend) -> None:
    s = backend.store
    eng = await add_engineer(s, "alex@vendor.example")
    session, _ = await create(s)
    offered = dataclasses.replace(session, state=SessionState.OFFERED)
    await s.save_session_state(offered)
    assert await s.get_session(session.id) == offered

    active = assigned(offered, eng, T0 + 20)
    await s.assign_session(active, WAITING_OR_OFFERED, None)
    # The engineer vanished: back to the queue, no engineer, the first answer time kept.
    requeued = dataclasses.replace(
        active, state=SessionState.WAITING, engineer=None, assigned_at=None
    )
    await s.save_session_state(requeued)
    got = await s.get_session(session.id)
    assert got == requeued
    assert got is not None and got.first_assigned_at == T0 + 20 and got.engineer is None


async def test_save_session_state_never_reopens_an_ended_session(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s)
    done = ended(session, T0 + 5, state=SessionState.ABANDONED, reason=EndReason.CANCELLED,
                 by="customer")
    await s.end_session(done, end_note(session.id, ts=T0 + 5), [])
    # A late write from a stale in-memory copy must not resurrect the chat.
    await s.save_session_state(dataclasses.replace(session, state=SessionState.OFFERED))
    assert await s.get_session(session.id) == done
    assert await s.open_sessions() == []


# ---------------------------------------------------------------------------- assignment


async def test_assign_from_expected_state_stores_its_message(backend: Backend) -> None:
    s = backend.store
    eng = await add_engineer(s, "alex@vendor.example", name="Alex")
    session, _ = await create(s, first="hello")
    note = system(session.id, "Alex joined the chat", {"type": "assigned", "engineer": {
        "id": eng.id, "name": "Alex"}}, ts=T0 + 30)
    active = assigned(session, eng, T0 + 30)
    msg = await s.assign_session(active, WAITING_OR_OFFERED, note)
    assert msg is not None
    assert (msg.seq, msg.id, msg.kind, msg.event) == (2, note.id, MessageKind.SYSTEM, note.event)
    assert [m.seq for m in await all_messages(s, session.id)] == [1, 2]
    assert (await all_messages(s, session.id))[1] == msg
    assert await s.get_session(session.id) == active


async def test_assign_without_message_stores_none(backend: Backend) -> None:
    s = backend.store
    eng = await add_engineer(s, "alex@vendor.example")
    session, _ = await create(s)
    assert await s.assign_session(assigned(session, eng, T0 + 1), WAITING_OR_OFFERED, None) is None
    assert await all_messages(s, session.id) == []


async def test_assign_from_unexpected_state_conflicts_and_changes_nothing(
    backend: Backend,
) -> None:
    s = backend.store
    alex = await add_engineer(s, "alex@vendor.example")
    bo = await add_engineer(s, "bo@vendor.example")
    session, _ = await create(s, first="hello")
    active = assigned(session, alex, T0 + 10)
    await s.assign_session(active, WAITING_OR_OFFERED, None)

    # A second accept for a session that is active already.
    with pytest.raises(Conflict):
        await s.assign_session(
            assigned(session, bo, T0 + 11), WAITING_OR_OFFERED, join_note(session.id, T0 + 11)
        )
    assert await s.get_session(session.id) == active
    assert [m.seq for m in await all_messages(s, session.id)] == [1]

    # A transfer of a session that is not active (here: still waiting).
    other, _ = await create(s, waiting_session(arrival_seq=2))
    with pytest.raises(Conflict):
        await s.assign_session(assigned(other, bo, T0 + 12), ACTIVE, None)
    assert await s.get_session(other.id) == other


async def test_assign_after_end_conflicts(backend: Backend) -> None:
    s = backend.store
    eng = await add_engineer(s, "alex@vendor.example")
    session, _ = await create(s)
    done = ended(session, T0 + 5, state=SessionState.ABANDONED, reason=EndReason.CANCELLED,
                 by="customer")
    await s.end_session(done, end_note(session.id, ts=T0 + 5), [])
    with pytest.raises(Conflict):
        await s.assign_session(
            assigned(session, eng, T0 + 6), WAITING_OR_OFFERED, join_note(session.id, T0 + 6)
        )
    assert await s.get_session(session.id) == done
    assert [m.seq for m in await all_messages(s, session.id)] == [1]


async def test_transfer_keeps_first_answer_time(backend: Backend) -> None:
    s = backend.store
    alex = await add_engineer(s, "alex@vendor.example")
    bo = await add_engineer(s, "bo@vendor.example")
    session, _ = await create(s)
    first = assigned(session, alex, T0 + 10)
    await s.assign_session(first, WAITING_OR_OFFERED, join_note(session.id, T0 + 10))
    moved = assigned(first, bo, T0 + 99)
    note = system(session.id, "transferred", {"type": "transferred"}, ts=T0 + 99)
    msg = await s.assign_session(moved, ACTIVE, note)
    assert msg is not None and msg.seq == 2
    got = await s.get_session(session.id)
    assert got is not None
    assert (got.engineer, got.assigned_at, got.first_assigned_at) == (bo, T0 + 99, T0 + 10)


async def test_racing_assigns_exactly_one_wins(backend: Backend) -> None:
    s = backend.store
    alex = await add_engineer(s, "alex@vendor.example", name="Alex")
    bo = await add_engineer(s, "bo@vendor.example", name="Bo")
    session, _ = await create(s, first="hello")
    tries = [
        (assigned(session, alex, T0 + 10), join_note(session.id, T0 + 10)),
        (assigned(session, bo, T0 + 10), join_note(session.id, T0 + 10)),
    ]
    results = await asyncio.gather(
        *(s.assign_session(sess, WAITING_OR_OFFERED, note) for sess, note in tries),
        return_exceptions=True,
    )
    wins = [i for i, r in enumerate(results) if not isinstance(r, BaseException)]
    assert len(wins) == 1
    assert isinstance(results[1 - wins[0]], Conflict)
    winner, winner_note = tries[wins[0]]
    got = await s.get_session(session.id)
    assert got is not None and got.engineer == winner.engineer
    messages = await all_messages(s, session.id)
    assert [m.id for m in messages] == [messages[0].id, winner_note.id]


async def test_assignment_and_its_message_commit_together(backend: Backend) -> None:
    s = backend.store
    eng = await add_engineer(s, "alex@vendor.example")
    session, first = await create(s, first="hello")
    assert first is not None
    # The message cannot be stored (it has no body), so the assignment must not be either.
    broken = dataclasses.replace(join_note(session.id, T0 + 10), body=None)
    with pytest.raises(Exception):  # noqa: B017 - any failure will do, but it must be atomic
        await s.assign_session(assigned(session, eng, T0 + 10), WAITING_OR_OFFERED, broken)
    assert await s.get_session(session.id) == session
    assert await all_messages(s, session.id) == [first]
    # The session is still assignable, and its next message still gets the next seq.
    msg = await s.assign_session(
        assigned(session, eng, T0 + 11), WAITING_OR_OFFERED, join_note(session.id, T0 + 11)
    )
    assert msg is not None and msg.seq == 2


# ---------------------------------------------------------------------------- ending


async def test_end_session_records_end_message_and_outbox(backend: Backend) -> None:
    s = backend.store
    eng = await add_engineer(s, "alex@vendor.example")
    session, _ = await create(s, first="hello")
    active = assigned(session, eng, T0 + 10)
    await s.assign_session(active, WAITING_OR_OFFERED, join_note(session.id, T0 + 10))
    await s.append_message(text(session.id, "fixed?", ts=T0 + 20))
    done = ended(active, T0 + 300.5, resolution="Cleared the cache")
    note = end_note(session.id, ts=T0 + 300.5)
    msg = await s.end_session(done, note, ["file", "webhook"])
    assert (msg.seq, msg.id, msg.kind, msg.event) == (4, note.id, MessageKind.SYSTEM, note.event)
    assert (await all_messages(s, session.id))[-1] == msg
    assert await s.get_session(session.id) == done
    assert await s.open_sessions() == []
    rows = await backend.handoff_rows(session.id)
    assert [(r["backend"], r["state"], r["attempts"]) for r in rows] == [
        ("file", "pending", 0),
        ("webhook", "pending", 0),
    ]
    assert len({r["id"] for r in rows}) == 2
    # Due at once: the worker picks the transcript up right after the end.
    assert all(r["next_attempt_at"] <= T0 + 300.5 for r in rows)


async def test_abandoned_session_is_handed_off_too(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s, first="anyone there?")
    done = ended(session, T0 + 90, state=SessionState.ABANDONED, reason=EndReason.ABANDONED,
                 by="system")
    msg = await s.end_session(done, end_note(session.id, ts=T0 + 90), ["file"])
    assert msg.seq == 2
    assert await s.get_session(session.id) == done
    assert [r["backend"] for r in await backend.handoff_rows(session.id)] == ["file"]


async def test_end_without_backends_writes_no_outbox_row(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s)
    await s.end_session(ended(session, T0 + 1), end_note(session.id, ts=T0 + 1), [])
    assert await backend.handoff_rows(session.id) == []


async def test_ending_twice_raises_session_closed_and_changes_nothing(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s)
    done = ended(session, T0 + 5, by="customer", reason=EndReason.CUSTOMER_ENDED)
    await s.end_session(done, end_note(session.id, ts=T0 + 5), ["file"])
    with pytest.raises(SessionClosed):
        await s.end_session(
            ended(session, T0 + 9, by="engineer"), end_note(session.id, ts=T0 + 9),
            ["file", "webhook"],
        )
    assert await s.get_session(session.id) == done
    assert [m.seq for m in await all_messages(s, session.id)] == [1]
    assert [r["backend"] for r in await backend.handoff_rows(session.id)] == ["file"]


async def test_racing_ends_exactly_one_wins(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s)
    results = await asyncio.gather(
        s.end_session(ended(session, T0 + 5, by="customer", reason=EndReason.CUSTOMER_ENDED),
                      end_note(session.id, ts=T0 + 5), ["file"]),
        s.end_session(ended(session, T0 + 5, by="engineer"),
                      end_note(session.id, ts=T0 + 5), ["file"]),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["Message", "SessionClosed"]
    assert len(await all_messages(s, session.id)) == 1
    assert len(await backend.handoff_rows(session.id)) == 1


async def test_append_to_ended_session_raises_session_closed(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s, first="hello")
    await s.append_message(text(session.id, "more", ts=T0 + 1))  # warms any per-session cache
    await s.end_session(ended(session, T0 + 2), end_note(session.id, ts=T0 + 2), [])
    with pytest.raises(SessionClosed):
        await s.append_message(text(session.id, "too late", ts=T0 + 3))
    with pytest.raises(SessionClosed):
        await s.append_message(text(session.id, "too late", ts=T0 + 3, client_msg_id="x"))
    assert [m.seq for m in await all_messages(s, session.id)] == [1, 2, 3]


async def test_end_is_atomic(backend: Backend) -> None:
    s = backend.store
    session, first = await create(s, first="hello")
    assert first is not None
    # The end message cannot be stored (it has no body): nothing of the end may remain.
    broken = dataclasses.replace(end_note(session.id, ts=T0 + 5), body=None)
    with pytest.raises(Exception):  # noqa: B017 - any failure will do, but it must be atomic
        await s.end_session(ended(session, T0 + 5), broken, ["file", "webhook"])
    assert await s.get_session(session.id) == session
    assert await all_messages(s, session.id) == [first]
    assert await backend.handoff_rows(session.id) == []
    # Still open: it takes messages with the next seq and can be ended for real.
    msg, _ = await s.append_message(text(session.id, "still here", ts=T0 + 6))
    assert msg.seq == 2
    end = await s.end_session(ended(session, T0 + 7), end_note(session.id, ts=T0 + 7), ["file"])
    assert end.seq == 3


# ---------------------------------------------------------------------------- handle times


async def test_recent_handle_times_newest_first(backend: Backend) -> None:
    s = backend.store
    eng = await add_engineer(s, "alex@vendor.example")

    async def answered(arrival: int, at: float, handle: float) -> None:
        session, _ = await create(s, waiting_session(created_at=at - 5, arrival_seq=arrival))
        active = assigned(session, eng, at)
        await s.assign_session(active, WAITING_OR_OFFERED, None)
        await s.end_session(ended(active, at + handle), end_note(session.id, ts=at + handle), [])

    await answered(1, T0, 100.0)  # ends at T0+100: before `since`
    await answered(2, T0 + 1000, 50.5)  # ends at T0+1050.5
    await answered(3, T0 + 2000, 300.25)  # ends at T0+2300.25
    await answered(4, T0 + 1500, 120.0)  # ends at T0+1620
    unanswered, _ = await create(s, waiting_session(created_at=T0 + 1700, arrival_seq=5))
    await s.end_session(
        ended(unanswered, T0 + 1800, state=SessionState.ABANDONED, reason=EndReason.ABANDONED,
              by="system"),
        end_note(unanswered.id, ts=T0 + 1800), [],
    )
    still_open, _ = await create(s, waiting_session(created_at=T0 + 1900, arrival_seq=6))
    await s.assign_session(assigned(still_open, eng, T0 + 1950), WAITING_OR_OFFERED, None)

    assert await s.recent_handle_times(T0 + 500, 10) == [300.25, 120.0, 50.5]
    assert await s.recent_handle_times(T0 + 500, 2) == [300.25, 120.0]
    assert await s.recent_handle_times(T0, 10) == [300.25, 120.0, 50.5, 100.0]
    assert await s.recent_handle_times(T0 + 5000, 10) == []
