"""Grace periods for customers and engineers who drop off (docs/protocol.md#grace-periods)."""

from __future__ import annotations

from chatd.core.desk import engineer_room
from chatd.core.effects import queue_membership
from chatd.core.models import EndReason, SessionState
from tests.core.helpers import (
    Floor,
    customer,
    offer_targets,
    offers,
    positions,
    to_customer,
    to_engineer,
)


async def _state(floor: Floor, sid: str) -> SessionState:
    stored = await floor.store.get_session(sid)
    assert stored is not None
    return stored.state


# ---------------------------------------------------------------- customers


async def test_customer_disconnect_keeps_place_within_grace(floor: Floor) -> None:
    ann, bob, cat = customer("ann"), customer("bob"), customer("cat")
    ids = await floor.queue(ann, bob, cat)
    floor.desk.customer_disconnected(ids[1])

    fx = await floor.later(59)
    assert to_customer(fx, ids[1], "session:ended") == []
    assert floor.desk.queue_length() == 3

    # Back within the grace period: same place in the queue, and no deadline left running.
    floor.desk.customer_connected(ids[1])
    wire, _, _ = await floor.desk.history(bob, ids[1])
    assert wire["state"] == "waiting" and wire["position"] == 2
    fx = await floor.later(120)
    assert to_customer(fx, ids[1], "session:ended") == []
    assert await _state(floor, ids[1]) is SessionState.WAITING
    assert floor.queue_order() == ids


async def test_customer_gone_past_grace_abandons_the_session(floor: Floor) -> None:
    ids = await floor.queue(customer("ann"), customer("bob"), customer("cat"))
    floor.desk.customer_disconnected(ids[1])

    fx = await floor.later(60)

    [ended] = to_customer(fx, ids[1], "session:ended")
    assert ended == {"session_id": ids[1], "ended_by": "system", "reason": "abandoned"}
    stored = await floor.store.get_session(ids[1])
    assert stored is not None
    assert stored.state is SessionState.ABANDONED
    assert stored.end_reason is EndReason.ABANDONED
    assert floor.desk.queue_length() == 2
    assert ids[1] not in floor.desk.open_session_ids()
    # The one behind moves up.
    assert positions(fx)[ids[2]][0] == 2
    assert ids[1] not in positions(fx)


async def test_abandoning_an_offered_session_revokes_the_offer(floor: Floor) -> None:
    [sid] = await floor.queue(customer("ann"))
    floor.desk.customer_disconnected(sid)
    floor.clock.advance(35)
    alex = await floor.engineer("alex")
    assert [o["session_id"] for o in floor.desk.snapshot(alex)["offers"]] == [sid]

    # The customer's grace ends while Alex's offer is still open.
    fx = await floor.later(25)

    assert to_customer(fx, sid, "session:ended")[0]["reason"] == "abandoned"
    assert to_engineer(fx, alex, "offer:revoked") == [{"session_id": sid, "reason": "ended"}]
    assert to_engineer(fx, alex, "engineer:status") == []
    assert await _state(floor, sid) is SessionState.ABANDONED
    assert floor.desk.snapshot(alex)["me"]["offers"] == 0


async def test_each_disconnect_gets_a_fresh_grace_period(floor: Floor) -> None:
    [sid] = await floor.queue(customer("ann"))
    floor.desk.customer_disconnected(sid)
    await floor.later(50)
    floor.desk.customer_connected(sid)
    await floor.later(5)
    floor.desk.customer_disconnected(sid)

    fx = await floor.later(59)
    assert to_customer(fx, sid, "session:ended") == []
    fx = await floor.later(1)
    assert to_customer(fx, sid, "session:ended")[0]["reason"] == "abandoned"


async def test_customer_with_another_tab_open_is_not_gone(floor: Floor) -> None:
    [sid] = await floor.queue(customer("ann"))
    floor.desk.customer_connected(sid)  # a second tab
    floor.desk.customer_disconnected(sid)

    fx = await floor.later(300)

    assert to_customer(fx, sid, "session:ended") == []
    assert await _state(floor, sid) is SessionState.WAITING


