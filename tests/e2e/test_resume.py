"""Reconnecting: the customer gets exactly the messages they missed, then live ones."""

from __future__ import annotations

from typing import Any

from tests.e2e.helpers import Inbox, call, customer_jwt, engineer, guest, start_chat


async def test_customer_resume_after_disconnect_gets_exactly_the_missed_messages(
    chatd_factory: Any,
) -> None:
    chatd = await chatd_factory()
    eng, eng_in = await engineer(chatd, "alex@example.com")
    cust, _ = await guest(chatd)
    sid, resume = await start_chat(chatd, eng, eng_in, cust)
    first = await call(cust, "/customer", "message:send",
                       {"session_id": sid, "client_msg_id": "c1", "body": "before"})
    seen = first["message"]["seq"]
    await cust.disconnect()
    for i in range(3):
        r = await call(eng, "/engineer", "message:send",
                       {"session_id": sid, "client_msg_id": f"e{i}", "body": f"missed {i}"})
        assert r["ok"], r
    again = await chatd.client("/customer", {"session_id": sid, "resume_token": resume})
    again_in = Inbox(again, "/customer")
    r = await call(again, "/customer", "session:resume",
                   {"session_id": sid, "resume_token": resume, "after_seq": seen})
    assert r["ok"], r
    assert [m["body"] for m in r["messages"]] == ["missed 0", "missed 1", "missed 2"]
    assert [m["seq"] for m in r["messages"]] == [seen + 1, seen + 2, seen + 3]
    assert r["session"]["state"] == "active"
    await call(eng, "/engineer", "message:send",
               {"session_id": sid, "client_msg_id": "live", "body": "live one"})
    live = await again_in.wait_for("message:new")
    assert live["message"]["body"] == "live one" and live["message"]["seq"] == seen + 4


async def test_waiting_customer_who_reconnects_within_grace_keeps_the_place(
    chatd_factory: Any,
) -> None:
    chatd = await chatd_factory(grace_seconds=30)
    a, _ = await guest(chatd, "Ann")
    b, _ = await guest(chatd, "Ben")
    ra = await call(a, "/customer", "chat:request", {"topic": "first"})
    rb = await call(b, "/customer", "chat:request", {"topic": "second"})
    assert rb["session"]["position"] == 2
    await a.disconnect()
    back = await chatd.client(
        "/customer", {"session_id": ra["session"]["id"], "resume_token": ra["resume_token"]}
    )
    r = await call(back, "/customer", "session:resume",
                   {"session_id": ra["session"]["id"], "resume_token": ra["resume_token"]})
    assert r["session"]["state"] == "waiting" and r["session"]["position"] == 1


async def test_retried_message_is_stored_once_and_relayed_once(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    eng, eng_in = await engineer(chatd, "alex@example.com")
    cust, _ = await guest(chatd)
    sid, _ = await start_chat(chatd, eng, eng_in, cust)
    payload = {"session_id": sid, "client_msg_id": "same-id", "body": "only once"}
    one = await call(cust, "/customer", "message:send", payload)
    two = await call(cust, "/customer", "message:send", payload)
    assert one["message"]["id"] == two["message"]["id"]
    assert (one["duplicate"], two["duplicate"]) == (False, True)
    await call(cust, "/customer", "message:send",
               {"session_id": sid, "client_msg_id": "next", "body": "next"})
    await eng_in.wait_for("message:new", lambda d: d["message"]["body"] == "next")
    relayed = [d for d in eng_in.named("message:new") if d["message"]["body"] == "only once"]
    assert len(relayed) == 1
    history = await call(eng, "/engineer", "session:resume", {"session_id": sid, "after_seq": 0})
    bodies = [m["body"] for m in history["messages"] if m["kind"] == "text"]
    assert bodies == ["only once", "next"]
    seqs = [m["seq"] for m in history["messages"]]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_signed_customer_with_open_chat_cannot_open_a_second(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    token = customer_jwt("acme-42")
    c1 = await chatd.client("/customer", {"token": token})
    r = await call(c1, "/customer", "chat:request", {"topic": "one"})
    c2 = await chatd.client("/customer", {"token": token})
    r2 = await call(c2, "/customer", "chat:request", {"topic": "two"})
    assert r2["error"]["code"] == "conflict"
    assert r2["error"]["details"]["session_id"] == r["session"]["id"]


async def test_a_retried_chat_request_gets_the_same_chat_and_a_working_token(
    chatd_factory: Any,
) -> None:
    chatd = await chatd_factory()
    token = customer_jwt("acme-7", name="Carol")
    cust = await chatd.client("/customer", {"token": token})
    ask = {"topic": "Cannot log in", "message": "Help", "client_msg_id": "c0",
           "request_id": "req-1"}
    first = await call(cust, "/customer", "chat:request", ask)
    assert first["ok"], first
    sid = first["session"]["id"]
    # The answer was lost: the widget reconnects and asks again with the same request id.
    await cust.disconnect()
    again_conn = await chatd.client("/customer", {"token": token})
    again = await call(again_conn, "/customer", "chat:request", ask)
    assert again["ok"], again
    assert again["session"]["id"] == sid and again["session"]["position"] == 1
    other = await call(again_conn, "/customer", "chat:request",
                       {**ask, "request_id": "req-2"})
    assert other["error"]["code"] == "conflict"
    # The new token resumes the chat, with the first message stored once.
    r = await call(again_conn, "/customer", "session:resume",
                   {"session_id": sid, "resume_token": again["resume_token"]})
    assert r["ok"], r
    assert [m["body"] for m in r["messages"]] == ["Help"]
    stale = await call(again_conn, "/customer", "session:resume",
                       {"session_id": sid, "resume_token": first["resume_token"]})
    assert stale["error"]["code"] == "unauthorized"
