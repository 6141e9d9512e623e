"""``chatd db copy``: a SQLite database written by real chats, copied into PostgreSQL row
for row, and a desk started on the copy goes on where the first stopped; and the copies it
refuses, having written nothing (docs/scaling.md)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
import socketio

from bench.server_process import chatd_argv, child_env, free_port
from chatd import accounts
from chatd.core.clock import SystemClock
from chatd.core.models import Role
from chatd.store.sqlite import SQLiteStore
from tests.e2e.helpers import Inbox
from tests.pg import ADMIN_URL, DATABASES
from tests.process import Server, connect

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"
TABLES = {
    "engineers", "engineer_tokens", "sessions", "messages", "attachments", "handoffs",
    "status_banner", "read_marks", "erasures", "engineer_status",
}
# Each table's primary key: rows are compared in its order.
KEYS = {
    "engineers": ("id",),
    "engineer_tokens": ("token_hash",),
    "sessions": ("id",),
    "messages": ("session_id", "seq"),
    "read_marks": ("session_id", "role"),
    "attachments": ("id",),
    "handoffs": ("id",),
    "status_banner": ("id",),
    "engineer_status": ("engineer_id",),
    "erasures": ("id",),
}
NOTES = b"Steps:\n1. open the app\n2. it crashes\n"
SERVER_ENV = {
    "CHATD_GRACE_SECONDS": "60",
    "CHATD_CONNECT_BURST": "1000",
    "CHATD_MESSAGE_BURST": "1000",
}

Rows = dict[str, tuple[list[str], list[tuple[Any, ...]]]]


# ---------------------------------------------------------------------- helpers


def db_copy(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m chatd db copy ARGS``, without this run's CHATD_* settings."""
    return subprocess.run(
        chatd_argv("db", "copy", *args), env=child_env(), capture_output=True, text=True,
        timeout=60, check=False,
    )


def counts_printed(stdout: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"^  (\w+) +(\d+)$", stdout, re.MULTILINE)}


def sqlite_rows(path: Path) -> Rows:
    """Every row of every chatd table of the SQLite file, in primary key order, with
    every column the file has."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'schema_version'"
        )]
        out: Rows = {}
        for name in names:
            columns = [r[1] for r in conn.execute(f"PRAGMA table_info({name})")]
            rows = conn.execute(f"SELECT {', '.join(columns)} FROM {name}").fetchall()
            if name == "engineers":  # kept as 0 and 1; a BOOLEAN in PostgreSQL
                i = columns.index("disabled")
                rows = [(*r[:i], bool(r[i]), *r[i + 1:]) for r in rows]
            out[name] = (columns, _sorted(name, columns, rows))
        return out
    finally:
        conn.close()


async def pg_rows(url: str, columns: dict[str, list[str]]) -> Rows:
    """The same tables and columns read from PostgreSQL."""
    conn = await asyncpg.connect(url)
    try:
        out: Rows = {}
        for name, cols in columns.items():
            rows = [tuple(r) for r in await conn.fetch(f"SELECT {', '.join(cols)} FROM {name}")]
            out[name] = (cols, _sorted(name, cols, rows))
        return out
    finally:
        await conn.close()


def _sorted(name: str, columns: list[str], rows: list[Any]) -> list[tuple[Any, ...]]:
    key = [columns.index(k) for k in KEYS[name]]
    return sorted((tuple(r) for r in rows), key=lambda r: tuple(r[i] for i in key))


async def pg_counts(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        return {t: int(await conn.fetchval(f"SELECT COUNT(*) FROM {t}")) for t in TABLES}
    finally:
        await conn.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def call(c: socketio.AsyncClient, ns: str, event: str, data: Any) -> Any:
    r = await c.call(event, data, namespace=ns, timeout=15)
    assert r["ok"], (event, r)
    return r


async def http(
    method: str, url: str, token: str | None = None, *, headers: dict[str, str] | None = None,
    **kw: Any,
) -> tuple[int, Any]:
    headers = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
    async with aiohttp.ClientSession() as s:
        async with s.request(method, url, headers=headers, **kw) as r:
            if r.content_type == "application/json":
                return r.status, await r.json()
            return r.status, await r.read()


async def login(server: Server, email: str) -> str:
    status, body = await http("POST", server.url + "/api/login",
                              json={"email": email, "password": PASSWORD})
    assert status == 200, body
    token: str = body["token"]
    return token


async def guest(server: Server, name: str) -> socketio.AsyncClient:
    return await connect(server.url, "/customer",
                         {"guest": {"name": name, "email": f"{name.lower()}@client.example"}})


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A new, migrated and empty PostgreSQL database, dropped after the test."""
    url = await DATABASES.create()
    try:
        yield url
    finally:
        await DATABASES.drop(url)


