"""Monitoring over HTTP: /metrics for Prometheus (docs/monitoring.md#metrics) and /api/stats
for leads (docs/monitoring.md#get-apistats)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from chatd.core.clock import FakeClock
from chatd.web import keys
from tests.e2e.helpers import call, engineer, guest, start_chat
from tests.monitoring.helpers import http, lead_token, sample, scrape


async def test_metrics_show_a_chat_with_a_known_wait(chatd_factory: Any) -> None:
    clock = FakeClock()
    chatd = await chatd_factory(clock=clock)
    eng, eng_in = await engineer(chatd, "alex@example.com", name="Alex", available=False)
    cust, _ = await guest(chatd)
    r = await call(cust, "/customer", "chat:request", {"topic": "Crash on start"})
    sid = r["session"]["id"]
    clock.advance(42)
    waiting = await scrape(chatd)
    assert sample(waiting, "chatd_queue_length") == 1
    assert sample(waiting, "chatd_queue_oldest_wait_seconds") == 42

    await call(eng, "/engineer", "engineer:status", {"status": "available"})
    await eng_in.wait_for("offer:new", lambda d: d["session_id"] == sid)
    assert (await call(eng, "/engineer", "offer:accept", {"session_id": sid}))["ok"]
    await call(cust, "/customer", "message:send",
               {"session_id": sid, "client_msg_id": "c1", "body": "It crashes"})

    m = await scrape(chatd)
    assert sample(m, "chatd_queue_wait_seconds_bucket", le="30.0") == 0
    assert sample(m, "chatd_queue_wait_seconds_bucket", le="60.0") == 1
    assert sample(m, "chatd_queue_wait_seconds_bucket", le="+Inf") == 1
    assert sample(m, "chatd_queue_wait_seconds_count") == 1
    assert sample(m, "chatd_queue_wait_seconds_sum") == 42
    assert sample(m, "chatd_queue_length") == 0
    assert sample(m, "chatd_queue_oldest_wait_seconds") == 0
    assert sample(m, "chatd_sessions_active") == 1
    assert sample(m, "chatd_sessions_total", outcome="answered") == 1
    assert sample(m, "chatd_offers_total", result="accepted") == 1
    assert sample(m, "chatd_messages_total", role="customer") == 1
    assert sample(m, "chatd_engineers", status="available") == 1
    assert sample(m, "chatd_connected_clients", namespace="customer") == 1
    assert sample(m, "chatd_connected_clients", namespace="engineer") == 1
    assert sample(m, "chatd_handoff_pending") == 0
    assert sample(m, "chatd_handoffs_total", backend="file", result="delivered") == 0
    assert sample(m, "chatd_event_loop_lag_seconds") >= 0
    # Every write so far (the account, the token, the chat, the accept, the message …)
    # was committed, some of them perhaps together.
    commits, writes = sample(m, "chatd_store_commits_total"), sample(m, "chatd_store_writes_total")
    assert 5 <= commits <= writes
    await call(cust, "/customer", "message:send",
               {"session_id": sid, "client_msg_id": "c2", "body": "Still crashes"})
    after = await scrape(chatd)
    assert sample(after, "chatd_store_writes_total") == writes + 1
    assert sample(after, "chatd_store_commits_total") == commits + 1

    await cust.disconnect()
    assert sample(await scrape(chatd), "chatd_connected_clients", namespace="customer") == 0


async def test_metrics_can_require_a_bearer_token(chatd_factory: Any) -> None:
    chatd = await chatd_factory(metrics_token="scrape-me-please")
    for token in (None, "wrong"):
        status, body, _ = await http(chatd, "GET", "/metrics", token)
        assert status == 401, body
    status, text, headers = await http(chatd, "GET", "/metrics", "scrape-me-please")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "chatd_queue_wait_seconds_bucket" in text


async def test_each_app_has_its_own_registry(chatd_factory: Any, tmp_path: Path) -> None:
    one = await chatd_factory()
    other = await chatd_factory(database_url=f"sqlite:///{tmp_path / 'other.db'}")
    eng, eng_in = await engineer(one, "alex@example.com")
    cust, _ = await guest(one)
    await start_chat(one, eng, eng_in, cust)

    assert sample(await scrape(one), "chatd_sessions_total", outcome="answered") == 1
    assert sample(await scrape(other), "chatd_sessions_total", outcome="answered") == 0


async def test_stats_are_for_leads_only(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    await chatd.add_engineer("alex@example.com")
    engineer_token = await chatd.login("alex@example.com")
    lead = await lead_token(chatd)

    assert (await http(chatd, "GET", "/api/stats"))[0] == 401
    status, body, _ = await http(chatd, "GET", "/api/stats", engineer_token)
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, body, _ = await http(chatd, "GET", "/api/stats", lead)
    assert status == 200 and body["ok"]


async def test_stats_report_the_service_level_queue_and_engineers(chatd_factory: Any) -> None:
    clock = FakeClock()
    chatd = await chatd_factory(clock=clock)
    lead = await lead_token(chatd)
    eng, eng_in = await engineer(chatd, "alex@example.com", name="Alex", available=False)

    ann, _ = await guest(chatd, "Ann")
    bob, _ = await guest(chatd, "Bob")
    cat, _ = await guest(chatd, "Cat")
    late = (await call(ann, "/customer", "chat:request", {"topic": "Late"}))["session"]["id"]
    clock.advance(200)
    quick = (await call(bob, "/customer", "chat:request", {"topic": "Quick"}))["session"]["id"]
    leaving = (await call(cat, "/customer", "chat:request", {"topic": "Gone"}))["session"]["id"]
    clock.advance(40)
    assert (await call(cat, "/customer", "session:end", {"session_id": leaving}))["ok"]
    clock.advance(70)  # Ann has waited 310 s, Bob 110 s

    await call(eng, "/engineer", "engineer:status", {"status": "available", "capacity": 2})
    for sid in (late, quick):
        await eng_in.wait_for("offer:new", lambda d, sid=sid: d["session_id"] == sid)
        assert (await call(eng, "/engineer", "offer:accept", {"session_id": sid}))["ok"]
    # Ann's 310 s may have raised the alert; the desk's next tick (every 0.25 s, real time)
    # sees the queue empty and clears it.
    desk = chatd.app[keys.DESK]
    for _ in range(100):
        if desk.live().alert is None:
            break
        await asyncio.sleep(0.05)
    clock.advance(300)
    assert (await call(eng, "/engineer", "session:end", {"session_id": quick}))["ok"]
    dan, _ = await guest(chatd, "Dan")
    waiting = (await call(dan, "/customer", "chat:request", {"topic": "Next"}))["session"]["id"]
    clock.advance(15)

    status, s, _ = await http(chatd, "GET", "/api/stats", lead)
    assert status == 200, s
    hour = s["service_level"]["1h"]
    # Bob within target; Ann late; Cat left after 40 s (over the 30 s threshold): 1 of 3.
    assert hour["answered"] == 2 and hour["answered_within_target"] == 1
    assert hour["abandoned"] == 1 and hour["abandoned_short"] == 0
    assert hour["service_level"] == round(1 / 3, 4)
    assert hour["average_wait_seconds"] == (310 + 110) / 2
    assert hour["p90_wait_seconds"] == 310
    assert hour["abandon_rate"] == round(1 / 3, 4)
    assert hour["average_handle_seconds"] == 300
    assert s["service_level"]["24h"]["service_level"] == round(1 / 3, 4)
    assert s["target_seconds"] == 300 and s["short_abandon_seconds"] == 30
    # Four arrivals in ten minutes: too few to forecast from yet, and said so.
    forecast = s["forecast"]
    assert forecast["objective"] == 0.9 and forecast["target_seconds"] == 300
    assert forecast["now"]["slots"] is None and forecast["slots_online"] == 2

    assert s["queue"]["length"] == 1 and s["queue"]["oldest_wait_seconds"] == 15
    [item] = s["queue"]["waiting"]
    assert item["id"] == waiting and item["offered_to"]
    assert s["sessions_active"] == 1 and s["sessions"][0]["id"] == late
    [alex] = [e for e in s["engineers"] if e["name"] == "Alex"]
    assert alex["status"] == "available" and alex["capacity"] == 2
    assert alex["active"] == 1 and alex["offers"] == 1 and alex["load"] == 2
    assert alex["sessions_handled_1h"] == 1 and alex["average_handle_seconds_24h"] == 300
    assert s["engineers_by_status"] == {"available": 1, "away": 0}
    assert s["connected_clients"] == {"customer": 4, "engineer": 1}
    # Cat's and Bob's transcripts are in the outbox (pending or already delivered).
    handoffs = s["handoffs"]
    assert handoffs["pending"] + handoffs["delivered"] == 2 and handoffs["failed"] == 0
    assert s["alert"] is None
    assert s["history"] and s["history"][0]["length"] == 0


async def test_uploads_are_counted_by_result_and_bytes(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    eng, eng_in = await engineer(chatd, "alex@example.com")
    cust, _ = await guest(chatd)
    sid, resume = await start_chat(chatd, eng, eng_in, cust)
    log = b"2026-01-01 12:00:00 ERROR it broke\n" * 10

    async def upload(data: bytes, name: str) -> int:
        form = aiohttp.FormData()
        form.add_field("file", data, filename=name, content_type="application/octet-stream")
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{chatd.url}/api/sessions/{sid}/attachments", data=form,
                              headers={"Authorization": f"Bearer {resume}"}) as r:
                return r.status

    assert await upload(log, "app.log") == 201
    assert await upload(b"MZ\x90\x00" + b"\x00" * 200, "setup.exe") == 415

    m = await scrape(chatd)
    assert sample(m, "chatd_uploads_total", result="stored") == 1
    assert sample(m, "chatd_uploads_total", result="unsupported_type") == 1
    assert sample(m, "chatd_upload_bytes_total") == len(log)
    assert sample(m, "chatd_messages_total", role="customer") == 1


async def get_metrics(chatd: Any, headers: dict[str, str]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s:
        async with s.get(chatd.url + "/metrics", headers=headers) as r:
            body = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body


async def test_without_a_token_metrics_answer_only_this_host(chatd_factory: Any) -> None:
    chatd = await chatd_factory(trusted_proxies=("127.0.0.1",))
    status, text = await get_metrics(chatd, {})
    assert status == 200 and "chatd_queue_length" in text
    # Through the (trusted) reverse proxy on this host: the client is who it relays for.
    status, body = await get_metrics(chatd, {"X-Forwarded-For": "203.0.113.9"})
    assert status == 403 and body["error"]["code"] == "forbidden", body
    assert "CHATD_METRICS_TOKEN" in body["error"]["message"]
    status, body = await get_metrics(chatd, {"X-Forwarded-For": "2001:db8::9"})
    assert status == 403, body
    # A scraper on the proxy's own host, relayed by it.
    status, text = await get_metrics(chatd, {"X-Forwarded-For": "127.0.0.1"})
    assert status == 200 and "chatd_queue_length" in text


async def test_a_proxy_that_is_not_trusted_does_not_make_its_clients_local(
    chatd_factory: Any,
) -> None:
    """A reverse proxy on the same host without trusted_proxies: every client it relays
    comes from 127.0.0.1, but says where it came from."""
    chatd = await chatd_factory()
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
        status, body = await get_metrics(chatd, {header: "203.0.113.9"})
        assert status == 403 and "CHATD_METRICS_TOKEN" in body["error"]["message"], header


async def test_with_a_token_metrics_answer_its_bearer_from_anywhere(chatd_factory: Any) -> None:
    chatd = await chatd_factory(trusted_proxies=("127.0.0.1",), metrics_token="scrape-me")
    remote = {"X-Forwarded-For": "203.0.113.9"}
    status, text = await get_metrics(chatd, {**remote, "Authorization": "Bearer scrape-me"})
    assert status == 200 and "chatd_queue_length" in text
    status, body = await get_metrics(chatd, remote)
    assert status == 401, body
    status, body = await get_metrics(chatd, {})  # loopback is no exception with a token
    assert status == 401, body


async def test_the_start_up_log_says_how_metrics_are_guarded(
    chatd_factory: Any, caplog: Any, tmp_path: Path
) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="chatd")
    await chatd_factory()
    await chatd_factory(metrics_token="scrape-me",
                        database_url=f"sqlite:///{tmp_path / 'other.db'}")
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("/metrics")]
    assert said == [
        "/metrics: loopback only; set CHATD_METRICS_TOKEN to scrape from elsewhere",
        "/metrics: bearer token required",
    ]
