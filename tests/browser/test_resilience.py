"""The widget survives reloads and dropped networks without losing or reordering anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.async_api import Browser, expect

from tests.browser.helpers import (
    accept_offer,
    bodies,
    customer_says,
    engineer_console,
    engineer_says,
    request_chat,
    seqs,
    w,
    widget_page,
)


async def test_reload_mid_chat_keeps_history_and_the_chat_goes_on(
    chatd_factory: Any, browser: Browser
) -> None:
    chatd = await chatd_factory()
    console = await engineer_console(browser, chatd, "dana@vendor.example", "Dana Engineer")
    _, page = await widget_page(browser, chatd)
    await request_chat(page, "Carol Customer", "Export is stuck", message="Export stuck at 99%")
    await accept_offer(console, "Carol Customer")
    await engineer_says(console, "Which export format?")
    await customer_says(page, "CSV, about 2 GB")
    await engineer_says(console, "Thanks, checking the worker logs")
    await expect(page.locator(w(".msg--other"))).to_have_count(2)
    before = await bodies(page, w(".log > li .msg__body"))
    assert len(before) == 5  # first message, joined, and three more

    await page.reload()
    await expect(page.locator(w(".panel"))).to_be_visible()  # it stays open across the reload
    await expect(page.locator(w(".log > li"))).to_have_count(5)
    assert await bodies(page, w(".log > li .msg__body")) == before
    await expect(page.locator(w(".header__subtitle"))).to_contain_text("Dana Engineer")

    # The same chat continues, both ways.
    await customer_says(page, "Back after a reload")
    pane = console.locator(".pane:not([hidden])")
    await expect(pane.locator(".msg--other").last).to_contain_text("Back after a reload")
    await engineer_says(console, "Welcome back")
    await expect(page.locator(w(".msg--other")).last).to_contain_text("Welcome back")
    assert await console.locator(".tab").count() == 1


async def test_network_drop_shows_reconnecting_and_missed_messages_arrive_in_order(
    chatd_factory: Any, browser: Browser, artifacts: Path
) -> None:
    chatd = await chatd_factory()
    console = await engineer_console(browser, chatd, "dana@vendor.example", "Dana Engineer")
    # A phone-sized customer: the panel takes the whole screen.
    ctx, page = await widget_page(
        browser, chatd, width=390, height=844, is_mobile=True, has_touch=True
    )
    await request_chat(page, "Mo Mobile", "App crashes on upload")
    await accept_offer(console, "Mo Mobile")
    await engineer_says(console, "Hi Mo, which app version?")
    await expect(page.locator(w(".msg--other"))).to_have_count(1)
    box = await page.locator(w(".panel")).bounding_box()
    assert box is not None and box["width"] == 390 and box["height"] == 844

    await ctx.set_offline(True)
    banner = page.locator(w(".banner"))
    await expect(banner).to_be_visible()
    await expect(banner).to_contain_text("Reconnecting…")
    # Written while the customer is offline: nothing of it reaches the page yet.
    for n in range(1, 4):
        await engineer_says(console, f"Missed message {n}")
    # The customer writes too; it waits in the widget until the network is back.
    composer = page.locator(w(".composer textarea"))
    await composer.fill("Version 5.2.1, sent while offline")
    await composer.press("Enter")
    await expect(page.locator(w(".msg--pending"))).to_have_count(1)
    await page.screenshot(path=artifacts / "widget-phone-offline.png")
    assert await page.locator(w(".msg--other")).count() == 1

    await ctx.set_offline(False)
    await expect(page.locator(w(".msg--other"))).to_have_count(4)
    assert await bodies(page, w(".msg--other .msg__body")) == [
        "Hi Mo, which app version?",
        "Missed message 1",
        "Missed message 2",
        "Missed message 3",
    ]
    order = await seqs(page, w(".log > li.msg--stored"))
    assert order == sorted(order) and len(set(order)) == len(order)
    await expect(banner).to_be_hidden(timeout=10_000)
    # The message written offline was sent once, after the reconnect.
    pane = console.locator(".pane:not([hidden])")
    await expect(pane.locator(".msg--other").last).to_contain_text("sent while offline")
    await expect(page.locator(w(".msg--pending"))).to_have_count(0)
    assert await pane.locator(".msg--other", has_text="sent while offline").count() == 1
    await page.screenshot(path=artifacts / "widget-phone.png")


async def test_console_reconnects_and_catches_up(chatd_factory: Any, browser: Browser) -> None:
    chatd = await chatd_factory()
    console = await engineer_console(browser, chatd, "dana@vendor.example", "Dana Engineer")
    _, page = await widget_page(browser, chatd)
    await request_chat(page, "Carol Customer", "Webhook retries")
    await accept_offer(console, "Carol Customer")
    await engineer_says(console, "Looking at it")

    await console.context.set_offline(True)
    await expect(console.locator(".conn")).to_have_text("Reconnecting…")
    await customer_says(page, "Any news?")
    await customer_says(page, "The retries stopped at 3")
    await console.context.set_offline(False)
    await expect(console.locator(".conn")).to_have_text("Connected")
    pane = console.locator(".pane:not([hidden])")
    await expect(pane.locator(".msg--other")).to_have_count(2)
    assert await bodies(console, ".pane:not([hidden]) .msg--other .msg__body") == [
        "Any news?",
        "The retries stopped at 3",
    ]
    await engineer_says(console, "Found it: the endpoint returned 410")
    await expect(page.locator(w(".msg--other")).last).to_contain_text("returned 410")