@pytest.fixture
async def source(tmp_path: Path) -> Path:
    """A small SQLite database of the current schema: one engineer."""
    path = tmp_path / "source.db"
    store = SQLiteStore(path)
    await store.open()
    try:
        await accounts.add_engineer(store, SystemClock(), "alex@example.com", "Alex",
                                    PASSWORD, Role.ENGINEER)
    finally:
        await store.close()
    return path


# ---------------------------------------------------------------------- the copy


@pytest.mark.timeout(180)
async def test_a_desk_of_real_chats_is_copied_row_for_row_and_goes_on_on_postgresql(
    tmp_path: Path, pg_url: str
) -> None:
    # 1. A desk on SQLite: an ended chat, an active one with an attachment, two waiting.
    first = Server(tmp_path, SERVER_ENV)
    try:
        for email, name, role in (("alex@example.com", "Alex", "engineer"),
                                  ("lee@example.com", "Lee", "lead")):
            first.cli("engineer", "add", email, "--name", name, "--role", role,
                      "--password-stdin", stdin=PASSWORD + "\n")
        await first.start()
        alex = await login(first, "alex@example.com")
        lee = await login(first, "lee@example.com")
        signed_out = await login(first, "lee@example.com")
        assert (await http("POST", first.url + "/api/logout", signed_out))[0] == 200
        status, _ = await http("POST", first.url + "/api/status", lee,
                               json={"banner": "Logins are slow", "link": "https://s.example/1"})
        assert status == 200

        eng = await connect(first.url, "/engineer", {"token": alex})
        eng_in = Inbox(eng, "/engineer")
        await call(eng, "/engineer", "engineer:status", {"status": "available", "capacity": 2})

        ann = await guest(first, "Ann")
        r = await call(ann, "/customer", "chat:request",
                       {"topic": "Password reset", "message": "Hello", "client_msg_id": "a0"})
        ann_sid = r["session"]["id"]
        await eng_in.wait_for("offer:new", lambda d: d["session_id"] == ann_sid)
        await call(eng, "/engineer", "offer:accept", {"session_id": ann_sid})
        await call(eng, "/engineer", "message:send",
                   {"session_id": ann_sid, "client_msg_id": "e0", "body": "Hi Ann"})
        await call(ann, "/customer", "message:send",
                   {"session_id": ann_sid, "client_msg_id": "a1", "body": "thanks"})
        await call(ann, "/customer", "message:read", {"session_id": ann_sid, "seq": 3})
        await call(eng, "/engineer", "message:read", {"session_id": ann_sid, "seq": 4})
        await call(eng, "/engineer", "session:end",
                   {"session_id": ann_sid, "resolution": "reset the password"})

        ben = await guest(first, "Ben")
        r = await call(ben, "/customer", "chat:request",
                       {"topic": "App crashes", "message": "It crashes", "client_msg_id": "b0",
                        "request_id": "req-ben"})
        ben_sid, ben_resume = r["session"]["id"], r["resume_token"]
        await eng_in.wait_for("offer:new", lambda d: d["session_id"] == ben_sid)
        await call(eng, "/engineer", "offer:accept", {"session_id": ben_sid})
        for i in range(4):
            c, ns = (ben, "/customer") if i % 2 else (eng, "/engineer")
            await call(c, ns, "message:send",
                       {"session_id": ben_sid, "client_msg_id": f"m{i}", "body": f"msg {i}"})
        form = aiohttp.FormData()
        form.add_field("file", io.BytesIO(NOTES), filename="notes.txt",
                       content_type="text/plain")
        status, up = await http("POST", f"{first.url}/api/sessions/{ben_sid}/attachments",
                                ben_resume, data=form,
                                headers={"Upload-Id": "copy-test-upload-0001"})
        assert status == 201, up
        attachment_id = up["attachment"]["id"]

        # Away for new chats: the next two wait in the queue.
        await call(eng, "/engineer", "engineer:status", {"status": "away"})
        waiting = []
        for name in ("Cid", "Dee"):
            c = await guest(first, name)
            r = await call(c, "/customer", "chat:request", {"topic": f"{name}'s question"})
            await call(c, "/customer", "message:send", {
                "session_id": r["session"]["id"], "client_msg_id": "w0", "body": "still there?",
            })
            waiting.append((c, r["session"]["id"], r["resume_token"]))

        before = (await call(eng, "/engineer", "session:resume",
                             {"session_id": ben_sid, "after_seq": 0}))["messages"]
        for c in (eng, ann, ben, *[w[0] for w in waiting]):
            await c.disconnect()
    finally:
        first.stop()

    # 2. The copy, as an operator runs it.
    source_path = tmp_path / "chatd.db"
    source_digest = digest(source_path)
    # Small batches: every table of more than three rows is sent in several.
    done = await asyncio.to_thread(db_copy, f"sqlite:///{source_path}", pg_url,
                                   "--batch", "3")
    assert done.returncode == 0, done.stderr
    assert "files stay in the upload folder" in done.stdout
    assert digest(source_path) == source_digest  # the source is only read

    source = sqlite_rows(source_path)
    assert set(source) == TABLES
    assert counts_printed(done.stdout) == {t: len(rows) for t, (_, rows) in source.items()}
    target = await pg_rows(pg_url, {t: cols for t, (cols, _) in source.items()})
    for table in TABLES:
        assert target[table] == source[table], table  # every value, times exactly
    states = sorted(r[1] for r in source["sessions"][1])
    assert states == ["active", "ended", "waiting", "waiting"]
    assert len(source["attachments"][1]) == 1 and len(source["status_banner"][1]) == 1
    upload_ids = [r[source["attachments"][0].index("upload_id")] for r in source["attachments"][1]]
    assert upload_ids == ["copy-test-upload-0001"]
    handoffs = source["handoffs"][1]
    assert [h[1] for h in handoffs] == [ann_sid]
    token_cols = source["engineer_tokens"][0]
    revoked = [r for r in source["engineer_tokens"][1]
               if r[token_cols.index("revoked_at")] is not None]
    assert len(revoked) == 1
    conn = await asyncpg.connect(pg_url)
    try:
        wrong = await conn.fetch(
            "SELECT s.id, s.last_seq, MAX(m.seq) FROM sessions s JOIN messages m"
            " ON m.session_id = s.id GROUP BY s.id HAVING s.last_seq <> MAX(m.seq)"
        )
        disabled = {type(r[0]) for r in await conn.fetch("SELECT disabled FROM engineers")}
    finally:
        await conn.close()
    assert wrong == []
    assert disabled == {bool}

    # 3. A desk on the copy: same uploads and handoff folders, new database.
    (tmp_path / "pg").mkdir()
    second = Server(tmp_path / "pg", {
        **SERVER_ENV,
        "CHATD_DATABASE_URL": pg_url,
        "CHATD_UPLOAD_DIR": str(tmp_path / "uploads"),
        "CHATD_HANDOFF_FILE_DIR": str(tmp_path / "handoff"),
    })
    try:
        await second.start()
        # The engineer's sign-in token was copied too.
        eng = await connect(second.url, "/engineer", {"token": alex})
        snap = await call(eng, "/engineer", "queue:snapshot", {})
        assert [q["id"] for q in snap["queue"]] == [w[1] for w in waiting]
        assert [s["id"] for s in snap["sessions"]] == [ben_sid]

        ben = await connect(second.url, "/customer",
                            {"session_id": ben_sid, "resume_token": ben_resume})
        ben_in = Inbox(ben, "/customer")
        resumed = await call(ben, "/customer", "session:resume",
                             {"session_id": ben_sid, "resume_token": ben_resume,
                              "after_seq": 0})
        assert resumed["session"]["state"] == "active"
        assert resumed["messages"] == before
        eng_history = await call(eng, "/engineer", "session:resume",
                                 {"session_id": ben_sid, "after_seq": 0})
        assert eng_history["messages"] == before
        last = before[-1]["seq"]
        assert [m["seq"] for m in before] == list(range(1, last + 1))

        mine = await call(ben, "/customer", "message:send",
                          {"session_id": ben_sid, "client_msg_id": "after-1", "body": "back"})
        assert mine["message"]["seq"] == last + 1
        reply = await call(eng, "/engineer", "message:send",
                           {"session_id": ben_sid, "client_msg_id": "after-2", "body": "hello"})
        assert reply["message"]["seq"] == last + 2
        got = await ben_in.wait_for("message:new", lambda d: d["message"]["body"] == "hello")
        assert got["message"]["seq"] == last + 2
        # A retry of a message sent before the copy is still recognised.
        again = await call(ben, "/customer", "message:send",
                           {"session_id": ben_sid, "client_msg_id": "m1", "body": "msg 1"})
        assert again["duplicate"] and again["message"]["seq"] == before_seq(before, "msg 1")

        status, data = await http("GET", f"{second.url}/api/attachments/{attachment_id}",
                                  ben_resume)
        assert (status, data) == (200, NOTES)

        for position, (_, sid, resume) in enumerate(waiting, 1):
            c = await connect(second.url, "/customer", {"session_id": sid, "resume_token": resume})
            r = await call(c, "/customer", "session:resume",
                           {"session_id": sid, "resume_token": resume, "after_seq": 0})
            assert r["session"]["state"] == "waiting"
            assert r["session"]["position"] == position
            assert [m["body"] for m in r["messages"] if m["kind"] == "text"] == ["still there?"]
            await c.disconnect()

        status, banner = await http("GET", second.url + "/api/status")
        assert status == 200 and "Logins are slow" in str(banner)
        for c in (eng, ben):
            await c.disconnect()
    finally:
        second.stop()


