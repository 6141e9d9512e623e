"""Cross-site requests: what the engineer's cookie lets a page of another origin do.

The ``chatd_token`` cookie is ``SameSite=Strict``, which a page on another host of the
same site still gets sent. So every state-changing request signed in by the cookie must
come from chatd's own origin, and JSON endpoints must get a JSON body; anything else is
refused with 403 ``forbidden`` and changes nothing (docs/security.md#cookies-origins-and-
cross-site-requests)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from chatd.core.models import Role
from tests.conftest import Chatd
from tests.e2e.helpers import engineer, guest, start_chat

SIBLING = "https://forum.vendor.example"  # same site as a console, another origin


def cookie(token: str) -> dict[str, str]:
    return {"Cookie": f"chatd_token={token}"}


async def post(
    chatd: Chatd, path: str, headers: dict[str, str], **kw: Any
) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.post(chatd.url + path, headers=headers, **kw) as r:
            body = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body


async def banner(chatd: Chatd) -> Any:
    async with aiohttp.ClientSession() as http:
        async with http.get(chatd.url + "/api/status") as r:
            return (await r.json())["banner"]


async def signed_in(chatd: Chatd, role: Role = Role.LEAD) -> str:
    await chatd.add_engineer("lee@example.com", role=role)
    return await chatd.login("lee@example.com")


def assert_forbidden(status: int, body: Any, words: str) -> None:
    assert status == 403, body
    assert body["ok"] is False and body["error"]["code"] == "forbidden", body
    assert words in body["error"]["message"], body


@pytest.mark.parametrize(
    "origin_headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": SIBLING},
        {"Origin": "null"},  # a sandboxed frame or a redirect
        {},  # neither Origin nor Sec-Fetch-Site: not known to be ours
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
async def test_a_cookie_post_from_another_origin_is_refused_and_changes_nothing(
    chatd_factory: Any, origin_headers: dict[str, str]
) -> None:
    chatd = await chatd_factory()
    token = await signed_in(chatd)
    status, body = await post(chatd, "/api/status", {**cookie(token), **origin_headers},
                              json={"banner": "posted by someone else"})
    assert_forbidden(status, body, "chatd's own pages")
    assert await banner(chatd) is None

    status, body = await post(chatd, "/api/logout", {**cookie(token), **origin_headers})
    assert_forbidden(status, body, "chatd's own pages")
    async with aiohttp.ClientSession() as http:
        async with http.get(chatd.url + "/api/me", headers=cookie(token)) as r:
            assert r.status == 200  # still signed in


async def test_a_form_shaped_body_is_refused_even_from_our_own_origin(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    token = await signed_in(chatd)
    headers = {**cookie(token), "Origin": chatd.url}
    for content_type in ("text/plain", "application/x-www-form-urlencoded",
                         "multipart/form-data; boundary=x"):
        status, body = await post(
            chatd, "/api/status", {**headers, "Content-Type": content_type},
            data=b'{"banner": "smuggled as a form"}',
        )
        assert_forbidden(status, body, "application/json")
    assert await banner(chatd) is None


async def test_the_console_s_own_requests_pass(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    token = await signed_in(chatd)
    status, body = await post(
        chatd, "/api/status",
        {**cookie(token), "Origin": chatd.url, "Content-Type": "application/json; charset=utf-8"},
        data=b'{"banner": "Maintenance at 18:00"}',
    )
    assert status == 200, body
    assert await banner(chatd) == "Maintenance at 18:00"
    # A browser that sends no Origin but says the request is same-origin.
    status, body = await post(chatd, "/api/status",
                              {**cookie(token), "Sec-Fetch-Site": "same-origin"},
                              json={"banner": None})
    assert status == 200, body
    assert await banner(chatd) is None
    # Logout has no body, so no content type.
    status, body = await post(chatd, "/api/logout", {**cookie(token), "Origin": chatd.url})
    assert status == 200 and body["ok"], body


async def test_behind_public_url_only_its_origin_counts(chatd_factory: Any) -> None:
    chatd = await chatd_factory(public_url="https://chat.vendor.example/")
    token = await signed_in(chatd)
    # The Host header (127.0.0.1:port) is not chatd's origin once public_url says otherwise.
    status, body = await post(chatd, "/api/status", {**cookie(token), "Origin": chatd.url},
                              json={"banner": "x"})
    assert_forbidden(status, body, "chatd's own pages")
    for origin in ("https://chat.vendor.example", "https://chat.vendor.example:443"):
        status, body = await post(chatd, "/api/status", {**cookie(token), "Origin": origin},
                                  json={"banner": "from the console"})
        assert status == 200, body


async def test_a_bearer_token_needs_no_origin(chatd_factory: Any) -> None:
    """An Authorization header is not sent by forms, and a cross-origin script cannot add
    one without a CORS preflight: such requests are not cross-site forgeries."""
    chatd = await chatd_factory()
    token = await signed_in(chatd)
    status, body = await post(
        chatd, "/api/status",
        {"Authorization": f"Bearer {token}", **cookie(token), "Origin": "https://ops.example"},
        json={"banner": "posted by a script with the token"},
    )
    assert status == 200, body


async def test_a_console_upload_from_another_origin_is_refused_and_stores_nothing(
    chatd_factory: Any,
) -> None:
    chatd = await chatd_factory()
    eng, eng_in = await engineer(chatd, "alex@example.com")
    token = await chatd.login("alex@example.com")
    cust, cust_in = await guest(chatd)
    sid, _ = await start_chat(chatd, eng, eng_in, cust)

    def form() -> aiohttp.FormData:
        f = aiohttp.FormData()
        f.add_field("file", b"2026-01-01 ERROR boom\n", filename="app.log",
                    content_type="text/plain")
        return f

    path = f"/api/sessions/{sid}/attachments"
    status, body = await post(chatd, path, {**cookie(token), "Origin": SIBLING}, data=form())
    assert_forbidden(status, body, "chatd's own pages")
    status, body = await post(chatd, path, cookie(token), data=form())
    assert_forbidden(status, body, "chatd's own pages")
    history = await eng.call("session:resume", {"session_id": sid}, namespace="/engineer")
    assert history["ok"], history
    assert all(m["kind"] != "attachment" for m in history["messages"]), history

    status, body = await post(chatd, path, {**cookie(token), "Origin": chatd.url}, data=form())
    assert status == 201, body
    await cust_in.wait_for("message:new", lambda d: d["message"]["kind"] == "attachment")
