"""Refusals: bad credentials at connect, other people's sessions, origins, revocation."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
import socketio

from chatd.web import keys
from tests.e2e.helpers import call, customer_jwt, engineer, guest, start_chat


async def refused(chatd: Any, ns: str, auth: Any, **kw: Any) -> str:
    """Connect and expect a refusal; returns the connect_error data the server sent."""
    c = socketio.AsyncClient(reconnection=False)
    reasons: list[Any] = []

    @c.on("connect_error", namespace=ns)
    async def _error(data: Any) -> None:
        reasons.append(data)

    with pytest.raises(socketio.exceptions.ConnectionError):
        await c.connect(chatd.url, namespaces=[ns], auth=auth, transports=["websocket"],
                        wait_timeout=5, **kw)
    await c.disconnect()
    return str(reasons)


@pytest.mark.parametrize(
    "token",
    [
        customer_jwt(secret="another-secret-of-sufficient-length-000"),
        customer_jwt(exp=time.time() - 3600),
        customer_jwt(tier=None),
        customer_jwt(tier="platinum"),
        customer_jwt(sub="guest:spoof"),
        "not.a.jwt",
    ],
    ids=["forged", "expired", "no-tier", "bad-tier", "reserved-sub", "garbage"],
)
async def test_bad_customer_tokens_are_refused_at_connect(chatd_factory: Any, token: str) -> None:
    chatd = await chatd_factory()
    message = await refused(chatd, "/customer", {"token": token})
    assert "unauthorized" in message


async def test_signed_customer_is_connected_with_the_claims(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    c = await chatd.client("/customer", {"token": customer_jwt("acme-7", tier="concierge")})
    r = await call(c, "/customer", "chat:request", {"topic": "Billing", "severity": 1})
    assert r["session"]["customer"] == {
        "id": "acme-7", "name": "Carol Customer", "email": "carol@client.example",
        "account": "Client Corp", "tier": "concierge",
    }


async def test_guests_are_refused_when_not_allowed(chatd_factory: Any) -> None:
    chatd = await chatd_factory(allow_guests=False)
    message = await refused(chatd, "/customer", {"guest": {"name": "G", "email": "g@x.io"}})
    assert "guests are not allowed" in message


async def test_engineer_needs_a_live_token(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    assert "unauthorized" in await refused(chatd, "/engineer", {"token": "made-up"})
    assert "unauthorized" in await refused(chatd, "/engineer", None)


async def test_wrong_resume_token_is_refused(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    cust, _ = await guest(chatd)
    r = await call(cust, "/customer", "chat:request", {"topic": "x"})
    sid = r["session"]["id"]
    assert "unauthorized" in await refused(
        chatd, "/customer", {"session_id": sid, "resume_token": "wrong"}
    )
    other, _ = await guest(chatd, "Mallory")
    bad = await call(other, "/customer", "session:resume",
                     {"session_id": sid, "resume_token": "wrong", "after_seq": 0})
    assert bad["error"]["code"] == "unauthorized"


async def test_customer_cannot_touch_another_customers_session(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    eng, eng_in = await engineer(chatd, "alex@example.com")
    victim, victim_in = await guest(chatd, "Victim")
    sid, _ = await start_chat(chatd, eng, eng_in, victim)
    mallory, _ = await guest(chatd, "Mallory")
    for event, data in [
        ("message:send", {"session_id": sid, "client_msg_id": "x", "body": "hijack"}),
        ("typing", {"session_id": sid, "typing": True}),
        ("message:read", {"session_id": sid, "seq": 1}),
        ("escalation:request", {"session_id": sid, "kind": "screen_share"}),
        ("session:end", {"session_id": sid}),
    ]:
        r = await call(mallory, "/customer", event, data)
        assert r["ok"] is False and r["error"]["code"] == "not_found", (event, r)
    history = await call(eng, "/engineer", "session:resume", {"session_id": sid})
    assert history["session"]["state"] == "active"
    assert all(m["body"] != "hijack" for m in history["messages"])


async def test_engineer_cannot_touch_a_session_of_another_engineer(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    alex, alex_in = await engineer(chatd, "alex@example.com")
    cust, _ = await guest(chatd)
    sid, _ = await start_chat(chatd, alex, alex_in, cust)
    bo, _ = await engineer(chatd, "bo@example.com", available=False)
    for event, data in [
        ("message:send", {"session_id": sid, "client_msg_id": "x", "body": "hi"}),
        ("session:resume", {"session_id": sid}),
        ("session:end", {"session_id": sid}),
        ("offer:accept", {"session_id": sid}),
    ]:
        r = await call(bo, "/engineer", event, data)
        assert r["ok"] is False and r["error"]["code"] in ("forbidden", "conflict"), (event, r)
    from chatd.core.models import Role

    lead, _ = await engineer(chatd, "lee@example.com", available=False, role=Role.LEAD)
    r = await call(lead, "/engineer", "session:resume", {"session_id": sid})
    assert r["ok"] and r["session"]["id"] == sid


async def test_foreign_origins_are_refused_and_listed_ones_allowed(chatd_factory: Any) -> None:
    chatd = await chatd_factory(allowed_origins=("https://app.vendor.example",))
    auth = {"guest": {"name": "G", "email": "g@x.io"}}
    await refused(chatd, "/customer", auth, headers={"Origin": "https://evil.example"})
    ok = socketio.AsyncClient(reconnection=False)
    await ok.connect(chatd.url, namespaces=["/customer"], auth=auth, transports=["websocket"],
                     headers={"Origin": "https://app.vendor.example"}, wait_timeout=5)
    assert ok.connected
    await ok.disconnect()


async def test_logout_and_disable_close_live_engineer_sockets(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    await chatd.add_engineer("alex@example.com")
    token = await chatd.login("alex@example.com")
    first = await chatd.client("/engineer", {"token": token})
    async with aiohttp.ClientSession() as http:
        async with http.post(chatd.url + "/api/logout",
                             headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200
        for _ in range(50):
            if not first.connected:
                break
            await asyncio.sleep(0.1)
        assert not first.connected
        async with http.get(chatd.url + "/api/me",
                            headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 401

    token2 = await chatd.login("alex@example.com")
    second = await chatd.client("/engineer", {"token": token2})
    # Disabling from the command line happens in another process: only the database changes.
    assert await chatd.app[keys.STORE].set_engineer_disabled("alex@example.com", True)
    for _ in range(60):  # the server re-checks live tokens every 2 s
        if not second.connected:
            break
        await asyncio.sleep(0.1)
    assert not second.connected
    async with aiohttp.ClientSession() as http:
        async with http.post(chatd.url + "/api/login", json={
            "email": "alex@example.com", "password": "correct horse battery"}) as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == "unauthorized"


async def test_message_rate_limit_answers_rate_limited(chatd_factory: Any) -> None:
    chatd = await chatd_factory(message_rate=1.0, message_burst=3)
    eng, eng_in = await engineer(chatd, "alex@example.com")
    cust, _ = await guest(chatd)
    sid, _ = await start_chat(chatd, eng, eng_in, cust)
    codes = []
    for i in range(8):
        r = await call(cust, "/customer", "message:send",
                       {"session_id": sid, "client_msg_id": f"m{i}", "body": "spam"})
        codes.append("ok" if r["ok"] else r["error"]["code"])
    assert "rate_limited" in codes and codes[0] == "ok"


async def test_a_wrong_method_under_api_answers_405_with_allow(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    async with aiohttp.ClientSession() as http:
        async with http.get(chatd.url + "/api/login") as r:
            assert r.status == 405
            assert "POST" in r.headers["Allow"]
            body = await r.json()
            assert body["ok"] is False and body["error"]["code"] == "bad_request"
        async with http.delete(chatd.url + "/api/no-such-thing") as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "not_found"


async def _connect_from(chatd: Any, forwarded_for: str) -> str | None:
    """A guest connect carrying X-Forwarded-For: None if accepted, else the refusal."""
    auth = {"guest": {"name": "Carol", "email": "c@example.org"}}
    headers = {"X-Forwarded-For": forwarded_for}
    c = socketio.AsyncClient(reconnection=False)
    try:
        await c.connect(chatd.url, namespaces=["/customer"], auth=auth, headers=headers,
                        transports=["websocket"], wait_timeout=5)
    except socketio.exceptions.ConnectionError:
        return await refused(chatd, "/customer", auth, headers=headers)
    await c.disconnect()
    return None


async def test_behind_a_trusted_proxy_limits_apply_per_forwarded_client(
    chatd_factory: Any,
) -> None:
    chatd = await chatd_factory(trusted_proxies=("127.0.0.1/32",), connect_rate=0.1,
                                connect_burst=2)
    one = [await _connect_from(chatd, "198.51.100.7, 203.0.113.5") for _ in range(3)]
    assert one[:2] == [None, None] and "rate_limited" in str(one[2])
    # Another client behind the same proxy has its own allowance.
    assert await _connect_from(chatd, "203.0.113.6") is None


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(chatd_factory: Any) -> None:
    chatd = await chatd_factory(connect_rate=0.1, connect_burst=2)
    got = [await _connect_from(chatd, f"203.0.113.{i}") for i in range(3)]
    # all from the peer, 127.0.0.1
    assert got[:2] == [None, None] and "rate_limited" in str(got[2])
