"""Answers with history are bounded in text as well as in count, so that one answer held
for a client that does not read stays small; paging with ``more`` still gets every message."""

from __future__ import annotations

import dataclasses

from chatd.core.models import MAX_TEXT_LENGTH
from tests.core.helpers import Floor, customer


async def test_history_of_long_messages_comes_in_bounded_pages_without_gaps(
    floor: Floor,
) -> None:
    ann = customer("ann")
    alex = await floor.engineer("alex")
    sid = await floor.assigned(alex, ann)
    for i in range(60):
        await floor.desk.send_message(ann, sid, f"m{i}", chr(ord("a") + i % 26) * MAX_TEXT_LENGTH)
    budget = floor.desk.settings.history_max_chars

    seen: list[int] = []
    after, pages = 0, 0
    while True:
        _, messages, more = await floor.desk.history(ann, sid, after)
        pages += 1
        assert messages, "a page always carries at least one message"
        assert sum(len(m.body) for m in messages) <= budget
        seen += [m.seq for m in messages]
        after = messages[-1].seq
        if not more:
            break
    assert seen == list(range(1, 62))  # the join, then 60 messages: all, in order, once
    assert pages >= 60 * MAX_TEXT_LENGTH // budget


async def test_a_single_message_larger_than_the_budget_still_comes_alone(floor: Floor) -> None:
    ann = customer("ann")
    alex = await floor.engineer("alex")
    sid = await floor.assigned(alex, ann)
    await floor.desk.send_message(ann, sid, "m", "x" * MAX_TEXT_LENGTH)
    floor.desk.settings = dataclasses.replace(floor.desk.settings, history_max_chars=100)
    _, messages, more = await floor.desk.history(alex, sid, 1)
    assert [m.seq for m in messages] == [2] and more is False
