"""Two regression benchmarks of what chatd keeps: ``handoff`` (transcripts of ended chats
delivered to a webhook) and ``restart`` (back to ready after ``kill -9`` on a big
database), each on ``--backend sqlite``, ``postgres`` or both.

- ``handoff``: ``--handoff-chats`` ended chats, each with a few messages and a webhook
  outbox row, are written through chatd's own Store API before chatd starts. A Standard
  Webhooks receiver in this process (docs/handoff.md) checks every signature and answers
  200; the figure is the ended chats per second from chatd's spawn until every chat's
  transcript was accepted, and each exactly once: no ``webhook-id`` accepted twice, no chat
  delivered under two ids. Bar: >= 200 per second.
- ``restart``: ``--restart-messages`` messages in chats of ``MESSAGES_PER_CHAT``, of which
  the newest ``--restart-chats`` are open (half waiting, half with an engineer), written
  with bulk inserts that match the schema chatd's migrations made (on PostgreSQL with each
  chat's ``last_seq``). chatd starts, is killed with SIGKILL, and starts again; the figure
  is the second start, from spawn to ``/readyz`` answering 200. Bar: <= 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import os
import random
import sqlite3
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web

from .harness import (
    BenchError,
    Benchmark,
    Report,
    chatd_env,
    drop_postgres_database,
    new_postgres_database,
    start_chatd,
)
from .server_process import NotReady, ServerProcess, chatd_argv, free_port
from .surge import add_backend_argument

HANDOFF_PER_S = 200.0
RESTART_S = 2.0
MESSAGES_PER_CHAT = 100
ENGINEERS = 10
WRITES_AT_ONCE = 64  # Store API writes in flight while the handoff database is filled
DB_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


def add_handoff_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--handoff-chats", type=int, default=2000,
                       help="ended chats whose transcripts are delivered (default %(default)s)")
    add_backend_argument(group)


def add_restart_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--restart-messages", type=int, default=1_000_000,
                       help="messages in the database (default %(default)s)")
    group.add_argument("--restart-chats", type=int, default=1000,
                       help="open chats among them (default %(default)s)")
    add_backend_argument(group)


async def _database(backend: str, tmp: Path, stack: contextlib.AsyncExitStack) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp / 'bench.db'}"
    url = await new_postgres_database()
    stack.push_async_callback(drop_postgres_database, url)
    return url


def _readme(name: str, backend: str, value: str, bar: str) -> str:
    return f"| {name}, {DB_NAMES[backend]} | {value} | | | {bar} |"


# ---------------------------------------------------------------------- handoff


class Receiver:
    """A webhook receiver that verifies each request (Standard Webhooks) and answers 200,
    remembering which ids and which chats it accepted."""

    def __init__(self, secret: str, expected: int) -> None:
        self.key = base64.b64decode(secret.removeprefix("whsec_"))
        self.expected = expected
        self.accepted: Counter[str] = Counter()  # webhook-id -> times answered 200
        self.sessions: dict[str, set[str]] = {}  # chat -> ids it came under
        self.invalid = 0
        self.all_in: asyncio.Event = asyncio.Event()
        self.all_in_at: float | None = None
        self.runner: web.AppRunner | None = None
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/chatd"

    def _valid(self, headers: Any, body: bytes) -> bool:
        msg_id, stamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
        if not msg_id or not stamp.isdigit() or abs(time.time() - int(stamp)) > 300:
            return False
        signed = f"{msg_id}.{stamp}.".encode() + body
        expected = base64.b64encode(hmac.new(self.key, signed, hashlib.sha256).digest())
        return any(version == "v1" and hmac.compare_digest(sig.encode(), expected)
                   for version, _, sig in (s.partition(",")
                                           for s in headers.get("webhook-signature", "").split()))

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not self._valid(request.headers, body):
            self.invalid += 1
            return web.Response(status=401, text="bad signature")
        msg_id = request.headers["webhook-id"]
        self.accepted[msg_id] += 1
        try:
            session = json.loads(body)["data"]["session"]["id"]
        except (ValueError, KeyError, TypeError):
            session = "?"
        self.sessions.setdefault(session, set()).add(msg_id)
        if len(self.accepted) >= self.expected and not self.all_in.is_set():
            self.all_in_at = time.monotonic()
            self.all_in.set()
        return web.json_response({})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/chatd", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def _ended_chats(url: str, n: int) -> None:
    """``n`` ended chats, each with three messages and a webhook outbox row, through
    chatd's own Store API (what the desk writes when a chat ends)."""
    from chatd.core.models import (
        SYSTEM_SENDER,
        Customer,
        EndReason,
        MessageKind,
        NewMessage,
        Sender,
        Session,
        SessionState,
        Tier,
    )
    from chatd.store import store_from_url

    store = store_from_url(url)
    await store.open()
    gate = asyncio.Semaphore(WRITES_AT_ONCE)
    now = time.time()

    async def one(i: int) -> None:
        customer = Customer(f"guest:{uuid.uuid4()}", f"Customer {i}", f"c{i}@bench.example",
                            "", Tier.STANDARD)
        t = now - 600 + i * 0.01
        session = Session(id=str(uuid.uuid4()), state=SessionState.WAITING,
                          topic=f"Question {i}", severity=3, customer=customer, created_at=t,
                          arrival_seq=i + 1)
        who = Sender("customer", customer.id, customer.name)

        def text(k: int, body: str) -> NewMessage:
            return NewMessage(id=str(uuid.uuid4()), session_id=session.id, ts=t + k,
                              sender=who, kind=MessageKind.TEXT, body=body)

        async with gate:
            await store.create_session(session, "resume-hash", text(0, "The export fails"))
            await store.append_message(text(1, "With error E42, since this morning."))
            await store.append_message(text(2, "Thanks, that fixed it."))
            ended = dataclasses.replace(session, state=SessionState.ENDED, ended_at=t + 3,
                                        ended_by="customer",
                                        end_reason=EndReason.CUSTOMER_ENDED)
            note = NewMessage(id=str(uuid.uuid4()), session_id=session.id, ts=t + 3,
                              sender=SYSTEM_SENDER, kind=MessageKind.SYSTEM,
                              body="The chat has ended",
                              event={"type": "ended", "reason": "customer_ended"})
            await store.end_session(ended, note, ["webhook"])

    try:
        await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await store.close()


