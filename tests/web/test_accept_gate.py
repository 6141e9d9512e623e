"""The accept gate (chatd.web.gate): new connections at a bounded rate, the others waiting
unread, a full queue reset; open connections never wait. Real sockets on loopback, on
asyncio's loop and on uvloop (``chatd serve``'s), which starts reading a new connection
whatever its protocol did in ``connection_made``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from bench.server_process import free_port
from chatd.web.gate import GatedSite
from tests.process import Server

REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"

Runner = Callable[[Coroutine[Any, Any, None]], None]
LOOPS = pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])


async def answer(reader: asyncio.StreamReader) -> bytes:
    """The status line and headers of one answer (the body is two bytes)."""
    head = await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(2)
    return head


@contextlib.asynccontextmanager
async def gated(rate: float, backlog: int) -> AsyncIterator[GatedSite]:
    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = GatedSite(runner, "127.0.0.1", free_port(), backlog=backlog, accept_rate=rate)
    await site.start()
    try:
        yield site
    finally:
        await runner.cleanup()


async def connect(site: GatedSite) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", site._port)


async def settle(site: GatedSite, waiting: int) -> None:
    assert site.gate is not None
    for _ in range(200):
        if site.gate.waiting == waiting:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{site.gate.waiting} waiting, expected {waiting}")


@LOOPS
def test_connections_past_the_burst_wait_and_are_then_served(run: Runner) -> None:
    # rate 20/s: bursts of 2. Ten at once, each sending its request at once: two served
    # now, eight wait and are served at 20 a second, what they sent meanwhile kept.
    async def scenario() -> None:
        async with gated(20.0, 64) as site:
            started = time.monotonic()
            conns = [await connect(site) for _ in range(10)]
            for _, writer in conns:
                writer.write(REQUEST)
            await settle(site, 8)
            heads = await asyncio.wait_for(
                asyncio.gather(*(answer(reader) for reader, _ in conns)), timeout=10)
            assert all(h.startswith(b"HTTP/1.1 200") for h in heads)
            assert time.monotonic() - started >= 0.3  # eight past the burst at 20 a second
            assert site.gate is not None and site.gate.waiting == 0 and site.gate.reset == 0
            for _, writer in conns:
                writer.close()

    run(scenario())


@LOOPS
def test_an_open_connection_does_not_wait_behind_new_ones(run: Runner) -> None:
    async def scenario() -> None:
        async with gated(1.0, 16) as site:
            reader, writer = await connect(site)  # the one token of the burst
            writer.write(REQUEST)
            assert (await answer(reader)).startswith(b"HTTP/1.1 200")
            crowd = [await connect(site) for _ in range(5)]
            await settle(site, 5)
            for _ in range(20):  # keep-alive requests on the open one go through at once
                writer.write(REQUEST)
                head = await asyncio.wait_for(answer(reader), timeout=2)
                assert head.startswith(b"HTTP/1.1 200")
            assert site.gate is not None and site.gate.waiting >= 4
            for _, w in [*crowd, (reader, writer)]:
                w.close()

    run(scenario())


@LOOPS
def test_a_full_queue_resets_new_connections(run: Runner) -> None:
    async def scenario() -> None:
        async with gated(1.0, 16) as site:
            first = await connect(site)  # admitted: the burst's one token
            waiting = [await connect(site) for _ in range(16)]
            await settle(site, 16)
            late = [await connect(site) for _ in range(4)]
            for reader, writer in late:
                writer.write(REQUEST)
                with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                    await asyncio.wait_for(answer(reader), timeout=2)
            assert site.gate is not None and site.gate.reset == 4 and site.gate.waiting == 16
            for _, w in [first, *waiting, *late]:
                w.close()

    run(scenario())


def test_what_waiting_connections_send_is_bounded() -> None:
    # uvloop only: asyncio's loop reads nothing of a connection paused in connection_made.
    async def scenario() -> None:
        async with gated(1.0, 16) as site:
            assert site.gate is not None
            site.gate.MAX_BUFFERED = 100_000
            first = await connect(site)
            small_reader, small = await connect(site)
            small.write(REQUEST)
            big_reader, big = await connect(site)
            await settle(site, 2)
            big.write(b"x" * 200_000)  # more than all waiting connections may send
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await asyncio.wait_for(big_reader.read(), timeout=2)
            # the small one keeps its place and its request, and is answered in its turn
            head = await asyncio.wait_for(answer(small_reader), timeout=5)
            assert head.startswith(b"HTTP/1.1 200")
            for w in (first[1], small, big):
                w.close()

    uvloop.run(scenario())


@LOOPS
def test_stopping_resets_the_connections_still_waiting(run: Runner) -> None:
    async def scenario() -> None:
        async with gated(1.0, 16) as site:
            first = await connect(site)
            reader, writer = await connect(site)
            writer.write(REQUEST)
            await settle(site, 1)
            await site.stop()
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await asyncio.wait_for(answer(reader), timeout=2)
            assert site.gate is not None and site.gate.waiting == 0
            first[1].close()

    run(scenario())


@pytest.mark.slow
async def test_chatd_serve_listens_through_the_gate_and_exports_its_queue(
    tmp_path: Path,
) -> None:
    """A real ``chatd serve``: a crowd past its accept rate waits, past its backlog is
    reset, and /metrics (on a connection opened before) says so."""
    server = Server(tmp_path, {"CHATD_ACCEPT_RATE": "1", "CHATD_LISTEN_BACKLOG": "16"})
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            async def scrape() -> dict[str, float]:
                async with http.get(server.url + "/metrics") as r:
                    assert r.status == 200
                    text = await r.text()
                return {f.name: s.value for f in text_string_to_metric_families(text)
                        for s in f.samples if f.name.startswith("chatd_accept")}

            assert await scrape() == {"chatd_accept_waiting": 0, "chatd_accept_reset": 0}
            crowd = [await asyncio.open_connection("127.0.0.1", server.port)
                     for _ in range(20)]
            # At most one of them finds a token (the one a second may have come back); 16
            # wait (one a second is let in); the others are reset.
            for _ in range(100):
                seen = await scrape()
                if seen["chatd_accept_reset"] >= 3:
                    break
                await asyncio.sleep(0.05)
            assert seen["chatd_accept_waiting"] >= 15 and seen["chatd_accept_reset"] >= 3, seen
            for _, writer in crowd:
                writer.close()
    finally:
        server.stop()
