"""A restarted desk rebuilds the queue and the chats in progress from the store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatd.core.clock import FakeClock
from chatd.core.desk import Desk
from chatd.core.errors import Conflict
from chatd.core.models import Engineer, EngineerStatus, SessionState
from chatd.store.sqlite import SQLiteStore
from tests.core.helpers import (
    OBSERVER,
    READERS,
    SETTINGS,
    Floor,
    customer,
    positions,
    read_as_widget,
    to_customer,
)


class Before:
    """A desk with sessions in every open state: two waiting, one offered, one active."""

    def __init__(self, floor: Floor) -> None:
        self.floor = floor

    async def build(self) -> None:
        f = self.floor
        self.alex = await f.engineer("alex", capacity=2)
        self.active = await f.assigned(self.alex, customer("ann"))
        await f.desk.send_message(customer("ann"), self.active, "c1", "It fails with E42")
        await f.desk.send_message(self.alex, self.active, "e1", "Which version?")
        f.clock.advance(1)
        self.offered = (await f.request(customer("bob")))[0]["id"]  # Alex's second slot
        f.clock.advance(1)
        self.waiting = await f.queue(customer("cat"), customer("dan"))
        me = f.desk.snapshot(self.alex)["me"]
        assert (me["active"], me["offers"]) == (1, 1)


@pytest.fixture
async def before(floor: Floor) -> Before:
    b = Before(floor)
    await b.build()
    return b


@pytest.fixture
async def restarted(
    before: Before, store: SQLiteStore, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[Floor]:
    """The process stops (the old desk is dropped), time passes, a new one starts over the
    same database file."""
    clock.advance(500)
    new = await restart(store, clock, tmp_path)
    yield new
    await new.store.close()


async def restart(store: SQLiteStore, clock: FakeClock, tmp_path: Path) -> Floor:
    await store.close()
    new_store = SQLiteStore(tmp_path / "chatd.db", synchronous="normal")
    await new_store.open()
    desk = Desk(new_store, clock, SETTINGS)
    assert await desk.restore() == []
    return Floor(desk, new_store, clock)


async def test_restart_keeps_waiting_order_and_puts_offers_back(
    before: Before, restarted: Floor
) -> None:
    assert restarted.queue_order() == [before.offered, *before.waiting]
    stored = await restarted.store.get_session(before.offered)
    assert stored is not None and stored.state is SessionState.WAITING
    for sid in [before.offered, *before.waiting]:
        restarted.desk.customer_connected(sid)

    # Customers learn where they stand as they resume, and follow the boards from there;
    # the first engineer back is offered the oldest.
    told = {}
    for sid in [before.offered, *before.waiting]:
        wire, _, _ = await restarted.desk.history(OBSERVER, sid)
        read_as_widget(wire)
        told[sid] = wire["position"]
    fx = await restarted.desk.tick()
    positions(fx)
    assert {sid: READERS[sid][0].position for sid in told} == {
        before.offered: 1, before.waiting[0]: 2, before.waiting[1]: 3,
    }
    bea = await restarted.engineer("bea", capacity=1)
    assert [o["session_id"] for o in restarted.desk.snapshot(bea)["offers"]] == [before.offered]


async def test_restart_restores_active_chat_to_its_engineer(
    before: Before, restarted: Floor
) -> None:
    alex = before.alex
    session = restarted.desk.session_for(alex, before.active)
    assert session is not None and session.state is SessionState.ACTIVE
    assert session.engineer is not None and session.engineer.id == alex.id

    restarted.desk.engineer_connected(alex)
    assert restarted.desk.snapshot(alex)["me"]["active"] == 1
    fx = await restarted.later(120)  # well past a grace period counted from the restart
    assert to_customer(fx, before.active, "message:new") == []
    _, created, fx = await restarted.desk.send_message(alex, before.active, "e2", "Back")
    assert created and to_customer(fx, before.active, "message:new")


async def test_engineer_grace_after_restart_counts_from_the_restart(
    before: Before, restarted: Floor
) -> None:
    # The chat began 500 s before the restart; the engineer still gets a full grace period.
    fx = await restarted.later(59)
    assert to_customer(fx, before.active, "message:new") == []
    stored = await restarted.store.get_session(before.active)
    assert stored is not None and stored.state is SessionState.ACTIVE

    restarted.desk.customer_connected(before.active)
    fx = await restarted.later(1)

    [note] = to_customer(fx, before.active, "message:new")
    assert note["message"]["event"]["type"] == "requeued"
    # Back at the head of the queue: Ann arrived before everyone else waiting.
    assert restarted.queue_order()[0] == before.active


async def test_waiting_customers_get_a_grace_period_from_the_restart(
    before: Before, restarted: Floor
) -> None:
    restarted.desk.customer_connected(before.waiting[0])

    fx = await restarted.later(59)
    assert to_customer(fx, before.offered, "session:ended") == []
    fx = await restarted.later(1)

    # Those who never came back are abandoned; the one who did keeps waiting.
    for sid in (before.offered, before.waiting[1]):
        assert to_customer(fx, sid, "session:ended")[0]["reason"] == "abandoned"
    assert restarted.queue_order() == [before.active, before.waiting[0]]  # Alex never returned


async def test_restart_keeps_messages(before: Before, restarted: Floor) -> None:
    _, messages, _ = await restarted.desk.history(customer("ann"), before.active)
    assert [m.seq for m in messages] == [1, 2, 3]
    assert [m.body for m in messages[1:]] == ["It fails with E42", "Which version?"]

    # Numbering goes on where it stopped, and retries are still recognised.
    dup, created, _ = await restarted.desk.send_message(
        customer("ann"), before.active, "c1", "It fails with E42"
    )
    assert not created and dup.seq == 2
    msg, created, _ = await restarted.desk.send_message(
        customer("ann"), before.active, "c2", "Version 7.1"
    )
    assert created and msg.seq == 4


async def test_arrivals_after_restart_queue_behind_those_before(
    before: Before, restarted: Floor
) -> None:
    newcomer = (await restarted.request(customer("eve")))[0]["id"]
    assert restarted.queue_order() == [before.offered, *before.waiting, newcomer]


async def test_offer_made_before_a_restart_cannot_be_accepted(
    before: Before, restarted: Floor
) -> None:
    alex: Engineer = before.alex
    restarted.desk.engineer_connected(alex)
    await restarted.available(alex, capacity=1)  # one active chat fills it: no new offer
    bea = await restarted.engineer("bea", capacity=1)
    assert [o["session_id"] for o in restarted.desk.snapshot(bea)["offers"]] == [before.offered]

    # Alex's console still shows the offer made before the restart.
    with pytest.raises(Conflict):
        await restarted.desk.accept(alex, before.offered)
    await restarted.desk.accept(bea, before.offered)

    stored = await restarted.store.get_session(before.offered)
    assert stored is not None and stored.engineer is not None
    assert stored.engineer.id == bea.id
    messages = await restarted.store.messages_after(before.offered, 0, 100)
    assert [m.event["type"] for m in messages if m.event] == ["assigned"]


async def test_arrival_order_survives_a_restart_within_the_same_second(
    floor: Floor, store: SQLiteStore, clock: FakeClock, tmp_path: Path
) -> None:
    # The clock does not move: only the arrival sequence orders these sessions.
    before = await floor.queue(customer("ann"), customer("bob"))
    new = await restart(store, clock, tmp_path)
    try:
        after = await new.queue(customer("cat"))
        assert new.queue_order() == [*before, *after]
    finally:
        await new.store.close()


async def test_estimates_after_restart_use_stored_handle_times(
    floor: Floor, store: SQLiteStore, clock: FakeClock, tmp_path: Path
) -> None:
    alex = await floor.engineer("alex")
    sid = await floor.assigned(alex, customer("ann"))
    clock.advance(90)
    await floor.desk.end(alex, sid)
    new = await restart(store, clock, tmp_path)
    try:
        assert new.desk.observed.handle == [90]
    finally:
        await new.store.close()


async def test_an_engineer_comes_back_as_they_left_after_a_restart(
    before: Before, restarted: Floor
) -> None:
    """Available with a capacity of 2 before the restart (or a takeover): their console
    reconnects and they are offered chats without setting anything again."""
    alex = before.alex
    me = restarted.desk.engineer_connected(alex)
    assert (me["status"], me["capacity"]) == ("available", 2)
    offers = restarted.desk.snapshot(alex)["me"]["offers"]
    assert offers == 0  # offered only at the next match, below
    fx = await restarted.desk.tick()
    assert [f.payload["session_id"] for f in fx if f.event == "offer:new"] == [before.offered]
    # One who went away before the restart stays away.
    bea = Engineer("bea", "bea@vendor.example", "Bea", alex.role)
    await restarted.desk.set_status(bea, EngineerStatus.AWAY, 1)
    again = await restart(restarted.store, restarted.clock, restarted.store.path.parent)
    try:
        assert again.desk.engineer_connected(bea)["status"] == "away"
    finally:
        await again.store.close()
