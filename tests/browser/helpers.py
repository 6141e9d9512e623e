"""Steps people take in the widget and the console, for the browser tests."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, BrowserContext, Locator, Page, expect

from tests.conftest import Chatd

PASSWORD = "correct horse battery"
TIMEOUT_MS = 15_000

# Playwright's CSS selectors pierce open shadow roots: "chatd-widget .launcher" finds the
# launcher inside the widget's shadow DOM.
W = "chatd-widget"


def w(selector: str) -> str:
    return f"{W} {selector}"


async def new_page(
    browser: Browser, *, width: int = 1280, height: int = 800, **kw: Any
) -> tuple[BrowserContext, Page]:
    ctx = await browser.new_context(viewport={"width": width, "height": height}, **kw)
    ctx.set_default_timeout(TIMEOUT_MS)
    page = await ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.js_errors = errors  # type: ignore[attr-defined]
    return ctx, page


def js_errors(page: Page) -> list[str]:
    return list(page.js_errors)  # type: ignore[attr-defined]


async def engineer_console(
    browser: Browser,
    chatd: Chatd,
    email: str,
    name: str,
    *,
    available: bool = True,
    capacity: int | None = None,
    **kw: Any,
) -> Page:
    """An engineer account, logged into the console in a browser context of their own."""
    await chatd.add_engineer(email, name=name)
    return await signed_in_console(
        browser, chatd.url, email, available=available, capacity=capacity, **kw
    )


async def signed_in_console(
    browser: Browser,
    url: str,
    email: str,
    *,
    available: bool = True,
    capacity: int | None = None,
    **kw: Any,
) -> Page:
    """The console at ``url`` signed in as an existing engineer, in a context of its own."""
    _, page = await new_page(browser, width=1440, height=900, **kw)
    await page.goto(url + "/console/")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator(".conn")).to_have_text("Connected")
    if capacity is not None:
        await page.select_option("#capacity", str(capacity))
        await expect(page.locator("#capacity")).to_have_value(str(capacity))
    if available:
        await page.get_by_role("switch").click()
        await expect(page.get_by_role("switch")).to_have_attribute("aria-checked", "true")
    return page


async def widget_page(
    browser: Browser, chatd: Chatd, path: str = "/demo/", **kw: Any
) -> tuple[BrowserContext, Page]:
    ctx, page = await new_page(browser, **kw)
    await page.goto(chatd.url + path)
    await page.locator(w(".launcher")).wait_for()
    return ctx, page


async def request_chat(
    page: Page, name: str, topic: str, message: str = "", severity: int = 3
) -> None:
    """Open the widget, fill the guest form and start a chat."""
    if not await page.locator(w(".panel")).is_visible():
        await page.locator(w(".launcher")).click()
    await page.locator(w(".view-start input[name=name]")).fill(name)
    email = f"{name.split()[0].lower()}@client.example"
    await page.locator(w(".view-start input[name=email]")).fill(email)
    await page.locator(w(".view-start input[name=topic]")).fill(topic)
    await page.locator(w(".view-start select[name=severity]")).select_option(str(severity))
    if message:
        await page.locator(w(".view-start textarea[name=message]")).fill(message)
    await page.locator(w(".view-start button[type=submit]")).click()
    await expect(page.locator(w(".view-chat"))).to_be_visible()


async def accept_offer(console: Page, customer_name: str) -> None:
    offer = console.locator(".offer", has_text=customer_name)
    await offer.get_by_role("button", name="Accept").click()
    await expect(console.locator(".tab--active")).to_contain_text(customer_name)


async def engineer_says(console: Page, text: str) -> None:
    box = console.locator(".pane:not([hidden]) .composer textarea")
    await box.fill(text)
    await box.press("Enter")
    await expect(console.locator(".pane:not([hidden]) .msg--own.msg--stored").last).to_contain_text(
        text.splitlines()[0]
    )


async def customer_says(page: Page, text: str) -> None:
    box = page.locator(w(".composer textarea"))
    await box.fill(text)
    await box.press("Enter")
    await expect(page.locator(w(".msg--own.msg--stored")).last).to_contain_text(
        text.splitlines()[0]
    )


async def bodies(page: Page, selector: str) -> list[str]:
    return [re.sub(r"\s+", " ", t).strip() for t in await page.locator(selector).all_inner_texts()]


async def seqs(page: Page, selector: str) -> list[int]:
    values = await page.locator(selector).evaluate_all("els => els.map(e => e.dataset.seq)")
    return [int(v) for v in values]


def png_bytes(width: int = 320, height: int = 200) -> bytes:
    """A real screenshot-like PNG (made by Pillow, as the server checks the bytes)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), (246, 248, 252))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, width, 28), fill=(36, 80, 216))
    draw.rectangle((16, 50, width - 16, 80), outline=(180, 35, 24), width=3)
    draw.text((24, 58), "Error 502: upstream connect error", fill=(180, 35, 24))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


