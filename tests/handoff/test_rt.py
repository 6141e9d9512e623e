"""Real chats become real Request Tracker 5 tickets, exactly one per session."""

from __future__ import annotations

import base64
import io
import re
from typing import Any

import aiohttp

from chatd.web import keys
from tests.conftest import Chatd
from tests.e2e.helpers import Inbox, call, customer_jwt, engineer
from tests.handoff.conftest import RTProxy, RTServer, eventually

LOG = b"".join(b"2027-01-15 08:00:%02d ERROR export failed: disk quota\n" % i for i in range(40))


def png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 6), (10, 120, 200)).save(out, format="PNG")
    return out.getvalue()


def rt_settings(rt: RTServer, url: str | None = None, **more: Any) -> dict[str, Any]:
    return {
        "handoff_backends": ("rt",),
        "handoff_rt_url": url or rt.url,
        "handoff_rt_queue": rt.queue,
        "handoff_rt_token": rt.token,
        "handoff_rt_custom_field": rt.custom_field,
        "handoff_retry_base_seconds": 0.05,
        "handoff_retry_max_seconds": 0.3,
        "public_url": "https://chat.example.com",
        **more,
    }


async def upload(chatd: Chatd, sid: str, resume: str, name: str, data: bytes,
                 ctype: str) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type=ctype)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{chatd.url}/api/sessions/{sid}/attachments", data=form,
                             headers={"Authorization": f"Bearer {resume}"}) as r:
            assert r.status == 201, await r.text()
            return dict((await r.json())["attachment"])


async def chat_with_files(chatd: Chatd, email: str) -> tuple[str, Inbox, dict[str, Any]]:
    """A customer asks for help (severity 2), shares a screenshot and a log, and ends."""
    eng, eng_in = await engineer(chatd, "alex@example.com", name="Alex")
    cust = await chatd.client("/customer", {"token": customer_jwt(
        sub=f"sub-{email}", name="Dana Doe", email=email, account="Client Corp")})
    cust_in = Inbox(cust, "/customer")
    r = await call(cust, "/customer", "chat:request", {
        "topic": "Export fails", "severity": 2, "message": "The nightly export fails",
        "client_msg_id": "c0"})
    assert r["ok"], r
    sid, resume = r["session"]["id"], r["resume_token"]
    await eng_in.wait_for("offer:new", lambda d: d["session_id"] == sid)
    assert (await call(eng, "/engineer", "offer:accept", {"session_id": sid}))["ok"]
    files = {
        "png": await upload(chatd, sid, resume, "screen.png", png(), "image/png"),
        "log": await upload(chatd, sid, resume, "export.log", LOG, "text/plain"),
    }
    await call(eng, "/engineer", "message:send", {
        "session_id": sid, "client_msg_id": "e1", "body": "Your disk quota is full"})
    assert (await call(cust, "/customer", "session:end", {"session_id": sid}))["ok"]
    return sid, cust_in, files


