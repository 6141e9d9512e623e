"""Read receipts outlive a reload: the widget and the console show "Read" where they did
(docs/protocol.md#read-marks)."""

from __future__ import annotations

import re
from typing import Any

from playwright.async_api import Browser, expect

from tests.browser.helpers import (
    accept_offer,
    customer_says,
    engineer_console,
    engineer_says,
    js_errors,
    request_chat,
    w,
    widget_page,
)


async def test_widget_and_console_show_read_again_after_a_reload(
    chatd_factory: Any, browser: Browser
) -> None:
    chatd = await chatd_factory()
    console = await engineer_console(browser, chatd, "dana@vendor.example", "Dana Engineer")
    _, page = await widget_page(browser, chatd)
    await request_chat(page, "Carol Customer", "Login loops", message="It keeps asking again")
    await accept_offer(console, "Carol Customer")
    pane = console.locator(".pane:not([hidden])")

    # The engineer reads the customer's message, the open widget reads the answer.
    await engineer_says(console, "Which browser?")
    await expect(pane.locator(".msg--own.msg--read .msg__status")).to_have_text("Read")
    await customer_says(page, "Firefox 128")
    own = page.locator(w(".msg--own.msg--stored")).last
    await expect(own.locator(".msg__status")).to_have_text("Read")

    # Nobody sends a receipt again after a reload: "Read" can only come from the server.
    await page.reload()
    await expect(page.locator(w(".panel"))).to_be_visible()
    own = page.locator(w(".msg--own.msg--stored")).last
    await expect(own).to_contain_text("Firefox 128")
    await expect(own.locator(".msg__status")).to_have_text("Read")
    await expect(own).to_have_class(re.compile(r"\bmsg--read\b"))

    await console.reload()
    await expect(console.locator(".conn")).to_have_text("Connected")
    await expect(console.locator(".tab")).to_have_count(1)
    await console.locator(".tab").first.click()
    pane = console.locator(".pane:not([hidden])")
    await expect(pane.locator(".msg--own.msg--stored").last).to_contain_text("Which browser?")
    await expect(pane.locator(".msg--own.msg--read .msg__status")).to_have_text("Read")

    # Live receipts still flow after both reloads.
    await customer_says(page, "And Chrome too")
    own = page.locator(w(".msg--own.msg--stored")).last
    await expect(own).to_contain_text("And Chrome too")
    await expect(own.locator(".msg__status")).to_have_text("Read")
    assert js_errors(page) == [] and js_errors(console) == []
