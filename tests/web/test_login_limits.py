"""Logins under attack: per-account back-off, per-address limits keyed by /64 for IPv6,
and password hashing that neither waits on nor holds up the shared thread pool
(docs/security.md#logins)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp

from chatd.core.clock import FakeClock
from tests.conftest import Chatd

PASSWORD = "correct horse battery"


async def login(
    chatd: Chatd, email: str, password: str, *, client: str | None = None,
    http: aiohttp.ClientSession | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST /api/login, as from ``client`` (an X-Forwarded-For behind the trusted proxy
    127.0.0.1, for tests that set ``trusted_proxies``)."""
    headers = {"X-Forwarded-For": client} if client else {}
    own = http is None
    session = http or aiohttp.ClientSession()
    try:
        async with session.post(chatd.url + "/api/login", headers=headers,
                                json={"email": email, "password": password}) as r:
            return r.status, await r.json(), dict(r.headers)
    finally:
        if own:
            await session.close()


def code(body: dict[str, Any]) -> str:
    return "ok" if body.get("ok") else str(body["error"]["code"])


async def test_an_account_backs_off_from_every_address_even_for_the_right_password(
    chatd_factory: Any,
) -> None:
    clock = FakeClock()
    chatd = await chatd_factory(clock=clock, trusted_proxies=("127.0.0.1",),
                                login_backoff_after=3, login_backoff_max_seconds=600)
    await chatd.add_engineer("alex@example.com")
    # A guesser spreads the tries over addresses, so no per-address limit sees them.
    for i in range(3):
        status, body, _ = await login(chatd, "alex@example.com", f"guess-{i}",
                                      client=f"198.51.100.{i + 1}")
        assert (status, code(body)) == (401, "unauthorized")
    status, body, headers = await login(chatd, "Alex@Example.com", PASSWORD,
                                        client="203.0.113.7")
    assert (status, code(body)) == (429, "rate_limited"), body
    assert headers["Retry-After"] == "1"
    assert "this account" in body["error"]["message"]

    clock.advance(1)
    status, body, _ = await login(chatd, "alex@example.com", "guess-4", client="198.51.100.9")
    assert status == 401
    status, body, headers = await login(chatd, "alex@example.com", PASSWORD,
                                        client="203.0.113.7")
    assert status == 429 and headers["Retry-After"] == "2"  # doubled

    clock.advance(2)
    status, body, _ = await login(chatd, "alex@example.com", PASSWORD, client="203.0.113.7")
    assert status == 200, body
    # The success forgot the failures: the next wrong password is a plain 401 again.
    for _ in range(2):
        status, _, _ = await login(chatd, "alex@example.com", "typo", client="203.0.113.7")
        assert status == 401
    status, body, _ = await login(chatd, "alex@example.com", PASSWORD, client="203.0.113.7")
    assert status == 200, body


async def test_the_back_off_is_capped_and_other_accounts_are_not_affected(
    chatd_factory: Any,
) -> None:
    clock = FakeClock()
    chatd = await chatd_factory(clock=clock, trusted_proxies=("127.0.0.1",),
                                login_backoff_after=1, login_backoff_max_seconds=5)
    await chatd.add_engineer("alex@example.com")
    await chatd.add_engineer("bea@example.com")
    waits = []
    for i in range(6):
        status, _, _ = await login(chatd, "alex@example.com", "nope", client=f"192.0.2.{i}")
        assert status == 401
        _, _, headers = await login(chatd, "alex@example.com", PASSWORD, client="192.0.2.99")
        waits.append(int(headers["Retry-After"]))
        clock.advance(waits[-1])
    assert waits == [1, 2, 4, 5, 5, 5]
    status, body, _ = await login(chatd, "bea@example.com", PASSWORD, client="192.0.2.1")
    assert status == 200, body


async def test_unknown_emails_back_off_like_real_ones(chatd_factory: Any) -> None:
    """Otherwise the answer after a few tries would tell which emails have accounts."""
    chatd = await chatd_factory(clock=FakeClock(), trusted_proxies=("127.0.0.1",),
                                login_backoff_after=2)
    await chatd.add_engineer("alex@example.com")
    answers = {}
    for email in ("alex@example.com", "nobody@example.com"):
        seen = []
        for i in range(3):
            status, body, _ = await login(chatd, email, "wrong", client=f"192.0.2.{i}")
            seen.append((status, code(body)))
        answers[email] = seen
    assert answers["alex@example.com"] == answers["nobody@example.com"] == [
        (401, "unauthorized"), (401, "unauthorized"), (429, "rate_limited")]


async def test_ipv6_addresses_share_a_limit_per_64(chatd_factory: Any) -> None:
    chatd = await chatd_factory(clock=FakeClock(), trusted_proxies=("127.0.0.1",),
                                login_backoff_after=1000)
    statuses = []
    # Ten tries is the burst of one address; a /64 holds 2^64 addresses to rotate through.
    for i in range(11):
        status, body, headers = await login(chatd, f"u{i}@example.com", "x",
                                            client=f"2001:db8:1:2::{i + 1:x}")
        statuses.append(status)
    assert statuses[:10] == [401] * 10
    assert statuses[10] == 429 and int(headers["Retry-After"]) >= 1, statuses
    assert "too many login attempts" in body["error"]["message"]
    # The next /64 is someone else.
    status, _, _ = await login(chatd, "v@example.com", "x", client="2001:db8:1:3::1")
    assert status == 401


async def test_logins_do_not_wait_for_the_shared_thread_pool(chatd_factory: Any) -> None:
    """Uploads and file checks use the default executor; with all its threads busy, a
    login still goes through."""
    chatd = await chatd_factory()
    await chatd.add_engineer("alex@example.com")
    loop = asyncio.get_running_loop()
    busy = threading.Event()
    pool = ThreadPoolExecutor(1)
    loop.set_default_executor(pool)
    blocked = loop.run_in_executor(None, busy.wait)
    try:
        status, body, _ = await asyncio.wait_for(
            login(chatd, "alex@example.com", PASSWORD), timeout=30
        )
        assert status == 200, body
    finally:
        busy.set()
        await blocked


async def test_a_login_flood_beyond_the_queue_is_refused_at_once(chatd_factory: Any) -> None:
    chatd = await chatd_factory(trusted_proxies=("127.0.0.1",), password_hash_workers=1)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        # One worker checks at most 4 passwords in flight; 40 arrive together.
        answers = await asyncio.gather(*(
            login(chatd, f"u{i}@example.com", "x", client=f"192.0.2.{i + 1}", http=http)
            for i in range(40)
        ))
    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {401, 429}, statuses
    assert 1 <= statuses.count(401) and statuses.count(429) >= 40 - 4 * 4, statuses
    busy = [(b, h) for s, b, h in answers if s == 429]
    assert all("try again in a moment" in b["error"]["message"] for b, _ in busy)
    assert all(h["Retry-After"] == "1" for _, h in busy)
    # Once the flood has drained, logins are checked again.
    status, _, _ = await login(chatd, "later@example.com", "x", client="192.0.2.200")
    assert status == 401
