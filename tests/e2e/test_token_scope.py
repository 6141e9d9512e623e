"""What a credential is good for: a resume token opens its own chat and nothing else, and the
console's login cookie works on /engineer only from chatd's own pages (docs/security.md)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
import socketio

from tests.e2e.helpers import call, customer_jwt, engineer, start_chat

WIDGET_ORIGIN = "https://app.vendor.example"


async def test_an_ended_chats_resume_token_opens_no_new_chat(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    eng, eng_in = await engineer(chatd, "alex@example.com")
    cust = await chatd.client("/customer", {"token": customer_jwt("acme-7", tier="premier")})
    sid, resume = await start_chat(chatd, eng, eng_in, cust)
    assert (await call(cust, "/customer", "session:end", {"session_id": sid}))["ok"]
    await cust.disconnect()

    # Later, the token alone (the customer's token long expired): the old chat reads back...
    later = await chatd.client("/customer", {"session_id": sid, "resume_token": resume})
    back = await call(later, "/customer", "session:resume",
                      {"session_id": sid, "resume_token": resume})
    assert back["ok"] and back["session"]["state"] == "ended", back
    # ...but it is nobody's identity for a new chat.
    r = await call(later, "/customer", "chat:request", {"topic": "as premier, please"})
    assert r["ok"] is False and r["error"]["code"] == "unauthorized", r
    assert "customer token or guest details" in r["error"]["message"]
    snapshot = await call(eng, "/engineer", "queue:snapshot", {})
    assert snapshot["queue"] == [] and snapshot["offers"] == []


async def test_an_open_chats_resume_token_acts_on_that_chat_only(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    alex, alex_in = await engineer(chatd, "alex@example.com")
    token = customer_jwt("acme-7")
    # An ended chat of the customer, whose token leaked...
    first = await chatd.client("/customer", {"token": token})
    old_sid, old_resume = await start_chat(chatd, alex, alex_in, first, topic="old")
    assert (await call(first, "/customer", "session:end", {"session_id": old_sid}))["ok"]
    # ...and the chat they have open now, from their customer token.
    current = await chatd.client("/customer", {"token": token})
    sid, resume = await start_chat(chatd, alex, alex_in, current, topic="now")

    for creds in ({"session_id": old_sid, "resume_token": old_resume},
                  {"session_id": sid, "resume_token": resume}):
        holder = await chatd.client("/customer", creds)
        r = await call(holder, "/customer", "chat:request", {"topic": "another"})
        assert r["ok"] is False and r["error"]["code"] == "unauthorized", (creds, r)
        if creds["session_id"] == sid:
            continue
        for event, data in [
            ("message:send", {"session_id": sid, "client_msg_id": "x", "body": "hijack"}),
            ("typing", {"session_id": sid, "typing": True}),
            ("message:read", {"session_id": sid, "seq": 1}),
            ("escalation:request", {"session_id": sid, "kind": "phone", "phone": "+1 555 0100"}),
            ("session:end", {"session_id": sid}),
        ]:
            r = await call(holder, "/customer", event, data)
            assert r["ok"] is False and r["error"]["code"] == "unauthorized", (event, r)

    # The open chat's own token still does everything in its chat.
    own = await chatd.client("/customer", {"session_id": sid, "resume_token": resume})
    sent = await call(own, "/customer", "message:send",
                      {"session_id": sid, "client_msg_id": "mine", "body": "still here"})
    assert sent["ok"], sent
    history = await call(alex, "/engineer", "session:resume", {"session_id": sid})
    assert history["session"]["state"] == "active"
    bodies = [m["body"] for m in history["messages"]]
    assert "still here" in bodies and "hijack" not in bodies
    assert not any((m.get("event") or {}).get("type") == "escalation"
                   for m in history["messages"])


async def test_a_new_chat_needs_the_customer_token_or_guest_details_again(
    chatd_factory: Any,
) -> None:
    """What the widget does after a chat ends: it connects again with its customer token."""
    chatd = await chatd_factory()
    eng, eng_in = await engineer(chatd, "alex@example.com")
    token = customer_jwt("acme-7")
    cust = await chatd.client("/customer", {"token": token})
    sid, resume = await start_chat(chatd, eng, eng_in, cust)
    assert (await call(cust, "/customer", "session:end", {"session_id": sid}))["ok"]
    again = await chatd.client("/customer",
                               {"token": token, "session_id": sid, "resume_token": resume})
    r = await call(again, "/customer", "chat:request", {"topic": "next question"})
    assert r["ok"] and r["session"]["customer"]["id"] == "acme-7", r


# ---------------------------------------------------------------- the console's cookie


async def _engineer_connect(chatd: Any, auth: dict[str, Any] | None,
                            headers: dict[str, str]) -> str | None:
    """Connect to /engineer: None when accepted, else the refusal the server sent."""
    # Headers as given: the client's cookie jar would keep a cookie away from 127.0.0.1.
    c = socketio.AsyncClient(reconnection=False,
                             websocket_extra_options={"headers": dict(headers)})
    reasons: list[Any] = []

    @c.on("connect_error", namespace="/engineer")
    async def _error(data: Any) -> None:
        reasons.append(data)

    try:
        await c.connect(chatd.url, namespaces=["/engineer"], auth=auth,
                        transports=["websocket"], wait_timeout=5)
    except socketio.exceptions.ConnectionError:
        await c.disconnect()
        return str(reasons) or "refused"
    await c.disconnect()
    return None


@pytest.fixture
async def console(chatd_factory: Any) -> tuple[Any, str]:
    chatd = await chatd_factory(allowed_origins=(WIDGET_ORIGIN,),
                                public_url="https://chat.vendor.example")
    await chatd.add_engineer("lee@example.com")
    return chatd, await chatd.login("lee@example.com")


async def test_the_cookie_is_refused_from_a_widget_origin(console: tuple[Any, str]) -> None:
    chatd, token = console
    cookie = {"Cookie": f"chatd_token={token}"}
    refusal = await _engineer_connect(chatd, None, {**cookie, "Origin": WIDGET_ORIGIN})
    assert refusal is not None and "unauthorized" in refusal
    watching = await _engineer_connect(chatd, {"watch": True},
                                       {**cookie, "Origin": WIDGET_ORIGIN})
    assert watching is not None and "unauthorized" in watching
    # A cross-site request without Origin is no better.
    assert await _engineer_connect(chatd, None, {**cookie, "Sec-Fetch-Site": "same-site"})
    # The token sent explicitly works from anywhere the origins allow.
    assert await _engineer_connect(chatd, {"token": token}, {"Origin": WIDGET_ORIGIN}) is None


async def test_the_cookie_works_from_chatds_own_origin_and_outside_browsers(
    console: tuple[Any, str],
) -> None:
    chatd, token = console
    cookie = {"Cookie": f"chatd_token={token}"}
    assert await _engineer_connect(chatd, None, cookie) is None
    assert await _engineer_connect(
        chatd, None, {**cookie, "Sec-Fetch-Site": "same-origin"}
    ) is None
    assert await _engineer_connect(
        chatd, None, {**cookie, "Origin": "https://chat.vendor.example"}
    ) is None
    assert await _engineer_connect(
        chatd, {"watch": True}, {**cookie, "Origin": "https://chat.vendor.example"}
    ) is None


async def test_the_cookie_works_from_the_request_host_without_a_public_url(
    chatd_factory: Any,
) -> None:
    chatd = await chatd_factory(allowed_origins=(WIDGET_ORIGIN,))
    await chatd.add_engineer("lee@example.com")
    token = await chatd.login("lee@example.com")
    cookie = {"Cookie": f"chatd_token={token}"}
    assert await _engineer_connect(chatd, None, {**cookie, "Origin": chatd.url}) is None
    refusal = await _engineer_connect(chatd, None, {**cookie, "Origin": WIDGET_ORIGIN})
    assert refusal is not None and "unauthorized" in refusal


async def test_the_polling_handshake_allows_no_credentials_cross_origin(
    chatd_factory: Any,
) -> None:
    chatd = await chatd_factory(allowed_origins=(WIDGET_ORIGIN,))
    async with aiohttp.ClientSession() as http:
        async with http.get(chatd.url + "/socket.io/?EIO=4&transport=polling",
                            headers={"Origin": WIDGET_ORIGIN}) as r:
            assert r.status == 200
            # The widget still gets its answer across origins, without credentials.
            assert r.headers.get("Access-Control-Allow-Origin") == WIDGET_ORIGIN
            assert r.headers.get("Access-Control-Allow-Credentials", "").lower() != "true"
        async with http.options(chatd.url + "/socket.io/?EIO=4&transport=polling",
                                headers={"Origin": WIDGET_ORIGIN,
                                         "Access-Control-Request-Method": "POST"}) as r:
            assert r.headers.get("Access-Control-Allow-Credentials", "").lower() != "true"
