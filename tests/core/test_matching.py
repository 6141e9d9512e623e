"""One first-come-first-served queue, offered to the longest-idle engineer
(docs/protocol.md#matching-and-offers)."""

from __future__ import annotations

from chatd.core.desk import engineer_room
from chatd.core.models import EngineerStatus, SessionState
from tests.core.helpers import Floor, customer, offer_targets, offers, to_engineer


async def test_oldest_waiting_session_is_offered_first(floor: Floor) -> None:
    ids = []
    for name in ("ann", "bob", "cat"):
        ids += await floor.queue(customer(name))
        floor.clock.advance(1)
    alex = await floor.engineer("alex", available=False)

    fx = await floor.available(alex, capacity=1)
    assert offers(fx, alex) == [ids[0]]

    _, _, fx = await floor.desk.accept(alex, ids[0])
    assert offers(fx, alex) == []  # at capacity with one active chat
    _, fx = await floor.desk.end(alex, ids[0])
    assert offers(fx, alex) == [ids[1]]


async def test_same_timestamp_is_broken_by_arrival_order(floor: Floor) -> None:
    # The fake clock does not move: every request carries the same created_at.
    names = [f"c{i:02d}" for i in range(12)]
    ids = await floor.queue(*(customer(n) for n in reversed(names)))
    stored = [await floor.store.get_session(sid) for sid in ids]
    assert len({s.created_at for s in stored if s}) == 1
    alex = await floor.engineer("alex", available=False)

    fx = await floor.available(alex, capacity=20)

    assert offers(fx, alex) == ids
    assert floor.queue_order() == ids
    snapshot = floor.desk.snapshot(alex)
    assert [item["position"] for item in snapshot["queue"]] == list(range(1, 13))


async def test_session_is_offered_to_the_first_engineer_free_in_arrival_order(
    floor: Floor,
) -> None:
    alex = await floor.engineer("alex", capacity=1)
    busy = await floor.assigned(alex, customer("zed"))
    ids = await floor.queue(customer("ann"), customer("bob"), customer("cat"))

    # A slot frees up: the oldest waiting session gets it, the younger ones keep waiting.
    _, fx = await floor.desk.end(alex, busy)
    assert offer_targets(fx) == [(ids[0], engineer_room(alex.id))]


async def test_no_younger_session_is_offered_while_an_older_one_waits_unoffered(
    floor: Floor,
) -> None:
    alex = await floor.engineer("alex", capacity=2)
    ids = await floor.queue(customer("ann"), customer("bob"), customer("cat"))
    assert [o["session_id"] for o in floor.desk.snapshot(alex)["offers"]] == ids[:2]

    # Alex, the only engineer, declines the oldest: it goes back to Alex (the only one
    # eligible), and the third session is not offered ahead of it.
    fx = await floor.desk.decline(alex, ids[0])
    assert offers(fx, alex) == [ids[0]]
    assert ids[2] not in offers(fx, alex)


async def test_longest_idle_engineer_gets_the_offer(floor: Floor) -> None:
    alex = await floor.engineer("alex")
    floor.clock.advance(5)
    bea = await floor.engineer("bea")
    floor.clock.advance(5)

    # Alex has waited longer since coming online.
    first = await floor.assigned(alex, customer("ann"))
    floor.clock.advance(5)

    # Alex just took a chat, so Bea has now gone longest without one.
    session, fx = await floor.request(customer("bob"))
    assert offer_targets(fx) == [(session["id"], engineer_room(bea.id))]
    await floor.desk.accept(bea, session["id"])
    floor.clock.advance(5)

    # Bea took hers after Alex: Alex is the longest idle again.
    session, fx = await floor.request(customer("cat"))
    assert offer_targets(fx) == [(session["id"], engineer_room(alex.id))]
    assert first != session["id"]


async def test_capacity_counts_active_sessions_and_outstanding_offers(floor: Floor) -> None:
    alex = await floor.engineer("alex", capacity=2)
    ids = await floor.queue(customer("ann"), customer("bob"), customer("cat"))
    assert floor.desk.snapshot(alex)["me"]["offers"] == 2

    # One active and one outstanding offer fill a capacity of two.
    _, _, fx = await floor.desk.accept(alex, ids[0])
    assert offers(fx, alex) == []
    me = floor.desk.snapshot(alex)["me"]
    assert (me["active"], me["offers"]) == (1, 1)

    _, _, fx = await floor.desk.accept(alex, ids[1])
    assert offers(fx, alex) == []

    _, fx = await floor.desk.end(alex, ids[0])
    assert offers(fx, alex) == [ids[2]]


async def test_raising_capacity_makes_room_for_more_offers(floor: Floor) -> None:
    alex = await floor.engineer("alex", capacity=1)
    ids = await floor.queue(customer("ann"), customer("bob"))
    fx = await floor.available(alex, capacity=2)
    assert offers(fx, alex) == [ids[1]]


async def test_away_engineer_is_never_offered(floor: Floor) -> None:
    alex = await floor.engineer("alex", available=False)  # connected, status away
    session, fx = await floor.request(customer("ann"))
    assert offers(fx, alex) == []
    assert offers(await floor.later(120), alex) == []

    bea = await floor.engineer("bea")
    snapshot = floor.desk.snapshot(bea)
    assert [o["session_id"] for o in snapshot["offers"]] == [session["id"]]
    assert floor.desk.snapshot(alex)["offers"] == []


async def test_engineer_set_away_loses_outstanding_offers_to_the_next_engineer(
    floor: Floor,
) -> None:
    alex = await floor.engineer("alex")
    floor.clock.advance(1)
    bea = await floor.engineer("bea")
    session, fx = await floor.request(customer("ann"))
    assert offers(fx, alex) == [session["id"]]

    fx = await floor.away(alex)

    assert to_engineer(fx, alex, "offer:revoked") == [
        {"session_id": session["id"], "reason": "engineer_away"}
    ]
    assert offers(fx, bea) == [session["id"]]


async def test_disconnected_engineer_is_never_offered(floor: Floor) -> None:
    alex = await floor.engineer("alex")
    floor.clock.advance(1)
    bea = await floor.engineer("bea", available=False)
    session, fx = await floor.request(customer("ann"))
    assert offers(fx, alex) == [session["id"]]

    fx = await floor.desk.engineer_disconnected(alex.id)
    assert to_engineer(fx, alex, "offer:revoked") == [
        {"session_id": session["id"], "reason": "engineer_offline"}
    ]
    assert offers(fx, alex) == []
    stored = await floor.store.get_session(session["id"])
    assert stored is not None and stored.state is SessionState.WAITING

    # Still "available" in name, but offline: later sessions and ticks never reach Alex.
    later, fx2 = await floor.request(customer("bob"))
    fx3 = await floor.later(5)
    assert offers(fx2 + fx3, alex) == []

    fx = await floor.available(bea)
    assert offers(fx, bea) == [session["id"], later["id"]]


async def test_engineer_who_never_connected_is_never_offered(floor: Floor) -> None:
    ghost = await floor.engineer("ghost", connected=False)
    _, fx = await floor.desk.set_status(ghost, EngineerStatus.AVAILABLE, 3)
    _, fx2 = await floor.request(customer("ann"))
    assert offers(fx + fx2, ghost) == []
    assert floor.desk.online_capacity() == 0
