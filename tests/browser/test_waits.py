"""The predicted wait in the pages: the range a waiting customer is told (English and
Japanese), the early ``predicted`` alert on the console and the monitor, and the monitor's
staffing forecast.

The desk runs on a fake clock: nothing ages unless the test moves it, so the ranges and the
forecast the server computes stay put while the browser catches up, and the test can
compare the pages with the figures the desk itself gives.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, Route, expect

from chatd.core.clock import FakeClock
from chatd.core.desk import Desk
from chatd.core.models import Role
from chatd.web import keys
from tests.browser.helpers import (
    PASSWORD,
    TIMEOUT_MS,
    accept_offer,
    engineer_console,
    js_errors,
    new_page,
    request_chat,
    w,
    widget_page,
)
from tests.conftest import Chatd
from tests.e2e.helpers import call, engineer, guest, start_chat

ROOT = Path(__file__).resolve().parents[2]
I18N = ROOT / "static" / "src" / "shared" / "i18n.js"


def range_text(low: int, high: int, lang: str, spoken: bool = False) -> str:
    """The rule the widget follows: whole minutes, the low bound rounded down and the high
    bound up."""
    lo, hi = math.floor(low / 60), math.ceil(high / 60)
    if lang == "ja":
        if high < 60:
            return "1分以内"
        if low < 60:
            return f"最大{hi}分"
        if lo == hi:
            return f"約{hi}分"
        return f"約{lo}分から{hi}分" if spoken else f"約{lo}〜{hi}分"
    minutes = "minute" if hi == 1 else "minutes"
    if high < 60:
        return "less than a minute"
    if low < 60:
        return f"up to {hi} {minutes}" if spoken else f"up to {hi} min"
    if lo == hi:
        return f"about {hi} {minutes}" if spoken else f"about {hi} min"
    return f"about {lo} to {hi} minutes" if spoken else f"about {lo}–{hi} min"


def desk_of(chatd: Chatd) -> Desk:
    return chatd.app[keys.DESK]


def told(chatd: Chatd, position: int) -> tuple[int, int]:
    """The range the desk tells the customer at ``position`` now."""
    table = desk_of(chatd).wait_table()
    assert table is not None, "an engineer is available: the desk can predict"
    wait = table.at(position)
    return wait.low, wait.high


def mins(seconds: float) -> str:
    """Seconds as the monitor words them: to the minute from a minute up."""
    s = math.floor(seconds + 0.5)
    return f"{s} s" if s < 60 else f"{math.floor(s / 60 + 0.5)} min"


def forecast_cells(forecast: dict[str, Any], horizon: str) -> list[str]:
    """A forecast row's cells as the monitor should show them: arrivals per hour, slots,
    engineers, and the gap to what is online in words."""
    part = forecast[horizon]
    per_hour = part["arrivals_per_hour"]
    shown = str(math.floor(per_hour + 0.5)) if per_hour >= 10 else f"{per_hour:g}"
    slots, engineers = part["slots"], part["engineers"]
    if slots is None:
        return [shown, "–", "–", "beyond what the model computes"]
    short = slots - forecast["slots_online"]
    if short > 0:
        more = -(-short // forecast["default_capacity"])
        gap = (f"{short} slot{'s' if short != 1 else ''} short "
               f"(~{more} engineer{'s' if more != 1 else ''})")
    else:
        gap = f"enough ({-short} spare)" if short < 0 else "enough"
    return [shown, str(slots), str(engineers), gap]


async def sign_in(page: Page, email: str) -> None:
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()


async def test_range_text_rounds_outward_in_english_and_japanese(browser: Browser) -> None:
    """The widget's wording of a range, in Chromium from the shared strings module, for
    each rule and edge; a server without the range gets the single estimate as before."""
    _, page = await new_page(browser)

    async def serve(route: Route) -> None:
        if route.request.url.endswith("/i18n.js"):
            await route.fulfill(status=200, content_type="text/javascript",
                                body=I18N.read_text(encoding="utf-8"))
        else:
            await route.fulfill(status=200, content_type="text/html",
                                body="<!doctype html><title>strings</title>")

    await page.route("http://strings.test/**", serve)
    await page.goto("http://strings.test/")
    cases = [(0, 0), (0, 45), (30, 59), (20, 60), (0, 61), (59, 400), (60, 60), (60, 61),
             (60, 120), (120, 120), (130, 410), (179, 181), (600, 3720), (3600, 7260)]
    got = await page.evaluate(
        """async (cases) => {
            const m = await import('/i18n.js');
            const out = [];
            for (const [low, high] of cases) {
              for (const lang of ['en', 'ja']) {
                out.push([low, high, lang, false, m.waitRange(low, high, lang)]);
                out.push([low, high, lang, true, m.waitRange(low, high, lang, true)]);
              }
            }
            const texts = {};
            for (const lang of ['en', 'ja']) {
              texts[lang] = [
                m.waitText({ estimated_wait_seconds: 280, estimated_wait_low_seconds: 130,
                             estimated_wait_high_seconds: 410 }, lang),
                m.waitText({ estimated_wait_seconds: 20, estimated_wait_low_seconds: 0,
                             estimated_wait_high_seconds: 45 }, lang),
                m.waitText({ estimated_wait_seconds: null, estimated_wait_low_seconds: null,
                             estimated_wait_high_seconds: null }, lang),
                m.waitText({ position: 2, estimated_wait_seconds: 600 }, lang),
              ];
            }
            return { out, texts };
        }""",
        cases,
    )
    for low, high, lang, spoken, text in got["out"]:
        assert text == range_text(low, high, lang, spoken), (low, high, lang, spoken)
    assert got["texts"]["en"] == [
        "Estimated wait: about 2–7 min",
        "Estimated wait: less than a minute",
        "Waiting for an engineer to become available.",
        "Estimated wait: about 10 min",  # an older server: no range, the single figure
    ]
    assert got["texts"]["ja"] == [
        "推定待ち時間: 約2〜7分",
        "推定待ち時間: 1分以内",
        "対応可能なエンジニアをお待ちください。",
        "推定待ち時間: 約 10 分",
    ]
    assert js_errors(page) == []


async def test_waiting_customers_see_a_range_and_the_console_a_predicted_alert(
    chatd_factory: Any, browser: Browser, artifacts: Path
) -> None:
    clock = FakeClock()
    # A 15-minute chat in progress on the only slot, against a 10-minute target: the next
    # customer is heading past it long before anyone has waited the warning's 8 minutes.
    chatd = await chatd_factory(clock=clock, wait_target_seconds=600,
                                wait_warning_seconds=480, default_handle_seconds=900)
    console = await engineer_console(browser, chatd, "dana@vendor.example", "Dana Engineer",
                                     capacity=1)
    bar = console.locator(".alert-bar")
    first, _ = await guest(chatd, "Priya")
    r = await call(first, "/customer", "chat:request", {"topic": "License server unreachable"})
    assert r["ok"], r
    await accept_offer(console, "Priya")
    await expect(bar).to_be_hidden()

    _, en = await widget_page(browser, chatd)
    await request_chat(en, "Bob Second", "SSO login loops")
    ctx_ja, ja = await new_page(browser, locale="ja-JP")
    await ja.goto(chatd.url + "/demo/")
    await ja.locator(w(".launcher")).wait_for()
    await request_chat(ja, "Hanako Yamada", "ログインできない")

    await expect(en.locator(w(".queue__pos"))).to_have_text("You are next in the queue")
    await expect(ja.locator(w(".queue__pos"))).to_have_text("待ち順: 2 番目")
    # Dana's chat has only begun: it may end soon or in half an hour, a wide range.
    low1, high1 = told(chatd, 1)
    low2, high2 = told(chatd, 2)
    assert low1 < high1 and low2 < high2 and high1 <= high2, (low1, high1, low2, high2)
    en_eta = en.locator(w(".queue__eta"))
    await expect(en_eta).to_have_text("Estimated wait: " + range_text(low1, high1, "en"))
    await expect(ja.locator(w(".queue__eta"))).to_have_text(
        "推定待ち時間: " + range_text(low2, high2, "ja")
    )
    # Screen readers hear the same range, in words.
    await expect(en.locator(w(".sr-only[role=status]"))).to_have_text(
        "You are next in the queue. Estimated wait: " + range_text(low1, high1, "en", True)
    )
    await expect(ja.locator(w(".sr-only[role=status]"))).to_have_text(
        "待ち順: 2 番目。推定待ち時間: " + range_text(low2, high2, "ja", True)
    )
    await ja.screenshot(path=str(artifacts / "widget-wait-range-ja.png"))

    # Nobody has waited yet, but the desk predicts a wait past the target: a heads-up.
    alert = desk_of(chatd).alerts.current()
    assert alert is not None and alert["level"] == "predicted", alert
    predicted = alert["predicted_wait_seconds"]
    assert predicted >= 0.8 * 600 and alert["oldest_wait_seconds"] < 480, alert
    await expect(bar).to_have_class("alert-bar predicted", timeout=TIMEOUT_MS)
    await expect(bar).to_have_text(
        "Heads-up: waits are heading past the 10 min target "
        f"(longest predicted about {round(predicted / 60)} min)."
    )
    await console.screenshot(path=str(artifacts / "console-predicted-alert.png"))

    # Bob then really waits past the warning: the heads-up gives way to the warning.
    clock.advance(481)
    await expect(bar).to_have_class("alert-bar warning", timeout=TIMEOUT_MS)
    await expect(bar).to_contain_text("waited over 480 s")
    assert js_errors(en) == [] and js_errors(ja) == [] and js_errors(console) == []
    await ctx_ja.close()


async def test_monitor_shows_the_staffing_forecast_and_the_predicted_alert(
    chatd_factory: Any, browser: Browser, artifacts: Path
) -> None:
    clock = FakeClock()
    chatd = await chatd_factory(clock=clock)
    await chatd.add_engineer("lena@vendor.example", name="Lena Park", role=Role.LEAD)
    alex, alex_in = await engineer(chatd, "alex@vendor.example", name="Alex Kim")
    r = await call(alex, "/engineer", "engineer:status", {"status": "available", "capacity": 1})
    assert r["ok"], r
    busy, _ = await guest(chatd, "Priya")
    await start_chat(chatd, alex, alex_in, busy, topic="SSO login loops")

    _, monitor = await new_page(browser, width=1440, height=900)
    await monitor.goto(chatd.url + "/monitor/")
    await sign_in(monitor, "lena@vendor.example")
    await expect(monitor.locator(".conn")).to_have_text("Live", timeout=TIMEOUT_MS)
    panel = monitor.get_by_role("region", name="Staffing forecast")
    table = panel.get_by_role("table", name="Staffing forecast")
    now_row = table.locator("tr[data-horizon=now]")
    next_row = table.locator("tr[data-horizon=next_hour]")
    online_row = table.locator("tr[data-horizon=online]")
    # One arrival so far: too few to say.
    await expect(now_row).to_contain_text("not enough data yet")
    await expect(next_row).to_contain_text("not enough data yet")
    await expect(online_row.locator("td")).to_have_text(["–", "1", "1", ""])
    await expect(panel.locator("#forecast-note")).to_contain_text("90% within 5 min, Erlang C")

    # Nineteen more customers queue behind Alex's chat: the desk predicts waits past the
    # target before anyone has waited the warning's four minutes.
    waiting = []
    for i in range(19):
        c, _ = await guest(chatd, f"Guest{i:02d}")
        r = await call(c, "/customer", "chat:request", {"topic": f"Question {i}"})
        assert r["ok"], r
        waiting.append((c, r["session"]["id"]))
    bar = monitor.locator("#alert")
    await expect(bar).to_have_attribute("data-level", "predicted", timeout=TIMEOUT_MS)
    await expect(bar.locator(".alertbar__head")).to_contain_text(
        "Heads-up: waits are heading past the 5:00 target (longest predicted"
    )
    log = monitor.locator("#alert-log")
    await expect(log.locator("[data-level=predicted]")).to_contain_text("Heads-up")
    await expect(monitor).to_have_title("(19) Heads-up · chatd monitor")

    # Ten minutes on, the customers give up: twenty arrivals in ten minutes, and patience
    # seen, so the forecast has figures and uses Erlang A.
    clock.advance(600)
    await expect(bar).to_have_attribute("data-level", "breach", timeout=TIMEOUT_MS)
    for c, sid in waiting:
        r = await call(c, "/customer", "session:end", {"session_id": sid})
        assert r["ok"], r
    await expect(bar).to_have_attribute("data-level", "ok", timeout=TIMEOUT_MS)
    await expect(log.locator("[data-level=clear]")).to_have_count(1, timeout=TIMEOUT_MS)

    # The page shows the desk's own figures (the fake clock holds them still).
    forecast = desk_of(chatd).forecast()
    assert forecast["now"]["arrivals_per_hour"] is not None, forecast
    assert forecast["now"]["slots"] is not None and forecast["now"]["slots"] > 1, forecast
    await expect(now_row.locator("td")).to_have_text(forecast_cells(forecast, "now"),
                                                     timeout=TIMEOUT_MS)
    await expect(next_row.locator("td")).to_have_text(forecast_cells(forecast, "next_hour"))
    await expect(now_row.locator("th")).to_have_text("Needed now")
    await expect(next_row.locator("th")).to_have_text("Needed next hour")
    await expect(online_row.locator("td")).to_have_text(["–", "1", "1", ""])
    # Nineteen of twenty gave up after ten minutes: patience is seen, so Erlang A.
    assert forecast["model"] == "erlang_a", forecast
    await expect(panel.locator("#forecast-note")).to_have_text(
        f"90% within 5 min, Erlang A with patience ~{mins(forecast['patience_seconds'])}; "
        f"handle time ~{mins(forecast['handle_seconds'])}; engineers at 3 chats each."
    )
    await monitor.screenshot(path=str(artifacts / "monitor-forecast.png"), full_page=True)
    assert js_errors(monitor) == []


async def test_console_heads_up_when_customers_wait_and_nobody_can_answer(
    chatd_factory: Any, browser: Browser
) -> None:
    clock = FakeClock()
    chatd = await chatd_factory(clock=clock)
    console = await engineer_console(browser, chatd, "sam@vendor.example", "Sam",
                                     available=False)
    _, page = await widget_page(browser, chatd)
    await request_chat(page, "Ann Early", "VPN down")
    # Nobody has waited a second, but nobody is there to answer: no figure to give.
    await expect(page.locator(w(".queue__eta"))).to_have_text(
        "Waiting for an engineer to become available.")
    bar = console.locator(".alert-bar")
    await expect(bar).to_have_class("alert-bar predicted", timeout=TIMEOUT_MS)
    await expect(bar).to_have_text(
        "Heads-up: waits are heading past the 5 min target (no engineer available to answer)."
    )
    alert = desk_of(chatd).alerts.current()
    assert alert is not None and alert["predicted_wait_seconds"] is None, alert
    # Sam becomes available and takes the chat: the heads-up clears.
    await console.get_by_role("switch").click()
    await accept_offer(console, "Ann Early")
    await expect(bar).to_be_hidden(timeout=TIMEOUT_MS)
    assert js_errors(console) == [] and js_errors(page) == []
