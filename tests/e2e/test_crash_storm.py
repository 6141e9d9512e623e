"""A crash storm: a real ``chatd serve`` under chat load is SIGKILLed at random moments, again
and again, on the same database and port. Its clients do what protocol.md §9 tells a client
to do: reconnect, ``session:resume`` after the last seq they hold, and resend an unanswered
``message:send`` with the same ``client_msg_id``. Afterwards every message a client was told
about (acknowledged, relayed or read back) is stored as it was told, every chat's seqs are
gap-free, no ``client_msg_id`` is stored twice in a chat, and the database is intact.

``CHATD_CRASH_STORM_KILLS`` sets the number of kills (8 by default, the short run of the test
suite; ``make crash-storm KILLS=1000`` for the long one), ``CHATD_CRASH_STORM_PAIRS`` the
customer/engineer pairs (5) and ``CHATD_CRASH_STORM_SEED`` replays a run's kill schedule and
messages (the seed is printed; the exact timing of a run cannot be replayed).
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import statistics
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from chatd.accounts import add_engineer
from chatd.core.clock import SystemClock
from chatd.core.models import Role
from chatd.store import store_from_url
from chatd.store.sqlite import SQLiteStore
from tests.e2e.helpers import customer_jwt
from tests.invariants import Expected, check_store_invariants
from tests.process import Server

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("CHATD_CRASH_STORM_KILLS", "8"))
PAIRS = int(os.environ.get("CHATD_CRASH_STORM_PAIRS", "5"))
SEED = int(os.environ.get("CHATD_CRASH_STORM_SEED") or random.SystemRandom().randrange(2**32))
PASSWORD = "correct horse battery"
# Storm-only settings: the clients are all on 127.0.0.1 and send as fast as they are
# answered, and a chat must neither be abandoned nor filled up during the storm.
STORM_ENV = {
    "CHATD_GRACE_SECONDS": "86400",
    "CHATD_CHAT_MAX_MESSAGES": "10000000",
    "CHATD_MESSAGE_RATE": "10000",
    "CHATD_MESSAGE_BURST": "100000",
    "CHATD_EVENT_RATE": "10000",
    "CHATD_EVENT_BURST": "100000",
    "CHATD_CONNECT_RATE": "10000",
    "CHATD_CONNECT_BURST": "100000",
    "CHATD_CONNECTIONS_PER_ADDRESS": "100000",
    "CHATD_HANDSHAKE_RATE": "10000",
    "CHATD_HANDSHAKE_BURST": "100000",
}
ALPHABET = string.ascii_letters + string.digits + "  .,!?éßж中🙂"


class Dropped(Exception):
    """The connection went away (the server was killed) before the answer came."""


@dataclass
class Party:
    """One side of a chat: connects, resumes, and sends one message at a time."""

    name: str
    ns: str
    auth: dict[str, Any]
    session_id: str
    resume_token: str
    rng: random.Random
    seen: dict[int, Expected] = field(default_factory=dict)
    contiguous: int = 0  # every seq up to this one is in `seen`
    pending: dict[str, Any] | None = None  # sent, not answered yet
    acked: dict[str, Expected] = field(default_factory=dict)  # by client_msg_id
    connects: int = 0
    resends: int = 0
    problems: list[str] = field(default_factory=list)
    last_error: str = ""
    client: socketio.AsyncClient | None = None
    _http: aiohttp.ClientSession | None = None
    _dropped: asyncio.Event = field(default_factory=asyncio.Event)
    _count: int = 0

    def see(self, m: dict[str, Any], how: str) -> None:
        if m.get("session_id") != self.session_id:
            return
        e = Expected(m["session_id"], m["id"], m["seq"], m["body"], m.get("client_msg_id"))
        before = self.seen.setdefault(e.seq, e)
        if before != e:
            self.problems.append(f"{self.name}: seq {e.seq} {how} as {e}, before as {before}")
        while self.contiguous + 1 in self.seen:
            self.contiguous += 1

    async def connect(self, url: str) -> None:
        give_up = time.monotonic() + 60
        while True:
            if time.monotonic() > give_up:
                raise AssertionError(f"{self.name} cannot connect: {self.last_error}")
            # The client's own HTTP session, closed by us: python-engineio leaves the
            # WebSocket of a connect open when the server dies before its OPEN packet, and
            # closing the session is what closes that socket.
            http = aiohttp.ClientSession()
            c = socketio.AsyncClient(reconnection=False, http_session=http)
            dropped = asyncio.Event()

            @c.on("message:new", namespace=self.ns)
            async def _new(data: Any) -> None:
                self.see(data["message"], "relayed")

            @c.on("disconnect", namespace=self.ns)
            async def _gone(*_: Any, dropped: asyncio.Event = dropped) -> None:
                dropped.set()

            try:
                await c.connect(url, namespaces=[self.ns], auth=self.auth,
                                transports=["websocket"], wait_timeout=5)
            # A server killed mid-handshake can also surface as the library failing to
            # decode what it did not receive (ValueError, TypeError).
            except (socketio.exceptions.ConnectionError, OSError, ValueError, TypeError) as e:
                self.last_error = repr(e)
                await c.disconnect()
                await http.close()
                await asyncio.sleep(0.05)
                continue
            self.client, self._dropped, self._http = c, dropped, http
            self.connects += 1
            return

    async def call(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        c = self.client
        if c is None or self._dropped.is_set():
            raise Dropped
        answer = asyncio.ensure_future(c.call(event, data, namespace=self.ns, timeout=60))
        gone = asyncio.ensure_future(self._dropped.wait())
        await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if not answer.done():
            answer.cancel()
            raise Dropped
        try:
            r: dict[str, Any] = answer.result()
        except (TimeoutError, socketio.exceptions.SocketIOError) as e:
            raise Dropped from e
        if not r.get("ok"):
            self.problems.append(f"{self.name}: {event} answered {r}")
            if len(self.problems) > 20:
                raise AssertionError(self.problems)
            raise Dropped
        return r

    async def resume(self) -> None:
        while True:
            data: dict[str, Any] = {"session_id": self.session_id, "after_seq": self.contiguous}
            if self.ns == "/customer":
                data["resume_token"] = self.resume_token
            r = await self.call("session:resume", data)
            seqs = [m["seq"] for m in r["messages"]]
            if seqs != list(range(data["after_seq"] + 1, data["after_seq"] + 1 + len(seqs))):
                self.problems.append(
                    f"{self.name}: resume after {data['after_seq']} gave seqs "
                    f"{seqs[:5]}...{seqs[-5:]}")
            for m in r["messages"]:
                self.see(m, "read back")
            if not r["more"]:
                return

    async def send(self) -> None:
        if self.pending is None:
            self._count += 1
            size = self.rng.choice((1, 8, 40, 200, 2000))
            body = "".join(self.rng.choices(ALPHABET, k=size)).strip() or "x"
            self.pending = {
                "session_id": self.session_id,
                "client_msg_id": f"{self.name}-{self._count}-{self.rng.getrandbits(32):08x}",
                "body": body,
            }
        else:
            self.resends += 1
        p = self.pending
        r = await self.call("message:send", p)
        m = r["message"]
        if (m["client_msg_id"], m["body"]) != (p["client_msg_id"], p["body"]):
            self.problems.append(f"{self.name}: sent {p}, answered {m}")
        self.see(m, "acknowledged")
        self.acked[p["client_msg_id"]] = self.seen[m["seq"]]
        self.pending = None

    async def run(self, url: str, finishing: asyncio.Event) -> None:
        """Chat until ``finishing`` is set and nothing is left unanswered."""
        while True:
            try:
                if self.client is None or self._dropped.is_set():
                    await self.close()
                    await self.connect(url)
                    await self.resume()
                if finishing.is_set() and self.pending is None:
                    return
                await self.send()
            except Dropped:
                await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.disconnect()
            self.client = None
        if self._http is not None:
            await self._http.close()
            self._http = None


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[Server]:
    s = Server(tmp_path, STORM_ENV, database_url)
    # chatd refuses unknown CHATD_* variables; these are the test's own.
    for name in [n for n in s.env if n.startswith("CHATD_CRASH_STORM_")]:
        del s.env[name]
    yield s
    s.stop()


async def _pairs(server: Server, rng: random.Random) -> list[Party]:
    """PAIRS chats, each accepted by its own engineer (capacity 1, so the offers go one by
    one to the engineer who is still free)."""
    parties: list[Party] = []
    async with aiohttp.ClientSession() as http:
        for i in range(PAIRS):
            email = f"eng{i}@example.com"
            async with http.post(server.url + "/api/login",
                                 json={"email": email, "password": PASSWORD}) as r:
                assert r.status == 200, await r.text()
                token = (await r.json())["token"]
            eng = Party(f"e{i}", "/engineer", {"token": token}, "", "", random.Random(rng.random()))
            await eng.connect(server.url)
            offers: asyncio.Queue[str] = asyncio.Queue()
            assert eng.client is not None

            @eng.client.on("offer:new", namespace="/engineer")
            async def _offer(data: Any, offers: asyncio.Queue[str] = offers) -> None:
                await offers.put(data["session_id"])

            await eng.call("engineer:status", {"status": "available", "capacity": 1})
            jwt = customer_jwt(f"storm-{i}", name=f"Customer {i}", email=f"c{i}@client.example",
                               exp=time.time() + 30 * 86400)
            cust = Party(f"c{i}", "/customer", {"token": jwt}, "", "",
                         random.Random(rng.random()))
            await cust.connect(server.url)
            r = await cust.call("chat:request", {"topic": f"storm {i}"})
            sid, resume = r["session"]["id"], r["resume_token"]
            assert await asyncio.wait_for(offers.get(), 10) == sid
            await eng.call("offer:accept", {"session_id": sid})
            cust.auth = {"token": jwt, "session_id": sid, "resume_token": resume}
            for p in (cust, eng):
                p.session_id, p.resume_token = sid, resume
            parties += [cust, eng]
    return parties


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# About 3 s a kill on a quiet machine; generous for a busy one.
@pytest.mark.timeout(90 + 15 * KILLS)
async def test_crash_storm_loses_and_duplicates_nothing(server: Server) -> None:
    print(f"\ncrash storm: {KILLS} kills, {PAIRS} pairs, CHATD_CRASH_STORM_SEED={SEED}")
    rng = random.Random(SEED)
    started = time.monotonic()
    # The engineers' accounts, written before the first start as `chatd engineer add` would
    # (without a process per account).
    store = store_from_url(server.env["CHATD_DATABASE_URL"])
    await store.open()
    for i in range(PAIRS):
        await add_engineer(store, SystemClock(), f"eng{i}@example.com", f"Eng {i}", PASSWORD,
                           Role.ENGINEER)
    await store.close()
    await server.start()
    parties = await _pairs(server, rng)
    finishing = asyncio.Event()
    runners = [asyncio.create_task(p.run(server.url, finishing)) for p in parties]
    restarts: list[float] = []
    kills = in_startup = 0
    try:
        while kills < KILLS:
            await asyncio.sleep(rng.uniform(0.05, 1.5))
            for r in runners:
                if r.done():
                    r.result()  # a client that stopped early: raise what stopped it
            t_kill = time.monotonic()
            server.kill9()
            kills += 1
            server.spawn()
            # One kill in ten lands while the restarted process is still starting up.
            while kills < KILLS and rng.random() < 0.1:
                await asyncio.sleep(rng.uniform(0.0, 0.8))
                if server.proc is None or server.proc.poll() is not None:
                    break
                t_kill = time.monotonic()
                server.kill9()
                kills += 1
                in_startup += 1
                server.spawn()
            await server.wait_ready(poll=0.01, timeout=60)
            restarts.append(time.monotonic() - t_kill)
            if kills % 50 == 0:
                acked = sum(len(p.acked) for p in parties)
                print(f"  {kills} kills, {acked} acknowledged, "
                      f"{time.monotonic() - started:.0f} s")
        finishing.set()
        await asyncio.wait_for(asyncio.gather(*runners), 60)
        for p in parties:
            await p.resume()
    finally:
        for r in runners:
            r.cancel()
        for p in parties:
            await p.close()
    server.stop()

    expected = {(e.session_id, e.seq): e for p in parties for e in p.seen.values()}
    report = check_store_invariants(server.env["CHATD_DATABASE_URL"], expected.values())
    problems = [x for p in parties for x in p.problems] + report.violations
    for p in parties:
        # Each side ends up holding its whole chat, the other side's messages included.
        if sorted(p.seen) != list(range(1, len(p.seen) + 1)):
            problems.append(f"{p.name}: holds seqs with gaps after the final resume")
    log = server.log.read_text(errors="replace")
    tracebacks = log.count("Traceback")
    acked = sum(len(p.acked) for p in parties)
    print(
        f"crash storm done: {kills} kills ({in_startup} during start-up), "
        f"{acked} messages acknowledged ({sum(p.resends for p in parties)} resent), "
        f"{report.messages} messages in {report.sessions} chats checked, "
        f"{report.expected} client-known messages compared, "
        f"{len(problems)} violations, {tracebacks} tracebacks in the server log, "
        f"wall {time.monotonic() - started:.0f} s, "
        f"restart (kill to /readyz) median {statistics.median(restarts):.2f} s "
        f"p99 {_pct(restarts, 0.99):.2f} s max {max(restarts):.2f} s, "
        f"seed {SEED}"
    )
    for line in problems[:50]:
        print("  violation:", line)
    assert kills == KILLS
    assert acked > 0
    assert not problems, problems[:20]
    assert tracebacks == 0, log[log.index("Traceback") - 2000:][:6000]


async def test_store_invariants_catch_gaps_duplicates_and_changed_messages(
    tmp_path: Path,
) -> None:
    """The storm's checker is not vacuous: each kind of damage it looks for is reported."""
    store = SQLiteStore(tmp_path / "chatd.db")
    await store.open()
    await store.close()
    url = f"sqlite:///{tmp_path / 'chatd.db'}"
    conn = sqlite3.connect(tmp_path / "chatd.db")
    with conn:
        for sid in ("s-good", "s-bad"):
            conn.execute(
                "INSERT INTO sessions (id, state, topic, severity, customer_id, customer_name,"
                " customer_email, customer_account, customer_tier, created_at, arrival_seq,"
                " resume_token_hash) VALUES (?, 'active', 't', 3, ?, 'C', 'c@x.io', '',"
                " 'standard', 0, 1, 'h')", (sid, "c-" + sid))

        def add(sid: str, seq: int, mid: str, body: str, cmid: str | None) -> None:
            conn.execute(
                "INSERT INTO messages (id, session_id, seq, ts, sender_role, sender_name,"
                " kind, body, client_msg_id) VALUES (?, ?, ?, 0, 'customer', 'C', 'text', ?, ?)",
                (mid, sid, seq, body, cmid))

        add("s-good", 1, "g1", "hello", "a")
        add("s-good", 2, "g2", "again", None)
    told = [Expected("s-good", "g1", 1, "hello", "a"), Expected("s-good", "g2", 2, "again", None)]
    assert check_store_invariants(url, told).violations == []

    with conn:
        add("s-bad", 1, "b1", "one", "x")
        add("s-bad", 3, "b3", "three", "x")
        add("s-gone", 1, "o1", "orphan", None)
    conn.close()
    told += [Expected("s-bad", "b1", 1, "not what was stored", "x"),
             Expected("s-bad", "b2", 2, "lost", "y")]
    report = check_store_invariants(url, told)
    text = "\n".join(report.violations)
    assert "foreign_key_check" in text  # the message of a chat that does not exist
    assert "seq 3 where 2 was due" in text
    assert "client_msg_id 'x' stored twice" in text
    assert "was told b1" in text
    assert "message b2 (seq 2) is not stored" in text
    assert (report.messages, report.sessions, report.expected) == (5, 3, 4)