async def test_customer_cancel_while_waiting_abandons_as_cancelled(floor: Floor) -> None:
    ann = customer("ann")
    ids = await floor.queue(ann, customer("bob"))

    wire, fx = await floor.desk.end(ann, ids[0])

    assert wire["state"] == "abandoned" and wire["end_reason"] == "cancelled"
    [ended] = to_customer(fx, ids[0], "session:ended")
    assert ended["reason"] == "cancelled" and ended["ended_by"] == "customer"
    stored = await floor.store.get_session(ids[0])
    assert stored is not None
    assert (stored.state, stored.end_reason) == (SessionState.ABANDONED, EndReason.CANCELLED)
    assert floor.desk.queue_length() == 1
    assert positions(await floor.later(2)) == {ids[1]: (1, None)}


async def test_customer_cancel_while_offered_revokes_the_offer(floor: Floor) -> None:
    alex = await floor.engineer("alex")
    ann = customer("ann")
    session, _ = await floor.request(ann)

    _, fx = await floor.desk.end(ann, session["id"])

    assert to_engineer(fx, alex, "offer:revoked") == [
        {"session_id": session["id"], "reason": "ended"}
    ]
    assert to_engineer(fx, alex, "transfer:failed") == []
    assert floor.desk.snapshot(alex)["me"]["offers"] == 0


# ---------------------------------------------------------------- engineers


async def test_engineer_disconnect_keeps_active_sessions_for_grace(floor: Floor) -> None:
    alex = await floor.engineer("alex")
    sid = await floor.assigned(alex, customer("ann"))

    fx = await floor.desk.engineer_disconnected(alex.id)
    fx += await floor.later(59)

    assert to_customer(fx, sid, "message:new") == []
    assert await _state(floor, sid) is SessionState.ACTIVE
    assert floor.desk.queue_length() == 0


async def test_engineer_reconnect_within_grace_keeps_sessions(floor: Floor) -> None:
    alex = await floor.engineer("alex")
    sid = await floor.assigned(alex, customer("ann"))
    await floor.desk.engineer_disconnected(alex.id)
    await floor.later(30)

    floor.desk.engineer_connected(alex)
    fx = await floor.later(120)

    assert to_engineer(fx, alex, "session:requeued") == []
    assert await _state(floor, sid) is SessionState.ACTIVE
    msg, created, _ = await floor.desk.send_message(alex, sid, "e1", "still here")
    assert created and msg.seq > 1


async def test_engineer_gone_past_grace_requeues_in_original_place(floor: Floor) -> None:
    alex = await floor.engineer("alex", capacity=1)
    first = await floor.assigned(alex, customer("ann"))
    floor.clock.advance(10)
    later = await floor.queue(customer("bob"), customer("cat"))
    floor.clock.advance(10)
    await floor.desk.engineer_disconnected(alex.id)

    fx = await floor.later(60)

    # Ann is back at the head, ahead of customers who arrived after her.
    assert floor.queue_order() == [first, *later]
    stored = await floor.store.get_session(first)
    assert stored is not None
    assert (stored.state, stored.engineer, stored.assigned_at) == (
        SessionState.WAITING, None, None,
    )
    [note] = to_customer(fx, first, "message:new")
    assert note["message"]["kind"] == "system"
    assert note["message"]["event"]["type"] == "requeued"
    assert "Alex" in note["message"]["body"]
    assert to_engineer(fx, alex, "session:requeued") == [{"session_id": first}]
    # Bob and Cat read on the board that Ann is ahead again; Ann's widget, told by the
    # note that she is back in the queue, asks her place, and reads the boards again.
    assert positions(fx) == {later[0]: (2, None), later[1]: (3, None)}
    assert queue_membership(first, True) in fx
    ann = await floor.desk.queue_position(customer("ann"), first)
    assert (ann["position"], ann["estimated_wait_seconds"]) == (1, None)

    # The next engineer free is offered Ann's chat first.
    bea = await floor.engineer("bea", available=False)
    fx = await floor.available(bea, capacity=1)
    assert offers(fx, bea) == [first]


async def test_requeued_session_is_offered_again_at_once(floor: Floor) -> None:
    alex = await floor.engineer("alex")
    sid = await floor.assigned(alex, customer("ann"))
    bea = await floor.engineer("bea")
    await floor.desk.engineer_disconnected(alex.id)

    fx = await floor.later(60)

    assert offer_targets(fx) == [(sid, engineer_room(bea.id))]
    _, _, fx = await floor.desk.accept(bea, sid)
    assert to_customer(fx, sid, "session:assigned") == [
        {"session_id": sid, "engineer": {"id": bea.id, "name": "Bea"}}
    ]

