"""Store contract: the handoff outbox (docs/handoff.md): rows written with the end of a chat
or an offline ticket, claimed under a lease, delivered, retried or dead-lettered, and
steered by operators.

Rows are made due or not due through the port itself (a claim, then handoff_retry_later),
as the worker does, so that nothing here depends on how a backend stores a time.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from chatd.core.errors import Conflict, NotFound
from chatd.core.models import MessageKind, NewMessage, Sender, Session, SessionState
from chatd.core.ports import Store
from chatd.core.transcript import Handoff
from tests.store.conftest import Backend
from tests.store.helpers import (
    T0,
    all_messages,
    create,
    customer,
    end_note,
    ended,
    new_id,
    text,
    waiting_session,
)

END = T0 + 100.0  # when the chats of these tests end: their rows are due from here
LEASE = 90.0
FAR = END + 1_000_000.0  # long after any lease or retry of these tests
ZERO_COUNTS = {"pending": 0, "delivered": 0, "failed": 0}
FIRST_TICKET = {"backend": "rt", "id": "42", "url": "https://rt.example/Ticket/Display.html?id=42"}
SECOND_TICKET = {"backend": "webhook", "id": "SUP-1234", "url": None}


async def ended_chat(
    store: Store, backends: list[str], *, at: float = END, arrival: int = 1
) -> Session:
    """A chat that ended at ``at`` with one outbox row per backend."""
    session, _ = await create(
        store, waiting_session(created_at=at - 60, arrival_seq=arrival), first="hello"
    )
    await store.end_session(ended(session, at), end_note(session.id, ts=at), backends)
    return session


async def rows(store: Store, session_id: str) -> dict[str, Handoff]:
    return {h.backend: h for h in await store.session_handoffs(session_id)}


async def claim_one(store: Store, now: float, backend: str) -> Handoff:
    claimed = await store.claim_handoffs(now, 1, LEASE, [backend])
    assert len(claimed) == 1
    return claimed[0]


async def due_at(store: Store, now: float, backend: str, when: float) -> Handoff:
    """Claim the due row of ``backend`` and put it back for ``when``, as a failed attempt
    does."""
    h = await claim_one(store, now, backend)
    await store.handoff_retry_later(h.id, now, when, "answered 503", 503, "busy")
    got = await store.get_handoff(h.id)
    assert got is not None
    return got


def offline_ticket(*, at: float = END) -> Session:
    return Session(
        id=new_id(), state=SessionState.ENDED, topic="Licence server down", severity=1,
        customer=customer(9), created_at=at, arrival_seq=0, ended_at=at, ended_by="customer",
    )


def ticket_messages(ticket: Session) -> list[NewMessage]:
    sender = Sender("customer", ticket.customer.id, ticket.customer.name)
    attachment = {
        "id": new_id(), "filename": "licence.log", "content_type": "text/plain",
        "size": 2048, "sha256": "ab" * 32, "url": "/api/attachments/x",
    }
    return [
        text(ticket.id, "Nobody can start the app since 9:00", ts=ticket.created_at,
             sender=sender),
        NewMessage(
            id=new_id(), session_id=ticket.id, ts=ticket.created_at, sender=sender,
            kind=MessageKind.ATTACHMENT, body="licence.log", attachment=attachment,
        ),
    ]


# ---------------------------------------------------------------------------- writing rows


async def test_end_session_writes_one_due_pending_row_per_backend(backend: Backend) -> None:
    s = backend.store
    session = await ended_chat(s, ["file", "webhook", "rt"])
    got = await s.session_handoffs(session.id)
    assert sorted(h.backend for h in got) == ["file", "rt", "webhook"]
    assert len({h.id for h in got}) == 3  # each backend has its own idempotency key
    for h in got:
        assert (h.session_id, h.state, h.attempts, h.claimed_at) == (
            session.id, "pending", 0, None
        )
        assert (h.result, h.ticket, h.last_error, h.last_status, h.last_response) == (
            None, None, None, None, None
        )
        assert (h.delivered_at, h.requeued_at) == (None, None)
        assert h.next_attempt_at <= END  # due at once
        # The dead-letter horizon counts from the end of the chat.
        assert h.created_at == END and h.horizon_start == END
    # What the store reports is what it committed.
    assert sorted(r["id"] for r in await backend.handoff_rows(session.id)) == sorted(
        h.id for h in got
    )


async def test_session_handoffs_are_the_sessions_own_rows(backend: Backend) -> None:
    s = backend.store
    one = await ended_chat(s, ["file", "webhook"], arrival=1)
    two = await ended_chat(s, ["file"], arrival=2)
    assert {(h.session_id, h.backend) for h in await s.session_handoffs(one.id)} == {
        (one.id, "file"), (one.id, "webhook")
    }
    assert [(h.session_id, h.backend) for h in await s.session_handoffs(two.id)] == [
        (two.id, "file")
    ]
    assert await s.session_handoffs("no-such-session") == []


# ---------------------------------------------------------------------------- claims


async def test_claim_takes_only_due_rows_of_the_given_backends(backend: Backend) -> None:
    s = backend.store
    # A row that failed an attempt and waits until END + 500.
    later = await ended_chat(s, ["file"], arrival=1)
    waiting = await due_at(s, END, "file", END + 500)
    assert waiting.session_id == later.id
    chat = await ended_chat(s, ["file", "webhook"], arrival=2)
    before = await rows(s, chat.id)

    claimed = await s.claim_handoffs(END + 10, 10, LEASE, ["file"])
    assert [(h.session_id, h.backend) for h in claimed] == [(chat.id, "file")]
    (h,) = claimed
    # The attempt is counted and the row is in flight until the lease runs out.
    assert (h.id, h.state, h.attempts) == (before["file"].id, "pending", 1)
    assert (h.claimed_at, h.next_attempt_at) == (END + 10, END + 10 + LEASE)
    assert await s.get_handoff(h.id) == h
    # The other backend's row and the row not yet due were left alone.
    assert (await rows(s, chat.id))["webhook"] == before["webhook"]
    assert await s.get_handoff(waiting.id) == waiting
    assert await s.claim_handoffs(END + 10, 10, LEASE, []) == []
    assert await s.claim_handoffs(END + 10, 0, LEASE, ["webhook"]) == []


async def test_claim_hands_a_row_out_once_within_its_lease_and_again_after(
    backend: Backend,
) -> None:
    s = backend.store
    session = await ended_chat(s, ["file"])
    first = await claim_one(s, END, "file")
    assert first.session_id == session.id and first.attempts == 1
    assert await s.claim_handoffs(END + LEASE - 0.5, 10, LEASE, ["file"]) == []
    # The attempt never reported back (a hung process): the row comes back, same key.
    again = await claim_one(s, END + LEASE, "file")
    assert (again.id, again.attempts, again.claimed_at) == (first.id, 2, END + LEASE)
    # The claim keeps where the horizon counts from.
    assert again.created_at == END and again.horizon_start == END


async def test_claim_respects_its_limit_and_takes_the_earliest_due_first(
    backend: Backend,
) -> None:
    s = backend.store
    for arrival in range(3):
        await ended_chat(s, ["file"], arrival=arrival)
    # Give the three rows known, distinct due times, in an order unlike their creation.
    ids = {}
    for when in (END + 300, END + 100, END + 200):
        ids[when] = (await due_at(s, END, "file", when)).id
    first = await s.claim_handoffs(END + 400, 2, LEASE, ["file"])
    assert [h.id for h in first] == [ids[END + 100], ids[END + 200]]
    rest = await s.claim_handoffs(END + 400, 2, LEASE, ["file"])
    assert [h.id for h in rest] == [ids[END + 300]]


async def test_concurrent_claims_never_take_the_same_row(backend: Backend) -> None:
    s = backend.store
    for arrival in range(5):
        await ended_chat(s, ["file"], arrival=arrival)
    batches = await asyncio.gather(
        *(s.claim_handoffs(END, 2, LEASE, ["file"]) for _ in range(4))
    )
    claimed = [h.id for batch in batches for h in batch]
    assert len(claimed) == 5 and len(set(claimed)) == 5
    assert all(len(batch) <= 2 for batch in batches)


# ---------------------------------------------------------------------------- restarts


async def test_release_makes_only_rows_in_flight_due_now(backend: Backend) -> None:
    s = backend.store
    cut_off = await ended_chat(s, ["file", "webhook"], arrival=1)
    done = await ended_chat(s, ["file"], arrival=2)
    dead = await ended_chat(s, ["file"], arrival=3)
    claimed = {h.session_id: h for h in await s.claim_handoffs(END, 10, LEASE, ["file"])}
    assert set(claimed) == {cut_off.id, done.id, dead.id}
    assert await s.handoff_delivered(claimed[done.id].id, END + 1, "ok", None, None, None) is False
    await s.handoff_failed(claimed[dead.id].id, END + 1, "refused with 404", 404, None)
    untouched = {sid: await rows(s, sid) for sid in (done.id, dead.id)}
    webhook_row = (await rows(s, cut_off.id))["webhook"]

    # The process died with cut_off's file row in flight; the next one starts. A database
    # several processes share keeps a live claim (another process may hold it) until its
    # lease runs out; a database one process owns releases it at once.
    lapse = LEASE if backend.shared else 5.0
    if backend.shared:
        assert await s.release_handoff_claims(END + 5) == 0
        assert (await rows(s, cut_off.id))["file"] == claimed[cut_off.id]
    assert await s.release_handoff_claims(END + lapse) == 1
    h = (await rows(s, cut_off.id))["file"]
    assert (h.state, h.attempts, h.claimed_at, h.next_attempt_at) == (
        "pending", 1, None, END + lapse
    )
    assert (await rows(s, cut_off.id))["webhook"] == webhook_row
    for sid, before in untouched.items():
        assert await rows(s, sid) == before
    again = await claim_one(s, END + lapse, "file")
    assert (again.id, again.attempts) == (h.id, 2)
    assert await s.release_handoff_claims(END + 2 * lapse) == 1
    assert await s.release_handoff_claims(END + 2 * lapse + 1) == 0


async def test_a_claim_left_by_a_crash_is_released_by_the_next_instance(
    backend: Backend,
) -> None:
    s = backend.store
    session = await ended_chat(s, ["file", "webhook"])
    claimed = await claim_one(s, END, "file")
    delivered = await claim_one(s, END, "webhook")
    await s.handoff_delivered(delivered.id, END + 1, "ok", FIRST_TICKET, 201, "{}")
    before = await rows(s, session.id)
    # Killed without closing: the claim and the delivery were committed.
    fresh = await backend.reopen(close_first=False)
    assert await rows(fresh, session.id) == before
    lapse = LEASE if backend.shared else 2.0
    assert await fresh.release_handoff_claims(END + lapse) == 1
    again = await claim_one(fresh, END + lapse, "file")
    assert (again.id, again.attempts) == (claimed.id, 2)
    assert (await rows(fresh, session.id))["webhook"] == before["webhook"]


# ---------------------------------------------------------------------------- outcomes


async def test_delivered_records_the_outcome_and_the_sessions_first_ticket(
    backend: Backend,
) -> None:
    s = backend.store
    session = await ended_chat(s, ["file", "rt", "webhook"])
    claimed = {h.backend: h for h in await s.claim_handoffs(END, 10, LEASE, ["file", "rt",
                                                                               "webhook"])}
    assert set(claimed) == {"file", "rt", "webhook"}

    # A delivery without a ticket sets nothing on the session.
    assert await s.handoff_delivered(
        claimed["file"].id, END + 1, "wrote 2 files", None, None, None
    ) is False
    got = await s.get_session(session.id)
    assert got is not None and got.ticket is None

    # The first ticket is the session's: True tells the worker to announce it.
    assert await s.handoff_delivered(
        claimed["rt"].id, END + 2, "created ticket 42", FIRST_TICKET, 201, '{"id": 42}'
    ) is True
    # A later one is kept on its row only.
    assert await s.handoff_delivered(
        claimed["webhook"].id, END + 3.5, "accepted", SECOND_TICKET, 200, "ok"
    ) is False
    got = await s.get_session(session.id)
    assert got is not None and got.ticket == FIRST_TICKET

    final = await rows(s, session.id)
    for name, at, result, ticket, status, response in (
        ("file", END + 1, "wrote 2 files", None, None, None),
        ("rt", END + 2, "created ticket 42", FIRST_TICKET, 201, '{"id": 42}'),
        ("webhook", END + 3.5, "accepted", SECOND_TICKET, 200, "ok"),
    ):
        h = final[name]
        assert (h.state, h.delivered_at, h.claimed_at, h.attempts) == (
            "delivered", at, None, 1
        )
        assert (h.result, h.ticket, h.last_status, h.last_response) == (
            result, ticket, status, response
        )
    # Delivered rows are done: never claimed again, not due.
    assert await s.claim_handoffs(FAR, 10, LEASE, ["file", "rt", "webhook"]) == []
    assert await s.next_handoff_due(["file", "rt", "webhook"]) is None


async def test_a_delivery_after_failed_attempts_clears_their_error(backend: Backend) -> None:
    s = backend.store
    session = await ended_chat(s, ["webhook"])
    await due_at(s, END, "webhook", END + 10)
    h = await claim_one(s, END + 10, "webhook")
    await s.handoff_delivered(h.id, END + 11, "accepted", None, 200, "ok")
    got = (await rows(s, session.id))["webhook"]
    # Operators see the result, not the error of an attempt that no longer matters.
    assert (got.state, got.attempts, got.result, got.last_error, got.last_status) == (
        "delivered", 2, "accepted", None, 200
    )


async def test_a_late_second_delivery_of_a_row_is_not_announced_again(
    backend: Backend,
) -> None:
    s = backend.store
    session = await ended_chat(s, ["rt"])
    slow = await claim_one(s, END, "rt")
    # The first attempt outlived its lease; a second one delivered.
    second = await claim_one(s, END + LEASE, "rt")
    assert second.id == slow.id
    assert await s.handoff_delivered(
        second.id, END + LEASE + 1, "created ticket 42", FIRST_TICKET, 201, None
    ) is True
    delivered = (await rows(s, session.id))["rt"]
    # Then the first attempt reports too.
    assert await s.handoff_delivered(
        slow.id, END + LEASE + 2, "found ticket 42", FIRST_TICKET, 200, None
    ) is False
    assert (await rows(s, session.id))["rt"] == delivered
    got = await s.get_session(session.id)
    assert got is not None and got.ticket == FIRST_TICKET


async def test_retry_later_keeps_the_row_pending_until_its_next_attempt(
    backend: Backend,
) -> None:
    s = backend.store
    session = await ended_chat(s, ["webhook"])
    h = await claim_one(s, END, "webhook")
    await s.handoff_retry_later(h.id, END + 1, END + 61, "answered 503", 503, "busy")
    got = (await rows(s, session.id))["webhook"]
    assert (got.id, got.state, got.attempts, got.claimed_at, got.next_attempt_at) == (
        h.id, "pending", 1, None, END + 61
    )
    assert (got.last_error, got.last_status, got.last_response) == ("answered 503", 503, "busy")
    assert got.horizon_start == END  # a retry does not move the horizon
    assert await s.next_handoff_due(["webhook"]) == END + 61
    assert await s.claim_handoffs(END + 60.5, 10, LEASE, ["webhook"]) == []
    again = await claim_one(s, END + 61, "webhook")
    assert (again.id, again.attempts) == (h.id, 2)

    # An attempt without an answer (a timeout) keeps no status or body.
    await s.handoff_retry_later(h.id, END + 62, END + 70, "no answer within 30 s", None, None)
    got = (await rows(s, session.id))["webhook"]
    assert (got.last_error, got.last_status, got.last_response) == (
        "no answer within 30 s", None, None
    )


async def test_failed_dead_letters_the_row_with_the_last_answer(backend: Backend) -> None:
    s = backend.store
    session = await ended_chat(s, ["webhook"])
    h = await claim_one(s, END, "webhook")
    await s.handoff_failed(h.id, END + 3, "refused with 422", 422, '{"error":"bad queue"}')
    got = (await rows(s, session.id))["webhook"]
    assert (got.id, got.state, got.attempts, got.claimed_at, got.updated_at) == (
        h.id, "failed", 1, None, END + 3
    )
    assert (got.last_error, got.last_status, got.last_response) == (
        "refused with 422", 422, '{"error":"bad queue"}'
    )
    # It waits for an operator: never claimed, never due.
    assert await s.claim_handoffs(FAR, 10, LEASE, ["webhook"]) == []
    assert await s.next_handoff_due(["webhook"]) is None
    assert await s.handoff_counts() == {"pending": 0, "delivered": 0, "failed": 1}


async def test_a_long_answer_is_kept_by_its_start(backend: Backend) -> None:
    s = backend.store
    session = await ended_chat(s, ["webhook", "rt"])
    page = "<html>" + "".join(f"<p>line {i}</p>" for i in range(20_000)) + "</html>"
    h = await claim_one(s, END, "webhook")
    await s.handoff_retry_later(h.id, END + 1, END + 10, "answered 502", 502, page)
    h2 = await claim_one(s, END, "rt")
    await s.handoff_failed(h2.id, END + 1, "refused with 400", 400, page)
    for got in (await rows(s, session.id)).values():
        assert got.last_response and page.startswith(got.last_response)


# ---------------------------------------------------------------------------- the outbox seen


async def test_handoff_counts_by_state(backend: Backend) -> None:
    s = backend.store
    assert await s.handoff_counts() == ZERO_COUNTS
    await ended_chat(s, ["file", "webhook", "gone"], arrival=1)
    await ended_chat(s, ["file", "webhook"], arrival=2)
    await ended_chat(s, [], arrival=3)
    assert await s.handoff_counts() == {"pending": 5, "delivered": 0, "failed": 0}
    files = await s.claim_handoffs(END, 10, LEASE, ["file"])
    for h in files:
        await s.handoff_delivered(h.id, END + 1, "ok", None, None, None)
    await s.handoff_failed((await claim_one(s, END, "webhook")).id, END + 1, "no", 404, None)
    await claim_one(s, END, "webhook")  # in flight: still pending
    # A row of a backend no longer configured ("gone") stays pending and is counted.
    assert await s.handoff_counts() == {"pending": 2, "delivered": 2, "failed": 1}


async def test_next_handoff_due_is_the_earliest_pending_row_of_the_backends(
    backend: Backend,
) -> None:
    s = backend.store
    assert await s.next_handoff_due(["file"]) is None
    await ended_chat(s, ["file", "webhook"], arrival=1)
    await ended_chat(s, ["file"], arrival=2)
    assert await s.next_handoff_due([]) is None
    first = await due_at(s, END, "file", END + 200)
    second = await due_at(s, END, "file", END + 100)
    await due_at(s, END, "webhook", END + 50)
    assert await s.next_handoff_due(["file"]) == END + 100
    assert await s.next_handoff_due(["webhook"]) == END + 50
    assert await s.next_handoff_due(["file", "webhook"]) == END + 50
    assert await s.next_handoff_due(["rt"]) is None
    # Once the earlier row is delivered, the later one is next.
    assert (await claim_one(s, END + 100, "file")).id == second.id
    await s.handoff_delivered(second.id, END + 101, "ok", None, None, None)
    assert await s.next_handoff_due(["file"]) == END + 200
    assert (await claim_one(s, END + 200, "file")).id == first.id
    await s.handoff_failed(first.id, END + 201, "refused with 410", 410, None)
    assert await s.next_handoff_due(["file"]) is None


async def test_list_handoffs_newest_first_by_state_and_limit(backend: Backend) -> None:
    s = backend.store
    oldest = await ended_chat(s, ["file"], at=END, arrival=1)
    middle = await ended_chat(s, ["file"], at=END + 10, arrival=2)
    newest = await ended_chat(s, ["file"], at=END + 20, arrival=3)
    o, m, n = [(await rows(s, x.id))["file"].id for x in (oldest, middle, newest)]
    assert [h.id for h in await s.list_handoffs()] == [n, m, o]

    claimed = {h.id: h for h in await s.claim_handoffs(END + 30, 10, LEASE, ["file"])}
    await s.handoff_failed(claimed[o].id, END + 31, "refused with 404", 404, None)
    await s.handoff_delivered(claimed[m].id, END + 31, "ok", None, None, None)
    assert [h.id for h in await s.list_handoffs("failed")] == [o]
    assert [h.id for h in await s.list_handoffs("delivered")] == [m]
    assert [h.id for h in await s.list_handoffs("pending")] == [n]
    assert [h.id for h in await s.list_handoffs(None, 2)] == [n, m]
    assert [h.id for h in await s.list_handoffs("pending", 1)] == [n]
    # The rows listed are the rows as stored.
    listed = await s.list_handoffs()
    assert listed == [await s.get_handoff(i) for i in (n, m, o)]


async def test_get_handoff_by_id_or_by_a_unique_prefix_of_eight(backend: Backend) -> None:
    s = backend.store
    session = await ended_chat(s, ["file"])
    (h,) = await s.session_handoffs(session.id)
    assert await s.get_handoff(h.id) == h
    assert await s.get_handoff(h.id[:8]) == h
    assert await s.get_handoff(h.id[:7]) is None  # too short to be taken as a prefix
    assert await s.get_handoff("no-such-handoff") is None
    # A prefix is matched literally: wildcards of any query language match nothing.
    for wild in ("%" * 8, "_" * 8, "*" * 8, ".*" * 4, h.id[:7] + "%", h.id[:7] + "_"):
        assert await s.get_handoff(wild) is None, wild


# ---------------------------------------------------------------------------- operators


@pytest.mark.parametrize("state", ["failed", "pending"])
async def test_retry_handoff_makes_a_row_due_now_with_a_fresh_horizon(
    backend: Backend, state: str
) -> None:
    s = backend.store
    session = await ended_chat(s, ["webhook"])
    h = await claim_one(s, END, "webhook")
    if state == "failed":
        await s.handoff_failed(h.id, END + 1, "refused with 404", 404, "not found")
    else:
        await s.handoff_retry_later(h.id, END + 1, END + 3000, "answered 503", 503, None)
    retried = await s.retry_handoff(h.id, END + 5000.5)
    assert (retried.id, retried.session_id, retried.state, retried.attempts) == (
        h.id, session.id, "pending", 1
    )
    assert (retried.next_attempt_at, retried.requeued_at, retried.claimed_at) == (
        END + 5000.5, END + 5000.5, None
    )
    assert retried.horizon_start == END + 5000.5
    assert await s.get_handoff(h.id) == retried
    again = await claim_one(s, END + 5000.5, "webhook")
    assert (again.id, again.attempts, again.horizon_start) == (h.id, 2, END + 5000.5)


async def test_retry_handoff_refuses_a_delivered_row_and_an_unknown_one(
    backend: Backend,
) -> None:
    s = backend.store
    session = await ended_chat(s, ["rt"])
    h = await claim_one(s, END, "rt")
    await s.handoff_delivered(h.id, END + 1, "created ticket 42", FIRST_TICKET, 201, None)
    before = await rows(s, session.id)
    with pytest.raises(Conflict):
        await s.retry_handoff(h.id, END + 10)
    assert await rows(s, session.id) == before
    with pytest.raises(NotFound):
        await s.retry_handoff("no-such-handoff", END + 10)


async def test_retry_handoff_leaves_a_row_in_flight_to_its_attempt(backend: Backend) -> None:
    s = backend.store
    await ended_chat(s, ["webhook"])
    h = await claim_one(s, END, "webhook")
    # Making it due now would let a second delivery start beside the running one.
    got = await s.retry_handoff(h.id, END + 1)
    assert got == await s.get_handoff(h.id)
    assert (got.state, got.claimed_at, got.attempts) == ("pending", END, 1)
    assert await s.claim_handoffs(END + 1, 10, LEASE, ["webhook"]) == []


async def test_retry_failed_handoffs_requeues_every_dead_letter_only(backend: Backend) -> None:
    s = backend.store
    for arrival in range(4):
        await ended_chat(s, ["file"], arrival=arrival)
    a, b, c = await s.claim_handoffs(END, 3, LEASE, ["file"])
    await s.handoff_failed(a.id, END + 1, "refused with 404", 404, None)
    await s.handoff_failed(b.id, END + 1, "gave up after 9 attempts", None, None)
    await s.handoff_delivered(c.id, END + 1, "ok", None, None, None)
    waiting = await due_at(s, END, "file", END + 9000)
    delivered = await s.get_handoff(c.id)

    assert await s.retry_failed_handoffs(END + 5000) == 2
    for h in (a, b):
        got = await s.get_handoff(h.id)
        assert got is not None
        assert (got.state, got.next_attempt_at, got.horizon_start, got.attempts) == (
            "pending", END + 5000, END + 5000, 1
        )
    assert await s.get_handoff(c.id) == delivered
    assert await s.get_handoff(waiting.id) == waiting
    assert {h.id for h in await s.claim_handoffs(END + 5000, 10, LEASE, ["file"])} == {
        a.id, b.id
    }
    assert await s.retry_failed_handoffs(END + 6000) == 0


# ---------------------------------------------------------------------------- offline tickets


async def test_session_origin_tells_chats_from_offline_tickets(backend: Backend) -> None:
    s = backend.store
    chat, _ = await create(s)
    ticket = offline_ticket()
    await s.create_offline_ticket(ticket, "ticket-hash", ticket_messages(ticket), [])
    assert await s.session_origin(chat.id) == "chat"
    await s.end_session(ended(chat, END), end_note(chat.id, ts=END), [])
    assert await s.session_origin(chat.id) == "chat"
    assert await s.session_origin(ticket.id) == "offline"
    assert await s.session_origin("no-such-session") is None


async def test_create_offline_ticket_stores_a_closed_session_its_messages_and_outbox(
    backend: Backend,
) -> None:
    s = backend.store
    ticket = offline_ticket(at=END + 0.25)
    new = ticket_messages(ticket)
    stored = await s.create_offline_ticket(ticket, "ticket-hash", new, ["file", "rt"])
    assert [(m.seq, m.id, m.kind, m.body, m.attachment) for m in stored] == [
        (i + 1, n.id, n.kind, n.body, n.attachment) for i, n in enumerate(new)
    ]
    assert await all_messages(s, ticket.id) == stored
    assert await s.get_session(ticket.id) == ticket
    assert await s.open_sessions() == []  # closed: never queued
    assert await s.resume_token_hash(ticket.id) == "ticket-hash"
    assert await s.session_origin(ticket.id) == "offline"
    handoffs = await rows(s, ticket.id)
    assert set(handoffs) == {"file", "rt"}
    for h in handoffs.values():
        assert (h.state, h.attempts, h.created_at) == ("pending", 0, END + 0.25)
        assert h.next_attempt_at <= END + 0.25
    # From here it takes the road of a chat.
    claimed = await s.claim_handoffs(END + 0.25, 10, LEASE, ["file", "rt"])
    assert {h.id for h in claimed} == {h.id for h in handoffs.values()}


async def test_create_offline_ticket_is_one_transaction(backend: Backend) -> None:
    s = backend.store
    ticket = offline_ticket()
    good = ticket_messages(ticket)
    # The second message cannot be stored (it has no body): nothing of the ticket may remain.
    broken = [good[0], dataclasses.replace(good[1], body=None)]
    with pytest.raises(Exception):  # noqa: B017 - any failure will do, but it must be atomic
        await s.create_offline_ticket(ticket, "ticket-hash", broken, ["file"])
    assert await s.get_session(ticket.id) is None
    assert await s.session_origin(ticket.id) is None
    assert await all_messages(s, ticket.id) == []
    assert await backend.handoff_rows(ticket.id) == []
    assert await s.handoff_counts() == ZERO_COUNTS
    # Sent again, whole, it is stored with seqs from 1.
    stored = await s.create_offline_ticket(ticket, "ticket-hash", good, ["file"])
    assert [m.seq for m in stored] == [1, 2]
    assert len(await backend.handoff_rows(ticket.id)) == 1