def before_seq(messages: list[Any], body: str) -> int:
    seq: int = next(m["seq"] for m in messages if m["body"] == body)
    return seq


async def test_a_copy_that_fails_half_way_keeps_nothing(source: Path, pg_url: str) -> None:
    # A handoff of a chat that is not there: SQLite lets it in (no foreign key checks on
    # this connection), PostgreSQL refuses it, after the engineers were copied.
    conn = sqlite3.connect(source)
    conn.execute(
        "INSERT INTO handoffs (id, session_id, backend, next_attempt_at, created_at,"
        " updated_at) VALUES ('h1', 'no-such-chat', 'file', 1.5, 1.5, 1.5)"
    )
    conn.commit()
    conn.close()
    done = await asyncio.to_thread(db_copy, f"sqlite:///{source}", pg_url)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "rolled back" in done.stderr and "handoffs" in done.stderr, done.stderr
    assert set((await pg_counts(pg_url)).values()) == {0}


# ---------------------------------------------------------------------- refusals


def refused(done: subprocess.CompletedProcess[str], says: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    line = done.stderr.strip()
    assert "\n" not in line, line
    assert line.startswith("chatd db copy: refused, nothing written: ") and says in line, line


async def test_a_target_with_rows_is_refused_and_left_as_it_was(
    source: Path, pg_url: str
) -> None:
    url = f"sqlite:///{source}"
    assert (await asyncio.to_thread(db_copy, url, pg_url)).returncode == 0
    columns = {t: cols for t, (cols, _) in sqlite_rows(source).items()}
    copied = await pg_rows(pg_url, columns)
    refused(await asyncio.to_thread(db_copy, url, pg_url), "the target database is not empty")
    assert await pg_rows(pg_url, columns) == copied


async def test_the_same_database_is_refused(source: Path, pg_url: str) -> None:
    before = digest(source)
    # The same file, spelled another way.
    other_spelling = f"sqlite:///{source.parent}/../{source.parent.name}/{source.name}"
    done = await asyncio.to_thread(db_copy, f"sqlite:///{source}", other_spelling)
    refused(done, "the source and the target are the same database")
    assert digest(source) == before
    parts = urlsplit(pg_url)
    as_localhost = urlunsplit(parts._replace(netloc=parts.netloc.replace("127.0.0.1",
                                                                           "localhost")))
    refused(await asyncio.to_thread(db_copy, pg_url, as_localhost),
            "the source and the target are the same database")
    assert set((await pg_counts(pg_url)).values()) == {0}


async def test_postgresql_to_sqlite_is_refused(tmp_path: Path, pg_url: str) -> None:
    target = tmp_path / "target.db"
    done = await asyncio.to_thread(db_copy, pg_url, f"sqlite:///{target}")
    refused(done, "only SQLite to PostgreSQL is supported")
    assert not target.exists()
    assert set((await pg_counts(pg_url)).values()) == {0}


async def test_an_unreachable_target_is_refused(source: Path) -> None:
    before = digest(source)
    nobody = f"postgresql://postgres@127.0.0.1:{free_port()}/chatd"
    done = await asyncio.to_thread(db_copy, f"sqlite:///{source}", nobody)
    refused(done, "cannot connect to the target database")
    assert digest(source) == before


async def test_a_source_of_an_older_schema_is_refused(source: Path, pg_url: str) -> None:
    conn = sqlite3.connect(source)
    conn.execute("DELETE FROM schema_version WHERE version = (SELECT MAX(version)"
                 " FROM schema_version)")
    conn.commit()
    conn.close()
    before = digest(source)
    done = await asyncio.to_thread(db_copy, f"sqlite:///{source}", pg_url)
    refused(done, "upgrade it first")
    assert digest(source) == before
    assert set((await pg_counts(pg_url)).values()) == {0}


async def test_the_servers_own_database_is_refused(source: Path) -> None:
    maintenance = urlunsplit(urlsplit(ADMIN_URL)._replace(path="/postgres"))
    done = await asyncio.to_thread(db_copy, f"sqlite:///{source}", maintenance)
    refused(done, "the target is the server's postgres database")
