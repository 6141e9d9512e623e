"""Offers expire after offer_timeout; declined or expired offers move on
(docs/protocol.md#matching-and-offers)."""

from __future__ import annotations

import pytest

from chatd.core.desk import engineer_room
from chatd.core.errors import Conflict
from chatd.core.models import SessionState
from tests.core.helpers import Floor, customer, offer_targets, offers, to_engineer


async def test_offer_expiry_sets_engineer_away(floor: Floor) -> None:
    alex = await floor.engineer("alex")
    floor.clock.advance(1)
    bea = await floor.engineer("bea")
    session, fx = await floor.request(customer("ann"))
    sid = session["id"]
    assert offers(fx, alex) == [sid]

    fx = await floor.later(30)

    assert to_engineer(fx, alex, "offer:revoked") == [{"session_id": sid, "reason": "expired"}]
    [status] = to_engineer(fx, alex, "engineer:status")
    assert status["status"] == "away" and status["reason"] == "offer_expired"
    assert status["id"] == alex.id
    assert offer_targets(fx) == [(sid, engineer_room(bea.id))]
    assert floor.desk.snapshot(alex)["me"]["status"] == "away"


async def test_offer_is_open_until_the_timeout(floor: Floor) -> None:
    alex = await floor.engineer("alex")
    session, _ = await floor.request(customer("ann"))

    fx = await floor.later(29.5)

    assert to_engineer(fx, alex, "offer:revoked") == []
    assert to_engineer(fx, alex, "engineer:status") == []
    _, _, fx = await floor.desk.accept(alex, session["id"])
    assert to_engineer(fx, alex, "session:assigned")


async def test_expired_offer_with_nobody_else_leaves_the_session_waiting(floor: Floor) -> None:
    alex = await floor.engineer("alex")
    session, _ = await floor.request(customer("ann"))

    fx = await floor.later(30)

    assert offer_targets(fx) == []
    stored = await floor.store.get_session(session["id"])
    assert stored is not None and stored.state is SessionState.WAITING
    assert floor.desk.queue_length() == 1

    # Back from away, Alex gets it again.
    fx = await floor.available(alex)
    assert offers(fx, alex) == [session["id"]]


async def test_expiry_of_several_offers_sets_engineer_away_once(floor: Floor) -> None:
    alex = await floor.engineer("alex", capacity=3)
    ids = await floor.queue(customer("ann"), customer("bob"))
    assert [o["session_id"] for o in floor.desk.snapshot(alex)["offers"]] == ids

    fx = await floor.later(30)

    assert len(to_engineer(fx, alex, "engineer:status")) == 1
    revoked = to_engineer(fx, alex, "offer:revoked")
    assert sorted(r["session_id"] for r in revoked) == sorted(ids)
    assert floor.desk.snapshot(alex)["offers"] == []


async def test_decline_offers_the_session_to_the_next_engineer(floor: Floor) -> None:
    alex = await floor.engineer("alex")
    floor.clock.advance(1)
    bea = await floor.engineer("bea")
    session, fx = await floor.request(customer("ann"))
    sid = session["id"]
    assert offers(fx, alex) == [sid]

    fx = await floor.desk.decline(alex, sid)

    assert to_engineer(fx, alex, "offer:revoked") == [{"session_id": sid, "reason": "declined"}]
    assert offer_targets(fx) == [(sid, engineer_room(bea.id))]
    # Declining is not letting an offer lapse: Alex stays available.
    assert floor.desk.snapshot(alex)["me"]["status"] == "available"


async def test_decliner_is_skipped_while_anyone_else_is_eligible(floor: Floor) -> None:
    alex = await floor.engineer("alex")
    floor.clock.advance(1)
    bea = await floor.engineer("bea")
    floor.clock.advance(1)
    cy = await floor.engineer("cy")
    session, _ = await floor.request(customer("ann"))
    sid = session["id"]

    fx = await floor.desk.decline(alex, sid)
    assert offers(fx, bea) == [sid]
    fx = await floor.desk.decline(bea, sid)
    # Alex has gone longest without a chat, but declined it; Cy has not.
    assert offer_targets(fx) == [(sid, engineer_room(cy.id))]


async def test_decliner_gets_the_offer_again_when_nobody_else_is_eligible(
    floor: Floor,
) -> None:
    bea = await floor.engineer("bea", capacity=1)
    await floor.assigned(bea, customer("zed"))  # Bea is full
    floor.clock.advance(1)
    alex = await floor.engineer("alex")
    session, fx = await floor.request(customer("ann"))
    sid = session["id"]
    assert offers(fx, alex) == [sid]

    fx = await floor.desk.decline(alex, sid)

    assert to_engineer(fx, alex, "offer:revoked") == [{"session_id": sid, "reason": "declined"}]
    assert offer_targets(fx) == [(sid, engineer_room(alex.id))]


async def test_decline_of_an_offer_made_to_someone_else_is_refused(floor: Floor) -> None:
    alex = await floor.engineer("alex")
    floor.clock.advance(1)
    bea = await floor.engineer("bea")
    session, _ = await floor.request(customer("ann"))

    with pytest.raises(Conflict):
        await floor.desk.decline(bea, session["id"])
    assert [o["session_id"] for o in floor.desk.snapshot(alex)["offers"]] == [session["id"]]



async def test_accept_after_the_offer_timeout_is_refused_even_before_the_tick(
    floor: Floor,
) -> None:
    alex = await floor.engineer("alex")
    session, _ = await floor.request(customer("ann"))
    floor.clock.advance(30)
    with pytest.raises(Conflict, match="expired"):
        await floor.desk.accept(alex, session["id"])


async def test_waiting_chats_are_spread_over_idle_engineers(floor: Floor) -> None:
    alex = await floor.engineer("alex")
    floor.clock.advance(1)
    bea = await floor.engineer("bea")
    first, fx1 = await floor.request(customer("ann"))
    second, fx2 = await floor.request(customer("ben"))
    assert offers(fx1, alex) == [first["id"]]
    assert offers(fx2, bea) == [second["id"]]
