"""The whole desk over real Socket.IO connections on loopback."""

from __future__ import annotations

from typing import Any

from chatd.core.models import Role
from tests.e2e.helpers import engineer, guest


async def test_customer_request_offer_accept_chat_end(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    eng, eng_in = await engineer(chatd, "alex@example.com", name="Alex")
    cust, cust_in = await guest(chatd)
    r = await cust.call(
        "chat:request",
        {"topic": "Cannot log in", "severity": 2, "message": "Help", "client_msg_id": "c0"},
        namespace="/customer",
    )
    assert r["ok"], r
    sid = r["session"]["id"]
    assert r["session"]["position"] == 1
    offer = await eng_in.wait_for("offer:new")
    assert offer["session_id"] == sid and offer["severity"] == 2
    acc = await eng.call("offer:accept", {"session_id": sid}, namespace="/engineer")
    assert acc["ok"] and acc["session"]["state"] == "active"
    assert [m["body"] for m in acc["messages"]][0] == "Help"
    await cust_in.wait_for("session:assigned")
    sent = await eng.call(
        "message:send", {"session_id": sid, "client_msg_id": "e1", "body": "Hi, Alex here"},
        namespace="/engineer",
    )
    got = await cust_in.wait_for("message:new", lambda d: d["message"]["body"] == "Hi, Alex here")
    assert got["message"]["seq"] == sent["message"]["seq"]
    reply = await cust.call(
        "message:send", {"session_id": sid, "client_msg_id": "c1", "body": "thanks"},
        namespace="/customer",
    )
    await eng_in.wait_for("message:new", lambda d: d["message"]["body"] == "thanks")
    assert reply["message"]["seq"] == sent["message"]["seq"] + 1
    end = await eng.call("session:end", {"session_id": sid, "resolution": "reset password"},
                         namespace="/engineer")
    assert end["ok"] and end["session"]["state"] == "ended"
    ended = await cust_in.wait_for("session:ended")
    assert ended["ended_by"] == "engineer"
    late = await cust.call(
        "message:send", {"session_id": sid, "client_msg_id": "c2", "body": "one more"},
        namespace="/customer",
    )
    assert late["error"]["code"] == "session_closed"


async def test_concurrent_accepts_assign_the_session_exactly_once(chatd_factory: Any) -> None:
    import asyncio

    from tests.e2e.helpers import Inbox, call

    chatd = await chatd_factory()
    eng, eng_in = await engineer(chatd, "alex@example.com", name="Alex")
    token = await chatd.login("alex@example.com")
    tab2 = await chatd.client("/engineer", {"token": token})
    Inbox(tab2, "/engineer")
    rival, rival_in = await engineer(chatd, "bo@example.com", name="Bo", available=False)
    cust, cust_in = await guest(chatd)
    r = await call(cust, "/customer", "chat:request", {"topic": "race"})
    sid = r["session"]["id"]
    await eng_in.wait_for("offer:new")
    results = await asyncio.gather(
        *[call(c, "/engineer", "offer:accept", {"session_id": sid})
          for c in (eng, tab2, rival, eng, tab2, rival)]
    )
    oks = [x for x in results if x["ok"]]
    assert all(x["session"]["engineer"]["name"] == "Alex" for x in oks)
    assert {x["error"]["code"] for x in results if not x["ok"]} == {"conflict"}
    history = await call(eng, "/engineer", "session:resume", {"session_id": sid})
    joined = [m for m in history["messages"] if (m.get("event") or {}).get("type") == "assigned"]
    assert len(joined) == 1
    await cust_in.wait_for("session:assigned")
    assert len(cust_in.named("session:assigned")) == 1


async def test_events_about_an_ended_chat_answer_session_closed(chatd_factory: Any) -> None:
    from tests.e2e.helpers import call, start_chat

    chatd = await chatd_factory()
    eng, eng_in = await engineer(chatd, "alex@example.com")
    cust, _ = await guest(chatd)
    sid, _ = await start_chat(chatd, eng, eng_in, cust)
    await call(cust, "/customer", "session:end", {"session_id": sid})
    for event, data in [
        ("typing", {"session_id": sid, "typing": True}),
        ("message:read", {"session_id": sid, "seq": 1}),
        ("escalation:request", {"session_id": sid, "kind": "screen_share"}),
        ("message:send", {"session_id": sid, "client_msg_id": "late", "body": "late"}),
        ("session:end", {"session_id": sid}),
    ]:
        r = await call(cust, "/customer", event, data)
        assert r["error"]["code"] == "session_closed", (event, r)
    other, _ = await guest(chatd, "Mallory")
    r = await call(other, "/customer", "typing", {"session_id": sid, "typing": True})
    assert r["error"]["code"] == "not_found"


async def test_a_room_event_reaches_every_member_but_the_sender(chatd_factory: Any) -> None:
    from tests.e2e.helpers import Inbox, call, start_chat

    chatd = await chatd_factory()
    eng, eng_in = await engineer(chatd, "alex@example.com", name="Alex")
    token = await chatd.login("alex@example.com")
    tabs = [await chatd.client("/engineer", {"token": token}) for _ in range(2)]
    tab_in = [Inbox(t, "/engineer") for t in tabs]
    cust, cust_in = await guest(chatd)
    sid, _ = await start_chat(chatd, eng, eng_in, cust)

    await call(cust, "/customer", "message:send",
               {"session_id": sid, "client_msg_id": "c1", "body": "to every tab"})
    for inbox in (eng_in, *tab_in):
        await inbox.wait_for("message:new", lambda d: d["message"]["body"] == "to every tab")

    sent = await call(tabs[0], "/engineer", "message:send",
                      {"session_id": sid, "client_msg_id": "e1", "body": "from tab one"})
    assert sent["ok"], sent
    for inbox in (cust_in, eng_in, tab_in[1]):
        await inbox.wait_for("message:new", lambda d: d["message"]["body"] == "from tab one")
    # One tab goes away; the others still hear the chat.
    await tabs[1].disconnect()
    await call(cust, "/customer", "message:send",
               {"session_id": sid, "client_msg_id": "c2", "body": "still there?"})
    for inbox in (eng_in, tab_in[0]):
        await inbox.wait_for("message:new", lambda d: d["message"]["body"] == "still there?")
    # The sender never hears its own message back.
    assert not [d for d in tab_in[0].named("message:new")
                if d["message"]["body"] == "from tab one"]


async def test_a_watching_connection_hears_the_queue_but_is_not_on_the_desk(
    chatd_factory: Any,
) -> None:
    from tests.e2e.helpers import Inbox, call

    chatd = await chatd_factory()
    await chatd.add_engineer("lena@example.com", name="Lena", role=Role.LEAD)
    token = await chatd.login("lena@example.com")
    monitor = await chatd.client("/engineer", {"token": token, "watch": True})
    watched = Inbox(monitor, "/engineer")
    cust, _ = await guest(chatd)
    r = await call(cust, "/customer", "chat:request", {"topic": "Cannot log in"})
    assert r["ok"] and r["engineers_online"] == 0  # the lead watching is not "online"
    update = await watched.wait_for("queue:update", lambda d: d["length"] == 1)
    assert update["engineers_online"] == 0
    assert watched.named("engineer:status") == []
    # It takes no part in the desk, and the lead's console connection still can.
    refused = await call(monitor, "/engineer", "engineer:status", {"status": "available"})
    assert refused["error"]["code"] == "forbidden"
    console = await chatd.client("/engineer", {"token": token})
    Inbox(console, "/engineer")
    ok = await call(console, "/engineer", "engineer:status", {"status": "available"})
    assert ok["ok"], ok
    # Closing the monitor changes nothing for the lead's presence.
    await monitor.disconnect()
    snap = await call(console, "/engineer", "queue:snapshot", {})
    assert snap["me"]["status"] == "available" and snap["me"]["online"] is True
