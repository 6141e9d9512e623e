"""Protocol fuzzing: whatever frames a client sends on a raw WebSocket, chatd stays up, logs
no error and leaves everyone else's chat alone.

A chatd runs in this process (so every log record it makes is seen here), with a bystander
chat between a customer and an engineer. A hostile client opens raw Engine.IO WebSockets
(``/socket.io/?EIO=4&transport=websocket``), joins ``/customer`` as a guest or ``/engineer``
as a logged-in engineer (or joins nothing), and sends what hypothesis makes: well-formed
events with random payloads for every known event name and for random names, mutations of
valid frames (flipped, cut or repeated bytes, wrong packet types, huge ack ids, bad
namespaces, binary-attachment headers), random text and binary frames, and frames past the
size bound. The server may answer with an error or close the connection (the next example
opens a new one). After each example it must answer ``/healthz`` and have logged nothing at
ERROR or above; every few examples, and at the end, a fresh honest customer can still chat
and the bystander's chat is exactly as it was.

``CHATD_FUZZ_EXAMPLES`` (default 200) sets the number of examples. Runs are derandomized
(the same examples every time) unless ``CHATD_FUZZ_SEED`` picks a seed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import traceback
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import aiohttp
import pytest
import socketio
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests.conftest import Chatd
from tests.e2e.helpers import Inbox, call, engineer, guest, start_chat

EXAMPLES = int(os.environ.get("CHATD_FUZZ_EXAMPLES", "200"))
SEED = os.environ.get("CHATD_FUZZ_SEED")
CHECK_EVERY = 25  # examples between two honest-client and bystander checks
T = TypeVar("T")

CUSTOMER_EVENTS = ["chat:request", "session:resume", "message:send", "typing", "message:read",
                   "escalation:request", "session:end"]
ENGINEER_EVENTS = ["engineer:status", "queue:snapshot", "offer:accept", "offer:decline",
                   "session:resume", "message:send", "typing", "message:read",
                   "session:transfer", "session:end"]
FIELDS = ["session_id", "client_msg_id", "body", "topic", "severity", "message", "request_id",
          "resume_token", "after_seq", "typing", "seq", "kind", "phone", "note", "status",
          "capacity", "to_engineer_id", "resolution", "token", "guest", "watch"]
ERROR_CODES = {"bad_request", "unauthorized", "forbidden", "not_found", "conflict",
               "session_closed", "rate_limited", "too_large", "unsupported_type",
               "unavailable"}  # not "internal": that is a server fault
# The fields of each event (docs/protocol.md §5, §6), to make payloads that pass validation.
EVENT_FIELDS = {
    "chat:request": ["topic", "severity", "message", "client_msg_id", "request_id"],
    "session:resume": ["session_id", "resume_token", "after_seq"],
    "message:send": ["session_id", "client_msg_id", "body"],
    "typing": ["session_id", "typing"],
    "message:read": ["session_id", "seq"],
    "escalation:request": ["session_id", "kind", "phone", "note"],
    "session:end": ["session_id", "resolution"],
    "engineer:status": ["status", "capacity"],
    "queue:snapshot": [],
    "offer:accept": ["session_id"],
    "offer:decline": ["session_id"],
    "session:transfer": ["session_id", "to_engineer_id"],
}
# Stands for the hostile client's own chat (the last session id the server answered it
# with), so that events reach a chat it may act on.
OWN_CHAT = "ffffffff-ffff-4fff-bfff-ffffffffffff"
GUEST_AUTH = {"guest": {"name": "Mallory", "email": "mallory@example.org"}}


class ErrorRecords(logging.Handler):
    """Every record at ERROR or above, from any logger and any thread."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def describe(self, since: int = 0) -> str:
        out = []
        for r in self.records[since:]:
            text = f"{r.levelname} {r.name}: {r.getMessage()}"
            if r.exc_info and r.exc_info[0] is not None:
                text += "\n" + "".join(traceback.format_exception(*r.exc_info))
            out.append(text)
        return "\n".join(out)