async def paste_image(page: Page, target: str, data: bytes, filename: str = "image.png") -> None:
    """What a browser does on Ctrl+V of a screenshot: a paste event carrying an image file."""
    await page.locator(target).evaluate(
        """(el, [b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: 'image/png' }));
            el.focus();
            el.dispatchEvent(new ClipboardEvent('paste', {
                clipboardData: dt, bubbles: true, cancelable: true, composed: true,
            }));
        }""",
        [base64.b64encode(data).decode("ascii"), filename],
    )


async def wait_image_loaded(locator: Locator) -> None:
    """Until the image has really been decoded (its bytes came back and are an image)."""
    handle = await locator.element_handle()
    await locator.page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=handle, timeout=TIMEOUT_MS
    )


# axe-core from npm (a devDependency: `make test` installs it with `npm ci`).
AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
# WCAG 2.1 levels A and AA; axe walks open shadow roots (the widget's) by itself.
AXE_RUN = """async () => {
  const result = await axe.run(document, {
    runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] },
    resultTypes: ['violations'],
  });
  return result.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map((n) => ({ target: n.target, summary: n.failureSummary })),
  }));
}"""


# Finite animations still running (an offer card's fade-in, in the widget's shadow tree too):
# colours read in the middle of one are neither the start's nor the end's.
ANIMATING = """() => document.getAnimations().some(
  (a) => a.playState === 'running' && a.effect && a.effect.getTiming().iterations !== Infinity)"""


async def axe_violations(page: Page, impacts: tuple[str, ...] = ("serious", "critical")) -> str:
    """The page's WCAG 2.1 A/AA violations of these impacts, one line per element ('' if none),
    once its finite animations have ended (what a reader sees, not a frame of a fade)."""
    if not await page.evaluate("() => typeof window.axe === 'object'"):
        await page.add_script_tag(path=str(AXE))
    await page.wait_for_function(f"() => !({ANIMATING})()", timeout=TIMEOUT_MS)
    found = await page.evaluate(AXE_RUN)
    lines = []
    for v in found:
        if v["impact"] not in impacts:
            continue
        for n in v["nodes"]:
            summary = re.sub(r"\s+", " ", n["summary"] or "").strip()
            lines.append(f"{v['id']} ({v['impact']}): {v['help']} at {n['target']}: {summary}")
    return "\n".join(lines)


# Everything a person sees or hears of a page: its visible text, <title>, and the labels,
# titles and placeholders of elements that are not hidden.
PAGE_WORDS = """() => {
  const parts = [document.title, document.body.innerText];
  for (const el of document.querySelectorAll('[aria-label], [title], [placeholder]')) {
    if (el.closest('[hidden]')) continue;
    for (const a of ['aria-label', 'title', 'placeholder']) {
      if (el.hasAttribute(a)) parts.push(el.getAttribute(a));
    }
  }
  return parts.join('\\n');
}"""


async def english_words(page: Page, data: list[str], allowed: set[str]) -> list[str]:
    """Latin-letter words on a page translated into another language, once the data shown
    (names, topics, messages: `data`) and the `allowed` words (product names, formats) are
    taken out: what is left is text the translation missed."""
    text = str(await page.evaluate(PAGE_WORDS))
    for item in sorted(data, key=len, reverse=True):
        text = text.replace(item, " ")
    left: set[str] = set()
    for m in re.finditer(r"[A-Za-z]{2,}", text):
        if m.group() not in allowed:
            around = re.sub(r"\s+", " ", text[max(0, m.start() - 40) : m.end() + 40])
            left.add(f"{m.group()} in “{around}”")
    return sorted(left)
