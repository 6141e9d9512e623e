"""A customer in the widget and an engineer in the console, in two browser contexts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, expect

from tests.browser.helpers import (
    accept_offer,
    bodies,
    customer_says,
    engineer_console,
    engineer_says,
    js_errors,
    paste_image,
    png_bytes,
    request_chat,
    w,
    wait_image_loaded,
    widget_page,
)
from tests.browser.ticketing import Ticketing

HOSTILE_TEXT = '<img src=x onerror="window.__owned = 1"> <b>not bold</b>'


async def test_request_offer_accept_chat_attach_end_and_transcript(
    chatd_factory: Any, browser: Browser, artifacts: Path, ticketing: Ticketing
) -> None:
    chatd = await chatd_factory(**ticketing.settings())
    console = await engineer_console(browser, chatd, "dana@vendor.example", "Dana Engineer")
    _, page = await widget_page(browser, chatd)
    await request_chat(
        page,
        "Carol Customer",
        "Deployments fail with 502",
        severity=2,
        message="It started after v2.14.0:\n```\nupstream connect error (502)\n```",
    )

    # The offer: who, what, how bad, a countdown, Accept and Decline.
    offer = console.locator(".offer", has_text="Carol Customer")
    await expect(offer).to_contain_text("Deployments fail with 502")
    await expect(offer).to_contain_text("S2 · High")
    await expect(offer.locator(".offer__countdown")).to_have_text(re.compile(r"^\d+ s$"))
    await expect(offer.get_by_role("button", name="Decline")).to_be_visible()
    await accept_offer(console, "Carol Customer")
    await expect(console.locator(".summary")).to_have_text("0 waiting")
    await expect(console.locator(".queue")).to_have_text("Nobody is waiting.")

    # The customer sees who joined; the engineer sees the first message with its code block.
    await expect(page.locator(w(".header__subtitle"))).to_contain_text("Dana Engineer")
    pane = console.locator(".pane:not([hidden])")
    await expect(pane.locator(".msg--other .code")).to_have_text("upstream connect error (502)")
    await expect(console.locator(".customer")).to_contain_text("carol@client.example")

    # Engineer -> customer: fenced code is shown as code, markup stays text.
    await engineer_says(console, "Please run:\n```\nkubectl get pods -n payments\n```")
    await engineer_says(console, HOSTILE_TEXT)
    other = page.locator(w(".msg--other"))
    await expect(other.last).to_contain_text("<b>not bold</b>")
    await expect(other.nth(0).locator(".code")).to_have_text("kubectl get pods -n payments")
    await expect(other.nth(0).locator(".msg__sender")).to_have_text("Dana Engineer")
    await expect(other.nth(0).locator("time")).to_have_text(re.compile(r"\d{1,2}:\d{2}"))
    assert await page.locator(w(".log img, .log b")).count() == 0
    assert await page.evaluate("window.__owned") is None

    # The engineer's messages were read by the open widget: the receipt says so.
    await expect(pane.locator(".msg--own.msg--read .msg__status")).to_have_text("Read")

    # Customer -> engineer, with the typing indicator first.
    await page.locator(w(".composer textarea")).press_sequentially("the pods ")
    await expect(pane.locator(".typing")).to_have_text("Carol Customer is typing…")
    await page.locator(w(".composer textarea")).fill("")
    await customer_says(page, "3 pods are in CrashLoopBackOff")
    await expect(pane.locator(".msg--other").last).to_have_text(
        re.compile("3 pods are in CrashLoopBackOff")
    )
    await expect(page.locator(w(".msg--own.msg--read .msg__status"))).to_have_text("Read")

    # A pasted screenshot uploads with the chat and shows as a thumbnail on both sides.
    await paste_image(page, w(".composer textarea"), png_bytes())
    thumb = pane.locator(".msg--other .thumb img")
    await expect(thumb).to_be_visible()
    await wait_image_loaded(thumb)
    own_thumb = page.locator(w(".msg--own .thumb img"))
    await wait_image_loaded(own_thumb)
    await pane.locator(".msg--other .thumb").click()
    await expect(console.locator("dialog.dialog .dialog__image")).to_be_visible()
    await console.keyboard.press("Escape")

    await page.screenshot(path=artifacts / "widget-desktop.png")
    await console.screenshot(path=artifacts / "console.png")

    # The engineer ends the chat with a resolution note.
    await pane.get_by_role("button", name="End chat").click()
    await console.get_by_label("Resolution note (goes to the ticket)").fill(
        "Rolled back to v2.13.3; a fix for the health check follows."
    )
    await console.locator("dialog").get_by_role("button", name="End chat").click()
    await expect(pane.locator(".ended")).to_contain_text("This chat has ended.")
    await expect(page.locator(w(".ended"))).to_contain_text("This chat has ended.")
    await expect(page.locator(w(".composer"))).to_be_hidden()
    # The handoff filed the transcript: both sides learn the ticket.
    await expect(pane.locator(".ended .ticket a")).to_have_text("SUP-1042", timeout=20_000)
    await expect(pane.locator(".ended .ticket a")).to_have_attribute(
        "href", "https://tickets.example/SUP-1042"
    )
    await expect(page.locator(w(".ended .ticket-no"))).to_have_text("Ticket SUP-1042")
    assert "Rolled back to v2.13.3" in json.dumps(ticketing.received)

    # The customer downloads the transcript: every message is in it, in order.
    async with page.expect_download() as info:
        await page.locator(w(".ended")).get_by_role("button", name="Download transcript").click()
    download = await info.value
    text = Path(await download.path()).read_text(encoding="utf-8")
    order = [
        "It started after v2.14.0",
        "kubectl get pods",
        "not bold",
        "3 pods are in CrashLoopBackOff",
    ]
    positions = [text.find(s) for s in order]
    assert -1 not in positions, text
    assert positions == sorted(positions), text
    assert js_errors(page) == [] and js_errors(console) == []


async def test_second_customer_sees_position_and_estimate_then_gets_the_engineer(
    chatd_factory: Any, browser: Browser
) -> None:
    chatd = await chatd_factory()
    console = await engineer_console(
        browser, chatd, "dana@vendor.example", "Dana Engineer", capacity=1
    )
    _, first = await widget_page(browser, chatd)
    await request_chat(first, "Alice First", "License server unreachable")
    await accept_offer(console, "Alice First")

    _, second = await widget_page(browser, chatd)
    await request_chat(second, "Bob Second", "SSO login loops")
    queue = second.locator(w(".queue"))
    await expect(queue.locator(".queue__pos")).to_have_text("You are next in the queue")
    # Nothing handled yet: one engineer of capacity 1 and the default 10-minute handle time,
    # a chat just begun that may end soon or late: a range, not one figure
    # (tests/browser/test_waits.py checks its wording).
    await expect(queue.locator(".queue__eta")).to_have_text(
        re.compile(r"^Estimated wait: (less than a minute|up to \d+ min|about \d+–\d+ min)$")
    )
    await expect(console.locator(".qitem", has_text="Bob Second")).to_contain_text(
        "SSO login loops"
    )
    await expect(console.locator(".offer")).to_have_count(0)

    # The first chat ends: the second customer is offered to the engineer, who accepts.
    await customer_says(second, "Still waiting, the login page keeps reloading")
    await first.locator(w(".menu-btn, button[aria-haspopup=menu]")).click()
    await first.get_by_role("menuitem", name="End chat").click()
    await first.get_by_role("button", name="Yes, end it").click()
    await expect(first.locator(w(".ended"))).to_contain_text("This chat has ended.")
    await accept_offer(console, "Bob Second")
    await expect(second.locator(w(".queue"))).to_be_hidden()
    await expect(second.locator(w(".header__subtitle"))).to_contain_text("Dana Engineer")
    pane = console.locator(".pane:not([hidden])")
    await expect(pane.locator(".msg--other")).to_contain_text(
        ["Still waiting, the login page keeps reloading"]
    )
    # Both chats stay in tabs; the first is marked ended.
    await expect(console.locator(".tab")).to_have_count(2)
    await expect(console.locator(".tab", has_text="Alice First")).to_contain_text("ended")
    assert await bodies(second, w(".msg--system .msg__body")) == ["Dana Engineer joined the chat"]


async def test_waiting_customers_move_up_by_the_queue_board(
    chatd_factory: Any, browser: Browser
) -> None:
    """The widget keeps its place from the queue board (docs/protocol.md#queueboard): when a
    customer ahead leaves, the ones behind move up, and when one is answered, too."""
    chatd = await chatd_factory()
    console = await engineer_console(
        browser, chatd, "dana@vendor.example", "Dana Engineer", capacity=1
    )
    _, first = await widget_page(browser, chatd)
    await request_chat(first, "Alice First", "License server unreachable")
    await accept_offer(console, "Alice First")
    pages = []
    for name in ("Bob Second", "Carol Third", "Dan Fourth"):
        _, page = await widget_page(browser, chatd)
        await request_chat(page, name, f"{name}'s problem")
        pages.append(page)
    bob, carol, dan = pages
    pos = [p.locator(w(".queue .queue__pos")) for p in pages]
    await expect(pos[1]).to_have_text("You are number 2 in the queue")
    await expect(pos[2]).to_have_text("You are number 3 in the queue")

    # Bob gives up waiting: Carol and Dan move up.
    await bob.locator(w(".queue")).get_by_role("button", name="Leave the queue").click()
    await bob.locator(w(".btn--danger")).click()
    await expect(pos[1]).to_have_text("You are next in the queue")
    await expect(pos[2]).to_have_text("You are number 2 in the queue")

    # Alice's chat ends and Carol is answered: Dan is next.
    await first.locator(w(".menu-btn, button[aria-haspopup=menu]")).click()
    await first.get_by_role("menuitem", name="End chat").click()
    await first.get_by_role("button", name="Yes, end it").click()
    await accept_offer(console, "Carol Third")
    await expect(carol.locator(w(".queue"))).to_be_hidden()
    await expect(pos[2]).to_have_text("You are next in the queue")
    await expect(dan.locator(w(".queue .queue__eta"))).to_contain_text("Estimated wait")