class Big:
    """A message:send frame of ``size`` bytes of body, made only as it is sent (so that
    hypothesis does not print megabytes)."""

    def __init__(self, ns: str, size: int) -> None:
        self.ns, self.size = ns, size

    def __repr__(self) -> str:
        return f"Big({self.ns!r}, {self.size})"

    def text(self) -> str:
        return frame(self.ns, "message:send", {"body": "x" * self.size}, 1)


Frame = str | bytes | Big


def frame(ns: str, name: Any, payload: Any, ack: int | None) -> str:
    """A Socket.IO EVENT inside an Engine.IO MESSAGE, as a WebSocket text frame."""
    prefix = "" if ns == "/" else ns + ","
    return f"42{prefix}{'' if ack is None else ack}{json.dumps([name, payload])}"


def json_values(ints: st.SearchStrategy[int], texts: st.SearchStrategy[str]) -> Any:
    scalars = st.none() | st.booleans() | ints | st.floats(allow_nan=False,
                                                          allow_infinity=False) | texts
    return st.recursive(
        scalars,
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(texts, kids, max_size=4),
        max_leaves=12,
    )


def strategies(session_ids: list[str], engineer_ids: list[str]) -> st.SearchStrategy[Any]:
    """One example: how the hostile client joins (``customer``, ``engineer``, ``none``), the
    kind of frames, and the frames. ``events`` are well-formed events on the joined
    namespace, each with an ack id, whose JSON the server can decode (no lone surrogates,
    integers within 64 bits): each must be answered and the connection kept. ``chaos`` is
    anything at all."""
    # Text the server can decode; lone surrogates (valid JSON escapes that msgspec refuses)
    # and huge integers belong to the chaos frames.
    plain = json_values(st.integers(-(2**63), 2**63 - 1),
                        st.text(st.characters(exclude_categories=["Cs"]), max_size=40))
    wild = json_values(st.integers(-(2**70), 2**70), st.text(max_size=40))
    # Values that pass a schema's first checks, so the handlers themselves are reached:
    # the bystander's ids, other ids, and near misses of ids.
    ids = st.sampled_from(session_ids + engineer_ids + [
        str(uuid.UUID(int=0)), str(uuid.uuid5(uuid.NAMESPACE_DNS, "fuzz")),
        session_ids[0].upper(), session_ids[0] + " ", "",
    ])
    words = st.sampled_from(["phone", "screen_share", "available", "away", "+1 555 0100",
                             "resolved", "x" * 10_001])

    def payloads(values: Any) -> Any:
        fields = ids | values | st.integers(0, 2**53) | words
        return st.fixed_dictionaries({}, optional={f: fields for f in FIELDS}) | values

    # Payloads shaped like each event's schema, mostly valid, so the handlers are reached.
    text = st.text(st.characters(exclude_categories=["Cs"]), max_size=30) | words
    uuids = st.sampled_from([OWN_CHAT, OWN_CHAT, *session_ids, *engineer_ids,
                             str(uuid.UUID(int=0))])
    seqs = st.integers(0, 2**53) | st.integers(0, 10)
    shaped_fields: dict[str, Any] = {
        "session_id": uuids, "to_engineer_id": uuids, "client_msg_id": text,
        "request_id": st.none() | text, "body": text, "topic": text,
        "severity": st.integers(0, 5), "message": st.none() | text, "resume_token": text,
        "after_seq": seqs, "seq": seqs, "typing": st.booleans(),
        "kind": st.sampled_from(["phone", "screen_share", "fax"]),
        "phone": st.none() | st.sampled_from(["+1 555 0100", "12", "(0)-."]) | text,
        "note": st.none() | text, "resolution": st.none() | text,
        "status": st.sampled_from(["available", "away", "busy"]),
        "capacity": st.none() | st.integers(-1, 30),
    }

    @st.composite
    def shaped(draw: st.DrawFn, name: str, values: Any) -> tuple[str, Any]:
        payload = {}
        for f in EVENT_FIELDS[name]:
            choice = draw(st.integers(0, 9))
            if choice < 8:  # mostly a plausible value, sometimes a wrong one or none
                payload[f] = draw(shaped_fields[f])
            elif choice == 8:
                payload[f] = draw(values)
        return name, payload

    def named_payloads(values: Any) -> Any:
        return st.sampled_from(sorted(EVENT_FIELDS)).flatmap(lambda n: shaped(n, values))

    known = st.sampled_from(sorted(set(CUSTOMER_EVENTS + ENGINEER_EVENTS)))
    reserved = st.sampled_from(["connect", "disconnect", "connect_error", ""])
    plain_names = known | known | reserved | st.text(
        st.characters(exclude_categories=["Cs"]), max_size=20) | plain
    acks = st.integers(0, 2**31) | st.sampled_from([0, 2**53, 2**63 - 1])
    namespaces = st.sampled_from(["/customer", "/engineer", "/", "/admin", "customer",
                                  "/customer/"])
    any_events = st.builds(frame, namespaces, known | reserved | st.text(max_size=20) | wild,
                           payloads(wild), st.none() | acks | st.just(10**30))

    @st.composite
    def mutated(draw: st.DrawFn) -> str | bytes:
        base = draw(any_events)
        op = draw(st.sampled_from(["flip", "cut", "repeat", "type", "id", "ns", "binary",
                                   "bytes"]))
        i = draw(st.integers(0, len(base)))
        if op == "flip":
            return base[:i] + draw(st.characters()) + base[i + 1:]
        if op == "cut":
            return base[:i]
        if op == "repeat":
            j = draw(st.integers(i, min(len(base), i + 200)))
            return base[:j] + base[i:j] * draw(st.integers(2, 50)) + base[j:]
        if op == "type":
            return draw(st.text("0123456789", min_size=1, max_size=3)) + base[2:]
        if op == "id":
            huge = draw(st.sampled_from(["9" * 20, "9" * 400, "-1", "1e9", "0x10"]))
            head, comma, rest = base.partition(",")
            return head + comma + huge + rest if comma else base[:2] + huge + base[2:]
        if op == "ns":
            bad = draw(st.sampled_from(["", "/", "/nope", "/" + "a" * 5000, "/customer,/x",
                                        "/cust\u0000omer"]) | st.text(max_size=30))
            head, comma, rest = base.partition(",")
            return base[:2] + bad + "," + (rest if comma else base[2:])
        if op == "binary":
            count = draw(st.sampled_from(["0", "1", "2", "9999999999"]))
            ns = draw(st.sampled_from(["/customer,", "/engineer,", ""]))
            return (f"45{count}-{ns}"
                    + json.dumps(["typing", {"_placeholder": True, "num": 0}]))
        return base.encode()[:i] + draw(st.binary(max_size=30)) + base.encode()[i:]

    big = st.builds(Big, st.sampled_from(["/customer", "/engineer"]),
                    st.sampled_from([70_000, 300_000, 1_100_000]))
    chaos = st.one_of(
        any_events, mutated(), mutated(), st.text(max_size=200), st.binary(max_size=200),
        st.sampled_from(["2", "3", "1", "5", "6", "4", "40", "41", "41/customer,",
                         "40/customer,", "40/engineer,{}", "2probe", "", "4" * 1000]),
        big,
    )

    @st.composite
    def example(draw: st.DrawFn) -> tuple[str, str, list[Frame]]:
        join = draw(st.sampled_from(["customer", "customer", "engineer", "engineer", "none"]))
        if join != "none" and draw(st.booleans()):
            ns = "/" + join
            events = st.builds(
                lambda named, ack: frame(ns, named[0], named[1], ack),
                named_payloads(plain) | named_payloads(plain) | st.tuples(plain_names,
                                                                          payloads(plain)),
                acks,
            )
            return join, "events", draw(st.lists(events, min_size=1, max_size=8))
        return join, "chaos", draw(st.lists(chaos, min_size=1, max_size=6))

    return example()


