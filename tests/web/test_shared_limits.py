"""Limits shared by several chatd processes through Redis (chatd.limits,
docs/security.md#several-processes), against the real Redis on 127.0.0.1:6379: two limiter
instances, as two processes hold them, enforce one rate and one cap, not two; a process
killed with SIGKILL gives its slots back within the lease; an unreachable Redis leaves each
process with its own limit instead of an error. The one-process limits behave as before.

Every test keeps its keys under a prefix of its own and deletes them after.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from chatd.core.clock import FakeClock, SystemClock
from chatd.core.errors import RateLimited
from chatd.limits import LocalLimits, RedisLimits
from chatd.web.uploads import UploadSlots

REDIS_URL = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted after."""
    p = f"test:limits:{uuid.uuid4().hex}:"
    yield p
    redis = Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in redis.scan_iter(match=p + "*", count=1000)]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


async def keys_under(prefix: str) -> list[bytes]:
    redis = Redis.from_url(REDIS_URL)
    try:
        return sorted([k async for k in redis.scan_iter(match=prefix + "*", count=1000)])
    finally:
        await redis.aclose()


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def started(prefix: str, **kwargs: float) -> RedisLimits:
    limits = RedisLimits(REDIS_URL, SystemClock(), prefix=prefix, **kwargs)
    await limits.start()
    return limits


async def settled(*limits: RedisLimits) -> None:
    """Wait for the slot releases each instance has sent to Redis (bounded)."""
    for lim in limits:
        for _ in range(200):
            if not lim._tasks:
                break
            await asyncio.sleep(0.01)
        assert not lim._tasks, "a release did not reach Redis"


# -- the rate, in one bucket for all processes


async def test_two_processes_draw_from_one_bucket(prefix: str) -> None:
    a, b = await started(prefix), await started(prefix)
    try:
        rate_a = a.rate("login", rate=0.01, burst=6)
        rate_b = b.rate("login", rate=0.01, burst=6)
        taken = [await (rate_a if i % 2 else rate_b).take("203.0.113.5") for i in range(12)]
        # One burst of 6 between them, not 6 each.
        assert taken == [True] * 6 + [False] * 6
        # The bucket refills at 0.01/s: a whole token is ~100 s away, for either process.
        for r in (rate_a, rate_b):
            assert 90 < await r.retry_after("203.0.113.5") <= 100
        # Another key has its own bucket; a cost takes that many tokens.
        assert await rate_a.take("198.51.100.1", cost=5)
        assert not await rate_b.take("198.51.100.1", cost=2)
        assert await rate_b.take("198.51.100.1", cost=1)
        # Another limit's bucket for the same key is its own.
        assert await a.rate("upload", rate=0.01, burst=1).take("203.0.113.5")
        assert a.fallbacks == b.fallbacks == 0
    finally:
        await a.close()
        await b.close()


async def test_a_bucket_refills_on_redis_time_and_expires_when_idle(prefix: str) -> None:
    a, b = await started(prefix), await started(prefix)
    try:
        fast_a = a.rate("fast", rate=20.0, burst=2)
        fast_b = b.rate("fast", rate=20.0, burst=2)
        assert await fast_a.take("k") and await fast_b.take("k")
        assert not await fast_a.take("k")
        await asyncio.sleep(0.12)  # two tokens' worth at 20/s
        assert await fast_b.take("k")
        redis = Redis.from_url(REDIS_URL)
        try:
            key = f"{prefix}rate:fast:k"
            # Expires once it would be full again: (2 - tokens) / 20 s, plus a second.
            assert 0 < await redis.pttl(key) <= 1100
        finally:
            await redis.aclose()
        for _ in range(40):  # bounded: the key is gone within ~1.1 s
            if not await keys_under(prefix + "rate:"):
                break
            await asyncio.sleep(0.1)
        assert await keys_under(prefix + "rate:") == []
        assert await fast_a.take("k") and await fast_a.take("k")  # a fresh, full bucket
    finally:
        await a.close()
        await b.close()


# -- counted slots, one cap for all processes


async def test_two_processes_share_one_cap_of_open_slots(prefix: str) -> None:
    a, b = await started(prefix), await started(prefix)
    try:
        slots_a, slots_b = a.slots("connection"), b.slots("connection")
        assert await slots_a.acquire("192.0.2.10", 3)
        assert await slots_a.acquire("192.0.2.10", 3)
        assert await slots_b.acquire("192.0.2.10", 3)
        # Three held between the two: neither may take a fourth.
        assert not await slots_a.acquire("192.0.2.10", 3)
        assert not await slots_b.acquire("192.0.2.10", 3)
        assert await slots_b.acquire("192.0.2.11", 3)  # another key is not affected
        # A slot given back in one process is free for the other.
        slots_a.release("192.0.2.10")
        await settled(a)
        assert await slots_b.acquire("192.0.2.10", 3)
        assert not await slots_a.acquire("192.0.2.10", 3)
        # Giving back every slot leaves nothing behind in Redis.
        slots_a.release("192.0.2.10")
        for _ in range(2):
            slots_b.release("192.0.2.10")
        slots_b.release("192.0.2.11")
        slots_b.release("192.0.2.11")  # one too many: ignored, not a negative count
        await settled(a, b)
        assert await keys_under(prefix + "slots:") == []
    finally:
        await a.close()
        await b.close()


