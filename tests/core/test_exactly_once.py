"""Exactly one engineer ever gets a session (docs/design.md#exactly-one-engineer-per-session)."""

from __future__ import annotations

import asyncio

import pytest

from chatd.core.clock import FakeClock
from chatd.core.desk import Desk
from chatd.core.errors import Conflict, NotFound, SessionClosed
from chatd.core.models import EngineerStatus, SessionState
from chatd.store.sqlite import SQLiteStore
from tests.core.helpers import SETTINGS, Floor, customer, offers, sent


async def _joined_notes(floor: Floor, sid: str) -> int:
    messages = await floor.store.messages_after(sid, 0, 100)
    return sum(1 for m in messages if m.event and m.event.get("type") == "assigned")


async def test_concurrent_accepts_from_two_connections_assign_once(floor: Floor) -> None:
    alex = await floor.engineer("alex")
    floor.desk.engineer_connected(alex)  # a second console tab
    session, _ = await floor.request(customer("ann"))
    sid = session["id"]

    results = await asyncio.gather(
        floor.desk.accept(alex, sid), floor.desk.accept(alex, sid)
    )

    # Both tabs are answered with the chat; it is assigned and announced once.
    assert [wire["state"] for wire, _, _ in results] == ["active", "active"]
    assert [wire["engineer"]["id"] for wire, _, _ in results] == [alex.id, alex.id]
    all_fx = [o for _, _, fx in results for o in fx]
    assert len(sent(all_fx, "session:assigned", namespace="customer")) == 1
    assert await _joined_notes(floor, sid) == 1
    assert floor.desk.snapshot(alex)["me"]["active"] == 1


async def test_concurrent_accepts_from_two_engineers_assign_once(floor: Floor) -> None:
    alex = await floor.engineer("alex")
    floor.clock.advance(1)
    bea = await floor.engineer("bea")
    session, fx = await floor.request(customer("ann"))
    sid = session["id"]
    assert offers(fx, alex) == [sid]

    results = await asyncio.gather(
        floor.desk.accept(bea, sid), floor.desk.accept(alex, sid), return_exceptions=True
    )

    assert isinstance(results[0], Conflict)
    assert not isinstance(results[1], BaseException)
    stored = await floor.store.get_session(sid)
    assert stored is not None and stored.engineer is not None
    assert (stored.state, stored.engineer.id) == (SessionState.ACTIVE, alex.id)
    assert await _joined_notes(floor, sid) == 1
    assert floor.desk.snapshot(bea)["me"]["active"] == 0


async def test_accept_of_a_reoffered_session_by_the_first_engineer_fails(floor: Floor) -> None:
    alex = await floor.engineer("alex")
    floor.clock.advance(1)
    bea = await floor.engineer("bea")
    session, _ = await floor.request(customer("ann"))
    sid = session["id"]
    await floor.desk.decline(alex, sid)  # now Bea's offer

    results = await asyncio.gather(
        floor.desk.accept(alex, sid), floor.desk.accept(bea, sid), return_exceptions=True
    )

    assert isinstance(results[0], Conflict)
    assert not isinstance(results[1], BaseException)
    assert await _joined_notes(floor, sid) == 1


async def test_accept_after_expiry_fails_with_conflict(floor: Floor) -> None:
    alex = await floor.engineer("alex")
    session, _ = await floor.request(customer("ann"))
    sid = session["id"]
    await floor.later(30)

    with pytest.raises(Conflict):
        await floor.desk.accept(alex, sid)

    stored = await floor.store.get_session(sid)
    assert stored is not None and stored.state is SessionState.WAITING
    assert await _joined_notes(floor, sid) == 0


async def test_accept_after_disconnect_fails_with_conflict(floor: Floor) -> None:
    alex = await floor.engineer("alex")
    session, _ = await floor.request(customer("ann"))
    await floor.desk.engineer_disconnected(alex.id)

    floor.desk.engineer_connected(alex)
    with pytest.raises(Conflict):
        await floor.desk.accept(alex, session["id"])

    # The reconnected engineer is offered it afresh, and that offer can be accepted once.
    fx = await floor.desk.tick()
    assert offers(fx, alex) == [session["id"]]
    await floor.desk.accept(alex, session["id"])
    assert await _joined_notes(floor, session["id"]) == 1


async def test_accept_of_a_session_the_customer_left_fails(floor: Floor) -> None:
    alex = await floor.engineer("alex")
    ann = customer("ann")
    session, _ = await floor.request(ann)
    await floor.desk.end(ann, session["id"])

    with pytest.raises(SessionClosed):
        await floor.desk.accept(alex, session["id"])
    with pytest.raises(NotFound):
        await floor.desk.accept(alex, "no-such-session")


async def test_store_refuses_a_second_assignment_from_a_stale_desk(
    floor: Floor, store: SQLiteStore, clock: FakeClock
) -> None:
    # Two desks over one database (as after a restart racing the old process): the store
    # assigns only a session that is still waiting or offered.
    [sid] = await floor.queue(customer("ann"))
    other = Desk(store, clock, SETTINGS)
    await other.restore()
    alex = await floor.engineer("alex")
    bea = await floor.engineer("bea", available=False)
    other.engineer_connected(bea)
    _, fx = await other.set_status(bea, EngineerStatus.AVAILABLE, 3)
    assert offers(fx, bea) == [sid]

    results = await asyncio.gather(
        floor.desk.accept(alex, sid), other.accept(bea, sid), return_exceptions=True
    )

    assert sum(isinstance(r, Conflict) for r in results) == 1
    assert await _joined_notes(floor, sid) == 1
    stored = await floor.store.get_session(sid)
    assert stored is not None and stored.engineer is not None
    winner = alex if not isinstance(results[0], BaseException) else bea
    assert stored.engineer.id == winner.id
