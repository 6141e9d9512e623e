"""The console's desk work: waits that change colour, declines, transfers, escalations."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, Route, expect

from tests.browser.helpers import (
    accept_offer,
    customer_says,
    engineer_console,
    engineer_says,
    js_errors,
    new_page,
    request_chat,
    signed_in_console,
    w,
    widget_page,
)
from tests.e2e.helpers import call, customer_jwt, engineer, guest, start_chat


async def test_queue_waits_tick_and_turn_amber_past_warning_then_red_past_target(
    chatd_factory: Any, browser: Browser, artifacts: Path
) -> None:
    chatd = await chatd_factory(wait_warning_seconds=1.0, wait_target_seconds=3.0)
    console = await engineer_console(
        browser, chatd, "dana@vendor.example", "Dana Engineer", available=False
    )
    _, page = await widget_page(browser, chatd)
    await request_chat(page, "Wanda Waiting", "Backups are failing", severity=1)
    item = console.locator(".qitem", has_text="Wanda Waiting")
    await expect(item).to_contain_text("Backups are failing")
    await expect(item).to_contain_text("S1 · Critical")
    await expect(item).to_have_class(re.compile(r"\bqitem--warn\b"))
    await expect(item.locator(".wait")).to_have_class(re.compile(r"\bwait--warn\b"))
    await expect(item).to_have_class(re.compile(r"\bqitem--late\b"))
    await expect(item.locator(".wait")).to_have_class(re.compile(r"\bwait--late\b"))
    await expect(item.locator(".wait")).to_have_text(re.compile(r"^0:0[3-9]|^0:[1-5]\d"))
    await expect(console.locator(".summary .wait")).to_have_class(re.compile(r"\bwait--late\b"))
    await console.screenshot(path=artifacts / "console-queue-late.png")

    # Going available turns the waiting customer into an offer at once.
    await console.get_by_role("switch").click()
    await expect(console.locator(".offer", has_text="Wanda Waiting")).to_be_visible()


async def console_offered(pages: list[Page], name: str) -> Page:
    """The console that got the offer (the desk picks the longest-idle engineer)."""
    for _ in range(150):  # bounded: about 15 s
        for p in pages:
            if await p.locator(".offer", has_text=name).count():
                return p
        await asyncio.sleep(0.1)
    raise AssertionError(f"no console shows an offer for {name}")


async def test_decline_goes_to_the_next_engineer_and_a_chat_can_be_transferred(
    chatd_factory: Any, browser: Browser
) -> None:
    chatd = await chatd_factory()
    dana = await engineer_console(browser, chatd, "dana@vendor.example", "Dana Engineer")
    eli = await engineer_console(browser, chatd, "eli@vendor.example", "Eli Engineer")
    _, page = await widget_page(browser, chatd)
    await request_chat(page, "Carol Customer", "Slow dashboards")
    first = await console_offered([dana, eli], "Carol Customer")
    second = eli if first is dana else dana
    await first.locator(".offer").get_by_role("button", name="Decline").click()
    await expect(first.locator(".offer")).to_have_count(0)
    await accept_offer(second, "Carol Customer")
    await engineer_says(second, "I'll take a look at the dashboards")
    await customer_says(page, "thanks")

    # Transfer to the colleague who declined: they get a transfer offer and take it.
    await second.locator(".pane:not([hidden])").get_by_role("button", name="Transfer").click()
    dialog = second.locator("dialog")
    await dialog.get_by_role("radio").first.check()
    await dialog.get_by_role("button", name="Offer transfer").click()
    offer = first.locator(".offer", has_text="Carol Customer")
    await expect(offer).to_contain_text("Transfer from")
    await accept_offer(first, "Carol Customer")
    await expect(second.locator(".tab", has_text="Carol Customer")).to_contain_text("transferred")
    await expect(second.locator(".pane:not([hidden]) .composer")).to_be_hidden()
    # The new engineer has the whole history, and the customer was told.
    pane = first.locator(".pane:not([hidden])")
    await expect(pane.locator(".msg--other")).to_contain_text(["thanks"])
    await expect(page.locator(w(".msg--system")).last).to_contain_text("transferred")
    await engineer_says(first, "Hi Carol, I'm taking over")
    await expect(page.locator(w(".msg--other")).last).to_contain_text("taking over")


async def test_signed_premier_customer_asks_for_a_phone_call_and_the_console_shows_it(
    chatd_factory: Any, browser: Browser
) -> None:
    chatd = await chatd_factory()
    console = await engineer_console(browser, chatd, "dana@vendor.example", "Dana Engineer")
    token = customer_jwt("acct-7-user-3", name="Paula Premier", account="Globex", tier="premier")
    ctx, page = await new_page(browser)

    async def product(route: Route) -> None:
        await route.fulfill(
            status=200,
            content_type="text/html",
            body=f"<!doctype html><title>Globex</title><body><h1>Globex</h1>"
            f'<script src="/widget.js" data-chatd-token="{token}" async></script></body>',
        )

    await ctx.route(chatd.url + "/globex.html", product)
    await page.goto(chatd.url + "/globex.html")
    await page.locator(w(".launcher")).click()
    # A signed-in customer is not asked for a name or an email.
    start = page.locator(w(".view-start"))
    await expect(start.locator("input[name=name]")).to_have_count(0)
    await start.get_by_label("What do you need help with?").fill("Data export corrupt")
    await start.get_by_role("button", name="Start chat").click()
    await accept_offer(console, "Paula Premier")
    await expect(console.locator(".customer")).to_contain_text("Globex")
    await expect(console.locator(".customer .pill--tier-premier")).to_have_text("premier")

    await page.get_by_role("button", name="More actions").click()
    await page.get_by_role("menuitem", name="Request a phone call").click()
    sheet = page.locator(w(".sheet"))
    await sheet.get_by_label("Phone number").fill("+81 3 1234 5678")
    await sheet.get_by_label("Note (optional)").fill("after 15:00 JST")
    await sheet.get_by_role("button", name="Send request").click()
    await expect(page.locator(w(".notice"))).to_contain_text("Your request was sent")
    escalation = console.locator(".customer .escalation")
    await expect(escalation).to_contain_text("Phone call")
    await expect(escalation).to_contain_text("+81 3 1234 5678")
    await expect(escalation).to_contain_text("after 15:00 JST")

    # A log file opens in the console's viewer with its first lines.
    log = "".join(
        f"2026-03-01T10:00:{n:02d}Z ERROR export worker {n}: disk full\n" for n in range(40)
    )
    await page.locator(w(".composer input[type=file]")).set_input_files(
        files=[{"name": "export.log", "mimeType": "text/plain", "buffer": log.encode()}]
    )
    pane = console.locator(".pane:not([hidden])")
    await expect(pane.locator(".file__name")).to_have_text("export.log")
    await pane.get_by_role("button", name="View").click()
    viewer = console.locator("dialog .viewer")
    await expect(viewer).to_contain_text("export worker 0: disk full")
    await expect(viewer).to_contain_text("export worker 39: disk full")
    await expect(
        console.locator("dialog").get_by_role("link", name=re.compile("Download"))
    ).to_be_visible()


async def test_guest_customers_are_not_offered_a_phone_call(
    chatd_factory: Any, browser: Browser
) -> None:
    chatd = await chatd_factory()
    console = await engineer_console(browser, chatd, "dana@vendor.example", "Dana Engineer")
    _, page = await widget_page(browser, chatd)
    await request_chat(page, "Sam Standard", "Question about limits")
    await accept_offer(console, "Sam Standard")
    await page.get_by_role("button", name="More actions").click()
    await expect(page.get_by_role("menuitem", name="Request a screen share")).to_be_visible()
    await expect(page.get_by_role("menuitem", name="Request a phone call")).to_have_count(0)


async def test_the_console_uploads_and_signs_out_through_the_cross_site_checks(
    chatd_factory: Any, browser: Browser
) -> None:
    """The console's cookie-signed POSTs (an upload, the sign-out) come from chatd's own
    origin and pass; the sign-out really revokes the token."""
    chatd = await chatd_factory()
    console = await engineer_console(browser, chatd, "dana@vendor.example", "Dana Engineer")
    _, page = await widget_page(browser, chatd)
    await request_chat(page, "Carol Customer", "Export fails")
    await accept_offer(console, "Carol Customer")

    pane = console.locator(".pane:not([hidden])")
    await pane.locator("input[type=file]").set_input_files(
        files=[{"name": "steps.txt", "mimeType": "text/plain",
                "buffer": b"1. open Settings\n2. choose Export\n"}]
    )
    await expect(pane.locator(".file__name")).to_have_text("steps.txt")
    await expect(page.locator(w(".file__name"))).to_have_text("steps.txt")
    await expect(pane.locator(".notice")).to_be_hidden()

    await console.get_by_role("button", name="Sign out").click()
    await expect(console.get_by_label("Email")).to_be_visible()
    assert await console.evaluate("fetch('/api/me').then((r) => r.status)") == 401


async def test_a_console_with_many_chats_catches_up_within_the_connection_allowance(
    chatd_factory: Any, browser: Browser
) -> None:
    """The console opens with every chat of its engineer and pages their history in: with
    a desk's own event limits (a session:resume costs 5 of 60 events at once; more than 10
    refused in a row close the connection and bar the address), 24 chats must not be asked
    for at once. A closed connection would stay barred here, and the chats empty."""
    chats = 24
    chatd = await chatd_factory(
        default_capacity=chats, max_capacity=chats, event_rate=20.0, event_burst=60,
        event_refusals_max=10, abuse_penalty_seconds=60.0,
    )
    eng, eng_in = await engineer(chatd, "dana@vendor.example", name="Dana Engineer")
    customers = []
    for i in range(chats):
        cust, _ = await guest(chatd, f"Customer{i:02d}")
        sid, _ = await start_chat(chatd, eng, eng_in, cust, topic=f"Case {i}")
        r = await call(cust, "/customer", "message:send",
                       {"session_id": sid, "client_msg_id": "hello", "body": f"hello from {i:02d}"})
        assert r["ok"], r
        customers.append(cust)
    await eng.disconnect()

    page = await signed_in_console(browser, chatd.url, "dana@vendor.example", available=False)
    await expect(page.locator(".tab")).to_have_count(chats)
    for i in range(chats):
        await page.locator(".tab", has_text=f"Customer{i:02d}").click()
        pane = page.locator(".pane:not([hidden])")
        await expect(pane.locator(".msg--other")).to_contain_text([f"hello from {i:02d}"])
    await expect(page.locator(".conn")).to_have_text("Connected")
    assert js_errors(page) == []
    for cust in customers:
        await cust.disconnect()
