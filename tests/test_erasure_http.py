"""``POST /api/customers/erase`` on a running desk: who may call it, what it removes, and a
forced erasure of a customer still in a chat (docs/operations.md#erasure-and-export)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from chatd.core.erasure import CustomerQuery
from chatd.core.models import Role
from chatd.web import keys
from tests.conftest import Chatd
from tests.e2e.helpers import Inbox
from tests.web.test_attachments import Chat, log_text, png

ERASE = "/api/customers/erase"


async def post(
    chatd: Chatd, body: Any, headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.post(chatd.url + ERASE, json=body, headers=headers or {}) as r:
            return r.status, await r.json()


async def lead(chatd: Chatd, email: str = "lee@vendor.example") -> str:
    await chatd.add_engineer(email, role=Role.LEAD)
    return await chatd.login(email)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def open_chat(chatd: Chatd, *, name: str) -> Chat:
    """A guest's chat (email NAME@example.com, a new customer id each time), accepted by an
    engineer of its own."""
    customer = await chatd.client(
        "/customer", {"guest": {"name": name, "email": f"{name.lower()}@example.com"}}
    )
    inbox = Inbox(customer, "/customer")
    r = await customer.call("chat:request", {"topic": "Upload fails"}, namespace="/customer")
    assert r["ok"], r
    chat = Chat(chatd, r["session"]["id"], r["resume_token"], customer, inbox)
    email = f"eng-{uuid.uuid4().hex[:8]}@vendor.example"
    await chatd.add_engineer(email)
    token = await chatd.login(email)
    eng = await chatd.client("/engineer", {"token": token})
    eng_inbox = Inbox(eng, "/engineer")
    ok = await eng.call("engineer:status", {"status": "available"}, namespace="/engineer")
    assert ok["ok"], ok
    await eng_inbox.wait_for("offer:new", lambda d: d["session_id"] == chat.session_id)
    acc = await eng.call("offer:accept", {"session_id": chat.session_id}, namespace="/engineer")
    assert acc["ok"], acc
    away = await eng.call("engineer:status", {"status": "away"}, namespace="/engineer")
    assert away["ok"], away
    chat.engineer_token, chat.engineer, chat.engineer_inbox = token, eng, eng_inbox
    return chat


async def upload_and_end(chat: Chat) -> None:
    status, body = await chat.upload(png(), "screen.png")
    assert status == 201, body
    status, body = await chat.upload(log_text(50), "app.log")
    assert status == 201, body
    assert chat.engineer is not None
    r = await chat.engineer.call("session:end", {"session_id": chat.session_id},
                                 namespace="/engineer")
    assert r["ok"], r


async def transcripts_written(folder: Path, session_ids: list[str]) -> None:
    """The file handoff delivers in the background: wait for its transcripts."""
    want = {f"{sid}.{ext}" for sid in session_ids for ext in ("json", "txt")}
    for _ in range(200):
        if folder.exists() and want <= {p.name for p in folder.iterdir()}:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"transcripts not written in {folder}")


def erasure_rows(db: Path) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as con:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT * FROM erasures")]


async def test_a_lead_erases_a_guest_across_chats_and_only_counts_stay(
    chatd_factory: Any, tmp_path: Path,
) -> None:
    chatd = await chatd_factory(erasure_key="k" * 40)
    store = chatd.app[keys.STORE]
    # The same guest twice (a new customer id each visit), and someone else.
    first = await open_chat(chatd, name="Gus")
    await upload_and_end(first)
    second = await open_chat(chatd, name="Gus")
    await upload_and_end(second)
    other = await open_chat(chatd, name="Olga")
    await upload_and_end(other)
    handoff = tmp_path / "handoff"
    await transcripts_written(handoff, [first.session_id, second.session_id, other.session_id])
    others_files = {n for a in await store.session_attachments(other.session_id)
                    for n in (a.stored_name, a.thumbnail_name) if n}
    assert len(first.stored_files()) == 3 * 3  # a PNG, its thumbnail and a log per chat

    status, body = await post(chatd, {"email": "gus@example.com"}, bearer(await lead(chatd)))

    assert status == 200, body
    erasure = body["erasure"]
    assert (erasure["chats"], erasure["files"], erasure["via"]) == (2, 4, "http")
    assert erasure["requested_by"] == "lee@vendor.example"
    assert body["files_removed"] == 6 and body["transcripts_removed"] == 4
    assert set(first.stored_files()) == others_files
    assert {p.name for p in handoff.iterdir()} == {
        f"{other.session_id}.json", f"{other.session_id}.txt"
    }
    for chat in (first, second):
        assert await store.get_session(chat.session_id) is None
        assert await chat.messages() == []
        # The customer's own credential finds nothing any more.
        status, _, _ = await chat.get(
            f"/api/sessions/{chat.session_id}/transcript", chat.customer_token
        )
        assert status in (401, 404)
    assert await store.customer_sessions(CustomerQuery(email="olga@example.com"))

    [row] = erasure_rows(tmp_path / "chatd.db")
    assert row["id"] == erasure["id"] and len(row["subject_hash"]) == 64
    text = repr(row).lower()
    for personal in ("gus", "example.com", "guest:", first.session_id):
        assert personal not in text


async def test_an_open_chat_is_refused_then_ended_through_the_desk_with_force(
    chatd_factory: Any,
) -> None:
    chatd = await chatd_factory()
    store = chatd.app[keys.STORE]
    old = await open_chat(chatd, name="Carol")
    await upload_and_end(old)
    live = await open_chat(chatd, name="Carol")
    status, body = await live.upload(png(), "now.png")
    assert status == 201, body
    files_before = live.stored_files()
    messages_before = await live.messages()
    token = await lead(chatd)

    status, body = await post(chatd, {"email": "carol@example.com"}, bearer(token))

    assert status == 409, body
    assert body["error"]["code"] == "conflict"
    assert body["error"]["details"]["open_sessions"] == [live.session_id]
    assert live.stored_files() == files_before
    assert await live.messages() == messages_before
    assert await old.messages() != []
    assert await store.list_erasures() == []

    status, body = await post(chatd, {"email": "carol@example.com", "force": True},
                              bearer(token))

    assert status == 200, body
    assert body["erasure"]["chats"] == 2
    # Both sides were told the chat ended, as when a lead ends it from the console.
    ended = await live.customer_inbox.wait_for(
        "session:ended", lambda d: d["session_id"] == live.session_id
    )
    assert ended["ended_by"] == "engineer"
    assert isinstance(live.engineer_inbox, Inbox)
    await live.engineer_inbox.wait_for("session:ended",
                                       lambda d: d["session_id"] == live.session_id)
    assert live.stored_files() == []
    assert live.session_id not in chatd.app[keys.DESK].open_session_ids()
    assert await store.customer_sessions(CustomerQuery(email="carol@example.com")) == []
    # The customer may start a new chat afterwards.
    r = await live.customer.call("chat:request", {"topic": "Again"}, namespace="/customer")
    assert r["ok"], r


async def test_only_a_lead_may_erase_and_a_cookie_only_from_chatds_own_pages(
    chatd_factory: Any,
) -> None:
    chatd = await chatd_factory()
    chat = await open_chat(chatd, name="Dora")
    await upload_and_end(chat)
    who = {"email": "dora@example.com"}
    await chatd.add_engineer("eng@vendor.example", role=Role.ENGINEER)
    engineer = await chatd.login("eng@vendor.example")
    token = await lead(chatd)
    cookie = {"Cookie": f"chatd_token={token}"}

    refused = [
        (await post(chatd, who), 401, "unauthorized"),
        (await post(chatd, who, bearer("not-a-token")), 401, "unauthorized"),
        (await post(chatd, who, bearer(engineer)), 403, "forbidden"),
        (await post(chatd, who, {"Cookie": f"chatd_token={engineer}", "Origin": chatd.url}),
         403, "forbidden"),
        (await post(chatd, who, {**cookie, "Origin": "https://evil.example"}), 403,
         "forbidden"),
        (await post(chatd, who, cookie), 403, "forbidden"),  # no Origin: not known to be ours
    ]
    async with aiohttp.ClientSession() as http:
        async with http.post(chatd.url + ERASE, data="email=dora@example.com",
                             headers={**cookie, "Origin": chatd.url,
                                      "Content-Type": "application/x-www-form-urlencoded"}) as r:
            refused.append(((r.status, await r.json()), 403, "forbidden"))
    for (status, body), want, code in refused:
        assert status == want and body["error"]["code"] == code, body
    assert len(await chat.messages()) > 0

    status, body = await post(chatd, who, {**cookie, "Origin": chatd.url})
    assert status == 200, body
    assert await chat.messages() == []


async def test_bad_requests_and_unknown_customers_change_nothing(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    chat = await open_chat(chatd, name="Eve")
    await upload_and_end(chat)
    token = await lead(chatd)
    for body, status, code in [
        ({}, 400, "bad_request"),
        ({"email": "eve@example.com", "customer_id": "x"}, 400, "bad_request"),
        ({"email": "eve"}, 400, "bad_request"),
        ({"email": "eve@example.com", "force": "yes"}, 400, "bad_request"),
        ({"email": "eve@example.com", "everything": True}, 400, "bad_request"),
        ({"email": "nobody@example.com"}, 404, "not_found"),
        ({"customer_id": "guest:nobody"}, 404, "not_found"),
    ]:
        got, answer = await post(chatd, body, bearer(token))
        assert (got, answer["error"]["code"]) == (status, code), (body, answer)
    assert len(await chat.messages()) > 0
    assert await chatd.app[keys.STORE].list_erasures() == []
