"""Failover behind the load balancer (deploy/haproxy/chatd.cfg), with real processes.

Two ``chatd serve`` on one PostgreSQL desk behind HAProxy: a customer and an engineer chat
through it, the process that runs the desk is killed, and both reconnect through the same
address, resume with their tokens and go on: every acknowledged message is there once, the
chat keeps its engineer, and the message sent across the failover is stored once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from tests.cluster import Cluster, cluster, until

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"


@pytest.fixture
async def lb(tmp_path: Path, database_url: str) -> AsyncIterator[Cluster]:
    async with cluster(tmp_path, database_url, engineers=[("alex@example.com", "Alex")],
                       password=PASSWORD) as c:
        yield c


async def _connect(url: str, ns: str, auth: Any, limit: float = 20) -> socketio.AsyncClient:
    """Connect through the load balancer, trying again while nobody serves (a failover)."""
    deadline = time.monotonic() + limit
    while True:
        c = socketio.AsyncClient(reconnection=False)
        try:
            await c.connect(url, namespaces=[ns], auth=auth, transports=["websocket"],
                            wait_timeout=5)
            return c
        except socketio.exceptions.ConnectionError:
            if c.eio.http is not None:  # a failed connect leaves its HTTP session open
                await c.eio.http.close()
            assert time.monotonic() < deadline, f"could not reconnect to {ns}"
            await asyncio.sleep(0.2)


async def _call(c: socketio.AsyncClient, ns: str, event: str, data: Any) -> Any:
    return await c.call(event, data, namespace=ns, timeout=10)


@pytest.mark.parametrize("db_backend", ["postgres"])
async def test_clients_reconnect_through_the_load_balancer_and_lose_nothing(
    lb: Cluster,
) -> None:
    url = lb.url
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/api/login",
                             json={"email": "alex@example.com", "password": PASSWORD}) as r:
            assert r.status == 200, await r.text()
            token = (await r.json())["token"]
        eng = await _connect(url, "/engineer", {"token": token})
        cust = await _connect(url, "/customer", {"guest": {"name": "Ann", "email": "a@x.io"}})
        await _call(eng, "/engineer", "engineer:status", {"status": "available"})
        r = await _call(cust, "/customer", "chat:request", {"topic": "VPN drops"})
        sid, resume = r["session"]["id"], r["resume_token"]
        await until(lambda: _accepted(eng, sid), 10, "no offer came")

        acked: dict[str, int] = {}
        for i in range(5):
            for c, ns in ((cust, "/customer"), (eng, "/engineer")):
                m = await _call(c, ns, "message:send",
                                {"session_id": sid, "client_msg_id": f"{ns}{i}", "body": f"{i}"})
                assert m["ok"], m
                acked[m["message"]["id"]] = m["message"]["seq"]
        seen = max(acked.values())

        (await lb.leader()).kill9()
        await cust.disconnect()
        await eng.disconnect()

        # The customer's message across the failover: sent until acknowledged, once.
        started = time.monotonic()
        cust = await _connect(url, "/customer", {"session_id": sid, "resume_token": resume})
        back = await _call(cust, "/customer", "session:resume",
                           {"session_id": sid, "resume_token": resume, "after_seq": seen})
        assert back["ok"], back
        assert back["messages"] == []  # nothing was missed, nothing invented
        assert back["session"]["state"] == "active"
        for _ in range(2):  # a retry after a lost answer is the same message
            m = await _call(cust, "/customer", "message:send",
                            {"session_id": sid, "client_msg_id": "across", "body": "still there?"})
            assert m["ok"], m
            assert m["message"]["seq"] == seen + 1
        acked[m["message"]["id"]] = m["message"]["seq"]
        print(f"first ack through the load balancer {time.monotonic() - started:.2f} s"
              " after the kill")

        # The engineer comes back within the grace period and still has the chat.
        eng = await _connect(url, "/engineer", {"token": token})
        caught = await _call(eng, "/engineer", "session:resume",
                             {"session_id": sid, "after_seq": seen})
        assert caught["ok"], caught
        assert [m["body"] for m in caught["messages"]] == ["still there?"]
        reply = await _call(eng, "/engineer", "message:send",
                            {"session_id": sid, "client_msg_id": "after", "body": "yes"})
        assert reply["ok"], reply
        acked[reply["message"]["id"]] = reply["message"]["seq"]

        history = await _call(eng, "/engineer", "session:resume",
                              {"session_id": sid, "after_seq": 0})
        stored = {m["id"]: m["seq"] for m in history["messages"]}
        assert all(stored.get(mid) == seq for mid, seq in acked.items())
        seqs = [m["seq"] for m in history["messages"]]
        assert seqs == list(range(1, len(seqs) + 1))
        await cust.disconnect()
        await eng.disconnect()


async def _accepted(eng: socketio.AsyncClient, sid: str) -> bool:
    r = await _call(eng, "/engineer", "offer:accept", {"session_id": sid})
    return bool(r["ok"])
