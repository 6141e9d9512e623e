"""A resume token lives as long as its chat is open, then ``resume_token_ttl`` more seconds
after the chat closed (ended or abandoned); after that it opens nothing (docs/protocol.md)."""

from __future__ import annotations

import dataclasses

import pytest

from chatd.core.clock import FakeClock
from chatd.core.desk import Desk, DeskSettings
from chatd.core.errors import Unauthorized
from chatd.core.models import SessionState
from chatd.store.sqlite import SQLiteStore
from tests.core.helpers import SETTINGS, Floor, customer

TTL = 3600.0


@pytest.fixture
async def floor(store: SQLiteStore, clock: FakeClock) -> Floor:
    desk = Desk(store, clock, dataclasses.replace(SETTINGS, resume_token_ttl=TTL))
    assert await desk.restore() == []
    return Floor(desk, store, clock)


async def _chat(floor: Floor) -> tuple[str, str]:
    """An active chat of Ann's with one message: (session id, resume token)."""
    alex = await floor.engineer("alex")
    ann = customer("ann")
    session, token, _ = await floor.desk.request_chat(ann, "Cannot log in")
    sid = str(session["id"])
    floor.desk.customer_connected(sid)
    await floor.desk.accept(alex, sid)
    await floor.desk.send_message(ann, sid, "c1", "the licence server says no")
    return sid, token


async def _expired(desk: Desk, sid: str, token: str) -> str:
    with pytest.raises(Unauthorized) as err:
        await desk.verify_resume_token(sid, token)
    assert err.value.code == "unauthorized"
    return err.value.message


async def test_an_open_chat_keeps_its_token_however_long_it_lasts(floor: Floor) -> None:
    sid, token = await _chat(floor)
    floor.clock.advance(10 * TTL)
    session = await floor.desk.verify_resume_token(sid, token)
    assert session.id == sid and session.state is SessionState.ACTIVE


async def test_an_ended_chat_reads_its_history_until_the_lifetime_runs_out(
    floor: Floor,
) -> None:
    sid, token = await _chat(floor)
    await floor.desk.end(customer("ann"), sid)
    floor.clock.advance(TTL - 1)
    session = await floor.desk.verify_resume_token(sid, token)
    assert session.state is SessionState.ENDED
    _, messages, _ = await floor.desk.history(session.customer, sid)
    assert "the licence server says no" in [m.body for m in messages]

    floor.clock.advance(1)
    assert "expired" in await _expired(floor.desk, sid, token)


async def test_the_lifetime_counts_from_the_close_not_from_the_start(floor: Floor) -> None:
    sid, token = await _chat(floor)
    floor.clock.advance(2 * TTL)  # a long chat
    await floor.desk.end(customer("ann"), sid)
    floor.clock.advance(TTL - 1)
    assert (await floor.desk.verify_resume_token(sid, token)).id == sid
    floor.clock.advance(1)
    assert "expired" in await _expired(floor.desk, sid, token)


async def test_an_abandoned_chat_expires_too(floor: Floor) -> None:
    ann = customer("ann")
    session, token, _ = await floor.desk.request_chat(ann, "Cannot log in")
    sid = str(session["id"])
    floor.desk.customer_connected(sid)
    floor.desk.customer_disconnected(sid)
    await floor.later(SETTINGS.grace + 1)  # nobody came back: abandoned
    closed = await floor.desk.verify_resume_token(sid, token)
    assert closed.state is SessionState.ABANDONED
    floor.clock.advance(TTL)
    assert "expired" in await _expired(floor.desk, sid, token)


async def test_expiry_holds_after_a_restart(store: SQLiteStore, clock: FakeClock,
                                            floor: Floor) -> None:
    sid, token = await _chat(floor)
    await floor.desk.end(customer("ann"), sid)
    clock.advance(TTL + 1)
    fresh = Desk(store, clock, DeskSettings(resume_token_ttl=TTL))
    await fresh.restore()
    assert "expired" in await _expired(fresh, sid, token)
    # A longer lifetime configured later applies to tokens issued before.
    longer = Desk(store, clock, DeskSettings(resume_token_ttl=2 * TTL))
    await longer.restore()
    assert (await longer.verify_resume_token(sid, token)).id == sid


async def test_a_wrong_token_is_invalid_not_expired(floor: Floor) -> None:
    sid, token = await _chat(floor)
    await floor.desk.end(customer("ann"), sid)
    floor.clock.advance(TTL + 1)
    message = await _expired(floor.desk, sid, token[:-2] + "xx")
    assert "expired" not in message and "invalid" in message


async def test_the_default_lifetime_is_a_day() -> None:
    assert DeskSettings().resume_token_ttl == 86_400.0
