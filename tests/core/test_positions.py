"""Waiting customers see their position and an estimated wait
(docs/protocol.md#position-and-estimated-wait)."""

from __future__ import annotations

import json

from chatd.core.models import Role
from tests.core.helpers import READERS, Floor, customer, positions, sent, to_engineers_room

AHT = 600  # SETTINGS.default_handle_seconds: the estimate's base before any history


async def test_customer_may_queue_with_no_engineer_online(floor: Floor) -> None:
    session, fx = await floor.request(customer("ann"))

    assert session["state"] == "waiting"
    assert session["position"] == 1
    assert session["estimated_wait_seconds"] is None
    [update] = to_engineers_room(fx, "queue:update")
    assert update["length"] == 1 and update["engineers_online"] == 0


async def test_request_answers_with_position_and_estimate(floor: Floor) -> None:
    await floor.engineer("alex", capacity=3)
    answers = [(await floor.request(customer(f"c{i}")))[0] for i in range(4)]

    assert [a["position"] for a in answers] == [1, 2, 3, 4]
    for a in answers:
        assert (a["estimated_wait_low_seconds"] <= a["estimated_wait_seconds"]
                <= a["estimated_wait_high_seconds"])
    # The first three were offered at once: they wait only for Alex to accept (seconds),
    # not a handle time as the old formula said (600, 800, 1000).
    assert all(a["state"] == "offered" for a in answers[:3])
    assert all(a["estimated_wait_seconds"] <= 30 for a in answers[:3])
    # The fourth waits for the first of three fresh chats to end: well under one handle
    # time (the old formula said two), more than the offered ones.
    fourth = answers[3]["estimated_wait_seconds"]
    assert answers[3]["state"] == "waiting"
    assert 0.2 * AHT < fourth < AHT


async def test_queue_position_follows_the_queue(floor: Floor) -> None:
    alex = await floor.engineer("alex", capacity=1)
    ids = await floor.queue(*(customer(n) for n in ("ann", "bob", "cat", "dan")))
    assert positions(await floor.later(3)) == {}  # nothing moved since the answers

    _, _, fx = await floor.desk.accept(alex, ids[0])
    fx += await floor.later(1)

    moved = positions(fx)
    assert {sid: p for sid, (p, _) in moved.items()} == {ids[1]: 1, ids[2]: 2, ids[3]: 3}
    waits = [moved[sid][1] for sid in ids[1:]]
    assert waits == sorted(waits) and waits[0] is not None and waits[0] > 0
    # The queue news of the requests went out at the last tick, under a second ago.
    [update] = to_engineers_room(fx + await floor.later(1), "queue:update")
    assert update["length"] == 3


async def test_the_board_is_sent_at_most_once_per_interval(floor: Floor) -> None:
    alex = await floor.engineer("alex", capacity=20)
    ids = await floor.queue(*(customer(n) for n in ("ann", "bob", "cat", "dan")))
    floor.clock.advance(3)
    await floor.desk.accept(alex, ids[0])
    assert set(positions(await floor.desk.tick())) == {ids[1], ids[2], ids[3]}

    # Two more moves within the next second...
    floor.clock.advance(0.4)
    await floor.desk.accept(alex, ids[1])
    assert sent(await floor.desk.tick(), "queue:board") == []
    floor.clock.advance(0.4)
    await floor.desk.accept(alex, ids[2])
    assert sent(await floor.desk.tick(), "queue:board") == []
    assert sent(await floor.later(0.1), "queue:board") == []

    # ...reach Dan as one board, a second after the last one, from which he reads that
    # he is next.
    fx = await floor.later(0.1)
    [board] = sent(fx, "queue:board")
    assert len(board["left"]) == 2
    [(position, _)] = positions(fx).values()
    assert position == 1 and sent(await floor.later(0), "queue:board") == []
    assert positions(await floor.later(5)) == {}


