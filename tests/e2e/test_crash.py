"""kill -9 of a real ``chatd serve`` process loses no acknowledged message and no place in
the queue; clients connected at the crash are treated as disconnected from the restart."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from tests.process import Server, connect

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[Server]:
    s = Server(
        tmp_path,
        {"CHATD_GRACE_SECONDS": "8", "CHATD_CONNECT_BURST": "1000", "CHATD_MESSAGE_BURST": "1000"},
        database_url,
    )
    yield s
    s.stop()


async def call(c: socketio.AsyncClient, ns: str, event: str, data: Any) -> Any:
    r = await c.call(event, data, namespace=ns, timeout=15)
    assert r["ok"], (event, r)
    return r


async def test_kill9_keeps_acknowledged_messages_and_queue_order(server: Server) -> None:
    server.cli(
        "engineer",
        "add",
        "alex@example.com",
        "--name",
        "Alex",
        "--password-stdin",
        stdin="correct horse battery\n",
    )
    await server.start()
    async with aiohttp.ClientSession() as http:
        async with http.post(
            server.url + "/api/login",
            json={"email": "alex@example.com", "password": "correct horse battery"},
        ) as r:
            token = (await r.json())["token"]

    eng = await connect(server.url, "/engineer", {"token": token})
    await call(eng, "/engineer", "engineer:status", {"status": "available", "capacity": 1})
    customers = []
    for name in ["Ann", "Ben", "Cid", "Dee"]:
        c = await connect(
            server.url, "/customer", {"guest": {"name": name, "email": f"{name}@x.io"}}
        )
        r = await call(c, "/customer", "chat:request", {"topic": f"{name}'s problem"})
        customers.append((c, r["session"]["id"], r["resume_token"]))
    ann, ann_sid, ann_resume = customers[0]
    await call(eng, "/engineer", "offer:accept", {"session_id": ann_sid})

    acked: dict[str, int] = {}
    for i in range(40):
        side, ns, c = ("c", "/customer", ann) if i % 2 else ("e", "/engineer", eng)
        r = await call(
            c,
            ns,
            "message:send",
            {"session_id": ann_sid, "client_msg_id": f"{side}{i}", "body": f"msg {i}"},
        )
        acked[r["message"]["id"]] = r["message"]["seq"]
    waiting_msg = await call(
        customers[2][0],
        "/customer",
        "message:send",
        {"session_id": customers[2][1], "client_msg_id": "w1", "body": "while waiting"},
    )

    server.kill9()
    for c, _, _ in customers:
        await c.disconnect()
    await eng.disconnect()
    await server.start()

    # The waiting customers reconnect, except Ben who never comes back.
    back = {}
    for c_index in (2, 3):
        _, sid, resume = customers[c_index]
        back[sid] = await connect(
            server.url, "/customer", {"session_id": sid, "resume_token": resume}
        )
    eng = await connect(server.url, "/engineer", {"token": token})
    snap = await call(eng, "/engineer", "queue:snapshot", {})
    assert [q["id"] for q in snap["queue"]] == [sid for _, sid, _ in customers[1:]]
    assert [s["id"] for s in snap["sessions"]] == [ann_sid]

    history = await call(
        eng, "/engineer", "session:resume", {"session_id": ann_sid, "after_seq": 0}
    )
    stored = {m["id"]: m["seq"] for m in history["messages"]}
    assert all(stored.get(mid) == seq for mid, seq in acked.items())
    seqs = [m["seq"] for m in history["messages"]]
    assert seqs == list(range(1, len(seqs) + 1))
    cid_sid = customers[2][1]
    cid_history = await call(
        back[cid_sid],
        "/customer",
        "session:resume",
        {"session_id": cid_sid, "resume_token": customers[2][2], "after_seq": 0},
    )
    assert waiting_msg["message"]["id"] in [m["id"] for m in cid_history["messages"]]

    # Grace started at the restart: Ben, who did not reconnect, is abandoned after it;
    # Cid and Dee, who did, keep their places.
    ben_sid = customers[1][1]
    for _ in range(200):
        snap = await call(eng, "/engineer", "queue:snapshot", {})
        if ben_sid not in [q["id"] for q in snap["queue"]]:
            break
        await asyncio.sleep(0.1)
    assert [q["id"] for q in snap["queue"]] == [customers[2][1], customers[3][1]]
    for c in [*back.values(), eng]:
        await c.disconnect()