async def run_handoff(args: argparse.Namespace) -> Report:
    n = args.handoff_chats
    if not 1 <= n <= 100_000:
        raise BenchError("--handoff-chats must be 1 to 100000")
    report: Report = {}
    lines = []
    for backend in args.backend:
        with tempfile.TemporaryDirectory(prefix=f"chatd-handoff-{backend}-") as tmp:
            try:
                async with asyncio.timeout(300 + n / 10):
                    r = await _handoff(backend, Path(tmp), n)
            except TimeoutError:
                raise BenchError(f"handoff on {backend} did not finish in time") from None
        report[backend] = r
        lines.append(_readme(f"handoff, {n:,} ended chats, transcripts/s", backend,
                             f"{r['per_s']:,.0f}", f"≥ {HANDOFF_PER_S:g}, each once"))
    _print_readme(lines)
    report["passed"] = all(r["passed"] for r in report.values() if isinstance(r, dict))
    return report


async def _handoff(backend: str, tmp: Path, n: int) -> Report:
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    async with contextlib.AsyncExitStack() as stack:
        url = await _database(backend, tmp, stack)
        t0 = time.monotonic()
        await _ended_chats(url, n)
        print(f"handoff ({backend}): {n} ended chats written in {time.monotonic() - t0:.1f} s",
              flush=True)
        receiver = Receiver(secret, n)
        await receiver.start()
        stack.push_async_callback(receiver.stop)
        env = chatd_env(tmp, database_url=url, handoff_backends="webhook",
                        handoff_webhook_url=receiver.url, handoff_webhook_secret=secret)
        spawned = time.monotonic()
        server, _ = await start_chatd(tmp, env)
        stack.push_async_callback(server.stop_async)
        ready = time.monotonic()
        deadline = 60 + n / 20
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receiver.all_in.wait(), deadline)
        await asyncio.sleep(2.0)  # a repeat of something already accepted would come now
        alive = server.returncode is None
    done = receiver.all_in_at
    seconds = None if done is None else done - spawned
    twice = sum(1 for c in receiver.accepted.values() if c > 1)
    split = sum(1 for ids in receiver.sessions.values() if len(ids) > 1)
    per_s = 0.0 if not seconds else round(n / seconds, 1)
    ok = (done is not None and per_s >= HANDOFF_PER_S and not twice and not split
          and len(receiver.sessions) == n and not receiver.invalid and alive)
    r: Report = {
        "chats": n, "seconds": None if seconds is None else round(seconds, 3),
        "per_s": per_s, "ready_s": round(ready - spawned, 3),
        "delivered": len(receiver.accepted), "chats_delivered": len(receiver.sessions),
        "ids_accepted_twice": twice, "chats_under_two_ids": split,
        "invalid_signatures": receiver.invalid, "passed": ok,
    }
    print(f"handoff ({backend}): {r['delivered']} of {n} transcripts accepted"
          + (f" {seconds:.2f} s after spawn ({r['ready_s']:.2f} s to ready):"
             f" {per_s:,.0f}/s" if seconds else f" within {deadline:g} s")
          + f"; {twice} ids accepted twice, {split} chats under two ids,"
          f" {receiver.invalid} bad signatures  bar: >= {HANDOFF_PER_S:g}/s"
          f"  {'PASS' if ok else 'FAIL'}", flush=True)
    return r