async def test_estimate_learns_the_handle_time_from_answered_chats(floor: Floor) -> None:
    alex = await floor.engineer("alex", capacity=1)
    lee = await floor.engineer("lee", role=Role.LEAD, available=False)

    # Before any chat has ended, a customer behind a fresh chat is told about the default.
    await floor.assigned(alex, customer("ann0"))
    before, _ = await floor.request(customer("first-behind"))
    await floor.desk.end(lee, before["id"])
    assert 0.5 * AHT < before["estimated_wait_seconds"] < 1.5 * AHT

    floor.clock.advance(120)
    for i in range(1, 15):  # fifteen chats of two minutes each
        await floor.desk.end(alex, floor.desk.snapshot(alex)["sessions"][0]["id"])
        await floor.assigned(alex, customer(f"ann{i}"))
        floor.clock.advance(120)
    # A chat nobody answered (cancelled by a lead after a long wait) is not handling.
    [unanswered] = await floor.queue(customer("cat"))
    floor.clock.advance(1000)
    await floor.desk.end(lee, unanswered)

    assert 100 < floor.desk.average_handle_seconds() < 140
    # Alex's chat has run 1,120 s, far past the usual 120: it could end any moment, so the
    # next customer is told a short wait, not another two minutes from now.
    session, _ = await floor.request(customer("dan"))
    assert session["estimated_wait_seconds"] < 120


async def test_estimates_fall_as_engineers_come_and_rise_as_they_go(floor: Floor) -> None:
    ids = await floor.queue(customer("ann"), customer("bob"))
    second = ids[1]

    async def estimate() -> int | None:
        positions(await floor.later(2))
        position, wait = READERS[second][1][-1]  # what Bob's widget shows
        assert position == 2
        return wait

    alex = await floor.engineer("alex", capacity=1)
    with_one = await estimate()
    bea = await floor.engineer("bea", capacity=1)
    with_two = await estimate()
    await floor.desk.engineer_disconnected(bea.id)
    one_again = await estimate()
    await floor.away(alex)
    with_none = await estimate()

    assert with_one is not None and with_two is not None and one_again is not None
    assert with_two < with_one
    assert abs(one_again - with_one) <= 0.1 * with_one
    assert with_none is None


async def test_a_dequeue_with_2000_waiting_is_one_board_of_a_bounded_size(floor: Floor) -> None:
    alex = await floor.engineer("alex", capacity=1)
    ids = await floor.queue(*(customer(f"c{i:04d}") for i in range(2000)))
    positions(await floor.later(2))

    _, _, fx = await floor.desk.accept(alex, ids[0])
    fx += await floor.later(1)

    # One event for everyone, whatever the length of the queue, and every widget reads
    # its new place from it.
    [board] = sent(fx, "queue:board")
    assert len(fx) < 10
    assert board["length"] == 1999 and len(board["left"]) == 1
    assert len(board["waits"]["positions"]) < 100
    assert len(json.dumps(board)) < 4000
    positions(fx)
    assert [READERS[sid][0].position for sid in ids[1:]] == list(range(1, 2000))
    assert sent(await floor.later(0.5), "queue:board") == []


async def test_a_crowd_joining_at_the_tail_costs_no_board(floor: Floor) -> None:
    # Those already waiting lose no place and no wait when others join behind them, and
    # every joiner is told their own in the answer: no board for everyone each time.
    alex = await floor.engineer("alex", capacity=1)
    ids = await floor.queue(*(customer(f"a{i:03d}") for i in range(40)))
    positions(await floor.later(2))
    for n in range(3):
        more = await floor.queue(*(customer(f"b{n}-{i:03d}") for i in range(100)))
        assert sent(await floor.later(2), "queue:board") == []
        ids += more
    # The next departure is news for everyone, the latest joiners too.
    _, _, fx = await floor.desk.accept(alex, ids[0])
    fx += await floor.later(2)
    [board] = sent(fx, "queue:board")
    assert board["length"] == len(ids) - 1 and len(board["left"]) == 1
    positions(fx)
    assert [READERS[sid][0].position for sid in ids[1:]] == list(range(1, len(ids)))
