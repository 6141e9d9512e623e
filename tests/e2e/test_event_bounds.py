"""Bounds on what a client may send: every event's rate per connection, one message rate per
person across all their connections, and a cap on messages per chat (docs/security.md)."""

from __future__ import annotations

from typing import Any

from chatd.web.admission import EVENT_COST
from tests.e2e.helpers import call, customer_jwt, engineer, guest, start_chat

BURST = 4
# The event bucket of the event-rate tests: big enough for the dearer events (a resume
# costs EVENT_COST of it) to be allowed a few times.
EVENTS = 10


def allowed(event: str) -> int:
    return int(EVENTS // EVENT_COST.get(event, 1))

# One event a quarter of an hour: nothing refills while a test runs, however slow the machine.
SLOW = 1 / 900


async def _spend(client: Any, ns: str, event: str, make: Any, n: int) -> list[Any]:
    return [await call(client, ns, event, make(i)) for i in range(n)]


def _code(answer: dict[str, Any]) -> str:
    return "ok" if answer["ok"] else str(answer["error"]["code"])


async def test_every_customer_event_past_its_rate_is_refused_and_does_nothing(
    chatd_factory: Any,
) -> None:
    chatd = await chatd_factory(event_rate=SLOW, event_burst=EVENTS)
    eng, eng_in = await engineer(chatd, "alex@example.com")
    cust, _ = await guest(chatd)
    sid, resume = await start_chat(chatd, eng, eng_in, cust)
    creds = {"session_id": sid, "resume_token": resume}

    async def fresh() -> Any:  # a new connection has a full allowance of its own
        return await chatd.client("/customer", creds)

    def send(i: int) -> dict[str, Any]:
        return {"session_id": sid, "client_msg_id": f"burst-{i}", "body": f"hello {i}"}

    cases = [
        ("session:resume", lambda i: {**creds, "after_seq": 0}),
        ("typing", lambda i: {"session_id": sid, "typing": i % 2 == 0}),
        ("message:read", lambda i: {"session_id": sid, "seq": 1}),
        ("message:send", send),
        ("escalation:request", lambda i: {"session_id": sid, "kind": "screen_share"}),
        ("no:such-event", lambda i: {}),
    ]
    for event, make in cases:
        c = await fresh()
        answers = await _spend(c, "/customer", event, make, allowed(event))
        assert all(a["ok"] for a in answers) or event == "no:such-event", (event, answers)
        past = await call(c, "/customer", event, make(allowed(event)))
        assert _code(past) == "rate_limited", (event, past)

    # Nothing the refused events asked for happened: the engineer heard EVENTS typing and
    # read receipts, and the chat holds EVENTS texts and EVENTS escalations, no more.
    marker = await call(cust, "/customer", "message:send",
                        {"session_id": sid, "client_msg_id": "marker", "body": "marker"})
    assert marker["ok"], marker
    await eng_in.wait_for("message:new", lambda d: d["message"]["body"] == "marker")
    assert len(eng_in.named("typing")) == EVENTS
    assert len(eng_in.named("message:read")) == EVENTS
    history = await call(eng, "/engineer", "session:resume", {"session_id": sid})
    texts = [m["body"] for m in history["messages"] if m["kind"] == "text"]
    assert texts == [f"hello {i}" for i in range(EVENTS)] + ["marker"]
    asks = [m for m in history["messages"] if (m.get("event") or {}).get("type") == "escalation"]
    assert len(asks) == EVENTS

    # A chat request and an end past the rate change nothing either.
    c = await fresh()
    await _spend(c, "/customer", "typing", lambda i: {"session_id": sid, "typing": False}, EVENTS)
    assert _code(await call(c, "/customer", "session:end", {"session_id": sid})) == "rate_limited"
    g, _ = await guest(chatd, "Gail")
    await _spend(g, "/customer", "typing", lambda i: {"session_id": sid, "typing": False}, EVENTS)
    r = await call(g, "/customer", "chat:request", {"topic": "past the rate"})
    assert _code(r) == "rate_limited"
    snapshot = await call(eng, "/engineer", "queue:snapshot", {})
    assert snapshot["queue"] == []
    assert [s["id"] for s in snapshot["sessions"]] == [sid]


async def test_every_engineer_event_past_its_rate_is_refused(chatd_factory: Any) -> None:
    chatd = await chatd_factory(event_rate=SLOW, event_burst=EVENTS)
    eng, eng_in = await engineer(chatd, "alex@example.com")
    cust, cust_in = await guest(chatd)
    sid, _ = await start_chat(chatd, eng, eng_in, cust)
    token = await chatd.login("alex@example.com")

    cases = [
        ("queue:snapshot", lambda i: {}),
        ("session:resume", lambda i: {"session_id": sid, "after_seq": 0}),
        ("typing", lambda i: {"session_id": sid, "typing": True}),
        ("message:read", lambda i: {"session_id": sid, "seq": 1}),
        ("message:send",
         lambda i: {"session_id": sid, "client_msg_id": f"e-{i}", "body": f"reply {i}"}),
        ("engineer:status", lambda i: {"status": "available"}),
    ]
    for event, make in cases:
        c = await chatd.client("/engineer", {"token": token})
        answers = await _spend(c, "/engineer", event, make, allowed(event))
        assert all(a["ok"] for a in answers), (event, answers)
        past = await call(c, "/engineer", event, make(allowed(event)))
        assert _code(past) == "rate_limited", (event, past)

    c = await chatd.client("/engineer", {"token": token})
    await _spend(c, "/engineer", "queue:snapshot", lambda i: {}, allowed("queue:snapshot"))
    r = await call(c, "/engineer", "session:end", {"session_id": sid})
    assert _code(r) == "rate_limited"
    history = await call(eng, "/engineer", "session:resume", {"session_id": sid})
    assert history["session"]["state"] == "active"
    texts = [m["body"] for m in history["messages"] if m["kind"] == "text"]
    assert texts == [f"reply {i}" for i in range(EVENTS)]


async def test_one_customer_has_one_message_rate_across_connections(chatd_factory: Any) -> None:
    chatd = await chatd_factory(message_rate=SLOW, message_burst=BURST)
    eng, eng_in = await engineer(chatd, "alex@example.com")
    token = customer_jwt("acme-1")
    first = await chatd.client("/customer", {"token": token})
    sid, resume = await start_chat(chatd, eng, eng_in, first)  # the request is one of BURST
    second = await chatd.client("/customer", {"token": token})
    third = await chatd.client("/customer", {"session_id": sid, "resume_token": resume})

    def send(i: int) -> dict[str, Any]:
        return {"session_id": sid, "client_msg_id": f"m{i}", "body": f"message {i}"}

    codes = [_code(await call(c, "/customer", "message:send", send(i)))
             for i, c in enumerate([first, second, third, first, second, third])]
    assert codes == ["ok"] * (BURST - 1) + ["rate_limited"] * 3
    esc = await call(second, "/customer", "escalation:request",
                     {"session_id": sid, "kind": "screen_share"})
    assert _code(esc) == "rate_limited"
    history = await call(eng, "/engineer", "session:resume", {"session_id": sid})
    assert [m["body"] for m in history["messages"] if m["kind"] == "text"] == [
        f"message {i}" for i in range(BURST - 1)
    ]

    # Another customer has an allowance of their own.
    other = await chatd.client("/customer", {"token": customer_jwt("acme-2")})
    assert (await call(other, "/customer", "chat:request", {"topic": "mine"}))["ok"]


async def test_one_engineer_has_one_message_rate_across_connections(chatd_factory: Any) -> None:
    chatd = await chatd_factory(message_rate=SLOW, message_burst=BURST)
    eng, eng_in = await engineer(chatd, "alex@example.com")
    cust, _ = await guest(chatd)
    sid, _ = await start_chat(chatd, eng, eng_in, cust)
    tab = await chatd.client("/engineer", {"token": await chatd.login("alex@example.com")})
    codes = [
        _code(await call(c, "/engineer", "message:send",
                         {"session_id": sid, "client_msg_id": f"e{i}", "body": "reply"}))
        for i, c in enumerate([eng, tab] * BURST)
    ]
    assert codes == ["ok"] * BURST + ["rate_limited"] * BURST


async def test_a_full_chat_refuses_messages_and_can_still_end(chatd_factory: Any) -> None:
    cap = 10
    chatd = await chatd_factory(chat_max_messages=cap)
    eng, eng_in = await engineer(chatd, "alex@example.com")
    cust, cust_in = await guest(chatd)
    sid, _ = await start_chat(chatd, eng, eng_in, cust)  # seq 1: the engineer joined
    seqs = []
    for i in range(cap - 1):
        side, ns = (cust, "/customer") if i % 2 == 0 else (eng, "/engineer")
        r = await call(side, ns, "message:send",
                       {"session_id": sid, "client_msg_id": f"m{i}", "body": f"text {i}"})
        assert r["ok"], (i, r)
        seqs.append(r["message"]["seq"])
    assert seqs[-1] == cap

    for side, ns, event, data in [
        (cust, "/customer", "message:send",
         {"session_id": sid, "client_msg_id": "over", "body": "one too many"}),
        (eng, "/engineer", "message:send",
         {"session_id": sid, "client_msg_id": "over", "body": "one too many"}),
        (cust, "/customer", "escalation:request", {"session_id": sid, "kind": "screen_share"}),
    ]:
        r = await call(side, ns, event, data)
        assert _code(r) == "too_large", (ns, event, r)
        assert str(cap) in r["error"]["message"]
    # A retry of a message the chat already holds is still answered with that message.
    again = await call(cust, "/customer", "message:send",
                       {"session_id": sid, "client_msg_id": f"m{cap - 2}", "body": "x"})
    assert again["ok"] and again["duplicate"] and again["message"]["seq"] == cap, again
    # The other side's id is not a retry: refused like any other message.
    theirs = await call(eng, "/engineer", "message:send",
                        {"session_id": sid, "client_msg_id": f"m{cap - 2}", "body": "x"})
    assert _code(theirs) == "too_large", theirs

    ended = await call(cust, "/customer", "session:end", {"session_id": sid})
    assert ended["ok"] and ended["session"]["state"] == "ended", ended
    await eng_in.wait_for("session:ended", lambda d: d["session_id"] == sid)
    history = await call(eng, "/engineer", "session:resume", {"session_id": sid})
    assert [m["seq"] for m in history["messages"]] == list(range(1, cap + 2))
    assert history["messages"][-1]["kind"] == "system"
    assert all(m["body"] != "one too many" for m in history["messages"])
    assert all(d["message"]["body"] != "one too many" for d in cust_in.named("message:new"))


async def test_a_full_chat_can_still_be_transferred(chatd_factory: Any) -> None:
    cap = 10
    chatd = await chatd_factory(chat_max_messages=cap)
    alex, alex_in = await engineer(chatd, "alex@example.com")
    cust, _ = await guest(chatd)
    sid, _ = await start_chat(chatd, alex, alex_in, cust)
    for i in range(cap - 1):
        r = await call(cust, "/customer", "message:send",
                       {"session_id": sid, "client_msg_id": f"m{i}", "body": f"text {i}"})
        assert r["ok"], r
    bo, bo_in = await engineer(chatd, "bo@example.com")
    bo_id = (await call(bo, "/engineer", "engineer:status", {"status": "available"}))[
        "engineer"]["id"]
    r = await call(alex, "/engineer", "session:transfer",
                   {"session_id": sid, "to_engineer_id": bo_id})
    assert r["ok"], r
    await bo_in.wait_for("offer:new", lambda d: d["session_id"] == sid)
    acc = await call(bo, "/engineer", "offer:accept", {"session_id": sid})
    assert acc["ok"], acc
    assert acc["messages"][-1]["seq"] > cap
    over = await call(bo, "/engineer", "message:send",
                      {"session_id": sid, "client_msg_id": "b1", "body": "hello"})
    assert _code(over) == "too_large"
    end = await call(bo, "/engineer", "session:end", {"session_id": sid})
    assert end["ok"], end
