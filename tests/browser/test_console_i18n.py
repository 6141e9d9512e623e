"""The engineer console in Japanese: a browser whose language is Japanese gets the whole
console in Japanese, from the sign-in to an ended chat, with no English left in it."""

from __future__ import annotations

import re
from typing import Any

from playwright.async_api import Browser, expect

from tests.browser.helpers import (
    PASSWORD,
    customer_says,
    english_words,
    new_page,
    request_chat,
    w,
    widget_page,
)

JA = {"locale": "ja-JP"}
# Formats and the product's name, which stay as they are in Japanese.
ALLOWED = {"chatd", "HTML", "JSON", "Enter", "Shift"}


async def test_the_console_speaks_japanese_from_sign_in_to_an_ended_chat(
    chatd_factory: Any, browser: Browser
) -> None:
    chatd = await chatd_factory()
    await chatd.add_engineer("dana@vendor.example", name="Dana Engineer")
    _, console = await new_page(browser, width=1440, height=900, **JA)
    await console.goto(chatd.url + "/console/")

    # Sign-in, in Japanese; a wrong password is refused in Japanese too.
    await expect(console).to_have_title("chatd コンソール")
    await expect(console.locator("html")).to_have_attribute("lang", "ja")
    await expect(console.get_by_role("heading", name="サポートコンソール")).to_be_visible()
    await console.get_by_label("メールアドレス").fill("dana@vendor.example")
    await console.get_by_label("パスワード").fill("not the password")
    await console.get_by_role("button", name="サインイン").click()
    await expect(console.get_by_role("alert")).to_have_text(
        "サインインできませんでした。メールアドレスとパスワードをご確認ください。"
    )
    assert await english_words(console, [], ALLOWED) == []
    await console.get_by_label("パスワード").fill(PASSWORD)
    await console.get_by_role("button", name="サインイン").click()

    await expect(console.locator(".conn")).to_have_text("接続済み")
    switch = console.get_by_role("switch")
    await expect(switch).to_have_text("離席中")
    await expect(console.locator(".empty")).to_contain_text("開いているチャットはありません")
    await expect(console.get_by_role("list", name="待っているお客様")).to_contain_text(
        "待っているお客様はいません。"
    )
    await switch.click()
    await expect(switch).to_have_text("対応可能")

    # A customer (whose widget is Japanese as well) asks for a chat: the offer is Japanese.
    _, widget = await widget_page(browser, chatd, **JA)
    await request_chat(widget, "Kenji Sato", "Deploys fail with 502", severity=2)
    offer = console.locator(".offer", has_text="Kenji Sato")
    await expect(offer).to_contain_text("新しいチャット")
    await expect(offer).to_contain_text("S2 · 高")
    await expect(offer).to_contain_text("スタンダード")
    await expect(offer).to_contain_text(re.compile(r"待ち時間 \d+:\d\d"))
    await expect(offer).to_have_attribute(
        "aria-label", "オファー: Kenji Sato、Deploys fail with 502"
    )
    await offer.get_by_role("button", name="承諾").click()

    # The chat: system message, labels, receipts and the customer panel in Japanese.
    pane = console.locator(".pane:not([hidden])")
    await expect(pane.locator(".msg--system")).to_contain_text(
        "Dana Engineer さんがチャットに参加しました"
    )
    await expect(widget.locator(w(".msg--system"))).to_contain_text(
        "Dana Engineer がチャットに参加しました"
    )
    reply = pane.get_by_role("textbox", name="返信")
    await reply.fill("再デプロイのログを送っていただけますか?")
    await reply.press("Enter")
    await expect(pane.locator(".msg--own.msg--stored .msg__sender")).to_have_text("あなた")
    await expect(pane.locator(".msg--own .msg__status")).to_have_text(re.compile("送信済み|既読"))
    await customer_says(widget, "Here is the log")
    await expect(pane.get_by_role("log", name="メッセージ")).to_contain_text("Here is the log")
    await expect(pane.locator(".msg--own .msg__status")).to_have_text("既読")
    # Times are the Japanese clock: 24-hour, no AM/PM.
    assert re.fullmatch(r"\d{2}:\d{2}", await pane.locator(".msg--own time").inner_text())
    panel = console.get_by_role("complementary", name="お客様")
    for label in ("アカウント", "プラン", "影響度", "内容", "待ち時間", "開始"):
        await expect(panel.locator("dt", has_text=label)).to_have_count(1)
    await expect(panel).to_contain_text("エスカレーションの依頼")
    await expect(console).to_have_title("chatd コンソール")
    data = [
        "Kenji Sato",
        "Deploys fail with 502",
        "Here is the log",
        "Dana Engineer",
        "kenji@client.example",
        "KS",
        "DE",
    ]
    assert await english_words(console, data, ALLOWED) == []

    # Ending it: the dialog, the ended chat and its system message.
    await pane.get_by_role("button", name="チャットを終了").click()
    dialog = console.get_by_role("dialog", name="Kenji Sato さんとのチャットを終了")
    await expect(dialog).to_be_visible()
    resolution = dialog.get_by_label("解決内容のメモ (チケットに記録されます)")
    await expect(resolution).to_be_focused()
    assert await english_words(console, data, ALLOWED) == []
    await resolution.fill("ヘルスチェックの設定を修正")
    await dialog.get_by_role("button", name="チャットを終了").click()
    await expect(pane.locator(".ended__title")).to_have_text("このチャットは終了しました。")
    await expect(pane.locator(".msg--system").last).to_have_text(
        re.compile("^エンジニアがチャットを終了しました")
    )
    await expect(console.locator(".tab")).to_contain_text("終了")
    assert await english_words(console, data, ALLOWED) == []
    await expect(console.get_by_role("button", name="サインアウト")).to_be_visible()
