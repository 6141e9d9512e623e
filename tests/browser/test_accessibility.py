"""The widget by keyboard and screen reader: labels, focus order, live regions."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Browser, Page, expect

from tests.browser.helpers import accept_offer, engineer_console, engineer_says, w, widget_page

FOCUSED = """() => {
  const el = document.querySelector('chatd-widget').shadowRoot.activeElement;
  if (!el) return null;
  return el.getAttribute('name') || el.getAttribute('aria-label') || el.textContent.trim();
}"""


async def focused(page: Page) -> str | None:
    result = await page.evaluate(FOCUSED)
    return None if result is None else str(result)


async def test_widget_is_usable_by_keyboard_with_labels_and_live_regions(
    chatd_factory: Any, browser: Browser
) -> None:
    chatd = await chatd_factory()
    console = await engineer_console(browser, chatd, "dana@vendor.example", "Dana Engineer")
    _, page = await widget_page(browser, chatd)
    launcher = page.get_by_role("button", name="Chat with an engineer")
    await expect(launcher).to_have_attribute("aria-expanded", "false")
    await launcher.focus()
    await page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Technical support")
    await expect(dialog).to_be_visible()
    await expect(launcher).to_have_attribute("aria-expanded", "true")

    # Focus starts in the form and moves through it in reading order.
    assert await focused(page) == "name"
    order = []
    for _ in range(5):
        await page.keyboard.press("Tab")
        order.append(await focused(page))
    assert order == ["email", "topic", "severity", "message", "Start chat"]

    # Sending the form empty names the problem at the field, and focus goes there.
    await page.keyboard.press("Enter")
    name = dialog.get_by_label("Your name")
    await expect(name).to_have_attribute("aria-invalid", "true")
    await expect(name).to_be_focused()
    await expect(dialog.locator(".field__error").first).to_have_text("Please fill in this field.")

    await page.keyboard.type("Kim Keyboard")
    await page.keyboard.press("Tab")
    await page.keyboard.type("kim@client.example")
    await page.keyboard.press("Tab")
    await page.keyboard.type("Keyboard shortcuts do nothing")
    await page.keyboard.press("Enter")
    await accept_offer(console, "Kim Keyboard")

    # New messages land in a polite live log; the composer is labelled and has focus.
    log = page.get_by_role("log", name="Messages")
    await expect(log).to_have_attribute("aria-live", "polite")
    await expect(page.get_by_role("textbox", name="Message")).to_be_focused()
    await engineer_says(console, "Which keyboard layout?")
    await expect(log.locator(".msg--other")).to_contain_text(["Which keyboard layout?"])
    await page.keyboard.type("Japanese JIS")
    await page.keyboard.press("Enter")
    await expect(console.locator(".pane:not([hidden]) .msg--other").last).to_contain_text(
        "Japanese JIS"
    )
    status = page.locator(w(".sr-only[role=status]"))
    await expect(status).to_have_attribute("aria-live", "polite")

    # Escape closes the panel and gives focus back to the launcher.
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(launcher).to_be_focused()
    await engineer_says(console, "Try the on-screen keyboard")
    await expect(page.locator(w(".launcher .badge"))).to_have_text("1")
    await expect(launcher).to_have_attribute("aria-label", "Chat with an engineer, 1 new message")
