"""Messages are stored before they are relayed, numbered 1, 2, 3... per session
(docs/protocol.md#ordering-and-idempotency)."""

from __future__ import annotations

import asyncio

import pytest

from chatd.core.errors import BadRequest, Conflict, Forbidden, SessionClosed
from chatd.core.models import MAX_TEXT_LENGTH, Customer, Engineer, Role, Tier
from tests.core.helpers import Floor, customer, to_customer, to_engineer


async def _chat(floor: Floor, tier: Tier = Tier.PREMIER) -> tuple[Customer, Engineer, str]:
    ann = customer("ann", tier)
    alex = await floor.engineer("alex")
    sid = await floor.assigned(alex, ann)
    return ann, alex, sid


async def test_message_is_stored_then_relayed_to_the_other_side(floor: Floor) -> None:
    ann, alex, sid = await _chat(floor)

    msg, created, fx = await floor.desk.send_message(ann, sid, "c1", "It crashes on start")

    assert created
    stored = await floor.store.messages_after(sid, msg.seq - 1, 10)
    assert [m.id for m in stored] == [msg.id]
    [to_alex] = to_engineer(fx, alex, "message:new")
    assert to_alex == {"session_id": sid, "message": msg.to_wire()}
    # The sender's other tabs get it too, not the connection that sent it (it has the ack).
    [echo] = [o for o in fx if o.event == "message:new" and o.namespace == "customer"]
    assert echo.skip_origin


async def test_seq_is_gap_free_under_concurrent_sends(floor: Floor) -> None:
    ann, alex, sid = await _chat(floor)
    [joined] = await floor.store.messages_after(sid, 0, 10)
    assert joined.seq == 1

    sends = []
    for i in range(50):
        sends.append(floor.desk.send_message(ann, sid, f"c{i}", f"customer {i}"))
        sends.append(floor.desk.send_message(alex, sid, f"e{i}", f"engineer {i}"))
    results = await asyncio.gather(*sends)

    seqs = sorted(msg.seq for msg, _, _ in results)
    assert seqs == list(range(2, 102))
    assert all(created for _, created, _ in results)
    history = await floor.store.messages_after(sid, 0, 1000)
    assert [m.seq for m in history] == list(range(1, 102))
    # Every participant sees the one stored order: each relayed copy carries its stored seq.
    by_id = {m.id: m.seq for m in history}
    for msg, _, fx in results:
        assert by_id[msg.id] == msg.seq
        assert {o.payload["message"]["seq"] for o in fx} == {msg.seq}
    # Each sender's own messages keep the order they were sent in.
    for prefix in ("customer", "engineer"):
        own = [int(m.body.split()[1]) for m in history if m.body.startswith(prefix)]
        assert own == list(range(50))


async def test_retry_with_same_client_msg_id_returns_the_original(floor: Floor) -> None:
    ann, alex, sid = await _chat(floor)
    first, created, _ = await floor.desk.send_message(ann, sid, "c-42", "Here is the log")
    assert created
    before = await floor.store.messages_after(sid, 0, 100)

    again, created, fx = await floor.desk.send_message(ann, sid, "c-42", "Here is the log")

    assert not created
    assert again == first
    assert fx == []
    assert await floor.store.messages_after(sid, 0, 100) == before


async def test_concurrent_retries_store_one_message(floor: Floor) -> None:
    ann, alex, sid = await _chat(floor)

    results = await asyncio.gather(
        *(floor.desk.send_message(ann, sid, "same", "hello") for _ in range(10))
    )

    assert len({msg.id for msg, _, _ in results}) == 1
    assert sum(created for _, created, _ in results) == 1
    # Only the send that stored it relays it.
    assert all(fx == [] for _, created, fx in results if not created)
    assert [len(fx) > 0 for _, created, fx in results if created] == [True]
    assert [m.body for m in await floor.store.messages_after(sid, 1, 100)] == ["hello"]


async def test_client_msg_id_is_scoped_to_its_session(floor: Floor) -> None:
    ann, alex, sid = await _chat(floor)
    bob = customer("bob")
    other = await floor.assigned(alex, bob)

    a, created_a, _ = await floor.desk.send_message(ann, sid, "m1", "from ann")
    b, created_b, _ = await floor.desk.send_message(bob, other, "m1", "from bob")

    assert created_a and created_b and a.id != b.id


async def test_history_after_seq_returns_exactly_the_later_messages(floor: Floor) -> None:
    ann, alex, sid = await _chat(floor)
    for i in range(6):
        who = ann if i % 2 == 0 else alex
        await floor.desk.send_message(who, sid, f"m{i}", f"message {i}")

    wire, messages, more = await floor.desk.history(ann, sid, after_seq=4)

    assert wire["id"] == sid and wire["state"] == "active"
    assert [m.seq for m in messages] == [5, 6, 7]
    assert [m.body for m in messages] == ["message 3", "message 4", "message 5"]
    assert not more
    _, everything, _ = await floor.desk.history(alex, sid, after_seq=0)
    assert [m.seq for m in everything] == list(range(1, 8))
    _, nothing, _ = await floor.desk.history(ann, sid, after_seq=7)
    assert nothing == []


