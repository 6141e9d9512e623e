"""Malformed and hostile payloads get an error acknowledgement and change nothing; they
never crash the server or disturb anybody else's chat."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from chatd.core.errors import ERROR_CODES
from tests.e2e.helpers import call, customer_jwt, engineer, guest, start_chat

UUID = "00000000-0000-4000-8000-000000000000"

BAD_VALUES: list[Any] = [
    None, [], "text", 7, 1.5, True, {"session_id": 5}, {"session_id": "not-a-uuid"},
    {"session_id": UUID, "client_msg_id": "", "body": "x"},
    {"session_id": UUID, "client_msg_id": "a", "body": ""},
    {"session_id": UUID, "client_msg_id": "a", "body": "x" * 10_001},
    {"session_id": UUID, "client_msg_id": "a" * 500, "body": "x"},
    {"session_id": UUID, "client_msg_id": "a", "body": ["list"]},
    {"session_id": UUID, "typing": "yes"},
    {"session_id": UUID, "seq": -1},
    {"session_id": UUID, "seq": 2**80},
    {"topic": ""},
    {"topic": "t", "severity": 0},
    {"topic": "t", "severity": "1"},
    {"topic": "x" * 100_000},
    {"session_id": UUID, "kind": "fax"},
    {"session_id": UUID, "kind": "phone", "phone": "<script>"},
    {"status": "sleeping"},
    {"status": "available", "capacity": 0},
    {"status": "available", "capacity": 10_000},
    {"session_id": UUID, "to_engineer_id": "me"},
    {"\u0000": "\ud800" if False else "\u0000"},
]


def nested(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth):
        value = {"a": value}
    return value


CUSTOMER_EVENTS = ["chat:request", "session:resume", "message:send", "typing", "message:read",
                   "escalation:request", "session:end", "no:such:event", "connect", "disconnect"]
ENGINEER_EVENTS = ["engineer:status", "queue:snapshot", "offer:accept", "offer:decline",
                   "session:resume", "message:send", "typing", "message:read",
                   "session:transfer", "session:end", "no:such:event"]


async def test_bad_payloads_get_error_acks_and_change_nothing(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    eng, eng_in = await engineer(chatd, "alex@example.com")
    bystander, by_in = await guest(chatd, "Bystander")
    sid, _ = await start_chat(chatd, eng, eng_in, bystander)
    before = await call(eng, "/engineer", "session:resume", {"session_id": sid})

    attacker, _ = await guest(chatd, "Mallory")
    hostile, _ = await engineer(chatd, "eve@example.com", available=False)
    payloads = [*BAD_VALUES, nested(200)]
    for event in CUSTOMER_EVENTS:
        for data in payloads:
            if event == "queue:snapshot":
                continue
            r = await call(attacker, "/customer", event, data)
            assert r["ok"] is False and r["error"]["code"] in ERROR_CODES, (event, data, r)
    for event in ENGINEER_EVENTS:
        for data in payloads:
            r = await call(hostile, "/engineer", event, data)
            if event == "queue:snapshot" and isinstance(data, dict | type(None)):
                continue  # an empty-schema event ignores unknown fields by design
            assert r["ok"] is False and r["error"]["code"] in ERROR_CODES, (event, data, r)

    after = await call(eng, "/engineer", "session:resume", {"session_id": sid})
    assert after["messages"] == before["messages"]
    assert after["session"]["state"] == "active"
    assert attacker.connected and hostile.connected
    r = await call(bystander, "/customer", "message:send",
                   {"session_id": sid, "client_msg_id": "still-fine", "body": "still here"})
    assert r["ok"]
    await eng_in.wait_for("message:new", lambda d: d["message"]["body"] == "still here")


async def test_oversized_event_is_refused_as_too_large(chatd_factory: Any) -> None:
    chatd = await chatd_factory(max_event_bytes=4096)
    cust, _ = await guest(chatd)
    r = await call(cust, "/customer", "chat:request", {"topic": "t", "padding": "x" * 8000})
    assert r["error"]["code"] == "too_large"


RAW_FRAMES = [
    "42/customer,",
    "42/customer,[]",
    "42/customer,[5]",
    "42/customer,[null,{}]",
    '42/customer,["message:send"',
    "42/customer,{}",
    '42/customer,"just a string"',
    "42/customer,1[]",
    '42/customer,99["typing",{"session_id":1}]',
    '43/customer,1["ack-for-nothing"]',
    "45-/customer,[{\"_placeholder\":true,\"num\":0}]",
    "4" + "9" * 50,
    "41/nonexistent,",
    "40/nonexistent,",
    "not an engine.io packet",
    "6",
    "2probe",
    '42/customer,["typing",' + "[" * 100_000 + "]" * 100_000 + "]",
]


async def test_raw_garbage_frames_do_not_disturb_the_server(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    eng, eng_in = await engineer(chatd, "alex@example.com")
    cust, _ = await guest(chatd)
    sid, _ = await start_chat(chatd, eng, eng_in, cust)
    ws_url = chatd.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as http:
        for frame in RAW_FRAMES:
            async with http.ws_connect(ws_url) as ws:
                await ws.receive(timeout=5)  # the engine.io open packet
                auth = json.dumps({"guest": {"name": "Raw", "email": "raw@x.io"}})
                await ws.send_str("40/customer," + auth)
                await ws.receive(timeout=5)  # connected to /customer
                await ws.send_str(frame)
                await ws.send_bytes(b"\x00\xff" * 10)
                try:
                    await asyncio.wait_for(ws.receive(), 0.3)
                except TimeoutError:
                    pass
    r = await call(cust, "/customer", "message:send",
                   {"session_id": sid, "client_msg_id": "after", "body": "after the garbage"})
    assert r["ok"], r
    await eng_in.wait_for("message:new", lambda d: d["message"]["body"] == "after the garbage")
    async with aiohttp.ClientSession() as http, http.get(chatd.url + "/healthz") as h:
        assert h.status == 200


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'{"email": 5}', b"x" * 70_000])
async def test_bad_login_bodies_are_refused_cleanly(chatd_factory: Any, body: bytes) -> None:
    chatd = await chatd_factory()
    async with aiohttp.ClientSession() as http:
        async with http.post(chatd.url + "/api/login", data=body,
                             headers={"Content-Type": "application/json"}) as r:
            assert r.status in (400, 413)
            err = (await r.json())["error"]
            assert err["code"] in ("bad_request", "too_large") and err["message"]


async def test_the_default_namespace_is_not_served(chatd_factory: Any) -> None:
    import socketio

    chatd = await chatd_factory()
    c = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await c.connect(chatd.url, namespaces=["/"], transports=["websocket"], wait_timeout=5)
    await c.disconnect()


async def test_a_lone_surrogate_escape_becomes_a_replacement_character(
    chatd_factory: Any,
) -> None:
    """JavaScript's JSON.stringify writes a lone surrogate escape for a string cut inside an
    emoji; the message goes through with U+FFFD in its place, and the connection stays."""
    chatd = await chatd_factory()
    eng, eng_in = await engineer(chatd, "alex@example.com")
    cust, _ = await guest(chatd, "Carol")
    sid, _ = await start_chat(chatd, eng, eng_in, cust)
    r = await call(cust, "/customer", "message:send",
                   {"session_id": sid, "client_msg_id": "cut-1", "body": "cut here \udaad"})
    assert r["ok"], r
    assert r["message"]["body"] == "cut here \ufffd"
    got = await eng_in.wait_for("message:new", lambda d: d["message"]["seq"] == r["message"]["seq"])
    assert got["message"]["body"] == "cut here \ufffd"


async def test_nul_characters_are_refused_everywhere_and_change_nothing(
    chatd_factory: Any,
) -> None:
    """U+0000 in any text a client gives is refused as bad_request, on every backend (it
    is a string PostgreSQL cannot store): a message, a topic, a guest's name, a customer
    token's claim, a login."""
    chatd = await chatd_factory()
    eng, eng_in = await engineer(chatd, "alex@example.com")
    cust, _ = await guest(chatd)
    sid, _ = await start_chat(chatd, eng, eng_in, cust)
    before = await call(eng, "/engineer", "session:resume", {"session_id": sid})
    for body in ("a\x00b", "\x00"):
        r = await call(cust, "/customer", "message:send",
                       {"session_id": sid, "client_msg_id": "nul-1", "body": body})
        assert r["ok"] is False and r["error"]["code"] == "bad_request", r
        assert "U+0000" in r["error"]["message"] and "$.body" in r["error"]["message"]
    r = await call(cust, "/customer", "message:send",
                   {"session_id": sid, "client_msg_id": "nul\x00", "body": "ok"})
    assert r["error"]["code"] == "bad_request"
    after = await call(eng, "/engineer", "session:resume", {"session_id": sid})
    assert after["messages"] == before["messages"]

    other, _ = await guest(chatd, "Other")
    r = await call(other, "/customer", "chat:request", {"topic": "VPN\x00down"})
    assert r["error"]["code"] == "bad_request"
    with pytest.raises(Exception):  # noqa: B017 - refused at connect, as any bad auth
        await chatd.client("/customer", {"guest": {"name": "Nul\x00", "email": "n@ex.com"}})
    with pytest.raises(Exception):  # noqa: B017
        await chatd.client("/customer", {"token": customer_jwt(name="Carol\x00")})
    async with aiohttp.ClientSession() as http:
        async with http.post(chatd.url + "/api/login",
                             json={"email": "alex@example.com\x00", "password": "x"}) as resp:
            assert resp.status == 400
    # Nothing of the above was stored; the chat carries on.
    r = await call(cust, "/customer", "message:send",
                   {"session_id": sid, "client_msg_id": "nul-1", "body": "clean"})
    assert r["ok"] and r["message"]["seq"] == after["messages"][-1]["seq"] + 1
