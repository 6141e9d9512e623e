"""Real chats end and their transcripts reach a signature-checking webhook receiver, whatever
it does meanwhile; the file backend writes its copy beside."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chatd.config import ConfigError, load_settings
from chatd.handoff.service import HANDOFF
from chatd.handoff.webhook import secret_key, sign
from chatd.web import keys
from tests.conftest import Chatd
from tests.e2e.helpers import call, engineer, guest, start_chat
from tests.handoff.conftest import WEBHOOK_SECRET, WebhookReceiver, eventually


def test_signature_matches_the_standard_webhooks_example() -> None:
    key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}') == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")


def test_backends_refuse_to_start_without_their_settings() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({"CHATD_HANDOFF_BACKENDS": "file,webhook,rt,email",
                       "CHATD_HANDOFF_RT_PASSWORD": "hunter2-secret"})
    text = str(err.value)
    assert "'email' is not one of file, webhook, rt" in text
    with pytest.raises(ConfigError) as err:
        load_settings({"CHATD_HANDOFF_BACKENDS": "webhook,rt",
                       "CHATD_HANDOFF_WEBHOOK_SECRET": "not-a-whsec-secret"})
    text = str(err.value)
    assert "CHATD_HANDOFF_WEBHOOK_SECRET: must look like whsec_" in text
    assert "not-a-whsec-secret" not in text
    assert "CHATD_HANDOFF_WEBHOOK_URL is needed" in text
    assert "the rt backend needs CHATD_HANDOFF_RT_TOKEN" in text
    settings = load_settings({"CHATD_HANDOFF_BACKENDS": "rt",
                              "CHATD_HANDOFF_RT_URL": "http://rt.example.com",
                              "CHATD_HANDOFF_RT_USER": "chatd",
                              "CHATD_HANDOFF_RT_PASSWORD": "hunter2-secret"})
    assert settings.handoff_backends == ("rt",)
    assert settings.public()["handoff_rt_password"] == "***"
    assert "hunter2" not in repr(settings)


def webhook_settings(receiver: WebhookReceiver, **more: Any) -> dict[str, Any]:
    return {
        "handoff_backends": ("file", "webhook"),
        "handoff_webhook_url": receiver.url,
        "handoff_webhook_secret": WEBHOOK_SECRET,
        "handoff_retry_base_seconds": 0.05,
        "handoff_retry_max_seconds": 0.3,
        **more,
    }


async def chat_and_end(chatd: Chatd, body: str = "my export fails") -> tuple[str, Any, Any]:
    eng, eng_in = await engineer(chatd, "alex@example.com", name="Alex")
    cust, cust_in = await guest(chatd, "Carol")
    sid, _ = await start_chat(chatd, eng, eng_in, cust, topic="Export fails")
    await call(cust, "/customer", "message:send",
               {"session_id": sid, "client_msg_id": "c1", "body": body})
    r = await call(eng, "/engineer", "session:end", {"session_id": sid, "resolution": "fixed"})
    assert r["ok"], r
    return sid, cust_in, eng_in


async def handoff_states(chatd: Chatd, sid: str) -> dict[str, Any]:
    rows = await chatd.app[keys.STORE].session_handoffs(sid)
    return {h.backend: h for h in rows}


async def test_webhook_failing_three_times_is_accepted_once_with_one_id(
    chatd_factory: Any, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    receiver.statuses = [500, 500, 500]
    chatd = await chatd_factory(**webhook_settings(receiver))
    sid, _, _ = await chat_and_end(chatd)
    accepted = await receiver.wait_accepted(1)
    assert [a.status for a in receiver.attempts] == [500, 500, 500, 200]
    assert all(a.valid for a in receiver.attempts)
    assert len({a.webhook_id for a in receiver.attempts}) == 1
    (delivery,) = accepted
    assert delivery.body["type"] == "chatd.transcript"
    data = delivery.body["data"]
    assert data["session"]["id"] == sid and data["session"]["resolution"] == "fixed"
    assert "my export fails" in [m["body"] for m in data["messages"]]
    rows = await eventually(lambda: _delivered(chatd, sid, "webhook"))
    assert rows["webhook"].attempts == 4 and rows["webhook"].id == delivery.webhook_id
    metrics = chatd.app[HANDOFF].metrics
    assert metrics.total("webhook", "retry") == 3 and metrics.total("webhook", "delivered") == 1
    # The file backend, on by default, wrote its own copy.
    folder = tmp_path / "handoff"
    assert json.loads((folder / f"{sid}.json").read_text())["session"]["id"] == sid
    assert "my export fails" in (folder / f"{sid}.txt").read_text()
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]


async def _delivered(chatd: Chatd, sid: str, backend: str) -> dict[str, Any] | None:
    rows = await handoff_states(chatd, sid)
    return rows if rows.get(backend) and rows[backend].state == "delivered" else None


async def test_webhook_down_for_a_while_gets_it_when_back(
    chatd_factory: Any, receiver_off: WebhookReceiver
) -> None:
    chatd = await chatd_factory(**webhook_settings(receiver_off))
    sid, _, _ = await chat_and_end(chatd)

    async def failed_twice() -> bool:
        row = (await handoff_states(chatd, sid))["webhook"]
        return row.attempts >= 2 and row.state == "pending" and row.last_error is not None

    await eventually(failed_twice)
    assert "could not be reached" in ((await handoff_states(chatd, sid))["webhook"].last_error
                                      or "")
    await receiver_off.start()
    (delivery,) = await receiver_off.wait_accepted(1)
    assert delivery.body["data"]["session"]["id"] == sid
    rows = await eventually(lambda: _delivered(chatd, sid, "webhook"))
    assert rows["webhook"].id == delivery.webhook_id


async def test_a_refusing_webhook_is_dead_lettered_with_its_answer(
    chatd_factory: Any, receiver: WebhookReceiver
) -> None:
    receiver.statuses = [422]
    chatd = await chatd_factory(**webhook_settings(receiver))
    sid, _, _ = await chat_and_end(chatd)

    async def failed() -> Any:
        row = (await handoff_states(chatd, sid))["webhook"]
        return row if row.state == "failed" else None

    row = await eventually(failed)
    assert (row.attempts, row.last_status) == (1, 422)
    assert row.last_response == "failing on purpose with 422"
    assert len(receiver.attempts) == 1


async def test_a_ticket_reference_reaches_customer_engineer_and_transcript(
    chatd_factory: Any, receiver: WebhookReceiver
) -> None:
    ticket = {"id": "SUP-1234", "url": "https://support.example.com/tickets/1234"}
    receiver.reply = {"ticket": ticket}
    chatd = await chatd_factory(**webhook_settings(receiver))
    sid, cust_in, eng_in = await chat_and_end(chatd)
    expected = {"backend": "webhook", **ticket}
    for inbox in (cust_in, eng_in):
        ended = await inbox.wait_for("session:ended", lambda d: "ticket" in d, timeout=15)
        assert ended["session_id"] == sid and ended["ticket"] == expected
        assert ended["ended_by"] == "engineer"
    session = await chatd.app[keys.STORE].get_session(sid)
    assert session is not None and session.ticket == expected
    transcript = await chatd.app[HANDOFF].transcript(sid)
    assert transcript.to_json()["ticket"] == expected
