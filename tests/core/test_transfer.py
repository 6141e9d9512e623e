"""The assigned engineer or a lead hands an active chat to another engineer
(docs/protocol.md#transfers)."""

from __future__ import annotations

import pytest

from chatd.core.errors import Conflict, Forbidden
from chatd.core.models import Engineer, Role, SessionState
from tests.core.helpers import Floor, customer, offers, to_customer, to_engineer


async def _chat_with_bea_free(floor: Floor) -> tuple[Engineer, Engineer, str]:
    alex = await floor.engineer("alex")
    sid = await floor.assigned(alex, customer("ann"))
    bea = await floor.engineer("bea")
    return alex, bea, sid


async def _engineer_of(floor: Floor, sid: str) -> str | None:
    stored = await floor.store.get_session(sid)
    assert stored is not None and stored.state is SessionState.ACTIVE
    return stored.engineer.id if stored.engineer else None


async def test_transfer_by_assigned_engineer_moves_the_chat_on_accept(floor: Floor) -> None:
    alex, bea, sid = await _chat_with_bea_free(floor)

    fx = await floor.desk.transfer(alex, sid, bea.id)

    [offer] = to_engineer(fx, bea, "offer:new")
    assert offer["session_id"] == sid
    assert offer["transfer_from"] == {"id": alex.id, "name": "Alex"}
    # Until Bea accepts, the chat is Alex's.
    assert await _engineer_of(floor, sid) == alex.id

    wire, messages, fx = await floor.desk.accept(bea, sid)

    assert wire["state"] == "active" and wire["engineer"] == {"id": bea.id, "name": "Bea"}
    assert await _engineer_of(floor, sid) == bea.id
    assigned = {"session_id": sid, "engineer": {"id": bea.id, "name": "Bea"}}
    assert to_customer(fx, sid, "session:assigned") == [assigned]
    assert to_engineer(fx, bea, "session:assigned") == [assigned]
    assert to_engineer(fx, alex, "session:assigned") == [assigned]
    note = messages[-1]
    assert note.kind == "system" and note.event is not None
    assert note.event["type"] == "transferred"
    assert note.event["from"]["id"] == alex.id and note.event["to"]["id"] == bea.id
    for room_payloads in (
        to_customer(fx, sid, "message:new"),
        to_engineer(fx, alex, "message:new"),
        to_engineer(fx, bea, "message:new"),
    ):
        assert [p["message"]["id"] for p in room_payloads] == [note.id]

    # The chat is Bea's now: Alex can no longer write in it, Bea can.
    with pytest.raises(Forbidden):
        await floor.desk.send_message(alex, sid, "a1", "hello?")
    _, created, fx = await floor.desk.send_message(bea, sid, "b1", "Bea here")
    assert created and to_customer(fx, sid, "message:new")
    assert floor.desk.snapshot(alex)["me"]["active"] == 0
    assert floor.desk.snapshot(bea)["me"]["active"] == 1


async def test_transfer_by_lead_moves_a_chat_they_do_not_hold(floor: Floor) -> None:
    alex, bea, sid = await _chat_with_bea_free(floor)
    lee = await floor.engineer("lee", role=Role.LEAD, available=False)

    fx = await floor.desk.transfer(lee, sid, bea.id)
    assert offers(fx, bea) == [sid]
    _, _, fx = await floor.desk.accept(bea, sid)

    assert await _engineer_of(floor, sid) == bea.id
    assert to_engineer(fx, alex, "session:assigned")
    assert to_customer(fx, sid, "session:assigned")


