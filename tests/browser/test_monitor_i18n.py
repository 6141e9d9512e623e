"""The lead's monitor in Japanese: sign-in, the cards, tables and charts, the wait alert and
the status banner, with no English left in the page."""

from __future__ import annotations

import re
from typing import Any

from playwright.async_api import Browser, expect

from chatd.core.models import Role
from tests.browser.helpers import PASSWORD, TIMEOUT_MS, english_words, new_page
from tests.browser.test_monitor import queue_customer
from tests.e2e.helpers import engineer

JA = {"locale": "ja-JP"}
# The product's name: everything else is Japanese (the staffing note's queueing models too).
ALLOWED = {"chatd"}


async def test_the_monitor_speaks_japanese(chatd_factory: Any, browser: Browser) -> None:
    chatd = await chatd_factory(wait_warning_seconds=2, wait_target_seconds=6)
    await chatd.add_engineer("lena@vendor.example", name="Lena Park", role=Role.LEAD)
    await engineer(chatd, "alex@vendor.example", name="Alex Kim", available=False)

    _, monitor = await new_page(browser, width=1440, height=900, **JA)
    await monitor.goto(chatd.url + "/monitor/")
    await expect(monitor).to_have_title("chatd モニター")
    await expect(monitor.locator("html")).to_have_attribute("lang", "ja")
    await expect(monitor.get_by_role("heading", name="デスクモニター")).to_be_visible()

    # An engineer who is not a lead is told so in Japanese.
    await monitor.get_by_label("メールアドレス").fill("alex@vendor.example")
    await monitor.get_by_label("パスワード").fill(PASSWORD)
    await monitor.get_by_role("button", name="サインイン").click()
    await expect(monitor.get_by_role("alert")).to_contain_text(
        "リーダーのアカウントでサインインしてください"
    )
    assert await english_words(monitor, ["Alex Kim"], ALLOWED) == []

    await monitor.get_by_label("メールアドレス").fill("lena@vendor.example")
    await monitor.get_by_role("button", name="サインイン").click()
    await expect(monitor.locator(".conn")).to_have_text("ライブ", timeout=TIMEOUT_MS)
    await expect(monitor.locator("#kpi-waiting .kpi__title")).to_have_text("待ち")
    await expect(monitor.locator("#alert")).to_contain_text("待っているお客様はいません")
    await expect(monitor.locator("#alert-log")).to_contain_text(
        "このページを開いてから、アラートはありません。"
    )

    # Two customers wait with nobody to answer: the tables, the charts and the alert follow.
    await queue_customer(chatd, "kenji", "Kenji Sato", "Umbrella", "Deploy stuck at 90%", 1)
    await queue_customer(chatd, "mei", "Mei Ito", "Initech", "Billing export is empty", 3)
    waiting = monitor.locator("#kpi-waiting .kpi__value")
    await expect(waiting).to_have_text("2", timeout=TIMEOUT_MS)
    queue = monitor.get_by_role("table", name="待っているお客様")
    await expect(queue.locator("thead")).to_have_text("#お客様内容影響度待ち時間オファー先")
    await expect(queue.locator("tbody tr").first).to_contain_text("S1 · 緊急")
    await expect(queue.locator("tbody tr").first).to_contain_text("プレミア")
    engineers = monitor.get_by_role("table", name="エンジニア")
    await expect(engineers.locator("tr", has_text="Alex Kim")).to_contain_text("離席中")
    await expect(monitor.get_by_role("table", name="対応中のチャット")).to_contain_text(
        "対応中のチャットはありません。"
    )
    alert = monitor.locator("#alert")
    await expect(alert).to_have_attribute("data-level", "breach", timeout=TIMEOUT_MS)
    await expect(alert).to_contain_text("目標未達: 0:06 を超えて待っているお客様がいます")
    await expect(alert).to_contain_text("待ち 2 人")
    await expect(monitor).to_have_title("(2) 目標未達 · chatd モニター")
    await expect(monitor.locator("#alert-log [data-level=breach]")).to_contain_text("目標未達")

    # The charts: Japanese legend and captions, times on the 24-hour clock.
    chart = monitor.locator("#queue-chart")
    await expect(chart.locator("canvas")).to_have_count(1)
    await expect(chart.locator(".u-legend")).to_contain_text("時刻")
    await expect(chart.locator(".u-legend")).to_contain_text("待ち")
    await expect(monitor.locator("#wait-chart .u-legend")).to_contain_text("目標")
    await expect(monitor.locator("#queue-caption")).to_contain_text(re.compile(r"現在 2 · 最大 2"))
    assert re.fullmatch(r"\d{2}:\d{2}:\d{2} 更新", await monitor.locator(".updated").inner_text())
    await expect(monitor.get_by_role("group", name="グラフの期間")).to_contain_text("1時間")

    # The status banner, posted and cleared in Japanese.
    await monitor.get_by_role("button", name="バナーを掲示").click()
    await expect(monitor.locator(".panel--banner [role=alert]")).to_have_text(
        "先にメッセージを入力してください (またはバナーを消去してください)。"
    )
    await monitor.get_by_label("お客様へのメッセージ").fill("ログインの障害を調査しています。")
    await monitor.get_by_role("button", name="バナーを掲示").click()
    await expect(monitor.locator("#banner-current")).to_contain_text("お客様に表示中")
    await expect(monitor.locator(".statusline")).to_contain_text("ステータスバナーを掲示中")

    # (The link field's placeholder is an example address.)
    data = [
        "Lena Park",
        "Alex Kim",
        "Kenji Sato",
        "Mei Ito",
        "Umbrella",
        "Initech",
        "Deploy stuck at 90%",
        "Billing export is empty",
        "LP",
        "AK",
        "https://status.example.com/incidents/…",
    ]
    left = await english_words(monitor, data, ALLOWED)
    assert left == [], left
    await monitor.get_by_role("button", name="バナーを消去").click()
    await expect(monitor.locator("#banner-current")).to_contain_text("バナーはありません")
    assert await english_words(monitor, data, ALLOWED) == []
