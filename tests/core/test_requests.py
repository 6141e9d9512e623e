"""A retried chat:request (its answer lost on the way) finds the chat it opened."""

from __future__ import annotations

import asyncio

import pytest

from chatd.core.desk import Desk
from chatd.core.errors import Conflict, Unauthorized
from chatd.core.models import SessionState
from tests.core.helpers import SETTINGS, Floor, customer


async def test_a_retry_answers_the_same_chat_with_a_new_resume_token(floor: Floor) -> None:
    desk = floor.desk
    ann = customer("ann")
    [bob] = await floor.queue(customer("bob"))
    first, token, _ = await desk.request_chat(ann, "Cannot log in", request_id="r-1")
    floor.clock.advance(3)
    again, new_token, fx_again = await desk.request_chat(ann, "Cannot log in", request_id="r-1")

    assert again["id"] == first["id"] and again["position"] == first["position"] == 2
    assert fx_again == []  # nothing happens a second time
    assert floor.queue_order() == [bob, first["id"]]  # queued once
    assert new_token != token
    assert (await desk.verify_resume_token(first["id"], new_token)).id == first["id"]
    with pytest.raises(Unauthorized):  # the answer that was lost carried this one
        await desk.verify_resume_token(first["id"], token)


async def test_another_request_while_a_chat_is_open_is_still_a_conflict(floor: Floor) -> None:
    ann = customer("ann")
    first, _, _ = await floor.desk.request_chat(ann, "Cannot log in", request_id="r-1")
    for request_id in ("r-2", None):
        with pytest.raises(Conflict) as err:
            await floor.desk.request_chat(ann, "Another thing", request_id=request_id)
        assert err.value.details == {"session_id": first["id"]}
    # the same request id from another customer is that customer's own request
    other, _, _ = await floor.desk.request_chat(customer("bob"), "Hello", request_id="r-1")
    assert other["id"] != first["id"]


async def test_after_the_chat_ends_the_same_request_id_opens_a_new_one(floor: Floor) -> None:
    ann = customer("ann")
    first, _, _ = await floor.desk.request_chat(ann, "Cannot log in", request_id="r-1")
    await floor.desk.end(ann, first["id"])  # the customer gives up waiting
    second, _, _ = await floor.desk.request_chat(ann, "Cannot log in", request_id="r-1")
    assert second["id"] != first["id"] and second["state"] == SessionState.WAITING.value


async def test_a_retry_after_a_restart_finds_the_chat(floor: Floor) -> None:
    ann = customer("ann")
    first, _, _ = await floor.desk.request_chat(ann, "Cannot log in", request_id="r-1")
    restarted = Desk(floor.store, floor.clock, SETTINGS)
    await restarted.restore()
    again, token, _ = await restarted.request_chat(ann, "Cannot log in", request_id="r-1")
    assert again["id"] == first["id"]
    assert (await restarted.verify_resume_token(first["id"], token)).id == first["id"]


async def test_requests_that_arrive_together_share_a_commit_and_keep_their_order(
    floor: Floor,
) -> None:
    # A surge: requests are stored together (one commit for many, not one after another
    # under the desk's lock), and the queue is still in arrival order.
    people = [customer(f"c{n}") for n in range(40)]
    commits = floor.store.batches
    answers = await asyncio.gather(*(floor.desk.request_chat(p, "Down") for p in people))
    assert floor.store.batches - commits < len(people) // 4
    ids = [wire["id"] for wire, _, _ in answers]
    assert floor.queue_order() == ids
    assert [wire["position"] for wire, _, _ in answers] == list(range(1, len(people) + 1))


async def test_two_requests_of_one_customer_at_once_open_one_chat(floor: Floor) -> None:
    ann = customer("ann")
    results = await asyncio.gather(
        floor.desk.request_chat(ann, "Cannot log in", request_id="r-1"),
        floor.desk.request_chat(ann, "Cannot log in", request_id="r-1"),
        floor.desk.request_chat(ann, "Something else", request_id="r-2"),
        return_exceptions=True,
    )
    opened = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert {wire["id"] for wire, _, _ in opened} == {opened[0][0]["id"]}
    assert len(opened) == 2 and len(refused) == 1 and isinstance(refused[0], Conflict)
    assert floor.queue_order() == [opened[0][0]["id"]]
