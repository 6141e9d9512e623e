"""One desk per database (docs/scaling.md#one-desk-per-database), with real processes.

On PostgreSQL a second ``chatd serve`` stands by and takes the desk over when the first is
killed: the queue keeps its order, and clients reconnect and resume there. A first process
paused past its lease and then resumed finds itself replaced: it writes nothing and exits.
On SQLite a second ``chatd serve`` on the same database refuses to start.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.process import Server, connect

pytestmark = pytest.mark.slow

LEASE = 2.0
ENV = {"CHATD_DESK_LEASE_SECONDS": str(LEASE), "CHATD_GRACE_SECONDS": "60"}
PASSWORD = "correct horse battery"


async def _status(http: aiohttp.ClientSession, url: str, path: str) -> tuple[int, Any]:
    async with http.get(url + path) as r:
        return r.status, await r.json(content_type=None)


async def _until_ready(http: aiohttp.ClientSession, server: Server, limit: float) -> float:
    """Seconds until ``server`` answers /readyz with 200 (fails after ``limit``)."""
    started = time.monotonic()
    while True:
        try:
            if (await _status(http, server.url, "/readyz"))[0] == 200:
                return time.monotonic() - started
        except aiohttp.ClientError:
            pass
        assert time.monotonic() - started < limit, "the standby did not take over"
        await asyncio.sleep(0.05)


async def _until_up(http: aiohttp.ClientSession, server: Server) -> None:
    """Until ``server`` answers /healthz (a standby does, as soon as it listens)."""
    while True:
        try:
            if (await _status(http, server.url, "/healthz"))[0] == 200:
                return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)


async def _call(c: Any, ns: str, event: str, data: Any) -> Any:
    return await c.call(event, data, namespace=ns, timeout=15)


@pytest.fixture
async def pair(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[Server, Server]]:
    first = Server(tmp_path / "a", ENV, database_url)
    second = Server(tmp_path / "b", ENV, database_url)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    yield first, second
    for s in (first, second):
        if s.proc is not None and s.proc.poll() is None:
            os.kill(s.proc.pid, signal.SIGCONT)
        s.stop()


@pytest.mark.parametrize("db_backend", ["postgres"])
async def test_standby_takes_over_with_the_queue_in_order(pair: tuple[Server, Server]) -> None:
    first, second = pair
    first.cli("engineer", "add", "alex@example.com", "--name", "Alex", "--password-stdin",
              stdin=PASSWORD + "\n")
    await first.start()
    second.spawn()
    async with aiohttp.ClientSession() as http:
        # The standby is alive, not ready, and sends clients away.
        await _until_up(http, second)
        assert await _status(http, second.url, "/readyz") == (503, {"status": "standby"})
        async with http.post(second.url + "/api/login",
                             json={"email": "alex@example.com", "password": PASSWORD}) as r:
            assert r.status == 503 and r.headers["Retry-After"] == "1"
            assert (await r.json())["error"]["code"] == "unavailable"

        waiting = []
        for name in ("Ann", "Ben", "Cid"):
            c = await connect(first.url, "/customer",
                              {"guest": {"name": name, "email": f"{name}@x.io"}})
            r = await _call(c, "/customer", "chat:request", {"topic": f"{name}'s problem"})
            assert r["ok"], r
            waiting.append((r["session"]["id"], r["resume_token"]))
            await c.disconnect()

        first.kill9()
        took = await _until_ready(http, second, limit=LEASE + 8)
        print(f"standby ready {took:.2f} s after the kill (lease {LEASE:g} s)")

        # Customers come back to the new process and find their places.
        for place, (sid, token) in enumerate(waiting, 1):
            c = await connect(second.url, "/customer", {"session_id": sid, "resume_token": token})
            r = await _call(c, "/customer", "session:resume",
                            {"session_id": sid, "resume_token": token})
            assert r["ok"], r
            assert (r["session"]["state"], r["session"]["position"]) == ("waiting", place)
            await c.disconnect()

        # An engineer there is offered them in arrival order, each once.
        async with http.post(second.url + "/api/login",
                             json={"email": "alex@example.com", "password": PASSWORD}) as r:
            token = (await r.json())["token"]
        eng = await connect(second.url, "/engineer", {"token": token})
        offers: list[str] = []
        eng.on("offer:new", lambda d: offers.append(d["session_id"]), namespace="/engineer")
        try:
            await _call(eng, "/engineer", "engineer:status", {"status": "available"})
            deadline = time.monotonic() + 10
            while len(offers) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert offers == [sid for sid, _ in waiting]
        finally:
            await eng.disconnect()
    assert "Traceback" not in second.log.read_text(errors="replace")


@pytest.mark.parametrize("db_backend", ["postgres"])
async def test_a_paused_holder_is_fenced_and_writes_nothing(
    pair: tuple[Server, Server],
) -> None:
    first, second = pair
    first.cli("engineer", "add", "alex@example.com", "--name", "Alex", "--password-stdin",
              stdin=PASSWORD + "\n")
    await first.start()
    second.spawn()
    async with aiohttp.ClientSession() as http:
        async with http.post(first.url + "/api/login",
                             json={"email": "alex@example.com", "password": PASSWORD}) as r:
            token = (await r.json())["token"]
        eng = await connect(first.url, "/engineer", {"token": token})
        cust = await connect(first.url, "/customer", {"guest": {"name": "Ann", "email": "a@x.io"}})
        try:
            await _call(eng, "/engineer", "engineer:status", {"status": "available"})
            r = await _call(cust, "/customer", "chat:request", {"topic": "VPN"})
            sid, resume = r["session"]["id"], r["resume_token"]
            for _ in range(100):
                if (await _call(eng, "/engineer", "offer:accept", {"session_id": sid}))["ok"]:
                    break
                await asyncio.sleep(0.1)
            before = await _call(cust, "/customer", "message:send",
                                 {"session_id": sid, "client_msg_id": "c1", "body": "before"})
            assert before["ok"], before

            assert first.proc is not None
            os.kill(first.proc.pid, signal.SIGSTOP)
            # Paused, it still holds its connection: the standby waits for the lease.
            await asyncio.sleep(LEASE / 2)
            assert await _status(http, second.url, "/readyz") == (503, {"status": "standby"})
            await _until_ready(http, second, limit=LEASE + 8)
            os.kill(first.proc.pid, signal.SIGCONT)
            # The resumed process may still be asked to write: it must refuse.
            try:
                late = await _call(cust, "/customer", "message:send",
                                   {"session_id": sid, "client_msg_id": "c2", "body": "late"})
            except Exception:  # it exited before answering
                late = None
            assert late is None or late["ok"] is False, late
            status = first.proc.wait(timeout=LEASE + 10)
            assert status == 3, f"the fenced process exited with {status}"
        finally:
            for c in (cust, eng):
                try:
                    await c.disconnect()
                except Exception:
                    pass

        # On the new holder: the chat is there with only what was acknowledged.
        back = await connect(second.url, "/customer", {"session_id": sid, "resume_token": resume})
        try:
            r = await _call(back, "/customer", "session:resume",
                            {"session_id": sid, "resume_token": resume, "after_seq": 0})
            assert r["ok"], r
            bodies = [m["body"] for m in r["messages"] if m["kind"] == "text"]
            assert bodies == ["before"]
        finally:
            await back.disconnect()
    log = first.log.read_text(errors="replace")
    assert "took over the desk" in log or "passed to another process" in log


@pytest.mark.parametrize("db_backend", ["postgres"])
async def test_a_killed_holder_is_replaced_without_waiting_for_its_lease(
    tmp_path: Path, database_url: str
) -> None:
    """A holder killed outright ends its database connection, and with it the lock that
    says it lives: a standby, or the same desk started again, takes over at once instead
    of after the lease (a minute here)."""
    env = {**ENV, "CHATD_DESK_LEASE_SECONDS": "60"}
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    first, standby, again = (Server(tmp_path / name, env, database_url)
                             for name in ("a", "b", "c"))
    try:
        await first.start()
        standby.spawn()
        async with aiohttp.ClientSession() as http:
            c = await connect(first.url, "/customer",
                              {"guest": {"name": "Ann", "email": "a@x.io"}})
            r = await _call(c, "/customer", "chat:request", {"topic": "VPN"})
            assert r["ok"], r
            sid = r["session"]["id"]
            await c.disconnect()
            await _until_up(http, standby)  # up, and standing by
            assert (await _status(http, standby.url, "/readyz"))[0] == 503
            first.kill9()
            took = await _until_ready(http, standby, limit=20)
            print(f"standby ready {took:.2f} s after the kill (lease 60 s)")
            # Nobody stands by this time: the desk started again after a kill -9.
            standby.kill9()
            await again.start()  # ready within 20 s, or this fails
        waiting = await connect(again.url, "/customer", {"guest": {"name": "Ben",
                                                                     "email": "b@x.io"}})
        try:
            r = await _call(waiting, "/customer", "chat:request", {"topic": "DNS"})
            assert r["ok"] and r["session"]["position"] == 2, r  # Ann's chat was kept
            assert r["session"]["id"] != sid
        finally:
            await waiting.disconnect()
    finally:
        for s in (first, standby, again):
            s.stop()


async def test_a_second_process_on_one_sqlite_database_refuses_to_start(
    tmp_path: Path,
) -> None:
    first = Server(tmp_path, {})
    second = Server(tmp_path, {})
    await first.start()
    try:
        second.spawn()
        assert second.proc is not None
        assert second.proc.wait(timeout=30) == 1
        log = second.log.read_text(errors="replace")
        assert "cannot start: another chatd serve" in log
        assert "docs/scaling.md#one-desk-per-database" in log
        # The first one is unharmed.
        async with aiohttp.ClientSession() as http:
            assert (await _status(http, first.url, "/readyz"))[0] == 200
    finally:
        second.process = None
        first.stop()