async def test_first_message_of_the_request_is_stored_with_the_session(floor: Floor) -> None:
    ann = customer("ann")
    session, _ = await floor.request(ann, message="The installer fails", client_msg_id="c0")
    _, messages, _ = await floor.desk.history(ann, session["id"])
    assert [(m.seq, m.body, m.client_msg_id) for m in messages] == [
        (1, "The installer fails", "c0")
    ]


async def test_escalation_is_a_system_message_both_sides_see(floor: Floor) -> None:
    ann, alex, sid = await _chat(floor, Tier.PREMIER)

    msg, fx = await floor.desk.escalate(ann, sid, "phone", "+44 20 7946 0000", "after 3pm")

    assert msg.kind == "system"
    assert msg.event == {
        "type": "escalation", "kind": "phone", "phone": "+44 20 7946 0000", "note": "after 3pm",
    }
    assert "+44 20 7946 0000" in msg.body
    assert to_customer(fx, sid, "message:new") == [{"session_id": sid, "message": msg.to_wire()}]
    assert to_engineer(fx, alex, "message:new") == [{"session_id": sid, "message": msg.to_wire()}]
    for actor in (ann, alex):
        _, messages, _ = await floor.desk.history(actor, sid, after_seq=msg.seq - 1)
        assert [m.id for m in messages] == [msg.id]


async def test_escalation_while_waiting_is_seen_by_the_engineer_who_accepts(floor: Floor) -> None:
    ann = customer("ann", Tier.CONCIERGE)
    [sid] = await floor.queue(ann)
    msg, fx = await floor.desk.escalate(ann, sid, "screen_share", None, None)
    assert msg.event == {"type": "escalation", "kind": "screen_share"}
    assert [o.namespace for o in fx] == ["customer"]

    alex = await floor.engineer("alex")
    _, messages, _ = await floor.desk.accept(alex, sid)
    assert msg.id in [m.id for m in messages]


async def test_standard_tier_cannot_ask_for_a_phone_call(floor: Floor) -> None:
    ann, alex, sid = await _chat(floor, Tier.STANDARD)
    before = await floor.store.messages_after(sid, 0, 100)

    with pytest.raises(Forbidden):
        await floor.desk.escalate(ann, sid, "phone", "+1 555 0100", None)
    assert await floor.store.messages_after(sid, 0, 100) == before

    # A screen share is for every tier.
    msg, _ = await floor.desk.escalate(ann, sid, "screen_share", None, None)
    assert msg.event is not None and msg.event["kind"] == "screen_share"


async def test_phone_call_needs_a_number(floor: Floor) -> None:
    ann, alex, sid = await _chat(floor, Tier.CONCIERGE)
    with pytest.raises(BadRequest):
        await floor.desk.escalate(ann, sid, "phone", None, None)


async def test_engineer_cannot_write_before_accepting(floor: Floor) -> None:
    lee = await floor.engineer("lee", available=False)
    [sid] = await floor.queue(customer("ann"))
    lead = await floor.engineer("lead", role=Role.LEAD, available=False)
    with pytest.raises(Forbidden):
        await floor.desk.send_message(lee, sid, "e1", "hi")
    with pytest.raises(Conflict):
        await floor.desk.send_message(lead, sid, "e1", "hi")


async def test_empty_or_oversized_text_is_refused_and_not_stored(floor: Floor) -> None:
    ann, alex, sid = await _chat(floor)
    with pytest.raises(BadRequest):
        await floor.desk.send_message(ann, sid, "c1", "   \n ")
    with pytest.raises(BadRequest):
        await floor.desk.send_message(ann, sid, "c2", "x" * (MAX_TEXT_LENGTH + 1))
    msg, created, _ = await floor.desk.send_message(ann, sid, "c3", "x" * MAX_TEXT_LENGTH)
    assert created and msg.seq == 2


async def test_messages_to_an_ended_session_are_refused(floor: Floor) -> None:
    ann, alex, sid = await _chat(floor)
    await floor.desk.end(alex, sid, "fixed by upgrading")
    before = await floor.store.messages_after(sid, 0, 100)

    with pytest.raises(SessionClosed):
        await floor.desk.send_message(ann, sid, "c1", "one more thing")
    with pytest.raises(SessionClosed):
        await floor.desk.send_message(alex, sid, "e1", "one more thing")
    assert await floor.store.messages_after(sid, 0, 100) == before


async def test_typing_and_read_receipts_are_relayed_not_stored(floor: Floor) -> None:
    ann, alex, sid = await _chat(floor)
    before = await floor.store.messages_after(sid, 0, 100)

    fx = floor.desk.typing(ann, sid, True)
    assert to_engineer(fx, alex, "typing") == [
        {"session_id": sid, "role": "customer", "typing": True}
    ]
    fx = await floor.desk.mark_read(alex, sid, 1)
    assert to_customer(fx, sid, "message:read") == [
        {"session_id": sid, "role": "engineer", "seq": 1}
    ]
    assert await floor.store.messages_after(sid, 0, 100) == before
