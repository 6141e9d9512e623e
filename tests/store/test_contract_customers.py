"""Store contract: a customer's chats across visits, their erasure with its audit line, and
uploads recognised by their upload id."""

from __future__ import annotations

import asyncio

import pytest

from chatd.core.erasure import CustomerQuery, Erasure
from chatd.core.errors import Conflict, NotFound, SessionClosed
from chatd.core.models import Customer, MessageKind, NewMessage, Sender, Tier
from tests.store.conftest import Backend
from tests.store.helpers import (
    T0,
    add_engineer,
    all_messages,
    assigned,
    create,
    end_note,
    ended,
    new_id,
    text,
    waiting_session,
)
from tests.store.test_contract_attachments import HUGE, MANY, record

TICKET = {"backend": "rt", "id": "42", "url": "https://rt.example/Ticket/Display.html?id=42"}


def guest(email: str) -> Customer:
    """A guest: a new customer id on every visit, the same email."""
    return Customer(id=f"guest:{new_id()}", name="Gus", email=email, account="",
                    tier=Tier.STANDARD)


def audit(**kw: object) -> Erasure:
    fields: dict[str, object] = {
        "id": new_id(), "erased_at": T0 + 1000.5, "requested_by": "dpo@vendor.example",
        "via": "cli", "subject_hash": "ab" * 32,
    }
    fields.update(kw)
    return Erasure(**fields)  # type: ignore[arg-type]


async def closed_chat(
    backend: Backend, cust: Customer, arrival: int, *, backends: tuple[str, ...] = (),
    files: int = 0, words: int = 2,
) -> str:
    s = backend.store
    session, _ = await create(
        s, waiting_session(cust=cust, arrival_seq=arrival, created_at=T0 + arrival),
        first="hello",
    )
    for i in range(words - 1):
        await s.append_message(text(session.id, f"more {i}", ts=T0 + arrival + 0.5))
    for i in range(files):
        await s.add_attachment(record(session.id, image=i == 0, at=T0 + arrival), MANY, HUGE)
    at = T0 + arrival + 10
    await s.end_session(ended(session, at), end_note(session.id, ts=at), list(backends))
    return session.id


async def test_a_customers_chats_are_found_by_id_and_a_guests_by_email(
    backend: Backend,
) -> None:
    s = backend.store
    signed = Customer(id="cust-7", name="Carol", email="carol@client.example",
                      account="Client", tier=Tier.PREMIER)
    first = await closed_chat(backend, signed, 1)
    second = await closed_chat(backend, signed, 2)
    visits = [await closed_chat(backend, guest(e), n) for n, e in
              ((3, "Gus@Client.example"), (4, "gus@client.example"))]
    await closed_chat(backend, guest("someone.else@client.example"), 5)
    by_id = await s.customer_sessions(CustomerQuery(customer_id="cust-7"))
    assert [c.id for c in by_id] == [first, second]
    assert by_id[0].customer == signed
    by_email = await s.customer_sessions(CustomerQuery(email="GUS@client.EXAMPLE"))
    assert [c.id for c in by_email] == visits
    assert await s.customer_sessions(CustomerQuery(customer_id="nobody")) == []


async def test_erasure_removes_every_chat_of_a_guest_and_records_only_counts(
    backend: Backend,
) -> None:
    s = backend.store
    email = "gus@client.example"
    a = await closed_chat(backend, guest(email), 1, files=2, words=3, backends=("file",))
    b = await closed_chat(backend, guest(email.upper()), 2, files=1, backends=("file", "rt"))
    kept = await closed_chat(backend, guest("other@client.example"), 3, files=1)
    # One delivered handoff with a ticket, one still pending, one dead-lettered.
    claimed = {(h.session_id, h.backend): h
               for h in await s.claim_handoffs(T0 + 100, 10, 30.0, ["file", "rt"])}
    await s.handoff_delivered(claimed[(b, "rt")].id, T0 + 101, "ok", TICKET, 201, "{}")
    await s.handoff_failed(claimed[(b, "file")].id, T0 + 101, "disk full", None, None)
    images = [r for sid in (a, b) for r in await s.session_attachments(sid)]

    erased = await s.erase_customer(CustomerQuery(email=email), audit())

    assert sorted(erased.session_ids) == sorted([a, b])
    e = erased.erasure
    # Each chat: its messages plus the end note; files: one record each, however many names.
    assert (e.chats, e.messages, e.files, e.handoffs) == (2, 4 + 3, 3, 3)
    assert sorted(erased.stored_names) == sorted(
        n for r in images for n in (r.stored_name, r.thumbnail_name) if n
    )
    assert erased.tickets == [TICKET]
    assert erased.undelivered == 2
    for sid in (a, b):
        assert await s.get_session(sid) is None
        assert await all_messages(s, sid) == []
        assert await s.session_attachments(sid) == []
        assert await s.session_handoffs(sid) == []
        assert await backend.handoff_rows(sid) == []
    assert await s.get_session(kept) is not None
    assert len(await s.session_attachments(kept)) == 1
    assert await s.customer_sessions(CustomerQuery(email=email)) == []
    # The audit line is exactly what was recorded: no id, no email, no name.
    [line] = await s.list_erasures()
    assert line == e
    assert email not in repr(line) and "gus" not in repr(line).lower()