async def hostile(http: aiohttp.ClientSession, url: str, token: str, join: str, kind: str,
                  frames: list[Frame]) -> str:
    """Open a raw WebSocket, join as asked, send ``frames``; how the connection ended. For
    ``events``, every frame must be answered with a well-formed ack on an open connection."""
    ws_url = url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
    async with http.ws_connect(ws_url) as ws:
        opened = await ws.receive(timeout=5)
        assert opened.type == aiohttp.WSMsgType.TEXT and opened.data.startswith("0"), opened
        ns = "/" + join
        if join != "none":
            auth = GUEST_AUTH if join == "customer" else {"token": token}
            await ws.send_str(f"40{ns},{json.dumps(auth)}")
            # The server may send events (engineer:status) ahead of the connect packet.
            for _ in range(5):
                joined = await ws.receive(timeout=5)
                assert joined.type == aiohttp.WSMsgType.TEXT, joined
                if joined.data.startswith(f"40{ns},"):
                    break
            else:
                raise AssertionError(f"could not join {ns}: {joined}")
        if kind == "events":
            await answered_one_by_one(ws, ns, frames)
            return "open"
        for f in frames:
            if ws.closed:
                break
            try:
                if isinstance(f, bytes):
                    await ws.send_bytes(f)
                else:
                    await ws.send_str(f.text() if isinstance(f, Big) else f)
            except (ConnectionError, aiohttp.ClientConnectionError):
                return "reset"  # the server closed while a frame (a big one) was going out
        # Read what comes back until the server closes or goes quiet.
        while True:
            try:
                msg = await ws.receive(timeout=0.1)
            except TimeoutError:
                return "open"
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                            aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return f"closed {ws.close_code}"


