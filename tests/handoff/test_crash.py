"""kill -9 of a real ``python -m chatd serve`` in the middle of its deliveries: after the
restart the webhook gets the same webhook-id again and RT still has exactly one ticket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from tests.handoff.conftest import (
    WEBHOOK_SECRET,
    RTProxy,
    RTServer,
    WebhookReceiver,
    eventually,
)
from tests.process import Server, connect

pytestmark = pytest.mark.slow


@pytest.fixture
def make_server(tmp_path: Path, database_url: str) -> Iterator[Any]:
    made: list[Server] = []

    def make(env: dict[str, str]) -> Server:
        s = Server(tmp_path, env, database_url)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


async def ok(c: socketio.AsyncClient, ns: str, event: str, data: Any) -> Any:
    r = await c.call(event, data, namespace=ns, timeout=15)
    assert r["ok"], (event, r)
    return r


async def test_kill9_mid_delivery_redelivers_with_the_same_key_and_one_rt_ticket(
    make_server: Any, receiver: WebhookReceiver, rt_server: RTServer, rt_proxy: RTProxy,
    tmp_path: Path,
) -> None:
    receiver.hold = True
    rt_proxy.hold = True
    server = make_server({
        "CHATD_HANDOFF_BACKENDS": "file,webhook,rt",
        "CHATD_HANDOFF_WEBHOOK_URL": receiver.url,
        "CHATD_HANDOFF_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "CHATD_HANDOFF_RT_URL": rt_proxy.url,
        "CHATD_HANDOFF_RT_TOKEN": rt_server.token,
        "CHATD_HANDOFF_RT_CUSTOM_FIELD": rt_server.custom_field,
        "CHATD_HANDOFF_RETRY_BASE_SECONDS": "0.2",
        "CHATD_HANDOFF_RETRY_MAX_SECONDS": "1",
        # On PostgreSQL the cut-off claims are retried when their lease (this + 15 s) ends.
        "CHATD_HANDOFF_ATTEMPT_TIMEOUT_SECONDS": "10",
    })
    server.cli("engineer", "add", "alex@example.com", "--name", "Alex", "--password-stdin",
               stdin="correct horse battery\n")
    await server.start()
    async with aiohttp.ClientSession() as http:
        async with http.post(server.url + "/api/login", json={
                "email": "alex@example.com", "password": "correct horse battery"}) as r:
            token = (await r.json())["token"]
    eng = await connect(server.url, "/engineer", {"token": token})
    cust = await connect(server.url, "/customer",
                         {"guest": {"name": "Hal", "email": "hal@client.example"}})
    try:
        await ok(eng, "/engineer", "engineer:status", {"status": "available"})
        sid = (await ok(cust, "/customer", "chat:request",
                        {"topic": "License error", "severity": 1}))["session"]["id"]
        for _ in range(100):
            snap = await ok(eng, "/engineer", "queue:snapshot", {})
            if any(o["session_id"] == sid for o in snap["offers"]):
                break
            await asyncio.sleep(0.1)
        await ok(eng, "/engineer", "offer:accept", {"session_id": sid})
        await ok(cust, "/customer", "message:send",
                 {"session_id": sid, "client_msg_id": "c1", "body": "error 0x51 on start"})
        await ok(eng, "/engineer", "session:end", {"session_id": sid})
        # Both deliveries are in flight: the webhook unanswered, RT's ticket created but
        # its answer held back.
        await asyncio.wait_for(receiver.held.wait(), 20)
        await asyncio.wait_for(rt_proxy.forwarded.wait(), 20)
    finally:
        await cust.disconnect()
        await eng.disconnect()
    server.kill9()
    receiver.release()
    rt_proxy.release()

    await server.start()
    await receiver.wait_accepted(1, timeout=60)

    async def all_delivered() -> Any:
        out = server.cli("handoff", "list", "--state", "delivered")
        rows = [line.split("\t") for line in out.splitlines()[1:]]
        return rows if len([r for r in rows if r[3] == sid]) == 3 else None

    delivered = await eventually(all_delivered, timeout=60, interval=0.5)
    webhook_row = next(r for r in delivered if r[2] == "webhook" and r[3] == sid)
    # The attempt cut off by the kill and the one after the restart carried one id.
    assert len(receiver.received_ids) >= 2
    assert set(receiver.received_ids) == {webhook_row[0]}
    assert all(a.valid for a in receiver.attempts)
    assert len({a.webhook_id for a in receiver.accepted}) == 1

    tickets = await rt_server.tickets_for(sid)
    assert len(tickets) == 1, tickets
    assert rt_proxy.creations == 1  # the retry found the ticket instead of filing another
    shown = json.loads(server.cli("handoff", "show", next(
        r[0] for r in delivered if r[2] == "rt" and r[3] == sid)))
    assert shown["ticket"]["id"] == tickets[0]["id"] and shown["attempts"] == 2
    assert (tmp_path / "handoff" / f"{sid}.txt").exists()
