"""A client that leaves at an awkward moment leaves the desk consistent and logs no error."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import Any

import aiohttp
import pytest

from chatd.web import keys
from tests.e2e.helpers import call, engineer, guest


async def test_a_guest_leaving_while_its_chat_request_is_in_flight_still_queues_the_chat(
    chatd_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    chatd = await chatd_factory()
    eng, eng_in = await engineer(chatd, "alex@example.com")
    await call(eng, "/engineer", "engineer:status", {"status": "available", "capacity": 10})
    caplog.set_level(logging.ERROR)
    for i in range(5):
        cust, _ = await guest(chatd, f"Leaver{i}")
        await cust.emit("chat:request", {"topic": f"gone {i}"}, namespace="/customer")
        await asyncio.sleep(i * 0.002)  # land the close at various points of the request
        await cust.eio.disconnect(abort=True)  # the connection drops; no goodbye
    # Every chat that was made (the request may also arrive after the disconnect, and then
    # makes none) was offered to the engineer: its effects went out. Nothing failed.
    await asyncio.sleep(0.5)
    made = chatd.app[keys.DESK].open_session_ids()
    assert made, "no request arrived before its disconnect: the race was not exercised"
    for session_id in made:
        await eng_in.wait_for("offer:new", lambda d, s=session_id: d["session_id"] == s)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


async def test_a_client_gone_before_its_websocket_upgrade_is_answered_logs_no_error(
    chatd_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    chatd = await chatd_factory()
    host, port = chatd.server.host, chatd.server.port
    caplog.set_level(logging.ERROR)
    request = (
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    for _ in range(10):
        reader, writer = await asyncio.open_connection(host, port)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.write(request)
        await writer.drain()
        writer.transport.abort()  # a reset, right behind the request
    await asyncio.sleep(0.5)
    async with aiohttp.ClientSession() as http, http.get(chatd.url + "/healthz") as r:
        assert r.status == 200
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
