"""Structured logs carry session ids, never tokens, passwords or message bodies
(docs/monitoring.md#logs)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from chatd.logs import JSONFormatter, TextFormatter
from tests.conftest import WIDGET_SECRET
from tests.e2e.helpers import call, customer_jwt, engineer
from tests.monitoring.helpers import http, lead_token

PASSWORD = "correct horse battery"  # the fixtures' engineer password


async def test_a_whole_chat_logs_its_ids_and_no_secret(
    chatd_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="chatd")
    caplog.set_level(logging.INFO)
    chatd = await chatd_factory()
    eng, eng_in = await engineer(chatd, "alex@example.com", name="Alex")
    api_token = await chatd.login("alex@example.com")
    lead = await lead_token(chatd)
    jwt_token = customer_jwt("cust-77", name="Carol")
    cust = await chatd.client("/customer", {"token": jwt_token})
    bodies = ["My licence key is LK-9f8e7d6c", "The log says ERR_PIPE_4711",
              "Try restarting the agent", "First message with the request"]

    r = await call(cust, "/customer", "chat:request",
                   {"topic": "Agent crash", "message": bodies[3], "client_msg_id": "c0"})
    sid, resume = r["session"]["id"], r["resume_token"]
    await eng_in.wait_for("offer:new", lambda d: d["session_id"] == sid)
    assert (await call(eng, "/engineer", "offer:accept", {"session_id": sid}))["ok"]
    await call(cust, "/customer", "message:send",
               {"session_id": sid, "client_msg_id": "c1", "body": bodies[0]})
    await call(cust, "/customer", "message:send",
               {"session_id": sid, "client_msg_id": "c2", "body": bodies[1]})
    await call(eng, "/engineer", "message:send",
               {"session_id": sid, "client_msg_id": "e1", "body": bodies[2]})
    await http(chatd, "POST", "/api/status", lead, {"banner": "Maintenance at 18:00"})
    await http(chatd, "GET", "/api/stats", lead)
    await http(chatd, "GET", f"/api/sessions/{sid}/transcript?format=text", resume)
    assert (await call(eng, "/engineer", "session:end", {"session_id": sid}))["ok"]
    await http(chatd, "POST", "/api/login", None, {"email": "alex@example.com",
                                                  "password": "wrong " + PASSWORD})
    await http(chatd, "POST", "/api/logout", api_token)

    records = list(caplog.records)
    lines = [JSONFormatter().format(r) for r in records]
    lines += [TextFormatter().format(r) for r in records]
    everything = "\n".join(lines)
    for secret in (PASSWORD, api_token, lead, jwt_token, resume, WIDGET_SECRET, *bodies):
        assert secret not in everything, f"{secret[:12]}... is in the logs"

    desk = [json.loads(JSONFormatter().format(r)) for r in records if r.name == "chatd.desk"]
    moments = {(d["msg"], d.get("session_id")) for d in desk}
    assert {("chat requested", sid), ("chat answered", sid), ("chat ended", sid)} <= moments
    [answered] = [d for d in desk if d["msg"] == "chat answered"]
    assert answered["engineer_id"] and answered["wait_seconds"] >= 0


async def test_an_abandoned_chat_is_logged_with_its_wait(
    chatd_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chatd.desk")
    chatd = await chatd_factory()
    cust = await chatd.client("/customer", {"token": customer_jwt("cust-78")})
    r = await call(cust, "/customer", "chat:request", {"topic": "Slow"})
    sid = r["session"]["id"]
    await call(cust, "/customer", "session:end", {"session_id": sid})

    [closed] = [r for r in caplog.records if r.getMessage() == "chat cancelled"]
    assert closed.__dict__["session_id"] == sid
    assert closed.__dict__["outcome"] == "cancelled"
    assert closed.__dict__["wait_seconds"] >= 0
