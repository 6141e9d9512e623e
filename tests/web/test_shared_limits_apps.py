"""Two chatd apps on one PostgreSQL desk sharing one Redis (``CHATD_REDIS_URL``), as two
processes behind a load balancer: a client address holds at most
``connections_per_address`` Engine.IO connections across both, its login attempts draw from
one bucket, an account's failed logins back it off on both, and a customer's messages are
one allowance, not one per process (docs/security.md#several-processes).

The limits' keys are under the test database's own prefix (chatd.limits.desk_prefix) and
are deleted after.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from chatd.app import create_app
from chatd.limits import RedisLimits, desk_prefix
from chatd.web.http import SHARED_LIMITS
from chatd.web.sockets import Sockets
from tests.conftest import make_settings
from tests.e2e.helpers import customer_jwt

pytestmark = pytest.mark.parametrize("db_backend", ["postgres"])

REDIS_URL = "redis://127.0.0.1:6379/0"
PROXY = {"trusted_proxies": ("127.0.0.1/32",)}


async def delete_limit_keys(database_url: str) -> None:
    redis = Redis.from_url(REDIS_URL)
    try:
        match = desk_prefix(database_url) + "*"
        keys = [k async for k in redis.scan_iter(match=match, count=1000)]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


@pytest.fixture
async def two_apps(
    tmp_path: Path, database_url: str, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> AsyncIterator[Callable[..., Awaitable[list[str]]]]:
    """Start two chatd apps on the test's database and one Redis; their base URLs."""

    async def start(**overrides: Any) -> list[str]:
        urls = []
        for name in ("a", "b"):
            settings = make_settings(tmp_path / name, database_url=database_url,
                                     redis_url=REDIS_URL, **PROXY, **overrides)
            app = create_app(settings)
            assert isinstance(app[SHARED_LIMITS], RedisLimits)
            server = await aiohttp_server(app)
            urls.append(str(server.make_url("")).rstrip("/"))
        return urls

    yield start
    await delete_limit_keys(database_url)


def ws_url(url: str) -> str:
    return url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"


async def open_ws(
    http: aiohttp.ClientSession, url: str, address: str
) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(ws_url(url), headers={"X-Forwarded-For": address})
    opened = await ws.receive(timeout=5)
    assert opened.type == aiohttp.WSMsgType.TEXT and opened.data.startswith("0"), opened
    return ws


async def handshake(http: aiohttp.ClientSession, url: str, address: str) -> int:
    """A long-polling handshake's status (a session it opens stays until its join
    deadline)."""
    async with http.get(url + "/socket.io/?EIO=4&transport=polling",
                        headers={"X-Forwarded-For": address}) as r:
        await r.read()
        return r.status


async def test_connections_per_address_are_capped_across_both_apps(two_apps: Any) -> None:
    a, b = await two_apps(connections_per_address=3)
    async with aiohttp.ClientSession() as http:
        held = [await open_ws(http, a, "192.0.2.10"), await open_ws(http, a, "192.0.2.10"),
                await open_ws(http, b, "192.0.2.10")]
        # Three open between the two processes: neither takes a fourth (one process alone
        # would have let each take three).
        for url in (a, b):
            async with http.get(url + "/socket.io/?EIO=4&transport=polling",
                                headers={"X-Forwarded-For": "192.0.2.10"}) as r:
                assert r.status == 429
                assert (await r.json())["error"] == {
                    "code": "rate_limited",
                    "message": "too many open connections from this address"}
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(ws_url(url), headers={"X-Forwarded-For": "192.0.2.10"})
            assert refused.value.status == 429
        held.append(await open_ws(http, b, "198.51.100.7"))  # other addresses: unaffected
        # A connection closed on one process frees its place on the other.
        await held[0].close()
        for _ in range(100):
            if await handshake(http, b, "192.0.2.10") == 200:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the place of the connection closed on a was not freed on b")
        assert await handshake(http, a, "192.0.2.10") == 429
        for ws in held:
            await ws.close()


async def test_login_attempts_per_address_are_one_bucket_across_both_apps(
    two_apps: Any,
) -> None:
    a, b = await two_apps()
    async with aiohttp.ClientSession() as http:

        async def attempt(url: str) -> int:
            # No password: refused as a bad request after the attempt is counted, without a
            # password check.
            async with http.post(url + "/api/login", json={"email": "x@example.com"},
                                 headers={"X-Forwarded-For": "203.0.113.7"}) as r:
                await r.read()
                return r.status

        statuses = [await attempt(a if i % 2 else b) for i in range(10)]
        assert statuses == [400] * 10  # the burst of 10, taken five on each
        for url in (a, b):
            async with http.post(url + "/api/login", json={"email": "x@example.com"},
                                 headers={"X-Forwarded-For": "203.0.113.7"}) as r:
                assert r.status == 429
                assert int(r.headers["Retry-After"]) == 2  # one attempt every 2 s


async def test_an_account_backs_off_on_both_apps(two_apps: Any) -> None:
    a, b = await two_apps(login_backoff_after=2)
    async with aiohttp.ClientSession() as http:

        async def login(url: str) -> tuple[int, str | None]:
            async with http.post(url + "/api/login",
                                 json={"email": "eve@example.com", "password": "guess-guess"}) as r:
                await r.read()
                return r.status, r.headers.get("Retry-After")

        assert await login(a) == (401, None)
        assert await login(b) == (401, None)  # the second failure: a 1 s back-off starts
        assert await login(a) == (429, "1")
        assert await login(b) == (429, "1")


async def request_chat(client: socketio.AsyncClient) -> dict[str, Any]:
    """``chat:request``'s answer, asked again (as the widget does) while the process that
    does not run the desk cannot reach it yet (``unavailable``), for at most 10 s."""
    for _ in range(100):
        answer: dict[str, Any] = await client.call(
            "chat:request", {"topic": "Shared limits"}, namespace="/customer", timeout=10
        )
        if answer["ok"] or answer["error"]["code"] != "unavailable":
            return answer
        await asyncio.sleep(0.1)
    raise AssertionError("the desk's process could not be reached for 10 s")


@pytest.mark.skipif(not hasattr(Sockets, "use_limits"),
                    reason="the namespaces' limits are not wired to the shared ones yet")
async def test_messages_per_customer_are_one_bucket_across_both_apps(two_apps: Any) -> None:
    a, b = await two_apps(message_rate=0.01, message_burst=3)
    token = customer_jwt("cust-shared-limits")
    clients = []
    try:
        for url in (a, b):
            c = socketio.AsyncClient(reconnection=False)
            await c.connect(url, namespaces=["/customer"], auth={"token": token},
                            transports=["websocket"], wait_timeout=5)
            clients.append(c)
        answers = [await request_chat(clients[i % 2]) for i in range(5)]
        limited = [not r["ok"] and r["error"]["code"] == "rate_limited" for r in answers]
        # The burst of 3 is the customer's, wherever they connect: not 3 on each process.
        # (The desk's process counts it, for both: chatd.web.link.METERED.)
        assert limited == [False, False, False, True, True], answers
    finally:
        for c in clients:
            await c.disconnect()