async def test_erasure_is_refused_while_a_chat_is_open_and_changes_nothing(
    backend: Backend,
) -> None:
    s = backend.store
    cust = Customer(id="cust-9", name="Olga", email="olga@client.example", account="",
                    tier=Tier.STANDARD)
    old = await closed_chat(backend, cust, 1, files=1)
    session, _ = await create(s, waiting_session(cust=cust, arrival_seq=2), first="hi")
    eng = await add_engineer(s, "eng@vendor.example")
    await s.assign_session(assigned(session, eng, T0 + 5), ["waiting", "offered"], None)
    before = (await all_messages(s, old), await all_messages(s, session.id),
              await s.session_attachments(old))
    with pytest.raises(Conflict) as refused:
        await s.erase_customer(CustomerQuery(customer_id="cust-9"), audit())
    assert refused.value.details["open_sessions"] == [session.id]
    after = (await all_messages(s, old), await all_messages(s, session.id),
             await s.session_attachments(old))
    assert after == before
    assert await s.list_erasures() == []
    # Once it ends, the erasure goes through.
    await s.end_session(ended(session, T0 + 20), end_note(session.id, ts=T0 + 20), [])
    erased = await s.erase_customer(CustomerQuery(customer_id="cust-9"), audit())
    assert erased.erasure.chats == 2


async def test_erasing_a_customer_without_chats_is_not_found_and_records_nothing(
    backend: Backend,
) -> None:
    s = backend.store
    with pytest.raises(NotFound):
        await s.erase_customer(CustomerQuery(email="nobody@client.example"), audit())
    assert await s.list_erasures() == []


async def test_erasures_list_newest_first_and_survive_a_restart(backend: Backend) -> None:
    for n in range(3):
        cust = Customer(id=f"cust-{n}", name="X", email=f"x{n}@client.example", account="",
                        tier=Tier.STANDARD)
        await closed_chat(backend, cust, n + 1)
        await backend.store.erase_customer(
            CustomerQuery(customer_id=cust.id),
            audit(erased_at=T0 + n + 0.25, via="http", subject_hash=None),
        )
    s = await backend.reopen()
    lines = await s.list_erasures()
    assert [line.erased_at for line in lines] == [T0 + 2.25, T0 + 1.25, T0 + 0.25]
    assert [line.via for line in lines] == ["http"] * 3
    assert await s.list_erasures(limit=1) == lines[:1]


# ---------------------------------------------------------------------- upload ids


def announcement(session_id: str, a_id: str, *, ts: float = T0) -> NewMessage:
    return NewMessage(
        id=new_id(), session_id=session_id, ts=ts, sender=Sender("customer", "cust-1", "C"),
        kind=MessageKind.ATTACHMENT, body="app.log",
        attachment={"id": a_id, "filename": "app.log", "url": f"/api/attachments/{a_id}"},
    )


async def test_an_upload_id_stores_one_attachment_per_chat(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s)
    other, _ = await create(s, waiting_session(arrival_seq=2))
    first = record(session.id)
    assert await s.add_attachment_once(first, "up-1", MANY, HUGE) == first
    retry = record(session.id)
    assert await s.add_attachment_once(retry, "up-1", MANY, HUGE) == first
    assert await s.get_attachment(retry.id) is None
    assert await s.session_attachment_usage(session.id) == (1, first.size)
    # The id is the chat's own: another chat may use it for its own file.
    elsewhere = record(other.id)
    assert await s.add_attachment_once(elsewhere, "up-1", MANY, HUGE) == elsewhere
    assert await s.attachment_for_upload(session.id, "up-1") == first
    assert await s.attachment_for_upload(other.id, "up-1") == elsewhere
    assert await s.attachment_for_upload(session.id, "up-2") is None


async def test_concurrent_attempts_of_one_upload_store_one(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s)
    tries = [record(session.id) for _ in range(6)]
    got = await asyncio.gather(*(s.add_attachment_once(r, "same", MANY, HUGE) for r in tries))
    assert len({g.id for g in got}) == 1
    assert await s.session_attachment_usage(session.id) == (1, tries[0].size)


async def test_an_upload_id_is_checked_before_the_chats_limits_and_state(
    backend: Backend,
) -> None:
    s = backend.store
    session, _ = await create(s)
    first = record(session.id, size=100)
    await s.add_attachment_once(first, "up-1", 1, HUGE)
    # Full: a new upload is refused, the retry of the stored one is answered.
    with pytest.raises(Conflict):
        await s.add_attachment_once(record(session.id), "up-2", 1, HUGE)
    assert await s.add_attachment_once(record(session.id), "up-1", 1, HUGE) == first
    await s.end_session(ended(session, T0 + 9), end_note(session.id, ts=T0 + 9), [])
    assert await s.add_attachment_once(record(session.id), "up-1", 1, HUGE) == first
    with pytest.raises(SessionClosed):
        await s.add_attachment_once(record(session.id), "up-3", MANY, HUGE)


async def test_the_message_announcing_an_attachment_is_found(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s, first="hi")
    a = record(session.id)
    await s.add_attachment_once(a, "up-1", MANY, HUGE)
    assert await s.attachment_message(session.id, a.id) is None  # not announced yet
    msg, _ = await s.append_message(announcement(session.id, a.id, ts=T0 + 1))
    assert await s.attachment_message(session.id, a.id) == msg
    assert await s.attachment_message(session.id, "another") is None
    assert msg.seq == 2