async def test_a_real_chat_becomes_one_rt_ticket_with_everything(
    chatd_factory: Any, rt_server: RTServer
) -> None:
    chatd = await chatd_factory(**rt_settings(rt_server))
    sid, cust_in, files = await chat_with_files(chatd, "dana@client.example")
    ended = await cust_in.wait_for("session:ended", lambda d: "ticket" in d, timeout=30)
    ticket = ended["ticket"]
    assert ticket["backend"] == "rt"
    assert ticket["url"] == f"{rt_server.url}/Ticket/Display.html?id={ticket['id']}"

    (found,) = await rt_server.tickets_for(sid)
    assert found["id"] == ticket["id"]
    t = await rt_server.get(f"/ticket/{ticket['id']}")
    assert [r["id"] for r in t["Requestor"]] == ["dana@client.example"]
    assert t["Priority"] == "75"  # severity 2, high
    assert t["Queue"]["id"] == "1"  # General
    assert t["Subject"] == f"Export fails (Dana Doe, Client Corp) [chatd:{sid}]"
    assert [cf["values"] for cf in t["CustomFields"] if cf["name"] == rt_server.custom_field] \
        == [[sid]]

    parts = await rt_server.create_transaction_attachments(ticket["id"])
    by_name = {p["Filename"]: p for p in parts if p.get("Filename")}
    text_parts = [base64.b64decode(p["Content"]).decode() for p in parts
                  if p["ContentType"] == "text/plain" and not p.get("Filename")]
    assert text_parts, parts
    body = text_parts[0]
    assert body.startswith("Chat transcript: Export fails")
    assert re.search(r"^Customer: +Dana Doe <dana@client.example>$", body, re.M)
    assert re.search(r"^Severity: +2 \(high\)$", body, re.M)
    assert "Dana Doe (customer): The nightly export fails" in body
    assert "Alex (engineer): Your disk quota is full" in body
    assert f"https://chat.example.com/api/attachments/{files['log']['id']}" in body
    assert base64.b64decode(by_name["screen.png"]["Content"]) == png()
    assert by_name["screen.png"]["ContentType"] == "image/png"
    assert base64.b64decode(by_name["export.log"]["Content"]) == LOG

    session = await chatd.app[keys.STORE].get_session(sid)
    assert session is not None and session.ticket == ticket


async def test_files_over_the_budget_are_linked_and_basic_auth_works(
    chatd_factory: Any, rt_server: RTServer
) -> None:
    budget = len(png()) + 100  # room for the screenshot, not for the log
    chatd = await chatd_factory(**rt_settings(
        rt_server, handoff_rt_token="", handoff_rt_user=rt_server.user,
        handoff_rt_password=rt_server.password, handoff_rt_custom_field="",
        handoff_rt_attachment_budget=budget))
    sid, cust_in, files = await chat_with_files(chatd, "erin@client.example")
    ended = await cust_in.wait_for("session:ended", lambda d: "ticket" in d, timeout=30)
    (found,) = await rt_server.tickets_for(sid)
    assert found["id"] == ended["ticket"]["id"]
    parts = await rt_server.create_transaction_attachments(found["id"])
    names = sorted(p["Filename"] for p in parts if p.get("Filename"))
    assert names == ["screen.png"]
    body = next(base64.b64decode(p["Content"]).decode() for p in parts
                if p["ContentType"] == "text/plain" and not p.get("Filename"))
    assert "Not attached (over the size budget or unavailable); download:" in body
    assert (f"- export.log: https://chat.example.com/api/attachments/{files['log']['id']}"
            in body)


async def test_a_lost_answer_does_not_file_a_second_ticket(
    chatd_factory: Any, rt_server: RTServer, rt_proxy: RTProxy
) -> None:
    rt_proxy.lose = 1  # RT creates the ticket, chatd hears 502
    chatd = await chatd_factory(**rt_settings(rt_server, url=rt_proxy.url,
                                              handoff_rt_custom_field=""))
    eng, eng_in = await engineer(chatd, "alex@example.com", name="Alex")
    cust = await chatd.client("/customer", {"token": customer_jwt(
        sub="sub-fay", name="Fay", email="fay@client.example")})
    r = await call(cust, "/customer", "chat:request", {"topic": "Slow reports", "severity": 4})
    sid = r["session"]["id"]
    await eng_in.wait_for("offer:new", lambda d: d["session_id"] == sid)
    await call(eng, "/engineer", "offer:accept", {"session_id": sid})
    await call(eng, "/engineer", "session:end", {"session_id": sid})

    async def delivered() -> Any:
        (row,) = await chatd.app[keys.STORE].session_handoffs(sid)
        return row if row.state == "delivered" else None

    row = await eventually(delivered)
    assert row.attempts == 2 and "exists already" in (row.result or "")
    assert rt_proxy.creations == 1
    (found,) = await rt_server.tickets_for(sid)
    t = await rt_server.get(f"/ticket/{found['id']}")
    assert t["Priority"] == "25"  # severity 4, low
    assert row.ticket is not None and row.ticket["id"] == found["id"]