async def test_declined_transfer_stays_with_the_first_engineer(floor: Floor) -> None:
    alex, bea, sid = await _chat_with_bea_free(floor)
    await floor.desk.transfer(alex, sid, bea.id)

    fx = await floor.desk.decline(bea, sid)

    assert to_engineer(fx, bea, "offer:revoked") == [{"session_id": sid, "reason": "declined"}]
    assert to_engineer(fx, alex, "transfer:failed") == [
        {"session_id": sid, "to_engineer_id": bea.id, "reason": "declined"}
    ]
    assert to_customer(fx, sid, "session:assigned") == []
    assert await _engineer_of(floor, sid) == alex.id
    _, created, _ = await floor.desk.send_message(alex, sid, "a1", "still with you")
    assert created
    # A declined transfer is not an expired offer: Bea stays available.
    assert floor.desk.snapshot(bea)["me"]["status"] == "available"


async def test_declined_lead_transfer_tells_the_engineer_holding_the_chat(floor: Floor) -> None:
    alex, bea, sid = await _chat_with_bea_free(floor)
    lee = await floor.engineer("lee", role=Role.LEAD, available=False)
    await floor.desk.transfer(lee, sid, bea.id)

    fx = await floor.desk.decline(bea, sid)

    assert [p["session_id"] for p in to_engineer(fx, alex, "transfer:failed")] == [sid]
    assert await _engineer_of(floor, sid) == alex.id


async def test_expired_transfer_stays_with_the_first_engineer(floor: Floor) -> None:
    alex, bea, sid = await _chat_with_bea_free(floor)
    await floor.desk.transfer(alex, sid, bea.id)

    fx = await floor.later(30)

    assert to_engineer(fx, alex, "transfer:failed") == [
        {"session_id": sid, "to_engineer_id": bea.id, "reason": "expired"}
    ]
    assert to_engineer(fx, bea, "offer:revoked") == [{"session_id": sid, "reason": "expired"}]
    assert to_engineer(fx, bea, "engineer:status")[0]["reason"] == "offer_expired"
    assert await _engineer_of(floor, sid) == alex.id
    with pytest.raises(Conflict):
        await floor.desk.accept(bea, sid)
    assert await _engineer_of(floor, sid) == alex.id


async def test_engineer_cannot_transfer_a_chat_of_someone_else(floor: Floor) -> None:
    alex, bea, sid = await _chat_with_bea_free(floor)
    cy = await floor.engineer("cy")

    with pytest.raises(Forbidden):
        await floor.desk.transfer(bea, sid, cy.id)
    assert floor.desk.snapshot(cy)["offers"] == []


async def test_transfer_to_an_engineer_without_room_is_refused(floor: Floor) -> None:
    alex, bea, sid = await _chat_with_bea_free(floor)
    await floor.away(bea)

    with pytest.raises(Conflict):
        await floor.desk.transfer(alex, sid, bea.id)
    with pytest.raises(Conflict):
        await floor.desk.transfer(alex, sid, alex.id)
    assert floor.desk.snapshot(bea)["offers"] == []


async def test_waiting_session_cannot_be_transferred(floor: Floor) -> None:
    lee = await floor.engineer("lee", role=Role.LEAD, available=False)
    bea = await floor.engineer("bea", available=False)
    [sid] = await floor.queue(customer("ann"))
    await floor.available(bea)  # Bea now holds the offer

    with pytest.raises(Conflict):
        await floor.desk.transfer(lee, sid, bea.id)


async def test_pending_transfer_of_a_chat_requeued_after_grace_is_withdrawn(
    floor: Floor,
) -> None:
    alex, bea, sid = await _chat_with_bea_free(floor)
    lee = await floor.engineer("lee", role=Role.LEAD, available=False)
    await floor.desk.engineer_disconnected(alex.id)
    floor.clock.advance(50)
    # The lead moves the chat of the engineer who dropped off; Alex's grace ends first.
    await floor.desk.transfer(lee, sid, bea.id)

    fx = await floor.later(10)

    assert {"session_id": sid, "reason": "requeued"} in to_engineer(fx, bea, "offer:revoked")
    # The chat is back in the queue and offered like any other; whoever gets it can take it.
    assert sid in offers(fx, bea)
    await floor.desk.accept(bea, sid)
    assert await _engineer_of(floor, sid) == bea.id
    assert floor.desk.snapshot(bea)["me"]["status"] == "available"
