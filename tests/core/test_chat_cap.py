"""A chat holds at most ``chat_max_messages`` customers' and engineers' messages; the
system's own messages (a transfer, the end) still go in, so a full chat can be closed."""

from __future__ import annotations

import dataclasses

import pytest

from chatd.core.clock import FakeClock
from chatd.core.desk import Desk
from chatd.core.errors import TooLarge
from chatd.core.models import Engineer
from chatd.store.sqlite import SQLiteStore
from tests.core.helpers import SETTINGS, Floor, customer, to_engineer

CAP = 10


@pytest.fixture
async def desk(store: SQLiteStore, clock: FakeClock) -> Desk:
    d = Desk(store, clock, dataclasses.replace(SETTINGS, chat_max_messages=CAP))
    assert await d.restore() == []
    return d


async def _full_chat(floor: Floor) -> tuple[str, list[int]]:
    ann = customer("ann")
    alex = await floor.engineer("alex")
    sid = await floor.assigned(alex, ann)  # seq 1: alex joined
    seqs = []
    for i in range(CAP - 1):
        floor.clock.advance(1)
        actor = ann if i % 2 == 0 else alex
        msg, created, _ = await floor.desk.send_message(actor, sid, f"m{i}", f"text {i}")
        assert created
        seqs.append(msg.seq)
    return sid, seqs


async def _engineer_of(floor: Floor, sid: str) -> Engineer:
    session = await floor.store.get_session(sid)
    assert session is not None and session.engineer is not None
    return session.engineer


async def test_messages_past_the_cap_are_refused_and_stored_nowhere(floor: Floor) -> None:
    sid, seqs = await _full_chat(floor)
    assert seqs[-1] == CAP
    ann, alex = customer("ann"), await _engineer_of(floor, sid)

    with pytest.raises(TooLarge) as refused:
        await floor.desk.send_message(ann, sid, "over", "one too many")
    assert refused.value.code == "too_large" and refused.value.details == {"limit": CAP}
    with pytest.raises(TooLarge):
        await floor.desk.send_message(alex, sid, "over-e", "one too many")
    with pytest.raises(TooLarge):
        await floor.desk.escalate(ann, sid, "screen_share", None, None)

    stored = await floor.store.messages_after(sid, 0, 100)
    assert [m.seq for m in stored] == list(range(1, CAP + 1))


async def test_a_retry_of_a_stored_message_is_answered_in_a_full_chat(floor: Floor) -> None:
    sid, _ = await _full_chat(floor)
    ann = customer("ann")
    again, created, fx = await floor.desk.send_message(ann, sid, f"m{CAP - 2}", "text")
    assert not created and fx == [] and again.seq == CAP


async def test_a_full_chat_can_be_transferred_and_ended(floor: Floor) -> None:
    sid, _ = await _full_chat(floor)
    ann, alex = customer("ann"), await _engineer_of(floor, sid)
    bo = await floor.engineer("bo")
    await floor.desk.transfer(alex, sid, bo.id)
    _, messages, _ = await floor.desk.accept(bo, sid)
    assert messages[-1].seq > CAP
    with pytest.raises(TooLarge):
        await floor.desk.send_message(bo, sid, "b1", "hello")

    session, fx = await floor.desk.end(ann, sid)
    assert session["state"] == "ended"
    assert to_engineer(fx, bo, "session:ended")


async def test_the_cap_holds_after_a_restart(
    floor: Floor, store: SQLiteStore, clock: FakeClock
) -> None:
    sid, _ = await _full_chat(floor)
    restarted = Desk(store, clock, dataclasses.replace(SETTINGS, chat_max_messages=CAP))
    await restarted.restore()
    with pytest.raises(TooLarge):
        await restarted.send_message(customer("ann"), sid, "after-restart", "hello again")
    assert len(await store.messages_after(sid, 0, 100)) == CAP


async def test_a_chat_below_the_cap_takes_messages_after_a_restart(
    floor: Floor, store: SQLiteStore, clock: FakeClock
) -> None:
    ann = customer("ann")
    alex = await floor.engineer("alex")
    sid = await floor.assigned(alex, ann)
    restarted = Desk(store, clock, dataclasses.replace(SETTINGS, chat_max_messages=CAP))
    await restarted.restore()
    msg, created, _ = await restarted.send_message(ann, sid, "c1", "still room")
    assert created and msg.seq == 2