async def answered_one_by_one(
    ws: aiohttp.ClientWebSocketResponse, ns: str, frames: list[Frame]
) -> None:
    """Send each event and wait for its ack: the connection stays open and every answer is
    ``{ok: true, ...}`` or ``{ok: false, error: {code, message}}`` with a known code."""
    own = OWN_CHAT
    for f in frames:
        assert isinstance(f, str)
        ack_id = re.match(rf"42{ns},(\d+)", f)
        assert ack_id is not None, f
        await ws.send_str(f.replace(OWN_CHAT, own))
        while True:
            msg = await ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.TEXT, f"{msg} after {f!r}"
            ack = re.match(rf"43{ns},(\d+)(.*)", msg.data, re.S)
            if ack and ack.group(1) == ack_id.group(1):
                break
        answer = json.loads(ack.group(2))
        assert isinstance(answer, list) and len(answer) == 1, msg.data
        assert isinstance(answer[0].get("ok"), bool), msg.data
        if answer[0]["ok"]:
            own = answer[0].get("session", {}).get("id", own)
        else:
            assert answer[0]["error"]["code"] in ERROR_CODES, f"{f!r} answered {msg.data}"


async def make_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


async def snapshot(eng: socketio.AsyncClient, session_id: str) -> Any:
    r = await call(eng, "/engineer", "session:resume", {"session_id": session_id})
    assert r["ok"], r
    return r["session"], r["messages"]


async def honest_chat(chatd: Chatd, n: int) -> None:
    c, _ = await guest(chatd, f"Honest{n}")
    r = await call(c, "/customer", "chat:request", {"topic": "still working?"})
    assert r["ok"], r
    sid = r["session"]["id"]
    r = await call(c, "/customer", "message:send",
                   {"session_id": sid, "client_msg_id": f"h{n}", "body": "hello"})
    assert r["ok"] and not r["duplicate"], r
    r = await call(c, "/customer", "session:end", {"session_id": sid})
    assert r["ok"], r
    await c.disconnect()


# A failing example may hold long frames; printing them is what is wanted.
@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@pytest.mark.timeout(60 + EXAMPLES)  # about 10 s for 200 on a quiet machine; room for a busy one
async def test_hostile_frames_never_crash_log_errors_or_touch_other_chats(
    chatd_factory: Callable[..., Awaitable[Chatd]],
) -> None:
    chatd = await chatd_factory()
    errors = ErrorRecords()
    logging.getLogger().addHandler(errors)
    try:
        await _fuzz(chatd, errors)
    finally:
        logging.getLogger().removeHandler(errors)


