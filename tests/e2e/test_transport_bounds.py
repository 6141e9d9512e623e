"""The transport's bounds, over real sockets: binary packets, unparseable and oversized
frames close the connection before anything is kept; a client that does not read is
dropped once its queue passes the bound; connections and handshakes per client address are
capped; a handshake that joins no namespace is closed. Nobody else notices any of it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chatd.core.clock import FakeClock
from chatd.web import keys
from tests.conftest import Chatd
from tests.e2e.helpers import call, engineer, guest, start_chat
from tests.web.conftest import PeakRSS, start_chatd, stop_chatd

GUEST = {"guest": {"name": "Mallory", "email": "mallory@example.org"}}
PROXY = {"trusted_proxies": ("127.0.0.1/32",)}
BINARY_HEADER = '459999999999-/customer,1["typing",{"_placeholder":true,"num":0}]'


def ws_url(url: str) -> str:
    return url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"


def polling_url(url: str, sid: str | None = None) -> str:
    return url + "/socket.io/?EIO=4&transport=polling" + (f"&sid={sid}" if sid else "")


def xff(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def open_ws(
    http: aiohttp.ClientSession, url: str, *, join: str | None = None,
    auth: dict[str, Any] | None = None, address: str | None = None,
) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    """A raw Engine.IO WebSocket, joined to ``join`` if given: (socket, Engine.IO sid)."""
    ws = await http.ws_connect(ws_url(url), headers=xff(address) if address else None)
    opened = await ws.receive(timeout=5)
    assert opened.type == aiohttp.WSMsgType.TEXT and opened.data.startswith("0"), opened
    if join is not None:
        await ws.send_str(f"40{join},{json.dumps(auth or GUEST)}")
        while True:  # events sent on connect may come before the connect answer
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            if msg.data.startswith(f"40{join},"):
                break
    return ws, json.loads(opened.data[1:])["sid"]


async def closed_by_server(ws: aiohttp.ClientWebSocketResponse, timeout: float = 15) -> int:
    """Read (and drop) what the server sends until it closes; the close code."""
    async def until_closed() -> int:
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                            aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return ws.close_code or 0

    return await asyncio.wait_for(until_closed(), timeout)


async def gone(chatd: Chatd, eio_sid: str, timeout: float = 15) -> bool:
    """Whether the server drops its Engine.IO session ``eio_sid`` within ``timeout``."""
    eio = chatd.app[keys.SOCKETS].sio.eio
    for _ in range(int(timeout / 0.05)):
        socket = eio.sockets.get(eio_sid)
        if socket is None or socket.closed:
            return True
        await asyncio.sleep(0.05)
    return False


async def chat_still_works(chatd: Chatd, tag: str) -> None:
    eng, eng_in = await engineer(chatd, f"{tag}@example.com")
    cust, _ = await guest(chatd, tag.capitalize())
    sid, _ = await start_chat(chatd, eng, eng_in, cust)
    r = await call(cust, "/customer", "message:send",
                   {"session_id": sid, "client_msg_id": f"{tag}-1", "body": "still here"})
    assert r["ok"], r
    await eng_in.wait_for("message:new", lambda d: d["message"]["body"] == "still here")


# -- frames chatd never takes


async def test_a_binary_event_header_closes_the_connection_and_nothing_is_kept(
    chatd_factory: Any,
) -> None:
    chatd = await chatd_factory()
    sio = chatd.app[keys.SOCKETS].sio
    async with aiohttp.ClientSession() as http:
        ws, eio_sid = await open_ws(http, chatd.url, join="/customer")
        await ws.send_str(BINARY_HEADER)
        assert await closed_by_server(ws) == 1003  # unsupported data
        await ws.close()
    assert await gone(chatd, eio_sid)
    assert sio._binary_packet == {}  # no attachment is being waited for
    await chat_still_works(chatd, "after-binary")


@pytest.mark.slow
async def test_binary_frames_after_the_header_do_not_grow_server_memory(tmp_path: Path) -> None:
    """The attack as reported: the header, then 20 MiB of 512 KiB binary frames. The server
    closes the connection at the header; what the client manages to push afterwards is not
    kept (its resident set does not grow by anything like what was sent)."""
    server = await start_chatd(tmp_path, {})
    try:
        frame = b"\x00" * (512 * 1024)
        sent = 0
        async with aiohttp.ClientSession() as http:
            ws, _ = await open_ws(http, server.url, join="/customer")
            async with PeakRSS(server.pid) as rss:
                await ws.send_str(BINARY_HEADER)

                async def flood() -> None:
                    nonlocal sent
                    while sent < 20 * 1024 * 1024 and not ws.closed:
                        await ws.send_bytes(frame)
                        sent += len(frame)
                        await asyncio.sleep(0)  # let the close frame in

                try:
                    await asyncio.wait_for(flood(), 30)
                except (TimeoutError, ConnectionError, aiohttp.ClientError):
                    pass  # refused: the server closed, or stopped reading
                await asyncio.sleep(0.5)
            await ws.close()
        assert rss.growth_mib < 8, f"{rss.growth_mib:.1f} MiB for {sent >> 20} MiB sent"
        assert sent < 20 * 1024 * 1024, "the server kept reading after the header"
    finally:
        stop_chatd(server.proc)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x00\xff" * 10, 1003),  # a binary WebSocket frame
        ("bAAECAw==", 1003),  # an Engine.IO binary message, base64
        ('451-/customer,["typing",{"_placeholder":true,"num":0}]', 1003),
        ('461-/customer,1[{"_placeholder":true,"num":0}]', 1003),  # a binary ack
        ("not an engine.io packet", 1002),
        ("4not a socket.io packet", 1002),
        ('42/customer,["typing"', 1002),  # cut-off JSON
        ("44/customer,{}", 1002),  # CONNECT_ERROR comes from servers only
        ("", 1002),
    ],
)
async def test_frames_chatd_never_takes_close_the_connection(
    chatd_factory: Any, frame: str | bytes, code: int
) -> None:
    chatd = await chatd_factory()
    async with aiohttp.ClientSession() as http:
        ws, eio_sid = await open_ws(http, chatd.url, join="/customer")
        if isinstance(frame, bytes):
            await ws.send_bytes(frame)
        else:
            await ws.send_str(frame)
        assert await closed_by_server(ws) == code
        await ws.close()
    assert await gone(chatd, eio_sid)


async def test_an_oversized_frame_closes_the_connection_but_a_large_event_gets_its_answer(
    chatd_factory: Any,
) -> None:
    chatd = await chatd_factory(max_event_bytes=4096, abuse_penalty_seconds=10.0, **PROXY)
    async with aiohttp.ClientSession() as http:
        ws, eio_sid = await open_ws(http, chatd.url, join="/customer", address="203.0.113.4")
        # Over the event limit but within the frame limit: answered, and still connected.
        await ws.send_str('42/customer,7["chat:request",' + json.dumps(
            {"topic": "t", "padding": "x" * 6000}) + "]")
        answer = await ws.receive(timeout=5)
        assert answer.data.startswith("43/customer,7"), answer
        assert json.loads(answer.data[len("43/customer,7"):])[0]["error"]["code"] == "too_large"
        # Over twice the event limit (plus framing): closed with "message too big".
        await ws.send_str('42/customer,8["typing",' + json.dumps({"x": "x" * 10_000}) + "]")
        assert await closed_by_server(ws) == 1009
        await ws.close()
        assert await gone(chatd, eio_sid)
        # The frame too large bars its address; other addresses connect.
        assert (await handshake(http, chatd.url, "203.0.113.4")).status == 429
        assert (await handshake(http, chatd.url, "198.51.100.4")).status == 200


async def test_polling_binary_and_oversized_bodies_end_the_session(chatd_factory: Any) -> None:
    chatd = await chatd_factory(max_event_bytes=4096)
    async with aiohttp.ClientSession() as http:
        for body in ("bAAECAw==", "4" + BINARY_HEADER[1:], "x" * 20_000):
            async with http.get(polling_url(chatd.url)) as r:
                assert r.status == 200
                eio_sid = json.loads((await r.text())[1:])["sid"]
            async with http.post(polling_url(chatd.url, eio_sid), data=body) as r:
                assert r.status == 400, (body[:20], r.status)
            assert await gone(chatd, eio_sid), body[:20]
            async with http.get(polling_url(chatd.url, eio_sid)) as r:
                assert r.status == 400  # the session is over


# -- a client that does not read


async def test_a_client_that_does_not_read_is_dropped_past_the_queue_bound(
    chatd_factory: Any,
) -> None:
    chatd = await chatd_factory(send_queue_max_bytes=256 * 1024)
    eng, eng_in = await engineer(chatd, "alex@example.com")
    cust, _ = await guest(chatd, "Carol")
    session_id, token = await start_chat(chatd, eng, eng_in, cust)
    for n in range(100):  # a history of about 900 KB, all of it in each resume answer
        r = await call(cust, "/customer", "message:send",
                       {"session_id": session_id, "client_msg_id": f"m{n}", "body": "y" * 9000})
        assert r["ok"], r

    resume = json.dumps(["session:resume", {"session_id": session_id, "resume_token": token}])
    async with aiohttp.ClientSession() as http:
        ws, eio_sid = await open_ws(
            http, chatd.url, join="/customer",
            auth={"session_id": session_id, "resume_token": token},
        )
        # Ask and never read: the kernel's buffers take the first few megabytes, then the
        # answers pile up in the server until the bound ends it.
        for n in range(60):
            try:
                await ws.send_str(f"42/customer,{n}{resume}")
            except (ConnectionError, aiohttp.ClientError):
                break
            await asyncio.sleep(0.02)
        assert await gone(chatd, eio_sid, timeout=30)
        await ws.close()
    # The chat itself goes on for the connections that read.
    r = await call(cust, "/customer", "message:send",
                   {"session_id": session_id, "client_msg_id": "after", "body": "still here"})
    assert r["ok"], r
    await eng_in.wait_for("message:new", lambda d: d["message"]["body"] == "still here")


# -- connections and handshakes per address


async def handshake(http: aiohttp.ClientSession, url: str, address: str) -> aiohttp.ClientResponse:
    async with http.get(polling_url(url), headers=xff(address)) as r:
        await r.read()
        return r


async def test_open_connections_per_address_are_capped(chatd_factory: Any) -> None:
    chatd = await chatd_factory(connections_per_address=3, **PROXY)
    async with aiohttp.ClientSession() as http:
        held = [(await open_ws(http, chatd.url, address="192.0.2.10"))[0] for _ in range(3)]
        async with http.get(polling_url(chatd.url), headers=xff("192.0.2.10")) as r:
            assert r.status == 429
            err = (await r.json())["error"]
            assert err == {"code": "rate_limited",
                           "message": "too many open connections from this address"}
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws_url(chatd.url), headers=xff("192.0.2.10"))
        assert refused.value.status == 429
        # Other addresses are not affected; an IPv6 client is counted by its /64.
        for address in ("198.51.100.7", "203.0.113.9", "2001:db8::1"):
            ws, _ = await open_ws(http, chatd.url, address=address)
            held.append(ws)
        for address in ("2001:db8::2", "2001:db8::3"):
            held.append((await open_ws(http, chatd.url, address=address))[0])
        assert (await handshake(http, chatd.url, "2001:db8::ffff")).status == 429
        assert (await handshake(http, chatd.url, "2001:db8:0:1::1")).status == 200
        # A closed connection gives its place back.
        await held[0].close()
        for _ in range(100):
            if (await handshake(http, chatd.url, "192.0.2.10")).status == 200:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the closed connection's place was not given back")
        for ws in held:
            await ws.close()


async def test_handshakes_per_address_are_rate_limited(chatd_factory: Any) -> None:
    clock = FakeClock()
    chatd = await chatd_factory(clock=clock, handshake_burst=5, handshake_rate=0.5, **PROXY)
    async with aiohttp.ClientSession() as http:
        for _ in range(5):
            assert (await handshake(http, chatd.url, "203.0.113.5")).status == 200
        async with http.get(polling_url(chatd.url), headers=xff("203.0.113.5")) as r:
            assert r.status == 429
            assert r.headers["Retry-After"] == "2"
            assert (await r.json())["error"]["code"] == "rate_limited"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws_url(chatd.url), headers=xff("203.0.113.5"))
        assert refused.value.status == 429
        assert (await handshake(http, chatd.url, "198.51.100.20")).status == 200
        assert (await handshake(http, chatd.url, "2001:db8:5::1")).status == 200
        clock.advance(2)  # one more handshake's worth
        assert (await handshake(http, chatd.url, "203.0.113.5")).status == 200
        assert (await handshake(http, chatd.url, "203.0.113.5")).status == 429
    await chat_still_works(chatd, "unaffected")


# -- joining a namespace


async def test_a_handshake_that_joins_no_namespace_is_closed(chatd_factory: Any) -> None:
    chatd = await chatd_factory(join_timeout_seconds=0.5)
    async with aiohttp.ClientSession() as http:
        idle, idle_sid = await open_ws(http, chatd.url)
        joined, joined_sid = await open_ws(http, chatd.url, join="/customer")
        left, left_sid = await open_ws(http, chatd.url, join="/customer")
        await left.send_str("41/customer,")  # leaves: the deadline starts again
        async with http.get(polling_url(chatd.url)) as r:
            polling_sid = json.loads((await r.text())[1:])["sid"]

        assert await closed_by_server(idle) == 1008  # policy violation
        assert await closed_by_server(left) == 1008
        for eio_sid in (idle_sid, left_sid, polling_sid):
            assert await gone(chatd, eio_sid)
        async with http.get(polling_url(chatd.url, polling_sid)) as r:
            assert r.status == 400
        # One that joined in time stays, well past the deadline.
        await asyncio.sleep(1.5)
        assert not joined.closed and not await gone(chatd, joined_sid, timeout=0.1)
        await joined.send_str('42/customer,1["no:such:event",{}]')
        answer = await joined.receive(timeout=5)
        assert answer.data.startswith("43/customer,1"), answer
        for ws in (idle, joined, left):
            await ws.close()


# -- floods past the event rate


async def test_a_client_flooding_past_its_event_rate_is_disconnected(chatd_factory: Any) -> None:
    """Refusing a flood event by event still costs a decode and an answer each: a client
    that keeps sending far past its rate is cut off, one that slows down when told is not."""
    chatd = await chatd_factory(event_rate=5.0, event_burst=10)
    async with aiohttp.ClientSession() as http:
        flooder, flooder_sid = await open_ws(http, chatd.url, join="/customer")
        polite, _ = await open_ws(http, chatd.url, join="/customer")
        # The polite one sends a burst, hears rate_limited, and stops.
        for i in range(12):
            await polite.send_str(f'42/customer,{i}["typing",{{"session_id":"x","typing":true}}]')
        answers = []
        while len(answers) < 12:
            msg = await polite.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            if msg.data.startswith("43/customer,"):
                answers.append(msg.data)
        assert any('"rate_limited"' in a for a in answers), answers
        # The flooder sends 500 at once, reading nothing.
        for i in range(500):
            await flooder.send_str(f'42/customer,{i}["typing",{{"session_id":"x","typing":true}}]')
        assert await closed_by_server(flooder) == 1008  # policy violation
        assert await gone(chatd, flooder_sid)
        # The polite one is still connected and answered.
        await asyncio.sleep(2.5)  # its bucket refills
        await polite.send_str('42/customer,99["typing",{"session_id":"x","typing":true}]')
        while True:
            msg = await polite.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            if msg.data.startswith("43/customer,99"):
                break
        await polite.close()
    await chat_still_works(chatd, "after-flood")


async def close_of(ws: aiohttp.ClientWebSocketResponse, timeout: float = 15) -> tuple[int, str]:
    """Read (and drop) what the server sends until it closes: (close code, reason)."""
    async def until_closed() -> tuple[int, str]:
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.CLOSE:
                return int(msg.data), str(msg.extra or "")
            if msg.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                            aiohttp.WSMsgType.ERROR):
                return ws.close_code or 0, ""

    return await asyncio.wait_for(until_closed(), timeout)


def typing_frame(ack: int) -> str:
    return f'42/customer,{ack}["typing",{{"session_id":"x","typing":true}}]'


async def answers(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[str]:
    """The next ``n`` acknowledgements on /customer."""
    got: list[str] = []
    while len(got) < n:
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        if msg.data.startswith("43/customer,"):
            got.append(msg.data)
    return got


async def test_a_client_that_goes_on_after_rate_limited_is_closed_after_a_few_refusals(
    chatd_factory: Any,
) -> None:
    """Each refused event costs a decode and an answer: a connection told ``rate_limited``
    more than ``event_refusals_max`` times in a row, with nothing accepted between, is
    closed, long before the packet flood bound. One that waits after a refusal never is."""
    clock = FakeClock()  # no bucket refills unless the test says so
    chatd = await chatd_factory(clock=clock, event_rate=1.0, event_burst=20,
                                event_refusals_max=3)
    async with aiohttp.ClientSession() as http:
        flooder, flooder_sid = await open_ws(http, chatd.url, join="/customer")
        patient, patient_sid = await open_ws(http, chatd.url, join="/customer")
        # The patient one spends its burst and is refused three times in a row: the most
        # a client may hear in a row. It waits; a token comes; once more; and again.
        for i in range(23):
            await patient.send_str(typing_frame(i))
        got = await answers(patient, 23)
        assert sum('"rate_limited"' in a for a in got) == 3, got
        for round_ in range(2):
            clock.advance(1.0)
            await patient.send_str(typing_frame(100 + round_))
            assert '"rate_limited"' not in (await answers(patient, 1))[0]
            for i in range(3):
                await patient.send_str(typing_frame(200 + 10 * round_ + i))
            assert all('"rate_limited"' in a for a in await answers(patient, 3))
        # The flooder's fourth refusal in a row closes its connection; 24 packets are far
        # below the packet flood bound (twice the burst at once, here 40).
        for i in range(24):
            await flooder.send_str(typing_frame(i))
        assert await close_of(flooder) == (1008, "too many events refused")
        assert await gone(chatd, flooder_sid)
        assert not await gone(chatd, patient_sid, timeout=0.2)
        await patient.close()
    await chat_still_works(chatd, "after-refusals")


async def test_an_address_that_broke_a_bound_may_not_connect_for_a_while(
    chatd_factory: Any,
) -> None:
    """A client closed for breaking a bound would come straight back and cost a handshake,
    a join and a refusal again: its address is refused new sessions (429, with
    ``Retry-After``) for ``abuse_penalty_seconds``. Other addresses, and the address's
    connections already open, are not affected; a join deadline bars nobody."""
    clock = FakeClock()
    chatd = await chatd_factory(clock=clock, abuse_penalty_seconds=10.0,
                                join_timeout_seconds=0.5, **PROXY)
    async with aiohttp.ClientSession() as http:
        other, _ = await open_ws(http, chatd.url, join="/customer", address="203.0.113.7")
        bad, _ = await open_ws(http, chatd.url, join="/customer", address="203.0.113.7")
        await bad.send_bytes(b"\x00" * 10)
        assert (await close_of(bad))[0] == 1003
        async with http.get(polling_url(chatd.url), headers=xff("203.0.113.7")) as r:
            assert r.status == 429
            assert r.headers["Retry-After"] == "10"
            assert (await r.json())["error"] == {
                "code": "rate_limited",
                "message": "a connection from this address broke a limit; connect again later",
            }
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws_url(chatd.url), headers=xff("203.0.113.7"))
        assert refused.value.status == 429
        # The address's connection that broke nothing goes on.
        await other.send_str(typing_frame(1))
        assert '"bad_request"' in (await answers(other, 1))[0]  # answered
        # Others connect; a session closed by the join deadline bars nobody.
        idle, _ = await open_ws(http, chatd.url, address="198.51.100.8")
        assert (await close_of(idle))[0] == 1008
        assert (await handshake(http, chatd.url, "198.51.100.8")).status == 200
        clock.advance(9.0)
        assert (await handshake(http, chatd.url, "203.0.113.7")).status == 429
        clock.advance(1.0)
        assert (await handshake(http, chatd.url, "203.0.113.7")).status == 200
        await other.close()


# -- server-wide budgets


async def test_new_sessions_past_the_server_wide_budget_answer_503(chatd_factory: Any) -> None:
    """Per-address limits bound one address; the server-wide budget bounds a crowd of them.
    Established connections are not counted."""
    # 20 a second comes in bursts of 2 (a tenth of the rate): a crowd arrives at an even
    # pace, not all in one turn of the server. The clock stands still: nothing refills.
    chatd = await chatd_factory(clock=FakeClock(), handshake_rate_total=20.0,
                                trusted_proxies=("127.0.0.1/32",))
    async with aiohttp.ClientSession() as http:
        statuses = []
        for i in range(6):  # each from its own address: no per-address limit is near
            async with http.get(polling_url(chatd.url), headers=xff(f"198.51.100.{i + 1}")) as r:
                statuses.append(r.status)
                if r.status == 503:
                    body = await r.json()
                    assert body["error"]["code"] == "unavailable", body
                    assert r.headers["Retry-After"] == "1"
                else:
                    sid = json.loads((await r.text())[1:])["sid"]
        assert statuses == [200, 200, 503, 503, 503, 503], statuses
        # A request of an established session is not a new one: it goes through.
        async with http.get(polling_url(chatd.url, sid)) as r:
            assert r.status == 200


async def test_history_past_the_server_wide_budget_is_refused_for_everyone(
    chatd_factory: Any,
) -> None:
    """The budget counts messages read for ``session:resume`` answers, not answers: one
    long page spends what many short ones would, and everyone waits until it is paid."""
    clock = FakeClock()
    chatd = await chatd_factory(clock=clock, history_messages_rate_total=10.0)
    eng, eng_in = await engineer(chatd, "alex@example.com")
    cust, _ = await guest(chatd, "Carol")
    sid, resume = await start_chat(chatd, eng, eng_in, cust)
    for n in range(40):
        r = await call(cust, "/customer", "message:send",
                       {"session_id": sid, "client_msg_id": f"m{n}", "body": f"line {n}"})
        assert r["ok"], r
    total = int(r["message"]["seq"])  # the chat's messages, chatd's own included
    other, _ = await guest(chatd, "Other")
    creds = {"session_id": sid, "resume_token": resume}
    # A page of one message costs one of the burst of 20; a page of all of them, the rest
    # and more.
    one = await call(cust, "/customer", "session:resume", {**creds, "after_seq": total - 1})
    assert one["ok"] and len(one["messages"]) == 1, one
    every = await call(cust, "/customer", "session:resume", {**creds, "after_seq": 0})
    assert every["ok"] and len(every["messages"]) == total, every
    # The long page left the budget in debt (19 - total): everybody is refused.
    busy = [await call(cust, "/customer", "session:resume", {**creds, "after_seq": total - 1}),
            await call(other, "/customer", "session:resume", {**creds, "after_seq": total - 1}),
            await call(eng, "/engineer", "session:resume", {"session_id": sid})]
    assert [b["ok"] for b in busy] == [False] * 3, busy
    assert all(b["error"]["code"] == "rate_limited" for b in busy)
    assert "busy" in busy[0]["error"]["message"]
    # It is paid back at 10 messages a second: one more page of one after (total - 18) / 10 s.
    clock.advance((total - 18) / 10 - 0.05)
    assert not (await call(eng, "/engineer", "session:resume",
                           {"session_id": sid, "after_seq": total - 1}))["ok"]
    clock.advance(0.1)
    assert (await call(eng, "/engineer", "session:resume",
                       {"session_id": sid, "after_seq": total - 1}))["ok"]
    # A message of 10,000 characters counts three times (once per 4,096 begun): from a
    # full budget, seven pages of it go out (the seventh into debt), not twenty.
    r = await call(cust, "/customer", "message:send",
                   {"session_id": sid, "client_msg_id": "long", "body": "x" * 10_000})
    assert r["ok"], r
    clock.advance(10.0)
    pages = [await call(eng, "/engineer", "session:resume",
                        {"session_id": sid, "after_seq": total}) for _ in range(8)]
    assert all(len(p["messages"]) == 1 for p in pages[:7]), pages
    assert [p["ok"] for p in pages] == [True] * 7 + [False], pages
