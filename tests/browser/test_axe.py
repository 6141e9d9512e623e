"""axe-core's WCAG 2.1 A and AA rules on every page and state people use: the widget
(form, waiting, chatting), the console (sign-in, an offer, a chat), the monitor and the
demo page. No serious or critical violation is allowed."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from chatd.core.models import Role
from tests.browser.helpers import (
    AXE,
    PASSWORD,
    TIMEOUT_MS,
    accept_offer,
    axe_violations,
    customer_says,
    engineer_console,
    engineer_says,
    new_page,
    request_chat,
    w,
    widget_page,
)

pytestmark = pytest.mark.skipif(
    not AXE.is_file(), reason="needs axe-core in node_modules: run `npm ci` (or `make test`)"
)

# chatd's pages forbid inline scripts (Content-Security-Policy); the injected axe-core is one.
AXE_CONTEXT = {"bypass_csp": True}


async def assert_accessible(page: Page, what: str) -> None:
    found = await axe_violations(page)
    assert not found, f"axe-core: serious or critical WCAG 2.1 A/AA violations on {what}:\n{found}"


async def test_the_demo_page_and_the_widget_pass_axe_in_every_state(
    chatd_factory: Any, browser: Browser
) -> None:
    chatd = await chatd_factory()
    console = await engineer_console(
        browser, chatd, "dana@vendor.example", "Dana Engineer", available=False, **AXE_CONTEXT
    )
    _, page = await widget_page(browser, chatd, **AXE_CONTEXT)
    await assert_accessible(page, "the demo page, widget closed")

    await page.locator(w(".launcher")).click()
    await expect(page.locator(w(".view-start"))).to_be_visible()
    await assert_accessible(page, "the widget's form")

    # Nobody is available: the customer waits in the queue.
    await request_chat(page, "Wanda Waits", "Exports time out", message="Since this morning")
    await expect(page.locator(w(".queue"))).to_be_visible()
    await assert_accessible(page, "the widget while waiting")

    await console.get_by_role("switch").click()
    await expect(console.locator(".offer", has_text="Wanda Waits")).to_be_visible()
    await assert_accessible(console, "the console with an offer and the queue")
    await accept_offer(console, "Wanda Waits")
    await engineer_says(console, "Which export? Try this:\n```\nexport --all\n```")
    await customer_says(page, "The nightly CSV export")
    # The log holds a system message ("… joined the chat"), the customer's own message and
    # the engineer's with code: every kind of entry.
    await expect(page.locator(w(".msg--system"))).to_have_count(1)
    await expect(page.locator(w(".msg--other"))).to_have_count(1)
    await assert_accessible(page, "the widget while chatting")
    await assert_accessible(console, "the console with a chat")


async def test_the_console_sign_in_and_the_monitor_pass_axe(
    chatd_factory: Any, browser: Browser
) -> None:
    chatd = await chatd_factory()
    await chatd.add_engineer("lena@vendor.example", name="Lena Park", role=Role.LEAD)
    _, console = await new_page(browser, **AXE_CONTEXT)
    await console.goto(chatd.url + "/console/")
    await expect(console.get_by_role("button", name="Sign in")).to_be_visible()
    await assert_accessible(console, "the console's sign-in")
    await console.get_by_label("Email").fill("lena@vendor.example")
    await console.get_by_label("Password").fill("not the password")
    await console.get_by_role("button", name="Sign in").click()
    await expect(console.get_by_role("alert")).to_be_visible()
    await assert_accessible(console, "the console's sign-in with an error")

    # A customer waits, so the monitor's tables and charts have something to show.
    _, widget = await widget_page(browser, chatd)
    await request_chat(widget, "Wanda Waits", "Exports time out", severity=2)

    _, monitor = await new_page(browser, width=1440, height=900, **AXE_CONTEXT)
    await monitor.goto(chatd.url + "/monitor/")
    await monitor.get_by_label("Email").fill("lena@vendor.example")
    await monitor.get_by_label("Password").fill(PASSWORD)
    await monitor.get_by_role("button", name="Sign in").click()
    await expect(monitor.locator(".conn")).to_have_text("Live", timeout=TIMEOUT_MS)
    await expect(monitor.locator("#queue-chart canvas")).to_have_count(1)
    await expect(monitor.get_by_role("table", name="Waiting customers")).to_contain_text(
        "Wanda Waits"
    )
    await assert_accessible(monitor, "the monitor")