# ---------------------------------------------------------------------- restart


def _rows(messages: int, open_chats: int, engineers: list[str]) -> tuple[
        list[dict[str, Any]], list[tuple[Any, ...]]]:
    """Sessions (as column -> value) and messages of the restart database: chats of
    MESSAGES_PER_CHAT messages over the last week, the newest ``open_chats`` still open."""
    rng = random.Random(1)
    chats = max(open_chats, -(-messages // MESSAGES_PER_CHAT))
    now = time.time()
    sessions: list[dict[str, Any]] = []
    rows: list[tuple[Any, ...]] = []
    left = messages
    for i in range(chats):
        sid = str(uuid.uuid4())
        created = now - 7 * 86400 + i * (7 * 86400 - 3600) / chats
        is_open = i >= chats - open_chats
        active = is_open and i % 2 == 0
        count = min(MESSAGES_PER_CHAT, left) if i < chats - 1 else left
        left -= count
        engineer = rng.choice(engineers) if active or not is_open else None
        s: dict[str, Any] = {
            "id": sid, "state": ("active" if active else "waiting") if is_open else "ended",
            "topic": f"Question {i}", "severity": 3, "customer_id": f"guest:{uuid.uuid4()}",
            "customer_name": f"Customer {i}", "customer_email": f"c{i}@bench.example",
            "customer_account": "", "customer_tier": "standard", "created_at": created,
            "arrival_seq": i + 1, "engineer_id": engineer,
            "assigned_at": created + 30 if engineer else None,
            "first_assigned_at": created + 30 if engineer else None,
            "ended_at": None if is_open else created + 900,
            "ended_by": None if is_open else "engineer",
            "end_reason": None if is_open else "engineer_ended",
            "resume_token_hash": hashlib.sha256(sid.encode()).hexdigest(),
            "last_seq": count,
        }
        sessions.append(s)
        for seq in range(1, count + 1):
            by_customer = seq % 2 == 1 or engineer is None
            rows.append((str(uuid.uuid4()), sid, seq, created + seq,
                         "customer" if by_customer else "engineer",
                         s["customer_id"] if by_customer else engineer,
                         s["customer_name"] if by_customer else "Engineer",
                         "text", f"message {seq} of chat {i}: " + "x" * rng.randint(20, 200),
                         None))
    return sessions, rows


MESSAGE_COLUMNS = ["id", "session_id", "seq", "ts", "sender_role", "sender_id", "sender_name",
                   "kind", "body", "client_msg_id"]


async def _big_database(url: str, backend: str, messages: int, open_chats: int
                        ) -> tuple[int, int]:
    """The restart database; how many of its chats wait and how many are active."""
    from chatd.core.models import Engineer, EngineerAccount, Role
    from chatd.store import sqlite_path, store_from_url

    store = store_from_url(url)
    await store.open()  # the schema, as chatd's migrations make it
    engineers = [str(uuid.uuid4()) for _ in range(ENGINEERS)]
    try:
        for j, eid in enumerate(engineers):
            await store.add_engineer(EngineerAccount(
                Engineer(eid, f"engineer{j}@bench.example", f"Engineer {j}", Role.ENGINEER),
                password_hash="not-a-password", disabled=False, created_at=time.time()))
    finally:
        await store.close()
    sessions, rows = _rows(messages, open_chats, engineers)
    if backend == "sqlite":
        await asyncio.to_thread(_fill_sqlite, sqlite_path(url), sessions, rows)
    else:
        await _fill_postgres(url, sessions, rows)
    states = Counter(s["state"] for s in sessions)
    return states["waiting"], states["active"]


def _fill_sqlite(path: str, sessions: list[dict[str, Any]], rows: list[tuple[Any, ...]]) -> None:
    db = sqlite3.connect(path)
    try:
        have = {r[1] for r in db.execute("PRAGMA table_info(sessions)")}
        columns = [c for c in sessions[0] if c in have]
        with db:
            db.executemany(
                f"INSERT INTO sessions ({', '.join(columns)})"
                f" VALUES ({', '.join('?' for _ in columns)})",
                [tuple(s[c] for c in columns) for s in sessions])
            db.executemany(
                f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)})"
                f" VALUES ({', '.join('?' for _ in MESSAGE_COLUMNS)})", rows)
        db.execute("ANALYZE")
    except sqlite3.Error as exc:
        raise BenchError(f"the bulk insert does not match chatd's SQLite schema: {exc}") from None
    finally:
        db.close()


