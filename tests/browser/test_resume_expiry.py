"""The widget keeps an ended chat's resume token in the host page's localStorage for a
bounded time only (an hour), and forgets it at once when the server refuses it
(docs/embedding.md)."""

from __future__ import annotations

import asyncio
from typing import Any

from playwright.async_api import Browser, Page, expect

from chatd.core.clock import FakeClock
from tests.browser.helpers import js_errors, request_chat, w, widget_page
from tests.conftest import Chatd
from tests.e2e.helpers import call, engineer

STORED = """() => Object.keys(localStorage).filter((k) => k.endsWith(':session'))
    .map((k) => localStorage.getItem(k))"""


async def stored(page: Page) -> list[str]:
    return list(await page.evaluate(STORED))


async def until_forgotten(page: Page) -> None:
    """Polled from here: the page's own timers may be fake."""
    for _ in range(100):
        if not await stored(page):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the widget still keeps {await stored(page)}")


async def ended_in_widget(chatd: Chatd, page: Page, name: str) -> str:
    """A guest starts a chat in the widget; an engineer takes it and ends it. Its id."""
    eng, eng_in = await engineer(chatd, "alex@example.com", name="Alex")
    await request_chat(page, name, "Cannot log in")
    offer = await eng_in.wait_for("offer:new")
    sid = str(offer["session_id"])
    assert (await call(eng, "/engineer", "offer:accept", {"session_id": sid}))["ok"]
    assert (await call(eng, "/engineer", "session:end", {"session_id": sid}))["ok"]
    await expect(page.locator(w(".ended"))).to_contain_text("This chat has ended.")
    [entry] = await stored(page)
    assert sid in entry and "ended_at" in entry
    return sid


async def test_an_ended_chat_is_forgotten_an_hour_later_even_with_the_page_open(
    chatd_factory: Any, browser: Browser
) -> None:
    chatd = await chatd_factory()
    ctx, page = await new_clocked_page(browser, chatd)
    await ended_in_widget(chatd, page, "Carol Customer")

    # Within the hour a reload shows the ended chat again.
    await page.clock.fast_forward("50:00")
    await page.reload()
    await expect(page.locator(w(".ended"))).to_contain_text("This chat has ended.")
    assert len(await stored(page)) == 1

    # Past it, the token leaves the host page's storage without a reload...
    await page.clock.fast_forward("11:00")
    await until_forgotten(page)
    # ...and the next visit starts afresh.
    await page.reload()
    await page.locator(w(".launcher")).click()
    await expect(page.locator(w(".view-start"))).to_be_visible()
    await expect(page.locator(w(".ended"))).to_be_hidden()
    assert await stored(page) == []
    assert js_errors(page) == []
    await ctx.close()


async def new_clocked_page(browser: Browser, chatd: Chatd) -> tuple[Any, Page]:
    ctx, page = await widget_page(browser, chatd)
    await page.clock.install()
    await page.reload()
    await page.locator(w(".launcher")).wait_for()
    return ctx, page


async def test_a_token_the_server_calls_expired_is_forgotten(
    chatd_factory: Any, browser: Browser
) -> None:
    clock = FakeClock()
    chatd = await chatd_factory(clock=clock, resume_token_ttl_seconds=600)
    ctx, page = await widget_page(browser, chatd)
    await ended_in_widget(chatd, page, "Dana Customer")

    # The server's lifetime (ten minutes here) runs out before the widget's hour: on the
    # next visit the server refuses the token, and the widget drops it.
    clock.advance(601)
    await page.reload()
    await until_forgotten(page)
    await expect(page.locator(w(".panel"))).to_be_visible()  # it was open before the reload
    await expect(page.locator(w(".view-start"))).to_be_visible()
    assert js_errors(page) == []
    await ctx.close()


async def test_a_transcript_refused_as_expired_forgets_the_token(
    chatd_factory: Any, browser: Browser
) -> None:
    clock = FakeClock()
    chatd = await chatd_factory(clock=clock, resume_token_ttl_seconds=600)
    ctx, page = await widget_page(browser, chatd)
    await ended_in_widget(chatd, page, "Erin Customer")
    clock.advance(601)
    await page.locator(w(".ended")).get_by_role("button", name="Download transcript").click()
    await until_forgotten(page)
    await expect(page.locator(w(".view-start"))).to_be_visible()
    await ctx.close()
