"""The queue board over real sockets (docs/protocol.md#queueboard): one event for every
waiting customer, from which each keeps its place; answered customers stop getting it; a
customer who missed boards asks ``queue:position``."""

from __future__ import annotations

import asyncio
from typing import Any

from chatd.core.board import BoardReader
from tests.e2e.helpers import Inbox, call, engineer, guest


async def test_waiting_customers_follow_the_board_and_leave_it_when_answered(
    chatd_factory: Any,
) -> None:
    chatd = await chatd_factory()
    customers: list[tuple[Any, Inbox, BoardReader, str]] = []
    for name in ("Ann", "Bob", "Cat", "Dan"):
        c, inbox = await guest(chatd, name)
        r = await call(c, "/customer", "chat:request", {"topic": f"{name}'s problem"})
        s = r["session"]
        assert s["position"] == len(customers) + 1
        reader = BoardReader(s["arrival"], s["position"], s["board"], s["board_seen"])
        customers.append((c, inbox, reader, s["id"]))
    (ann, ann_in, _, ann_sid), (_, _, _, bob_sid) = customers[0], customers[1]

    # Bob leaves the queue; then an engineer comes and answers Ann.
    bob = customers[1][0]
    assert (await call(bob, "/customer", "session:end", {"session_id": bob_sid}))["ok"]
    eng, eng_in = await engineer(chatd, "alex@example.com")
    await eng_in.wait_for("offer:new", lambda d: d["session_id"] == ann_sid)
    assert (await call(eng, "/engineer", "offer:accept", {"session_id": ann_sid}))["ok"]

    # Cat and Dan read from the boards that they are next and second.
    for (_, inbox, reader, _), place in zip(customers[2:], (1, 2), strict=True):
        await asyncio.wait_for(follow(inbox, reader, place), 10)
    assert [r.position for _, _, r, _ in customers[2:]] == [1, 2]
    # One event per board for everyone: no per-customer position pushes.
    assert all(not inbox.named("queue:position") for _, inbox, _, _ in customers)

    # Ann, answered, gets no board after her assignment; Dan still does.
    await ann_in.wait_for("session:assigned")
    before = len(ann_in.named("queue:board"))
    dan, dan_in, dan_reader, dan_sid = customers[3]
    last = dan_in.named("queue:board")[-1]["v"]
    cat, _, _, cat_sid = customers[2]
    assert (await call(cat, "/customer", "session:end", {"session_id": cat_sid}))["ok"]
    board = await dan_in.wait_for("queue:board", lambda d: d["v"] > last)
    assert dan_reader.read(board) and dan_reader.position == 1
    await asyncio.sleep(0.3)
    assert len(ann_in.named("queue:board")) == before

    # A customer who missed boards asks where it stands.
    place = await call(dan, "/customer", "queue:position", {"session_id": dan_sid})
    assert place["ok"] and place["position"] == 1 and place["board"] >= board["v"]
    assert place["arrival"] == dan_reader.arrival
    # Another customer's chat is not theirs to ask about.
    other = await call(dan, "/customer", "queue:position", {"session_id": ann_sid})
    assert other["ok"] is False and other["error"]["code"] in ("forbidden", "not_found")
    for c, *_ in customers:
        await c.disconnect()
    await ann.disconnect()


async def follow(inbox: Inbox, reader: BoardReader, place: int) -> None:
    """Read the boards as they come until ``reader`` stands at ``place``."""
    while reader.position != place:
        for board in inbox.named("queue:board"):
            if board["v"] == reader.board + 1:
                assert reader.read(board)
        await asyncio.sleep(0.05)