async def test_upload_slots_are_counted_across_processes(prefix: str) -> None:
    a, b = await started(prefix), await started(prefix)
    try:
        slots_a = UploadSlots(per_session=1, per_uploader=2, per_address=3, limits=a)
        slots_b = UploadSlots(per_session=1, per_uploader=2, per_address=3, limits=b)
        first = await slots_a.acquire("chat-1", "cust-1", "192.0.2.50")
        with pytest.raises(RateLimited) as refused:
            await slots_b.acquire("chat-1", "cust-2", "192.0.2.51")
        assert refused.value.message == (
            "this chat already has 1 uploads in progress; wait for one to finish")
        second = await slots_b.acquire("chat-2", "cust-1", "192.0.2.50")
        with pytest.raises(RateLimited) as refused:
            await slots_a.acquire("chat-3", "cust-1", "192.0.2.52")
        assert refused.value.details == {"limit": 2}  # the uploader's two, one on each
        third = await slots_a.acquire("chat-4", "cust-4", "192.0.2.50")
        with pytest.raises(RateLimited) as refused:
            await slots_b.acquire("chat-5", "cust-5", "192.0.2.50")
        assert refused.value.details == {"limit": 3}  # the address's three
        # A refusal holds nothing: chat-5 and cust-5 are still free.
        for slot in (first, second, third):
            slot.release()
        await settled(a, b)
        fourth = await slots_b.acquire("chat-5", "cust-5", "192.0.2.50")
        fourth.release()
        await settled(b)
        assert await keys_under(prefix + "slots:") == []
    finally:
        await a.close()
        await b.close()


