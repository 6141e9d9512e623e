"""The widget and the console through the load balancer while the process that runs the
desk is killed (docs/scaling.md#behind-a-load-balancer): both say they are reconnecting,
come back through the same address to the process that took over, and the chat goes on
with nothing lost or doubled."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.helpers import (
    PASSWORD,
    accept_offer,
    bodies,
    customer_says,
    engineer_says,
    new_page,
    request_chat,
    signed_in_console,
    w,
)
from tests.cluster import Cluster, Trio, cluster, trio

pytestmark = pytest.mark.slow


@pytest.fixture
def db_backend() -> str:
    return "postgres"


@pytest.fixture
async def lb(tmp_path: Path, database_url: str) -> AsyncIterator[Cluster]:
    async with cluster(tmp_path, database_url,
                       engineers=[("dana@vendor.example", "Dana Engineer")],
                       password=PASSWORD) as c:
        yield c


async def chat_under_way(browser: Browser, url: str) -> tuple[Page, Page]:
    """Dana's console and Carol's widget, both through the load balancer at ``url``, in a
    chat with a message each way."""
    console = await signed_in_console(browser, url, "dana@vendor.example")
    _, page = await new_page(browser)
    await page.goto(url + "/demo/")
    await request_chat(page, "Carol Customer", "Builds fail")
    await accept_offer(console, "Carol Customer")
    await engineer_says(console, "Hi Carol, which pipeline?")
    await customer_says(page, "The nightly one")
    return console, page


async def test_the_chat_goes_on_after_a_failover(lb: Cluster, browser: Browser) -> None:
    console, page = await chat_under_way(browser, lb.url)

    (await lb.leader()).kill9()
    await expect(page.locator(w(".banner"))).to_contain_text("Reconnecting…")
    # Written while no process serves: held by the widget, sent once after the failover.
    composer = page.locator(w(".composer textarea"))
    await composer.fill("Sent during the failover")
    await composer.press("Enter")

    await expect(console.locator(".conn")).to_have_text("Connected", timeout=30_000)
    await expect(page.locator(w(".banner"))).to_be_hidden(timeout=30_000)
    pane = console.locator(".pane:not([hidden])")
    await expect(pane.locator(".msg--other").last).to_contain_text("Sent during the failover")
    await engineer_says(console, "Still here")
    await expect(page.locator(w(".msg--other")).last).to_contain_text("Still here")
    assert await bodies(page, w(".msg--other .msg__body")) == [
        "Hi Carol, which pipeline?", "Still here",
    ]
    assert await pane.locator(".msg--other", has_text="Sent during the failover").count() == 1
    await expect(page.locator(w(".msg--pending"))).to_have_count(0)


@pytest.fixture
async def lb3(tmp_path: Path, database_url: str) -> AsyncIterator[Trio]:
    async with trio(tmp_path, database_url,
                    engineers=[("dana@vendor.example", "Dana Engineer")],
                    password=PASSWORD, lb=True) as t:
        yield t


async def test_several_processes_lose_two_and_the_chat_goes_on(
    lb3: Trio, browser: Browser
) -> None:
    """Three processes with Redis behind HAProxy (docs/scaling.md#running-several-processes):
    the one running the desk is killed, then another; the widget and the console end up on
    the last one, which took the desk over, and nothing is lost or doubled."""
    console, page = await chat_under_way(browser, lb3.url)

    first = await lb3.leader()
    first.kill9()
    composer = page.locator(w(".composer textarea"))
    await composer.fill("Sent after the first kill")
    await composer.press("Enter")
    pane = console.locator(".pane:not([hidden])")
    await expect(pane.locator(".msg--other").last).to_contain_text(
        "Sent after the first kill", timeout=30_000)

    second = await lb3.leader()
    assert second is not first
    second.kill9()
    box = pane.locator(".composer textarea")
    await box.fill("Still here")
    await box.press("Enter")
    await expect(pane.locator(".msg--own.msg--stored").last).to_contain_text(
        "Still here", timeout=30_000)
    await expect(page.locator(w(".msg--other")).last).to_contain_text(
        "Still here", timeout=30_000)
    await customer_says(page, "Thanks")
    assert await bodies(page, w(".msg--other .msg__body")) == [
        "Hi Carol, which pipeline?", "Still here",
    ]
    assert await pane.locator(".msg--other", has_text="Sent after the first kill").count() == 1
    await expect(page.locator(w(".msg--pending"))).to_have_count(0)
