"""Resume tokens over real sockets and HTTP: a closed chat's token works for
``resume_token_ttl_seconds`` after the close, then nowhere; and a resume token authorises
its own chat only, never a ticket or another chat (docs/protocol.md, docs/security.md)."""

from __future__ import annotations

import io
from typing import Any

import aiohttp
import pytest
import socketio

from chatd.core.clock import FakeClock
from tests.conftest import Chatd
from tests.e2e.helpers import call, customer_jwt, engineer, guest, start_chat

TTL = 3600.0


def png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (4, 3), (20, 120, 200)).save(out, format="PNG")
    return out.getvalue()


async def http(chatd: Chatd, method: str, path: str, token: str, **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s:
        async with s.request(method, chatd.url + path,
                             headers={"Authorization": f"Bearer {token}"}, **kw) as r:
            body = await r.json() if r.content_type == "application/json" else await r.read()
            return r.status, body


async def upload(chatd: Chatd, sid: str, token: str) -> tuple[int, Any]:
    form = aiohttp.FormData()
    form.add_field("file", png(), filename="screen.png", content_type="image/png")
    return await http(chatd, "POST", f"/api/sessions/{sid}/attachments", token, data=form)


async def refused(chatd: Chatd, auth: dict[str, Any]) -> dict[str, Any]:
    """Connect to /customer and expect a refusal: the {code, message} it came with."""
    c = socketio.AsyncClient(reconnection=False)
    reasons: list[Any] = []

    @c.on("connect_error", namespace="/customer")
    async def _err(data: Any) -> None:
        reasons.append(data)

    with pytest.raises(socketio.exceptions.ConnectionError):
        await c.connect(chatd.url, namespaces=["/customer"], auth=auth,
                        transports=["websocket"], wait_timeout=5)
    await c.disconnect()
    assert reasons and isinstance(reasons[0], dict), reasons
    return dict(reasons[0]["data"])


async def test_an_ended_chat_token_works_for_its_lifetime_then_nowhere(
    chatd_factory: Any,
) -> None:
    clock = FakeClock()
    chatd = await chatd_factory(clock=clock, resume_token_ttl_seconds=TTL)
    eng, eng_in = await engineer(chatd, "alex@example.com", name="Alex")
    cust, _ = await guest(chatd, "Carol")
    sid, resume = await start_chat(chatd, eng, eng_in, cust)
    await call(cust, "/customer", "message:send",
               {"session_id": sid, "client_msg_id": "c1", "body": "it crashes on start"})
    status, body = await upload(chatd, sid, resume)
    assert status == 201, body
    att = body["attachment"]["id"]
    assert (await call(eng, "/engineer", "session:end", {"session_id": sid}))["ok"]
    await cust.disconnect()

    # Within the lifetime: the ended chat comes back with its history, over every path.
    clock.advance(TTL - 1)
    back = await chatd.client("/customer", {"session_id": sid, "resume_token": resume})
    r = await call(back, "/customer", "session:resume",
                   {"session_id": sid, "resume_token": resume, "after_seq": 0})
    assert r["ok"] and r["session"]["state"] == "ended", r
    assert "it crashes on start" in [m["body"] for m in r["messages"]]
    assert (await http(chatd, "GET", f"/api/sessions/{sid}/transcript", resume))[0] == 200
    assert (await http(chatd, "GET", f"/api/attachments/{att}", resume))[0] == 200

    # Past it: refused as unauthorized, saying the token expired, wherever it is shown.
    clock.advance(1)
    err = await refused(chatd, {"session_id": sid, "resume_token": resume})
    assert err["code"] == "unauthorized" and "expired" in err["message"], err
    r = await call(back, "/customer", "session:resume",
                   {"session_id": sid, "resume_token": resume, "after_seq": 0})
    assert not r["ok"] and r["error"]["code"] == "unauthorized", r
    assert "expired" in r["error"]["message"]
    for method, path in (
        ("GET", f"/api/sessions/{sid}/transcript"),
        ("GET", f"/api/sessions/{sid}/transcript?format=html"),
        ("GET", f"/api/attachments/{att}"),
        ("GET", f"/api/attachments/{att}/thumbnail"),
    ):
        status, body = await http(chatd, method, path, resume)
        assert status == 401, (path, status, body)
        assert body["error"]["code"] == "unauthorized" and "expired" in body["error"]["message"]
    status, body = await upload(chatd, sid, resume)
    assert status == 401 and "expired" in body["error"]["message"], body
    # A token that never matched still learns nothing about the attachment.
    assert (await http(chatd, "GET", f"/api/attachments/{att}", "made-up-token"))[0] == 404


async def test_an_open_chat_token_does_not_expire(chatd_factory: Any) -> None:
    clock = FakeClock()
    chatd = await chatd_factory(clock=clock, resume_token_ttl_seconds=TTL)
    cust, _ = await guest(chatd, "Carol")
    r = await call(cust, "/customer", "chat:request", {"topic": "Cannot log in"})
    sid, resume = r["session"]["id"], r["resume_token"]
    clock.advance(10 * TTL)  # still waiting: the desk does not tick on this clock here
    back = await chatd.client("/customer", {"session_id": sid, "resume_token": resume})
    r = await call(back, "/customer", "session:resume",
                   {"session_id": sid, "resume_token": resume, "after_seq": 0})
    assert r["ok"] and r["session"]["state"] == "waiting", r


async def _queued_with_file(chatd: Chatd, cust: socketio.AsyncClient) -> tuple[str, str, str]:
    r = await call(cust, "/customer", "chat:request", {"topic": "Crash on start"})
    assert r["ok"], r
    sid, resume = r["session"]["id"], r["resume_token"]
    status, body = await upload(chatd, sid, resume)
    assert status == 201, body
    return sid, resume, str(body["attachment"]["id"])


async def test_a_resume_token_alone_does_not_open_a_ticket(chatd_factory: Any) -> None:
    chatd = await chatd_factory(allow_guests=False)
    token = customer_jwt(sub="cust-7", tier="premier")
    cust = await chatd.client("/customer", {"token": token})
    sid, resume, att = await _queued_with_file(chatd, cust)
    ticket = {"topic": "Crash on start", "description": "see screenshot",
              "attachments": [att], "session_id": sid, "resume_token": resume}
    async with aiohttp.ClientSession() as s:
        async with s.post(chatd.url + "/api/tickets", json=ticket) as r:
            assert r.status == 401, await r.text()
            assert (await r.json())["error"]["code"] == "unauthorized"
        # With the customer's JWT it is theirs, and the chat's file goes with it.
        async with s.post(chatd.url + "/api/tickets", json=ticket,
                          headers={"Authorization": f"Bearer {token}"}) as r:
            body = await r.json()
            assert r.status == 201, body
            assert body["session"]["customer"]["tier"] == "premier"
        # Someone else's JWT cannot use this chat's token to take its files.
        other = customer_jwt(sub="cust-8")
        async with s.post(chatd.url + "/api/tickets", json=ticket,
                          headers={"Authorization": f"Bearer {other}"}) as r:
            assert r.status == 401, await r.text()


async def test_a_guest_ticket_needs_guest_details_and_may_carry_its_chat_files(
    chatd_factory: Any,
) -> None:
    chatd = await chatd_factory()
    cust, _ = await guest(chatd, "Gus")
    sid, resume, att = await _queued_with_file(chatd, cust)
    ticket: dict[str, Any] = {"topic": "Crash on start", "description": "see screenshot",
                              "attachments": [att], "session_id": sid, "resume_token": resume}
    async with aiohttp.ClientSession() as s:
        async with s.post(chatd.url + "/api/tickets", json=ticket) as r:
            assert r.status == 401, await r.text()
        ticket["guest"] = {"name": "Gus", "email": "gus@ex.com"}
        async with s.post(chatd.url + "/api/tickets", json=ticket) as r:
            body = await r.json()
            assert r.status == 201, body
            assert body["session"]["customer"]["tier"] == "standard"


async def test_a_resume_token_uploads_to_its_own_chat_only(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    ann, _ = await guest(chatd, "Ann")
    bob, _ = await guest(chatd, "Bob")
    r = await call(ann, "/customer", "chat:request", {"topic": "mine"})
    ann_resume = r["resume_token"]
    r = await call(bob, "/customer", "chat:request", {"topic": "his"})
    bob_sid = r["session"]["id"]
    status, body = await upload(chatd, bob_sid, ann_resume)
    assert status == 401 and body["error"]["code"] == "unauthorized", body
    bob_back = await call(bob, "/customer", "session:resume",
                          {"session_id": bob_sid, "resume_token": r["resume_token"],
                           "after_seq": 0})
    assert bob_back["ok"] and bob_back["messages"] == [], bob_back