KILLED_HOLDER = """
import asyncio, sys
from chatd.core.clock import SystemClock
from chatd.limits import RedisLimits

async def main() -> None:
    limits = RedisLimits(sys.argv[1], SystemClock(), prefix=sys.argv[2],
                         heartbeat_seconds=0.2, lease_seconds=1.0)
    await limits.start()
    slots = limits.slots("connection")
    for _ in range(2):
        assert await slots.acquire("192.0.2.20", 2)
    print("held", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_slots_of_a_killed_process_come_free_within_its_lease(prefix: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_HOLDER), REDIS_URL, prefix],
        stdout=subprocess.PIPE, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    b = await started(prefix, heartbeat_seconds=0.2, lease_seconds=1.0)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
        assert line.strip() == b"held"
        slots = b.slots("connection")
        assert not await slots.acquire("192.0.2.20", 2)  # the other process holds both
        os.kill(proc.pid, signal.SIGKILL)  # no goodbye: its heartbeat just stops
        proc.wait(timeout=10)
        killed = time.monotonic()
        while not await slots.acquire("192.0.2.20", 2):
            assert time.monotonic() - killed < 3.0, "the dead process's slots were not freed"
            await asyncio.sleep(0.05)
        freed_after = time.monotonic() - killed
        assert freed_after <= 1.0 + 0.5  # the lease, plus a little for the test itself
        assert await slots.acquire("192.0.2.20", 2)
        assert not await slots.acquire("192.0.2.20", 2)  # the cap holds again
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
        await b.close()


async def test_a_process_closed_in_order_frees_its_slots_at_once(prefix: str) -> None:
    a, b = await started(prefix), await started(prefix)
    try:
        assert await a.slots("upload:address").acquire("192.0.2.30", 1)
        held_by_b = b.slots("upload:address")
        assert not await held_by_b.acquire("192.0.2.30", 1)
        await a.close()  # its heartbeat key is deleted: its fields no longer count
        assert await held_by_b.acquire("192.0.2.30", 1)
    finally:
        await b.close()


# -- the logins' back-off per account


async def test_an_account_backs_off_whichever_process_saw_its_failures(prefix: str) -> None:
    a, b = await started(prefix), await started(prefix)
    try:
        backoff_a = a.backoff("login", after=2, max_seconds=60)
        backoff_b = b.backoff("login", after=2, max_seconds=60)
        assert await backoff_a.failed("eve@example.com") == 0
        assert await backoff_b.wait("eve@example.com") == 0
        # The second failure, seen by the other process, starts the back-off: 1 s, then 2.
        assert await backoff_b.failed("eve@example.com") == 1.0
        assert 0.8 < await backoff_a.wait("eve@example.com") <= 1.0
        assert await backoff_a.failed("eve@example.com") == 2.0
        assert 1.8 < await backoff_b.wait("eve@example.com") <= 2.0
        assert await backoff_b.wait("bob@example.com") == 0  # accounts are apart
        redis = Redis.from_url(REDIS_URL)
        try:  # forgotten 2 x max_seconds after the last failure
            assert 119_000 < await redis.pttl(f"{prefix}backoff:login:eve@example.com") <= 120_000
        finally:
            await redis.aclose()
        await backoff_a.succeeded("eve@example.com")  # a success forgets, everywhere
        assert await backoff_b.wait("eve@example.com") == 0
        assert await backoff_b.failed("eve@example.com") == 0
    finally:
        await a.close()
        await b.close()


# -- Redis away


async def test_unreachable_redis_falls_back_to_each_process_own_limit(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="chatd.limits")
    limits = RedisLimits(f"redis://127.0.0.1:{closed_port()}/0", SystemClock(), prefix=prefix)
    await limits.start()  # does not raise: the process serves without Redis
    try:
        rate = limits.rate("login", rate=0.01, burst=3)
        assert [await rate.take("203.0.113.5") for _ in range(5)] == [True] * 3 + [False] * 2
        assert 90 < await rate.retry_after("203.0.113.5") <= 100
        slots = limits.slots("connection")
        assert await slots.acquire("192.0.2.10", 2)
        assert await slots.acquire("192.0.2.10", 2)
        assert not await slots.acquire("192.0.2.10", 2)
        slots.release("192.0.2.10")
        assert await slots.acquire("192.0.2.10", 2)
        backoff = limits.backoff("login", after=1, max_seconds=60)
        assert await backoff.failed("eve@example.com") == 1.0
        assert 0.9 < await backoff.wait("eve@example.com") <= 1.0
        await backoff.succeeded("eve@example.com")
        assert await backoff.wait("eve@example.com") == 0
        assert limits.down and limits.outages == 1 and limits.fallbacks >= 11
        await limits.beat()  # a heartbeat does not raise either
    finally:
        await limits.close()
    warnings = [r for r in caplog.records if r.name == "chatd.limits"]
    assert len(warnings) == 1 and "Redis is unreachable" in warnings[0].getMessage()


class Proxy:
    """A TCP relay to the real Redis that can be cut off and restored: Redis going away
    and coming back, as a process sees it."""

    def __init__(self) -> None:
        self.port = closed_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 6379)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        self.writers.clear()
        await self.server.wait_closed()
        await asyncio.sleep(0.05)  # the relays see their ends closed


async def test_counts_kept_while_redis_was_away_are_written_back(prefix: str) -> None:
    """A process that took and gave back slots while Redis was away tells Redis its own
    counts at the first heartbeat after, so the other processes count them again."""
    proxy = Proxy()
    await proxy.start()
    a = RedisLimits(proxy.url, SystemClock(), prefix=prefix, retry_seconds=0.1)
    await a.start()
    b = await started(prefix)
    try:
        slots_a, slots_b = a.slots("connection"), b.slots("connection")
        assert await slots_a.acquire("192.0.2.40", 3)  # in Redis
        await proxy.stop()
        assert await slots_a.acquire("192.0.2.40", 3)  # here only: Redis is away
        assert await slots_a.acquire("192.0.2.40", 3)
        assert a.down
        slots_a.release("192.0.2.40")  # a holds 2; Redis still says 1
        await proxy.start()
        await asyncio.sleep(0.15)  # past retry_seconds
        await a.beat()
        assert not a.down
        assert await slots_b.acquire("192.0.2.40", 3)
        assert not await slots_b.acquire("192.0.2.40", 3)  # a's 2 + b's 1
        assert a.outages == 1
    finally:
        await a.close()
        await b.close()
        if proxy.server is not None:
            await proxy.stop()


# -- one process: as before


async def test_local_limits_are_the_in_process_ones() -> None:
    clock = FakeClock()
    limits = LocalLimits(clock)
    rate = limits.rate("login", rate=0.5, burst=2)
    assert await rate.take("a") and await rate.take("a")
    assert not await rate.take("a")
    assert await rate.retry_after("a") == pytest.approx(2.0)
    assert await rate.take("b")  # keys are apart
    clock.advance(2)
    assert await rate.take("a") and not await rate.take("a")
    slots = limits.slots("connection")
    assert await slots.acquire("x", 2) and await slots.acquire("x", 2)
    assert not await slots.acquire("x", 2)
    slots.release("x")
    assert await slots.acquire("x", 2)
    slots.release("x")
    slots.release("x")
    assert slots.held == {}  # nothing kept for a key that holds nothing
    backoff = limits.backoff("login", after=1, max_seconds=60)
    assert await backoff.failed("eve") == 1.0
    assert await backoff.wait("eve") == 1.0
    clock.advance(1)
    assert await backoff.wait("eve") == 0
    assert await backoff.failed("eve") == 2.0
    await backoff.succeeded("eve")
    assert await backoff.wait("eve") == 0
    await limits.start()
    await limits.close()