async def _fill_postgres(url: str, sessions: list[dict[str, Any]],
                         rows: list[tuple[Any, ...]]) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=10)
    try:
        have = {r["column_name"] for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'sessions'")}
        if "last_seq" not in have:
            raise BenchError("chatd's PostgreSQL schema has no sessions.last_seq any more")
        columns = [c for c in sessions[0] if c in have]
        async with conn.transaction():
            await conn.copy_records_to_table(
                "sessions", columns=columns,
                records=[tuple(s[c] for c in columns) for s in sessions])
            await conn.copy_records_to_table("messages", columns=MESSAGE_COLUMNS,
                                             records=rows)
        await conn.execute("ANALYZE")  # as autovacuum would have by now
    except asyncpg.PostgresError as exc:
        raise BenchError(f"the bulk insert does not match chatd's PostgreSQL schema: {exc}"
                         ) from None
    finally:
        await conn.close()


async def run_restart(args: argparse.Namespace) -> Report:
    messages, chats = args.restart_messages, args.restart_chats
    if not 1 <= chats <= 100_000 or not chats <= messages <= 50_000_000:
        raise BenchError("--restart-chats must be 1 to 100000 and --restart-messages at"
                         " least that, up to 50000000")
    report: Report = {}
    lines = []
    for backend in args.backend:
        with tempfile.TemporaryDirectory(prefix=f"chatd-restart-{backend}-") as tmp:
            try:
                async with asyncio.timeout(600 + messages / 2000):
                    r = await _restart(backend, Path(tmp), messages, chats)
            except TimeoutError:
                raise BenchError(f"restart on {backend} did not finish in time") from None
        report[backend] = r
        lines.append(_readme(f"restart after kill -9, {messages:,} messages, {chats:,} open"
                             " chats, spawn to /readyz, s", backend,
                             f"{r['restart_s']:.2f}", f"≤ {RESTART_S:g}"))
    _print_readme(lines)
    report["passed"] = all(r["passed"] for r in report.values() if isinstance(r, dict))
    return report


async def _restart(backend: str, tmp: Path, messages: int, chats: int) -> Report:
    async with contextlib.AsyncExitStack() as stack:
        url = await _database(backend, tmp, stack)
        t0 = time.monotonic()
        want = await _big_database(url, backend, messages, chats)
        print(f"restart ({backend}): {messages:,} messages, {chats:,} open chats written in"
              f" {time.monotonic() - t0:.1f} s", flush=True)
        env = chatd_env(tmp, database_url=url)
        first, first_s = await _spawn(tmp, env, append=False)
        stack.push_async_callback(first.stop_async)
        await asyncio.sleep(1.0)  # serving, with whatever it does after it is ready
        first.kill()
        second, restart_s = await _spawn(tmp, env, append=True)
        stack.push_async_callback(second.stop_async)
        restored = await _restored(second.url)
        alive = second.returncode is None
    waiting, active = restored
    ok = restart_s <= RESTART_S and alive and restored == want
    print(f"restart ({backend}): first start {first_s:.2f} s; after kill -9, spawn to /readyz"
          f" {restart_s:.2f} s, then {waiting} waiting and {active} active chats restored"
          f" (of {want[0]} and {want[1]})  bar: <= {RESTART_S:g} s  {'PASS' if ok else 'FAIL'}",
          flush=True)
    return {"messages": messages, "open_chats": chats, "first_start_s": round(first_s, 3),
            "restart_s": round(restart_s, 3), "restored_waiting": waiting,
            "restored_active": active, "passed": ok}


async def _restored(url: str) -> tuple[int | None, int | None]:
    """The waiting and the active chats the server holds, from its /metrics."""
    import aiohttp

    values: dict[str, int] = {}
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/metrics", timeout=aiohttp.ClientTimeout(total=10)) as r:
            text = await r.text()
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("chatd_queue_length", "chatd_sessions_active"):
            values[name] = int(float(value))
    return values.get("chatd_queue_length"), values.get("chatd_sessions_active")


async def _spawn(tmp: Path, env: dict[str, str], *, append: bool) -> tuple[ServerProcess, float]:
    """chatd serve, and the seconds from its spawn to /readyz answering 200."""
    port = free_port()
    spawned = time.monotonic()
    server = ServerProcess.start(
        "chatd", chatd_argv("serve", "--host", "127.0.0.1", "--port", str(port)),
        url=f"http://127.0.0.1:{port}", env=env, cwd=tmp, log=tmp / "chatd.log",
        append=append)
    try:
        await server.wait_ready("/readyz", timeout=120.0, poll=0.01)
    except NotReady as exc:
        raise BenchError(str(exc)) from None
    return server, time.monotonic() - spawned


def _print_readme(lines: list[str]) -> None:
    print("README lines:")
    for line in lines:
        print(line)
    print(flush=True)


HANDOFF = Benchmark(
    name="handoff",
    help="transcripts of ended chats delivered to a webhook after a start: per second,"
         " each exactly once",
    run=run_handoff,
    add_arguments=add_handoff_arguments,
)

RESTART = Benchmark(
    name="restart",
    help="back to ready after kill -9 on a database of a million messages",
    run=run_restart,
    add_arguments=add_restart_arguments,
)
