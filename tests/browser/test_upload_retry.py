"""The widget's upload whose answer is lost: it sends the file again with the same
Upload-Id, and the chat gets one file (docs/attachments.md#retrying-an-upload)."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Route, expect

from tests.browser.helpers import new_page, request_chat, w


async def test_a_lost_answer_is_retried_with_the_same_id_and_stored_once(
    chatd_factory: Any, browser: Browser, tmp_path: Path,
) -> None:
    chatd = await chatd_factory()
    _, page = await new_page(browser)
    await page.goto(chatd.url + "/demo/")
    await request_chat(page, "Rita Retry", "The log upload hangs")

    sent: list[tuple[str | None, int | None]] = []

    async def lose_the_first_answer(route: Route) -> None:
        upload_id = route.request.headers.get("upload-id")
        if not sent:
            # The server stores the file and answers; the answer never reaches the page.
            answer = await route.fetch()
            sent.append((upload_id, answer.status))
            await route.abort("connectionreset")
            return
        sent.append((upload_id, None))
        await route.continue_()

    await page.route(re.compile(r".*/api/sessions/[^/]+/attachments$"), lose_the_first_answer)
    answers: list[int] = []
    page.on("response", lambda r: answers.append(r.status)
            if r.url.endswith("/attachments") else None)
    await page.locator(w(".composer input[type=file]")).set_input_files(
        files=[{"name": "server.log", "mimeType": "text/plain",
                "buffer": b"2026-01-01 ERROR the service stopped\n" * 200}]
    )
    # The upload's progress stays up until an answer arrives: after the retry's.
    await expect(page.locator(w(".upload"))).to_be_hidden(timeout=15_000)
    own = page.locator(w(".msg--own"))
    await expect(own).to_have_count(1)
    await expect(own).to_contain_text("server.log")
    await expect(page.locator(w(".notice"))).to_be_hidden()

    assert len(sent) == 2, sent
    assert answers == [200]
    (first_id, first_status), (retry_id, _) = sent
    assert first_status == 201
    assert first_id is not None and re.fullmatch(r"[0-9a-f]{32}", first_id)
    assert retry_id == first_id
    db = tmp_path / "chatd.db"
    with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as con:
        rows = con.execute("SELECT upload_id FROM attachments").fetchall()
        announced = con.execute(
            "SELECT COUNT(*) FROM messages WHERE kind = 'attachment'"
        ).fetchone()[0]
    assert rows == [(first_id,)]
    assert announced == 1
