"""The lead's monitor page in Chromium: the queue building up, the wait alert appearing as a
customer crosses the (short) thresholds, and a status banner reaching an open widget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, expect

from chatd.core.models import Role
from tests.browser.helpers import (
    PASSWORD,
    TIMEOUT_MS,
    W,
    engineer_console,
    js_errors,
    new_page,
    request_chat,
    widget_page,
)
from tests.conftest import Chatd
from tests.e2e.helpers import Inbox, call, customer_jwt, engineer, start_chat

BANNER = "Logins are failing for some EU customers; we are on it."
STATUS_URL = "https://status.vendor.example/incidents/42"


async def sign_in(page: Page, email: str) -> None:
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()


async def queue_customer(
    chatd: Chatd, sub: str, name: str, account: str, topic: str, severity: int
) -> str:
    token = customer_jwt(
        sub,
        name=name,
        email=f"{sub}@client.example",
        account=account,
        tier="standard" if severity > 2 else "premier",
    )
    c = await chatd.client("/customer", {"token": token})
    r = await call(c, "/customer", "chat:request", {"topic": topic, "severity": severity})
    assert r["ok"], r
    return str(r["session"]["id"])


async def test_monitor_shows_the_queue_building_the_alert_and_posts_the_banner(
    chatd_factory: Any, browser: Browser, artifacts: Path
) -> None:
    chatd = await chatd_factory(wait_warning_seconds=2, wait_target_seconds=6)
    await chatd.add_engineer("lena@vendor.example", name="Lena Park", role=Role.LEAD)
    # Nobody can take a new chat: Alex is busy at a capacity of one, Sam is away.
    alex, alex_in = await engineer(chatd, "alex@vendor.example", name="Alex Kim")
    r = await call(alex, "/engineer", "engineer:status", {"status": "available", "capacity": 1})
    assert r["ok"], r
    await engineer(chatd, "sam@vendor.example", name="Sam Ortiz", available=False)
    priya = await chatd.client(
        "/customer",
        {
            "token": customer_jwt(
                "priya",
                name="Priya Shah",
                email="priya@globex.example",
                account="Globex",
                tier="premier",
            )
        },
    )
    Inbox(priya, "/customer")
    priya_sid, _ = await start_chat(
        chatd, alex, alex_in, priya, topic="SSO login loops back to the start page"
    )

    _, monitor = await new_page(browser, width=1440, height=900)
    await monitor.goto(chatd.url + "/monitor/")
    await expect(monitor.get_by_role("heading", name="Desk monitor")).to_be_visible()

    # An engineer who is not a lead is asked to sign in as one, and sees nothing of the desk.
    await sign_in(monitor, "sam@vendor.example")
    await expect(monitor.get_by_role("alert")).to_contain_text("sign in as a lead")
    await expect(monitor.locator("#kpi-waiting")).to_have_count(0)

    await sign_in(monitor, "lena@vendor.example")
    await expect(monitor.locator(".conn")).to_have_text("Live", timeout=TIMEOUT_MS)
    waiting = monitor.locator("#kpi-waiting .kpi__value")
    await expect(waiting).to_have_text("0")
    await expect(monitor.locator("#alert")).to_have_attribute("data-level", "empty")
    engineers = monitor.get_by_role("table", name="Engineers")
    await expect(engineers.locator("tr", has_text="Alex Kim")).to_contain_text("available")
    await expect(engineers.locator("tr", has_text="Alex Kim")).to_contain_text("1 / 1")
    await expect(engineers.locator("tr", has_text="Sam Ortiz")).to_contain_text("away")
    in_progress = monitor.get_by_role("table", name="Chats in progress")
    await expect(in_progress.locator("tr", has_text="Priya Shah")).to_contain_text("Alex Kim")

    # Customers queue, one from the vendor's page, two more from their own apps: the page
    # follows without a reload.
    _, widget = await widget_page(browser, chatd)
    await request_chat(widget, "Marta Jensen", "Webhook deliveries delayed by minutes", severity=2)
    await expect(waiting).to_have_text("1", timeout=TIMEOUT_MS)
    await queue_customer(chatd, "omar", "Omar Haddad", "Initech", "Deploy stuck at 90%", 1)
    await expect(waiting).to_have_text("2", timeout=TIMEOUT_MS)
    await queue_customer(chatd, "yuki", "Yuki Tanaka", "Umbrella", "Billing export is empty", 3)
    await expect(waiting).to_have_text("3", timeout=TIMEOUT_MS)
    queue = monitor.get_by_role("table", name="Waiting customers")
    await expect(queue.locator("tbody tr")).to_have_count(3)
    await expect(queue.locator("tbody tr").first).to_contain_text("Marta Jensen")
    await expect(monitor.locator("#queue-caption")).to_contain_text("peak 3")
    assert await monitor.locator("#queue-chart canvas").count() == 1

    # Marta has waited past the warning (2 s), then past the target (6 s): amber, then red.
    alert = monitor.locator("#alert")
    log = monitor.locator("#alert-log")
    await expect(log.locator("[data-level=warning]")).to_have_count(1, timeout=TIMEOUT_MS)
    await expect(alert).to_have_attribute("data-level", "breach", timeout=TIMEOUT_MS)
    await expect(alert).to_contain_text("Target missed")
    await expect(log.locator("[data-level=breach]")).to_have_count(1)
    await expect(monitor.locator("#kpi-oldest")).to_have_attribute("data-level", "breach")
    await expect(monitor).to_have_title("(3) Target missed · chatd monitor")

    # The lead posts the banner from the monitor; the waiting customer's widget shows it.
    await monitor.locator("#banner-text").fill(BANNER)
    await monitor.locator("#banner-link").fill(STATUS_URL)
    await monitor.get_by_role("button", name="Post banner").click()
    await expect(monitor.locator("#banner-current")).to_contain_text(BANNER)
    await expect(monitor.locator(".toast")).to_have_count(0, timeout=TIMEOUT_MS)
    await monitor.screenshot(path=str(artifacts / "monitor.png"), full_page=True)
    await expect(widget.locator(W).get_by_text(BANNER)).to_be_visible(timeout=TIMEOUT_MS)

    await monitor.get_by_role("button", name="Clear banner").click()
    await expect(monitor.locator("#banner-current")).to_contain_text("No banner")
    await expect(widget.locator(W).get_by_text(BANNER)).to_have_count(0, timeout=TIMEOUT_MS)

    # Alex takes on more: the queue is answered and the alert clears.
    r = await call(alex, "/engineer", "engineer:status", {"status": "available", "capacity": 4})
    assert r["ok"], r
    accepted = {priya_sid}
    for _ in range(3):
        offer = await alex_in.wait_for(
            "offer:new", lambda d: d["session_id"] not in accepted, timeout=15
        )
        acc = await call(alex, "/engineer", "offer:accept", {"session_id": offer["session_id"]})
        assert acc["ok"], acc
        accepted.add(offer["session_id"])
    await expect(waiting).to_have_text("0", timeout=TIMEOUT_MS)
    await expect(alert).to_have_attribute("data-level", "empty", timeout=TIMEOUT_MS)
    await expect(log.locator("[data-level=clear]")).to_have_count(1, timeout=TIMEOUT_MS)
    await expect(in_progress.locator("tbody tr")).to_have_count(4)
    assert js_errors(monitor) == []
    assert js_errors(widget) == []


async def test_console_shows_the_wait_alert_and_clears_it(
    browser: Browser, chatd_factory: Any
) -> None:
    chatd = await chatd_factory(wait_warning_seconds=1, wait_target_seconds=3)
    page = await engineer_console(browser, chatd, "sam@vendor.example", "Sam", available=False)
    await queue_customer(chatd, "acme-1", "Ann", "Acme", "VPN down", 2)
    bar = page.locator(".alert-bar")
    await expect(bar).to_have_class("alert-bar warning", timeout=15_000)
    await expect(bar).to_contain_text("waited over 1 s")
    await expect(bar).to_have_class("alert-bar breach", timeout=15_000)
    await expect(bar).to_contain_text("target is missed")
    await page.get_by_role("switch").click()  # Sam becomes available and is offered the chat
    await page.get_by_role("button", name="Accept").first.click()
    await expect(bar).to_be_hidden(timeout=15_000)
