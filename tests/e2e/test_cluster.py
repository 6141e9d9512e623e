"""Several processes on one desk (docs/design.md#several-processes), with three real
``chatd serve`` processes on PostgreSQL sharing a Redis of the test's own.

Customers and engineers connect to different processes; the process that runs the desk
answers every process's calls, and Redis carries each event to wherever its room's
members are connected.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from tests.cluster import Trio, trio
from tests.process import Server, connect
from tests.s3 import MotoServer, moto_server, s3_bucket, s3_env  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("db_backend", ["postgres"])]

PASSWORD = "correct horse battery"
ENGINEERS = [("alex@example.com", "Alex"), ("bo@example.com", "Bo")]
LEAD = "lee@example.com"


@pytest.fixture
async def desk(tmp_path: Path, database_url: str) -> AsyncIterator[Trio]:
    async with trio(tmp_path, database_url, engineers=ENGINEERS, password=PASSWORD) as t:
        t.servers[0].cli("engineer", "add", LEAD, "--name", "Lee", "--role", "lead",
                         "--password-stdin", stdin=PASSWORD + "\n")
        yield t


async def call(c: socketio.AsyncClient, ns: str, event: str, data: Any) -> Any:
    return await c.call(event, data, namespace=ns, timeout=15)


async def login(server: Server, email: str) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.post(server.url + "/api/login",
                             json={"email": email, "password": PASSWORD}) as r:
            assert r.status == 200, await r.text()
            token: str = (await r.json())["token"]
            return token


class Heard:
    """Events one client received, by name."""

    def __init__(self, c: socketio.AsyncClient, ns: str, *events: str) -> None:
        self.events: dict[str, list[Any]] = {e: [] for e in events}
        for e in events:
            c.on(e, self.events[e].append, namespace=ns)

    async def until(self, event: str, pred: Callable[[list[Any]], bool],
                    limit: float = 10.0) -> list[Any]:
        deadline = time.monotonic() + limit
        while not pred(self.events[event]):
            assert time.monotonic() < deadline, f"{event}: {self.events[event]}"
            await asyncio.sleep(0.02)
        return self.events[event]


async def texts(heard: Heard, n: int = 5) -> list[str]:
    """The bodies of the first ``n`` text messages ``heard``, in the order they came."""
    def bodies(xs: list[Any]) -> list[str]:
        return [x["message"]["body"] for x in xs if x["message"]["kind"] == "text"]

    return bodies(await heard.until("message:new", lambda xs: len(bodies(xs)) >= n))[:n]


async def engineer(
    server: Server, email: str, **status: Any
) -> tuple[socketio.AsyncClient, Heard]:
    eng = await connect(server.url, "/engineer", {"token": await login(server, email)})
    heard = Heard(eng, "/engineer", "offer:new", "message:new", "session:ended")
    r = await call(eng, "/engineer", "engineer:status", {"status": "available", **status})
    assert r["ok"], r
    return eng, heard


async def test_a_chat_across_processes(desk: Trio) -> None:
    """The customer on one process, the engineer on another, the desk on a third."""
    leader, b, c = desk.servers
    assert await desk.leader() is leader
    eng, eng_heard = await engineer(c, "alex@example.com")
    cust = await connect(b.url, "/customer", {"guest": {"name": "Ann", "email": "ann@x.io"}})
    cust_heard = Heard(cust, "/customer", "message:new", "session:assigned", "session:ended")
    try:
        r = await call(cust, "/customer", "chat:request",
                       {"topic": "VPN drops", "message": "it drops every hour"})
        assert r["ok"], r
        sid = r["session"]["id"]
        assert r["engineers_online"] == 1
        offers = await eng_heard.until("offer:new", lambda xs: len(xs) == 1)
        assert offers[0]["session_id"] == sid
        r = await call(eng, "/engineer", "offer:accept", {"session_id": sid})
        assert r["ok"], r
        assert [m["body"] for m in r["messages"] if m["kind"] == "text"] == [
            "it drops every hour"
        ]
        await cust_heard.until("session:assigned", lambda xs: len(xs) == 1)

        for n in range(5):
            r = await call(cust, "/customer", "message:send",
                           {"session_id": sid, "client_msg_id": f"c{n}", "body": f"from Ann {n}"})
            assert r["ok"], r
            r = await call(eng, "/engineer", "message:send",
                           {"session_id": sid, "client_msg_id": f"e{n}", "body": f"from Alex {n}"})
            assert r["ok"], r
        assert await texts(eng_heard) == [f"from Ann {n}" for n in range(5)]
        assert await texts(cust_heard) == [f"from Alex {n}" for n in range(5)]

        r = await call(eng, "/engineer", "session:end", {"session_id": sid, "resolution": "fixed"})
        assert r["ok"], r
        await cust_heard.until("session:ended", lambda xs: len(xs) == 1)
    finally:
        await cust.disconnect()
        await eng.disconnect()
    for s in desk.servers:
        assert "Traceback" not in s.log.read_text(errors="replace"), s.log.read_text()


async def test_offers_go_out_in_arrival_order_across_processes(desk: Trio) -> None:
    waiting: list[str] = []
    customers = []
    try:
        for n, server in enumerate(desk.servers * 2):
            c = await connect(server.url, "/customer",
                              {"guest": {"name": f"C{n}", "email": f"c{n}@x.io"}})
            customers.append(c)
            r = await call(c, "/customer", "chat:request", {"topic": f"problem {n}"})
            assert r["ok"], r
            assert r["session"]["position"] == n + 1
            waiting.append(r["session"]["id"])
        eng, heard = await engineer(desk.servers[2], "alex@example.com", capacity=1)
        try:
            for n, sid in enumerate(waiting):
                offers = await heard.until("offer:new", lambda xs, n=n: len(xs) == n + 1)
                assert offers[-1]["session_id"] == sid
                assert (await call(eng, "/engineer", "offer:accept", {"session_id": sid}))["ok"]
                r = await call(eng, "/engineer", "session:end", {"session_id": sid})
                assert r["ok"], r
        finally:
            await eng.disconnect()
    finally:
        for c in customers:
            await c.disconnect()


async def test_one_accept_wins_when_two_processes_race(desk: Trio) -> None:
    """Alex has the console open on two processes and both tabs accept at once; Bo, on the
    third, tries too: the chat is assigned once, to Alex."""
    tab1, heard1 = await engineer(desk.servers[1], "alex@example.com")
    tab2, heard2 = await engineer(desk.servers[2], "alex@example.com")
    bo, _ = await engineer(desk.servers[0], "bo@example.com")
    await call(bo, "/engineer", "engineer:status", {"status": "away"})
    cust = await connect(desk.servers[0].url, "/customer",
                         {"guest": {"name": "Ann", "email": "ann@x.io"}})
    try:
        snap = await call(tab1, "/engineer", "queue:snapshot", {})
        assert snap["ok"] and snap["engineers_online"] == 2, snap  # Alex counts once
        r = await call(cust, "/customer", "chat:request", {"topic": "VPN"})
        sid = r["session"]["id"]
        await heard1.until("offer:new", lambda xs: len(xs) == 1)
        await heard2.until("offer:new", lambda xs: len(xs) == 1)
        answers = await asyncio.gather(*(
            call(c, "/engineer", "offer:accept", {"session_id": sid}) for c in (tab1, tab2, bo)
        ))
        assert answers[2]["ok"] is False, answers[2]
        won = [a for a in answers[:2] if a["ok"]]
        assert won, answers
        assert all(a["session"]["engineer"]["name"] == "Alex" for a in won)
        assert (await call(cust, "/customer", "session:resume", {
            "session_id": sid, "resume_token": r["resume_token"]}))["session"]["state"] == "active"
    finally:
        for c in (cust, tab1, tab2, bo):
            await c.disconnect()


async def until_ok(c: socketio.AsyncClient, ns: str, event: str, data: Any,
                   limit: float = 15.0) -> Any:
    """``event`` again until it is acknowledged ok (a client's retry of ``unavailable``)."""
    deadline = time.monotonic() + limit
    while True:
        r = await call(c, ns, event, data)
        if r["ok"] or time.monotonic() > deadline:
            return r
        assert r["error"]["code"] == "unavailable", r
        await asyncio.sleep(0.2)


async def chat(desk: Trio, customer_on: Server, engineer_on: Server) -> tuple[
    socketio.AsyncClient, Heard, socketio.AsyncClient, Heard, str, str
]:
    """An answered chat: Ann on ``customer_on``, Alex on ``engineer_on``."""
    eng, eng_heard = await engineer(engineer_on, "alex@example.com")
    cust = await connect(customer_on.url, "/customer",
                         {"guest": {"name": "Ann", "email": "ann@x.io"}})
    cust_heard = Heard(cust, "/customer", "message:new", "session:resync", "session:ended")
    r = await call(cust, "/customer", "chat:request", {"topic": "VPN drops"})
    assert r["ok"], r
    sid, token = r["session"]["id"], r["resume_token"]
    await eng_heard.until("offer:new", lambda xs: len(xs) == 1)
    assert (await call(eng, "/engineer", "offer:accept", {"session_id": sid}))["ok"]
    return cust, cust_heard, eng, eng_heard, sid, token


async def test_clients_of_a_killed_process_resume_on_another(desk: Trio) -> None:
    leader, b, c = desk.servers
    cust, _, eng, eng_heard, sid, token = await chat(desk, b, c)
    try:
        r = await call(cust, "/customer", "message:send",
                       {"session_id": sid, "client_msg_id": "c1", "body": "before"})
        assert r["ok"], r
        last_seq = r["message"]["seq"]
        b.kill9()
        r = await call(eng, "/engineer", "message:send",
                       {"session_id": sid, "client_msg_id": "e1", "body": "while you were away"})
        assert r["ok"], r
        # Ann's widget reconnects (through the load balancer: here, to the leader) and
        # resumes with her token: exactly what she missed, and her chat goes on.
        back = await connect(leader.url, "/customer", {"session_id": sid, "resume_token": token})
        back_heard = Heard(back, "/customer", "message:new")
        try:
            r = await call(back, "/customer", "session:resume",
                           {"session_id": sid, "resume_token": token, "after_seq": last_seq})
            assert r["ok"], r
            assert r["session"]["state"] == "active"
            assert [m["body"] for m in r["messages"]] == ["while you were away"]
            r = await call(back, "/customer", "message:send",
                           {"session_id": sid, "client_msg_id": "c2", "body": "I am back"})
            assert r["ok"], r
            await eng_heard.until("message:new", lambda xs: any(
                x["message"]["body"] == "I am back" for x in xs))
            # Once the dead process's silence is noticed, Ann still counts as connected:
            # her chat keeps its engineer and nothing ends.
            await asyncio.sleep(5)
            r = await call(eng, "/engineer", "message:send",
                           {"session_id": sid, "client_msg_id": "e2", "body": "good"})
            assert r["ok"], r
            await back_heard.until("message:new", lambda xs: any(
                x["message"]["body"] == "good" for x in xs))
        finally:
            await back.disconnect()
    finally:
        await eng.disconnect()
        try:
            await cust.disconnect()
        except Exception:
            pass


async def test_the_desk_moves_when_its_process_is_killed(desk: Trio) -> None:
    """Customers wait on two processes and an offer is out when the process running the
    desk is killed: another takes over, the order holds, nothing is offered twice at once."""
    leader, b, c = desk.servers
    customers = []
    waiting = []
    for n, server in enumerate([b, c, b, c]):
        cust = await connect(server.url, "/customer",
                             {"guest": {"name": f"C{n}", "email": f"c{n}@x.io"}})
        customers.append(cust)
        r = await call(cust, "/customer", "chat:request", {"topic": f"problem {n}"})
        assert r["ok"], r
        waiting.append(r["session"]["id"])
    eng, heard = await engineer(b, "alex@example.com", capacity=1)
    try:
        first = await heard.until("offer:new", lambda xs: len(xs) == 1)
        assert first[0]["session_id"] == waiting[0]
        killed = time.monotonic()
        leader.kill9()
        # The same engineer, on a process that lives on, is offered the head again.
        r = await until_ok(eng, "/engineer", "queue:snapshot", {})
        assert r["ok"], r
        new = await desk.leader()
        took = time.monotonic() - killed
        print(f"{new.url} runs the desk {took:.2f} s after the kill")
        assert took < 5 + 3, took
        offers = await heard.until("offer:new", lambda xs: len(xs) >= 2, limit=15)
        assert offers[-1]["session_id"] == waiting[0]
        for n, sid in enumerate(waiting):
            if n:
                await heard.until("offer:new", lambda xs, sid=sid: xs[-1]["session_id"] == sid)
            r = await until_ok(eng, "/engineer", "offer:accept", {"session_id": sid})
            assert r["ok"], r
            r = await until_ok(eng, "/engineer", "session:end", {"session_id": sid})
            assert r["ok"], r
        # Offered in arrival order, and never two chats to a capacity of one at once.
        order = [o["session_id"] for o in heard.events["offer:new"]]
        assert [s for n, s in enumerate(order) if s not in order[:n]] == waiting
    finally:
        await eng.disconnect()
        for cust in customers:
            await cust.disconnect()


async def test_a_message_sent_while_redis_was_away_reaches_the_quiet_client(desk: Trio) -> None:
    """The last message before a quiet spell, published while Redis restarted, still reaches
    the customer: their process tells them to resync once Redis is back. (The engineer is on
    the desk's process, which stores messages without Redis; a process without Redis answers
    its clients' calls ``unavailable``, and they retry.)"""
    leader, b, _ = desk.servers
    cust, cust_heard, eng, _, sid, token = await chat(desk, b, leader)
    resyncs = []

    async def on_resync(_: Any) -> None:  # what the widget does (docs/protocol.md#resync)
        r = await call(cust, "/customer", "session:resume",
                       {"session_id": sid, "resume_token": token, "after_seq": 0})
        resyncs.append([m["body"] for m in r["messages"] if m["kind"] == "text"])

    cust.on("session:resync", on_resync, namespace="/customer")
    try:
        desk.redis.stop()
        r = await call(eng, "/engineer", "message:send",
                       {"session_id": sid, "client_msg_id": "e1", "body": "the last word"})
        assert r["ok"], r  # stored in PostgreSQL: acknowledged
        await asyncio.sleep(1)
        desk.redis.start()
        deadline = time.monotonic() + 15
        while not any("the last word" in bodies for bodies in resyncs):
            assert time.monotonic() < deadline, resyncs
            await asyncio.sleep(0.05)
        # And the chat goes on through Redis as before.
        r = await until_ok(eng, "/engineer", "message:send",
                           {"session_id": sid, "client_msg_id": "e2", "body": "still here"})
        assert r["ok"], r
        await cust_heard.until("message:new", lambda xs: any(
            x["message"]["body"] == "still here" for x in xs))
    finally:
        await cust.disconnect()
        await eng.disconnect()


async def test_every_process_tells_the_same_desk(desk: Trio) -> None:
    """/api/stats and queue:snapshot answer the same from every process: one queue, the
    engineers online once, and the clients of all processes."""
    customers = []
    try:
        for n, server in enumerate(desk.servers):
            c = await connect(server.url, "/customer",
                              {"guest": {"name": f"C{n}", "email": f"c{n}@x.io"}})
            customers.append(c)
            assert (await call(c, "/customer", "chat:request", {"topic": f"p{n}"}))["ok"]
        eng, _ = await engineer(desk.servers[1], "alex@example.com")
        await call(eng, "/engineer", "engineer:status", {"status": "away"})
        await asyncio.sleep(1.5)  # a heartbeat of every process
        stats, snaps = [], []
        for server in desk.servers:
            token = await login(server, LEAD)
            async with aiohttp.ClientSession() as http:
                async with http.get(server.url + "/api/stats",
                                    headers={"Authorization": f"Bearer {token}"}) as r:
                    assert r.status == 200, await r.text()
                    stats.append(await r.json())
            snaps.append(await call(eng, "/engineer", "queue:snapshot", {}))
        for report in stats:
            assert report["queue"]["length"] == 3
            assert [w["topic"] for w in report["queue"]["waiting"]] == ["p0", "p1", "p2"]
            assert report["engineers_by_status"] == stats[0]["engineers_by_status"]
            assert report["connected_clients"] == {"customer": 3, "engineer": 1}
        assert all(s["length"] == 3 and s["engineers_online"] == 1 for s in snaps), snaps
        await eng.disconnect()
    finally:
        for c in customers:
            await c.disconnect()


async def test_every_process_delivers_handoffs_and_each_transcript_once(
    desk: Trio, tmp_path: Path
) -> None:
    """The file backend of each process writes into its own folder here: every ended chat's
    transcript is in exactly one of them."""
    eng, heard = await engineer(desk.servers[2], "alex@example.com", capacity=5)
    ended = []
    try:
        for n in range(12):
            server = desk.servers[n % 3]
            c = await connect(server.url, "/customer",
                              {"guest": {"name": f"C{n}", "email": f"c{n}@x.io"}})
            r = await call(c, "/customer", "chat:request", {"topic": f"p{n}"})
            sid = r["session"]["id"]
            await heard.until("offer:new", lambda xs, sid=sid: any(
                x["session_id"] == sid for x in xs))
            assert (await call(eng, "/engineer", "offer:accept", {"session_id": sid}))["ok"]
            assert (await call(c, "/customer", "session:end", {"session_id": sid}))["ok"]
            ended.append(sid)
            await c.disconnect()
    finally:
        await eng.disconnect()
    folders = [tmp_path / name / "handoff" for name in ("a", "b", "c")]

    def written() -> list[str]:
        return sorted(p.stem for f in folders if f.is_dir() for p in f.glob("*.json"))

    deadline = time.monotonic() + 20
    while written() != sorted(ended):
        assert time.monotonic() < deadline, (written(), sorted(ended))
        await asyncio.sleep(0.2)
    await asyncio.sleep(2)  # nothing more comes: no transcript twice
    assert written() == sorted(ended)
    print("transcripts per process:", [len(list(f.glob("*.json"))) for f in folders])


@pytest.fixture
async def desk_s3(
    tmp_path: Path, database_url: str, moto_server: MotoServer,  # noqa: F811
    s3_bucket: str,  # noqa: F811
) -> AsyncIterator[Trio]:
    """The three processes with upload folders of their own and one object store."""
    async with trio(tmp_path, database_url, engineers=ENGINEERS, password=PASSWORD,
                    env=s3_env(moto_server, s3_bucket)) as t:
        yield t


async def test_a_file_sent_through_one_process_is_read_through_another(desk_s3: Trio) -> None:
    leader, b, c = desk_s3.servers
    cust, cust_heard, eng, eng_heard, sid, token = await chat(desk_s3, b, c)
    try:
        log = b"".join(b"2026-11-30 01:00:%02d ERROR vpn: tunnel dropped\n" % (n % 60)
                       for n in range(2000))
        form = aiohttp.FormData()
        form.add_field("file", log, filename="vpn.log", content_type="text/plain")
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{b.url}/api/sessions/{sid}/attachments", data=form,
                                 headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 201, await r.text()
                attachment = (await r.json())["attachment"]
            # The engineer on C hears of it and reads it there; nothing is in C's folder.
            got = await eng_heard.until("message:new", lambda xs: any(
                x["message"]["kind"] == "attachment" for x in xs))
            assert [x["message"]["attachment"]["id"] for x in got
                    if x["message"]["kind"] == "attachment"] == [attachment["id"]]
            eng_token = await login(c, "alex@example.com")
            for server in (c, leader):
                async with http.get(server.url + attachment["url"],
                                    headers={"Authorization": f"Bearer {eng_token}"}) as r:
                    assert r.status == 200, await r.text()
                    assert await r.read() == log
        kept = [p for s in desk_s3.servers for p in (s.log.parent / "uploads").glob("[!.]*")]
        assert kept == []  # the object store holds it: no process keeps a copy
    finally:
        await cust.disconnect()
        await eng.disconnect()


async def test_a_paused_desk_process_is_fenced_when_it_resumes(desk: Trio) -> None:
    """SIGSTOP the desk's process past its lease, then SIGCONT: another process runs the
    desk meanwhile, and the paused one finds itself fenced, writes nothing and exits."""
    leader, b, c = desk.servers
    cust, _, eng, _, sid, token = await chat(desk, b, c)
    try:
        assert (await call(cust, "/customer", "message:send",
                           {"session_id": sid, "client_msg_id": "c1", "body": "before"}))["ok"]
        assert leader.proc is not None
        os.kill(leader.proc.pid, signal.SIGSTOP)
        r = await until_ok(cust, "/customer", "message:send",
                           {"session_id": sid, "client_msg_id": "c2", "body": "after"}, limit=20)
        assert r["ok"], r
        new = await desk.leader()
        assert new is not leader
        os.kill(leader.proc.pid, signal.SIGCONT)
        assert leader.proc.wait(timeout=20) == 3  # fenced: it stops
        r = await call(eng, "/engineer", "session:resume", {"session_id": sid, "after_seq": 0})
        assert [m["body"] for m in r["messages"] if m["kind"] == "text"] == ["before", "after"]
    finally:
        await cust.disconnect()
        await eng.disconnect()
