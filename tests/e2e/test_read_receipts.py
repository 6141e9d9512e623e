"""Read receipts are stored: after a reconnect, ``session:resume`` tells each side how far
the other has read (docs/protocol.md#read-marks)."""

from __future__ import annotations

from typing import Any

from tests.e2e.helpers import Inbox, call, engineer, guest, start_chat


async def send(client: Any, ns: str, sid: str, cmid: str, body: str) -> int:
    r = await call(client, ns, "message:send",
                   {"session_id": sid, "client_msg_id": cmid, "body": body})
    assert r["ok"], r
    return int(r["message"]["seq"])


async def test_read_marks_come_back_with_the_chat_after_a_reconnect(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    eng, eng_in = await engineer(chatd, "alex@example.com")
    cust, cust_in = await guest(chatd)
    sid, resume = await start_chat(chatd, eng, eng_in, cust)
    await send(cust, "/customer", sid, "c1", "the export fails")
    asked = await send(cust, "/customer", sid, "c2", "with error E42")
    answer = await send(eng, "/engineer", sid, "e1", "which version?")

    r = await call(eng, "/engineer", "message:read", {"session_id": sid, "seq": asked})
    assert r["ok"], r
    told = await cust_in.wait_for("message:read", lambda d: d["session_id"] == sid)
    assert told == {"session_id": sid, "role": "engineer", "seq": asked}
    r = await call(cust, "/customer", "message:read", {"session_id": sid, "seq": answer})
    assert r["ok"], r
    # A late receipt for less (another tab) does not move the mark back.
    r = await call(eng, "/engineer", "message:read", {"session_id": sid, "seq": 1})
    assert r["ok"], r

    # The widget reloads: a new connection resumes the chat from the start.
    await cust.disconnect()
    again = await chatd.client("/customer", {"session_id": sid, "resume_token": resume})
    Inbox(again, "/customer")
    r = await call(again, "/customer", "session:resume",
                   {"session_id": sid, "resume_token": resume, "after_seq": 0})
    assert r["ok"], r
    assert r["session"]["read"] == {"customer": answer, "engineer": asked}

    # So does the console.
    r = await call(eng, "/engineer", "session:resume", {"session_id": sid, "after_seq": answer})
    assert r["ok"], r
    assert r["session"]["read"] == {"customer": answer, "engineer": asked}
    assert r["messages"] == []


async def test_a_receipt_past_the_chat_is_stored_at_its_last_message(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    eng, eng_in = await engineer(chatd, "alex@example.com")
    cust, _ = await guest(chatd)
    sid, resume = await start_chat(chatd, eng, eng_in, cust)
    last = await send(cust, "/customer", sid, "c1", "hello")
    r = await call(eng, "/engineer", "message:read", {"session_id": sid, "seq": last + 50})
    assert r["ok"], r
    r = await call(cust, "/customer", "session:resume",
                   {"session_id": sid, "resume_token": resume, "after_seq": last})
    assert r["session"]["read"] == {"customer": 0, "engineer": last}


async def test_a_receipt_for_a_chat_not_yours_is_refused_and_stores_nothing(
    chatd_factory: Any,
) -> None:
    chatd = await chatd_factory()
    eng, eng_in = await engineer(chatd, "alex@example.com")
    ann, _ = await guest(chatd, "Ann")
    sid, resume = await start_chat(chatd, eng, eng_in, ann)
    await send(ann, "/customer", sid, "c1", "hello")
    bob, _ = await guest(chatd, "Bob")
    r = await call(bob, "/customer", "message:read", {"session_id": sid, "seq": 1})
    assert not r["ok"] and r["error"]["code"] == "not_found"
    r = await call(ann, "/customer", "session:resume",
                   {"session_id": sid, "resume_token": resume, "after_seq": 0})
    assert r["session"]["read"] == {"customer": 0, "engineer": 0}
