"""The widget and the console catch up on what the server lost on its way to them
(docs/protocol.md#resync).

Three ``chatd serve`` processes share a desk through a Redis of the test's own. While that
Redis is down, what the process running the desk stores is still acknowledged, but its
events never reach the clients of the other processes; once Redis is back, each process
tells its clients ``session:resync`` and they ask again for what they missed. The lost
message is the chat's last one: no later message shows a gap, and the page does not
reconnect, so only the resync can bring it.

The page under test is on another process than the desk's; whoever writes to it while
Redis is down is connected to the desk's own process, since the other processes bring
their clients' requests to the desk over Redis too (they answer ``unavailable`` meanwhile).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from playwright.async_api import Browser, Page, WebSocket, expect

from tests.browser.helpers import (
    PASSWORD,
    accept_offer,
    bodies,
    new_page,
    request_chat,
    seqs,
    w,
)
from tests.cluster import Trio, trio, until
from tests.process import Server, connect

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("db_backend", ["postgres"])]

EMAIL = "dana@vendor.example"
LOST = "The fix is deployed, please retry"
# How long a page is watched for a message it must not get while Redis is down.
QUIET_MS = 1500
# From Redis's return to the message on screen, at most.
CATCH_UP_MS = 15_000


@pytest.fixture
async def desk(tmp_path: Path, database_url: str) -> AsyncIterator[Trio]:
    async with trio(tmp_path, database_url, engineers=[(EMAIL, "Dana Engineer")],
                    password=PASSWORD) as t:
        yield t


async def call(c: socketio.AsyncClient, ns: str, event: str, data: Any) -> Any:
    return await c.call(event, data, namespace=ns, timeout=15)


async def login(server: Server) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.post(server.url + "/api/login",
                             json={"email": EMAIL, "password": PASSWORD}) as r:
            assert r.status == 200, await r.text()
            token: str = (await r.json())["token"]
            return token


def websockets(page: Page) -> list[WebSocket]:
    """Every WebSocket the page opens from now on: a reconnect opens a new one."""
    opened: list[WebSocket] = []
    page.on("websocket", lambda ws: opened.append(ws))
    return opened


def resyncs(server: Server) -> int:
    return server.log.read_text(errors="replace").count("session:resync")


def no_tracebacks(desk: Trio) -> None:
    for s in desk.servers:
        log = s.log.read_text(errors="replace")
        assert "Traceback" not in log, log


async def test_the_widget_shows_the_last_message_redis_lost(desk: Trio, browser: Browser) -> None:
    leader, b, _ = desk.servers
    assert await desk.leader() is leader
    eng = await connect(leader.url, "/engineer", {"token": await login(leader)})
    offers: list[Any] = []
    eng.on("offer:new", offers.append, namespace="/engineer")
    try:
        r = await call(eng, "/engineer", "engineer:status", {"status": "available"})
        assert r["ok"], r
        _, page = await new_page(browser)
        opened = websockets(page)
        await page.goto(b.url + "/demo/")
        await request_chat(page, "Carol Customer", "Builds fail", "The nightly build fails")

        async def offered() -> bool:
            return bool(offers)

        await until(offered, 10, "no offer reached the engineer")
        sid = offers[0]["session_id"]
        r = await call(eng, "/engineer", "offer:accept", {"session_id": sid})
        assert r["ok"], r
        await expect(page.locator(w(".header__subtitle"))).to_contain_text("Dana Engineer")
        r = await call(eng, "/engineer", "message:send",
                       {"session_id": sid, "client_msg_id": "e1", "body": "Which pipeline?"})
        assert r["ok"], r
        await expect(page.locator(w(".msg--other")).last).to_contain_text("Which pipeline?")
        sockets = len(opened)
        before = resyncs(b)

        desk.redis.stop()
        r = await call(eng, "/engineer", "message:send",
                       {"session_id": sid, "client_msg_id": "e2", "body": LOST})
        assert r["ok"], r  # stored: only its event is lost
        await page.wait_for_timeout(QUIET_MS)
        await expect(page.locator(w(".msg--other"), has_text=LOST)).to_have_count(0)

        desk.redis.start()
        await expect(page.locator(w(".msg--other")).last).to_contain_text(
            LOST, timeout=CATCH_UP_MS)
        assert await bodies(page, w(".msg--other .msg__body")) == ["Which pipeline?", LOST]
        shown = await seqs(page, w(".log > li.msg--stored"))
        assert shown == sorted(set(shown)), shown  # each message once, in order
        assert len(opened) == sockets, "the widget reconnected: not a resync"
        assert resyncs(b) > before, "process B never said session:resync"

        # Another resync with nothing lost changes nothing on screen.
        before = resyncs(b)
        desk.redis.stop()
        desk.redis.start()

        async def resynced() -> bool:
            return resyncs(b) > before

        await until(resynced, CATCH_UP_MS / 1000, "process B never said session:resync")
        await page.wait_for_timeout(QUIET_MS)
        assert await bodies(page, w(".msg--other .msg__body")) == ["Which pipeline?", LOST]
        assert await seqs(page, w(".log > li.msg--stored")) == shown
        assert len(opened) == sockets
        assert not page.js_errors  # type: ignore[attr-defined]
    finally:
        await eng.disconnect()
    no_tracebacks(desk)


async def test_the_widget_learns_its_place_in_the_queue_after_redis_lost_the_board(
    desk: Trio, browser: Browser
) -> None:
    """The chat ahead leaves while Redis is down: the board that says so is lost, and no
    other comes while the queue stays as it is."""
    leader, b, _ = desk.servers
    ahead = await connect(leader.url, "/customer",
                          {"guest": {"name": "Ann Ahead", "email": "ann@client.example"}})
    try:
        r = await call(ahead, "/customer", "chat:request", {"topic": "First in line"})
        assert r["ok"], r
        assert r["session"]["position"] == 1
        _, page = await new_page(browser)
        opened = websockets(page)
        await page.goto(b.url + "/demo/")
        await request_chat(page, "Carol Customer", "Builds fail")
        place = page.locator(w(".queue__pos"))
        await expect(place).to_have_text("You are number 2 in the queue")
        sockets = len(opened)

        desk.redis.stop()
        r = await call(ahead, "/customer", "session:end", {"session_id": r["session"]["id"]})
        assert r["ok"], r
        await page.wait_for_timeout(QUIET_MS)
        await expect(place).to_have_text("You are number 2 in the queue")

        desk.redis.start()
        await expect(place).to_have_text("You are next in the queue", timeout=CATCH_UP_MS)
        assert len(opened) == sockets, "the widget reconnected: not a resync"
        assert not page.js_errors  # type: ignore[attr-defined]
    finally:
        await ahead.disconnect()
    no_tracebacks(desk)


async def test_the_console_shows_the_last_message_redis_lost(
    desk: Trio, browser: Browser
) -> None:
    leader, _, c = desk.servers
    _, console = await new_page(browser, width=1440, height=900)
    opened = websockets(console)
    await console.goto(c.url + "/console/")
    await console.get_by_label("Email").fill(EMAIL)
    await console.get_by_label("Password").fill(PASSWORD)
    await console.get_by_role("button", name="Sign in").click()
    await expect(console.locator(".conn")).to_have_text("Connected")
    await console.get_by_role("switch").click()
    await expect(console.get_by_role("switch")).to_have_attribute("aria-checked", "true")

    cust = await connect(leader.url, "/customer",
                         {"guest": {"name": "Carol Customer", "email": "carol@client.example"}})
    later = await connect(leader.url, "/customer",
                          {"guest": {"name": "Bob Later", "email": "bob@client.example"}})
    try:
        r = await call(cust, "/customer", "chat:request",
                       {"topic": "Builds fail", "message": "The nightly build fails"})
        assert r["ok"], r
        sid = r["session"]["id"]
        await accept_offer(console, "Carol Customer")
        pane = console.locator(".pane:not([hidden])")
        await expect(pane.locator(".msg--other").last).to_contain_text("The nightly build fails")
        sockets = len(opened)
        before = resyncs(c)

        desk.redis.stop()
        r = await call(cust, "/customer", "message:send",
                       {"session_id": sid, "client_msg_id": "c2", "body": LOST})
        assert r["ok"], r  # stored: only its event is lost
        # A new chat is offered to Dana meanwhile: the offer:new is lost too.
        r = await call(later, "/customer", "chat:request", {"topic": "Tests are flaky"})
        assert r["ok"], r
        await console.wait_for_timeout(QUIET_MS)
        await expect(pane.locator(".msg--other", has_text=LOST)).to_have_count(0)
        await expect(console.locator(".offer")).to_have_count(0)

        desk.redis.start()
        await expect(pane.locator(".msg--other").last).to_contain_text(LOST, timeout=CATCH_UP_MS)
        assert await bodies(console, ".pane:not([hidden]) .msg--other .msg__body") == [
            "The nightly build fails", LOST,
        ]
        shown = await seqs(console, ".pane:not([hidden]) .log > li.msg--stored")
        assert shown == sorted(set(shown)), shown
        assert len(opened) == sockets, "the console reconnected: not a resync"
        assert resyncs(c) > before, "process C never said session:resync"
        await expect(console.locator(".conn")).to_have_text("Connected")
        # The snapshot after the resync brings the offer and the queue as they are now.
        await expect(console.locator(".offer")).to_contain_text("Bob Later")
        await expect(console.locator(".qitem")).to_contain_text("Bob Later")
        assert not console.js_errors  # type: ignore[attr-defined]
    finally:
        await later.disconnect()
        await cust.disconnect()
    no_tracebacks(desk)