async def _fuzz(chatd: Chatd, errors: ErrorRecords) -> None:
    # The bystander: an active chat with a few messages, its engineer at capacity 1 so the
    # chats the fuzzer opens are never offered to them.
    eng, eng_in = await engineer(chatd, "bystander@example.com")
    r = await call(eng, "/engineer", "engineer:status", {"status": "available", "capacity": 1})
    assert r["ok"], r
    cust, cust_in = await guest(chatd, "Bystander")
    sid, resume = await start_chat(chatd, eng, eng_in, cust)
    for i in range(3):
        r = await call(cust, "/customer", "message:send",
                       {"session_id": sid, "client_msg_id": f"b{i}", "body": f"before {i}"})
        assert r["ok"], r
    mallory = await chatd.add_engineer("mallory@example.com")
    token = await chatd.login("mallory@example.com")
    bystander = await snapshot(eng, sid)
    seen_by_customer = len(cust_in.events)
    server_loop = asyncio.get_running_loop()

    def on_server(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, server_loop).result(timeout=30)


    def check_others(n: int) -> None:
        on_server(honest_chat(chatd, n))
        assert on_server(snapshot(eng, sid)) == bystander
        # Nothing reached the bystander customer: no message, no typing, no read receipt.
        assert cust_in.events[seen_by_customer:] == [], cust_in.events[seen_by_customer:]
        assert cust.connected and eng.connected

    outcomes: dict[str, int] = {}
    count = [0]

    def run() -> None:
        loop = asyncio.new_event_loop()
        http = loop.run_until_complete(make_session())

        async def healthz() -> int:
            async with http.get(chatd.url + "/healthz") as r:
                return r.status

        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  derandomize=SEED is None, print_blob=True,
                  suppress_health_check=list(HealthCheck))
        @given(strategies([sid], [eng_in_id(eng_in), mallory.id]))
        def example(ex: tuple[str, str, list[Frame]]) -> None:
            join, kind, frames = ex
            count[0] += 1
            before = len(errors.records)
            outcome = loop.run_until_complete(hostile(http, chatd.url, token, join, kind, frames))
            outcomes[f"{kind} {outcome}"] = outcomes.get(f"{kind} {outcome}", 0) + 1
            assert loop.run_until_complete(healthz()) == 200
            assert len(errors.records) == before, (
                f"frames {frames!r} (joined: {join}) logged:\n{errors.describe(before)}")
            if count[0] % CHECK_EVERY == 0:
                check_others(count[0])

        if SEED is not None:
            example = seed(int(SEED))(example)
        try:
            example()
        finally:
            loop.run_until_complete(http.close())
            loop.close()

    await asyncio.to_thread(run)
    await asyncio.sleep(0.2)  # handlers still running from the last frames
    assert errors.records == [], errors.describe()
    await asyncio.to_thread(check_others, -1)
    print(f"\nfuzz: {count[0]} examples, connection outcomes {outcomes}")


def eng_in_id(inbox: Inbox) -> str:
    """The bystander engineer's id, from the status event every engineer gets on connect."""
    status = inbox.named("engineer:status")
    return str(status[0]["id"]) if status else str(uuid.uuid4())


async def test_a_connect_after_the_engineio_close_logs_no_error(
    chatd_factory: Callable[..., Awaitable[Chatd]],
) -> None:
    """Found by the fuzzer (``CHATD_FUZZ_SEED=1``): an Engine.IO close packet followed, in
    the same breath, by a namespace connect."""
    chatd = await chatd_factory()
    errors = ErrorRecords()
    logging.getLogger().addHandler(errors)
    try:
        async with aiohttp.ClientSession() as http:
            assert await hostile(http, chatd.url, "", "none", "chaos",
                                 ["1", "40/customer,"]) != ""
        await asyncio.sleep(0.3)
    finally:
        logging.getLogger().removeHandler(errors)
    assert errors.records == [], errors.describe()
