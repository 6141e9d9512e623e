"""A lead's status banner reaches every widget live, and the next ones on connect
(docs/monitoring.md#status-banner)."""

from __future__ import annotations

import asyncio
from typing import Any

import socketio

from tests.conftest import Chatd
from tests.e2e.helpers import engineer
from tests.monitoring.helpers import http, lead_token

BANNER = "Logins are failing for some EU customers; we are on it."
LINK = "https://status.vendor.example/incidents/42"


async def widget(chatd: Chatd) -> tuple[socketio.AsyncClient, list[Any]]:
    """A guest widget that records status:update from the moment it connects."""
    c = socketio.AsyncClient(reconnection=False)
    got: list[Any] = []
    c.on("status:update", got.append, namespace="/customer")
    await c.connect(chatd.url, namespaces=["/customer"], transports=["websocket"],
                    auth={"guest": {"name": "Wendy", "email": "wendy@client.example"}},
                    wait_timeout=5)
    chatd._clients.append(c)
    return c, got


async def settle(got: list[Any], n: int) -> None:
    for _ in range(100):
        if len(got) >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {n} status:update, got {got}")


async def test_a_banner_reaches_every_connected_widget_and_console(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    lead = await lead_token(chatd)
    _, first = await widget(chatd)
    _, second = await widget(chatd)
    _, console = await engineer(chatd, "alex@example.com")
    assert first == [] and second == []  # nothing is up: nothing said on connect

    status, body, _ = await http(chatd, "POST", "/api/status", lead,
                                 {"banner": BANNER, "link": LINK})
    assert status == 200 and body["banner"] == BANNER, body
    for got in (first, second):
        await settle(got, 1)
        assert got[0]["banner"] == BANNER and got[0]["link"] == LINK
    update = await console.wait_for("status:update")
    assert update["banner"] == BANNER

    status, body, _ = await http(chatd, "GET", "/api/status")
    assert status == 200 and body["banner"] == BANNER and body["link"] == LINK

    await http(chatd, "POST", "/api/status", lead, {"banner": None})
    for got in (first, second):
        await settle(got, 2)
        assert got[1]["banner"] is None
    _, later = await widget(chatd)
    await asyncio.sleep(0.2)
    assert later == []


async def test_a_widget_that_connects_later_gets_the_banner_at_once(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    lead = await lead_token(chatd)
    await http(chatd, "POST", "/api/status", lead, {"banner": BANNER})
    _, got = await widget(chatd)
    await settle(got, 1)
    assert got == [{"banner": BANNER, "link": None, "updated_at": got[0]["updated_at"]}]
    assert got[0]["updated_at"].endswith("Z")


async def test_the_banner_survives_a_restart(chatd_factory: Any) -> None:
    first = await chatd_factory()
    lead = await lead_token(first)
    await http(first, "POST", "/api/status", lead, {"banner": BANNER, "link": LINK})
    await first.server.close()

    again = await chatd_factory()  # the same database
    status, body, _ = await http(again, "GET", "/api/status")
    assert body["banner"] == BANNER and body["link"] == LINK
    _, got = await widget(again)
    await settle(got, 1)
    assert got[0]["banner"] == BANNER


async def test_only_leads_post_the_banner_and_bad_input_changes_nothing(
    chatd_factory: Any,
) -> None:
    chatd = await chatd_factory()
    lead = await lead_token(chatd)
    await chatd.add_engineer("alex@example.com")
    engineer_token = await chatd.login("alex@example.com")

    assert (await http(chatd, "POST", "/api/status", None, {"banner": "x"}))[0] == 401
    status, body, _ = await http(chatd, "POST", "/api/status", engineer_token, {"banner": "x"})
    assert status == 403, body
    for bad in ({"banner": "x" * 501}, {"banner": "x", "link": "javascript:alert(1)"},
                {"banner": 42}, {}):
        status, body, _ = await http(chatd, "POST", "/api/status", lead, bad)
        assert status == 400 and body["error"]["code"] == "bad_request", (bad, body)
    status, body, _ = await http(chatd, "GET", "/api/status")
    assert body["banner"] is None
