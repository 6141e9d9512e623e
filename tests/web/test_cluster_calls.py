"""Calls to the desk's process when it dies with a call in hand (docs/design.md#several-
processes), over the real Redis on 127.0.0.1:6379.

A process that does not run the desk sends its calls to the one that does. If that one is
killed after taking a call and another takes the desk over at once, nobody finds the desk's
channel empty: the call would wait for its whole timeout. The new desk's announcement makes
it fail at once with ``unavailable``, which clients retry.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis

from chatd.cluster.link import ClusterLink
from chatd.core.clock import FakeClock
from chatd.core.desk import Desk
from chatd.core.errors import Unavailable
from chatd.core.ports import Store
from chatd.web.link import DeskLink
from tests.core.helpers import SETTINGS

REDIS_URL = "redis://127.0.0.1:6379/0"


async def _nothing(effects: Any) -> None:
    del effects


async def test_a_call_the_former_desk_took_with_it_fails_once_another_runs_the_desk(
    store: Store, clock: FakeClock
) -> None:
    desk = Desk(store, clock, SETTINGS)
    await desk.restore()
    prefix = f"test-calls-{uuid.uuid4().hex}"
    follower = ClusterLink(REDIS_URL, prefix, DeskLink(desk, leading=lambda: False), _nothing,
                           call_timeout=60)
    successor = ClusterLink(REDIS_URL, prefix, DeskLink(desk), _nothing)
    # The former desk: it takes calls and will never answer (killed, or stopped for good).
    former = Redis.from_url(REDIS_URL)
    taken = former.pubsub(ignore_subscribe_messages=True)
    await taken.subscribe(f"{prefix}:desk")
    await follower.start()
    await successor.start()
    try:
        call = asyncio.create_task(follower.call("engineers_online", []))
        deadline = time.monotonic() + 10
        while True:
            msg = await taken.get_message(timeout=0.5)
            if msg is not None and b'"call"' in msg["data"]:
                break
            assert time.monotonic() < deadline, "the call never reached the former desk"
        successor.lead()
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await asyncio.wait_for(call, 10)
        assert time.monotonic() - started < 5  # not the call's 60 s timeout
        # Tried again, the call reaches the new desk and is answered.
        assert await asyncio.wait_for(follower.call("engineers_online", []), 10) == 0
    finally:
        await follower.stop()
        await successor.stop()
        await taken.aclose()  # type: ignore[no-untyped-call]
        await former.aclose()
