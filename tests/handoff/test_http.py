"""GET /api/sessions/{id}/transcript and POST /api/tickets over real HTTP."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import aiohttp

from chatd.core.models import Role
from chatd.web import keys
from tests.conftest import Chatd
from tests.e2e.helpers import call, customer_jwt, engineer, guest, start_chat
from tests.handoff.conftest import eventually


def png(size: tuple[int, int] = (4, 3)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


async def get(chatd: Chatd, path: str, token: str | None = None) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http:
        async with http.get(chatd.url + path, headers=headers) as r:
            return r.status, r.headers, await r.read()


async def post(chatd: Chatd, path: str, body: Any, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http:
        async with http.post(chatd.url + path, json=body, headers=headers) as r:
            return r.status, await r.json()


async def test_transcript_for_participants_and_leads_only(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    eng, eng_in = await engineer(chatd, "alex@example.com", name="Alex")
    cust, _ = await guest(chatd, "Carol")
    sid, resume = await start_chat(chatd, eng, eng_in, cust)
    await call(cust, "/customer", "message:send",
               {"session_id": sid, "client_msg_id": "c1", "body": "<script>alert(1)</script>"})
    await call(eng, "/engineer", "session:end", {"session_id": sid})
    alex = await chatd.login("alex@example.com")
    await chatd.add_engineer("lee@example.com", name="Lee", role=Role.LEAD)
    lead = await chatd.login("lee@example.com")
    await chatd.add_engineer("sam@example.com", name="Sam")
    other = await chatd.login("sam@example.com")
    path = f"/api/sessions/{sid}/transcript"

    for token in (alex, lead, resume):
        status, _, body = await get(chatd, path, token)
        assert status == 200
        doc = json.loads(body)
        assert doc["session"]["id"] == sid and doc["engineers"][0]["name"] == "Alex"
    status, headers, body = await get(chatd, path + "?format=text", resume)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert body.decode().startswith("Chat transcript: Cannot log in")
    status, headers, body = await get(chatd, path + "?format=html&download=1", alex)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["Content-Disposition"] == f'attachment; filename="chat-{sid}.html"'
    assert b"<script>" not in body and b"&lt;script&gt;alert(1)&lt;/script&gt;" in body

    assert (await get(chatd, path, other))[0] == 403
    assert (await get(chatd, path, "not-a-resume-token"))[0] == 401
    assert (await get(chatd, path))[0] == 401
    assert (await get(chatd, path + "?format=pdf", alex))[0] == 400
    missing = "/api/sessions/00000000-0000-4000-8000-000000000000/transcript"
    assert (await get(chatd, missing, lead))[0] == 404


async def test_offline_ticket_by_jwt_goes_through_the_outbox(
    chatd_factory: Any, tmp_path: Path
) -> None:
    chatd = await chatd_factory()
    token = customer_jwt(sub="cust-9", name="Dana", email="dana@client.example")
    status, body = await post(chatd, "/api/tickets", {
        "topic": "Licence server down", "severity": 1,
        "description": "Nobody can start the app since 9:00",
    }, token)
    assert status == 201, body
    sid = body["session"]["id"]
    assert body["session"]["customer"]["email"] == "dana@client.example"
    assert [h["backend"] for h in body["handoffs"]] == ["file"]
    written = tmp_path / "handoff" / f"{sid}.json"
    await eventually(lambda: _exists(written))
    doc = json.loads(written.read_text())
    assert doc["kind"] == "offline" and doc["session"]["severity"] == 1
    assert doc["messages"][0]["body"] == "Nobody can start the app since 9:00"
    # The customer can read their ticket's transcript with the token they got back.
    status, _, text = await get(chatd, f"/api/sessions/{sid}/transcript?format=text",
                                body["resume_token"])
    assert status == 200 and text.decode().startswith("Ticket left without a chat")


async def _exists(path: Path) -> bool:
    return path.exists()


async def test_offline_ticket_carries_files_uploaded_while_queued(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    cust, _ = await guest(chatd, "Gus")
    r = await call(cust, "/customer", "chat:request", {"topic": "Crash on start"})
    sid, resume = r["session"]["id"], r["resume_token"]
    form = aiohttp.FormData()
    form.add_field("file", png(), filename="screen.png", content_type="image/png")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{chatd.url}/api/sessions/{sid}/attachments", data=form,
                             headers={"Authorization": f"Bearer {resume}"}) as up:
            assert up.status == 201, await up.text()
            attachment = (await up.json())["attachment"]
    # The chat's resume token lets its files go with the ticket; who leaves the ticket is
    # said again (a resume token is not an identity).
    ticket = {"topic": "Crash on start", "description": "see screenshot",
              "attachments": [attachment["id"]], "session_id": sid, "resume_token": resume,
              "guest": {"name": "Gus", "email": "gus@ex.com"}}
    status, body = await post(chatd, "/api/tickets", ticket)
    assert status == 201, body
    assert body["session"]["customer"]["name"] == "Gus"
    doc = await chatd.app[keys.STORE].messages_after(body["session"]["id"], 0, 10)
    assert [m.kind.value for m in doc] == ["text", "attachment"]
    assert doc[1].attachment is not None and doc[1].attachment["sha256"] == attachment["sha256"]

    # Someone else cannot borrow the file by its id.
    stranger = customer_jwt(sub="cust-other")
    status, body = await post(chatd, "/api/tickets", {
        "topic": "x", "description": "y", "attachments": [attachment["id"]]}, stranger)
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_offline_ticket_identity_rules(chatd_factory: Any) -> None:
    chatd = await chatd_factory(allow_guests=False)
    ticket = {"topic": "t", "description": "d", "guest": {"name": "G", "email": "g@x.io"}}
    status, body = await post(chatd, "/api/tickets", ticket)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body = await post(chatd, "/api/tickets", {"topic": "t", "description": "d"},
                              "not.a.jwt")
    assert status == 401
    status, body = await post(chatd, "/api/tickets", {"topic": "t", "description": ""},
                              customer_jwt())
    assert status == 400 and body["error"]["code"] == "bad_request"


async def test_the_handoff_goes_out_as_the_chat_ends_not_at_the_next_poll(
    chatd_factory: Any,
) -> None:
    import asyncio
    import time

    from chatd.handoff.service import HANDOFF

    chatd = await chatd_factory()
    worker = chatd.app[HANDOFF].worker
    worker.poll_interval = 3600.0  # it would not look again for an hour by itself
    await asyncio.sleep(1.2)  # past the wait it was in, now in the long one
    eng, eng_in = await engineer(chatd, "alex@example.com", name="Alex")
    cust, _ = await guest(chatd, "Carol")
    sid, _ = await start_chat(chatd, eng, eng_in, cust)
    ended_at = time.monotonic()
    await call(eng, "/engineer", "session:end", {"session_id": sid})
    store = chatd.app[keys.STORE]

    async def delivered() -> bool:
        rows = await store.session_handoffs(sid)
        return bool(rows) and all(r.state == "delivered" for r in rows)

    await eventually(delivered, timeout=10)
    assert time.monotonic() - ended_at < 5
