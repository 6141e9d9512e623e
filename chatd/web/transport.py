"""The Engine.IO and Socket.IO server under chatd's namespaces, and its bounds.

python-socketio and python-engineio do the protocol; the subclasses here keep what one
client can make the server hold bounded (docs/security.md#connections-and-frames): no
binary packets (chatd uses none, and the library buffers their attachments without
limit), no frame larger than an event may need, a capped outgoing queue per connection,
a cap on open connections and a rate of handshakes per client address, and a deadline
to join a namespace. How each refusal looks on the wire is in docs/protocol.md#1-transport.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import engineio
import msgspec
import socketio
from aiohttp import WSCloseCode, WSMsgType, web

from ..config import Settings, derive
from ..core.clock import Clock
from ..core.ratelimit import KeyedLimiter, TokenBucket, retry_after_seconds
from .http import address_key

log = logging.getLogger(__name__)

# Room for the Socket.IO framing around an event's payload (packet types, namespace, ack
# id, event name) in the largest frame accepted.
FRAME_OVERHEAD = 1024
# How long a refused WebSocket is given to take its close frame before it is dropped.
CLOSE_GRACE = 2.0

RESERVED_EVENTS = frozenset({"connect", "disconnect", "connect_error"})


@dataclass(frozen=True)
class TransportLimits:
    max_event_bytes: int = 64 * 1024
    send_queue_max_bytes: int = 1024 * 1024
    connections_per_address: int = 100
    handshake_rate: float = 5.0
    handshake_burst: int = 20
    join_timeout_seconds: float = 10.0
    limiter_max_keys: int = 100_000
    # Packets a connection may send, counted before they are decoded: past this a client is
    # not just refused event by event (each refusal still costs a decode and an answer)
    # but disconnected. Far above what the event rate lets through, so a client that slows
    # down when told ``rate_limited`` never meets it.
    event_rate: float = 20.0
    event_burst: int = 60

    @classmethod
    def from_settings(cls, settings: Settings) -> TransportLimits:
        limits: TransportLimits = derive(settings, cls)  # each field from its setting
        return limits

    @property
    def flood_rate(self) -> float:
        """Packets a second a connection may send on average (two namespaces' worth)."""
        return 2 * self.event_rate

    @property
    def flood_burst(self) -> int:
        """Packets a connection may send at once, or past its rate, before it is cut off."""
        return 2 * self.event_burst

    @property
    def max_frame_bytes(self) -> int:
        """The largest Engine.IO frame (or polling body) accepted. Twice the event limit:
        a client's JSON may spell a payload longer than the server's measure of it
        (escapes, spaces), and an event somewhat over the limit should get its
        ``too_large`` answer rather than lose the connection."""
        return 2 * self.max_event_bytes + FRAME_OVERHEAD


def handshake_budget(clock: Clock, rate: float) -> Any:
    """Server-wide admission of new Engine.IO sessions, outermost, before any other work:
    past ``rate`` a second (bursts of twice it), from all addresses together, a handshake
    answers 503 with ``Retry-After``. Per-address limits bound one address; this bounds what
    a crowd of addresses can make the server do. Established connections are not counted."""
    bucket = TokenBucket(clock, rate, 2 * rate)
    body = msgspec.json.encode({"ok": False, "error": {
        "code": "unavailable", "message": "the server is busy; connect again shortly"}})

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if (
            request.path.startswith("/socket.io/")
            and "sid" not in request.query
            and not bucket.take()
        ):
            return web.Response(status=503, body=body, content_type="application/json",
                                headers={"Retry-After": "1"})
        response: web.StreamResponse = await handler(request)
        return response

    return middleware


class _JSON:
    """The ``json`` module's two functions, done by msgspec (several times faster)."""

    _encoder = msgspec.json.Encoder()

    @classmethod
    def dumps(cls, obj: Any, **_: Any) -> str:
        return cls._encoder.encode(obj).decode()

    @staticmethod
    def loads(s: str | bytes, **_: Any) -> Any:
        try:
            return msgspec.json.decode(s)
        except msgspec.DecodeError as exc:  # callers expect json's ValueError
            if "\\u" in (s if isinstance(s, str) else s.decode("utf-8", "replace")):
                # Maybe a lone surrogate escape, which msgspec refuses: JavaScript's
                # JSON.stringify writes one for a string cut inside an emoji. It stands for
                # no character; it becomes U+FFFD, as a browser's own UTF-8 encoder does.
                try:
                    return _replace_surrogates(json.loads(s, parse_constant=_no_constant))
                except (ValueError, RecursionError):
                    pass
            raise ValueError(str(exc)) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _replace_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_replace_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    return value


class Packet(socketio.packet.Packet):  # type: ignore[misc]
    """Socket.IO packets without binary attachments: chatd sends files over HTTP, so the
    library's recursive scan of every outgoing payload for bytes is wasted work."""

    uses_binary_events = False
    json = _JSON


class Manager(socketio.AsyncManager):  # type: ignore[misc]
    """python-socketio's room manager, sending an event to a room's members one after
    another, in the emitting task.

    The library makes a task per recipient and waits for them all, which costs the
    emitting handler (and so its ack) two more turns of the event loop. Sending only
    queues the packet on the recipient's socket, so doing it in turn is the same work,
    done sooner. Emits with a callback (chatd makes none) take the library's path.
    """

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: str | None = None,
        skip_sid: str | list[str] | None = None,
        callback: Any = None,
        to: str | None = None,
        **kwargs: Any,
    ) -> None:
        if callback is not None:
            await super().emit(event, data, namespace, room=room, skip_sid=skip_sid,
                               callback=callback, to=to, **kwargs)
            return
        room = to or room
        if namespace not in self.rooms:
            return
        skip = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        recipients = [
            eio_sid for sid, eio_sid in self.get_participants(namespace, room) if sid not in skip
        ]
        if not recipients:
            return
        args = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        encoded = self.server.packet_class(
            socketio.packet.EVENT, namespace=namespace, data=[event, *args]
        ).encode()
        packets = [
            engineio.packet.Packet(engineio.packet.MESSAGE, p)
            for p in (encoded if isinstance(encoded, list) else [encoded])
        ]
        for eio_sid in recipients:
            for pkt in packets:
                try:
                    await self.server._send_eio_packet(eio_sid, pkt)
                except engineio.exceptions.SocketIsClosedError:
                    pass  # it left meanwhile; the others still get the event
                except Exception:
                    log.exception("sending %s to a member of %s failed", event, room)


class EngineSocket(engineio.async_socket.AsyncSocket):  # type: ignore[misc]
    """One Engine.IO session, counting what it holds for its client and refusing what
    chatd never accepts.

    ``queued`` is the size of the encoded packets waiting for the client behind the one
    being written. The WebSocket writer takes one packet at a time and waits until the
    transport has taken it, so a client that does not read stalls it and every later
    packet stays in the queue, counted. A packet into an empty queue is always accepted:
    an answer larger than the bound (a long history) still reaches a client that reads.
    Sizes are characters of the encoded frames (bytes, for ASCII text).
    """

    server: EngineServer
    connected: bool
    upgrading: bool
    upgraded: bool
    closing: bool
    closed: bool

    def __init__(self, server: EngineServer, sid: str, address: str) -> None:
        super().__init__(server, sid)
        self.address = address
        self.queued = 0
        self.refused: tuple[int, str] | None = None  # (WebSocket close code, reason)
        limits = server.limits
        self.packets = TokenBucket(server.clock, limits.flood_rate, limits.flood_burst)
        self.join_timer: asyncio.TimerHandle | None = None
        self.ws: web.WebSocketResponse | None = None
        self._transport: asyncio.Transport | None = None
        self._reader: asyncio.Task[Any] | None = None
        self._released = False

    # -- outgoing

    async def send(self, pkt: Any) -> None:
        if self.refused is not None:
            return  # on its way out: nothing more is kept for it
        size = len(pkt.encode())  # encoded once, and cached for the writer
        if self.queued and self.queued + size > self.server.limits.send_queue_max_bytes:
            self.refuse(WSCloseCode.POLICY_VIOLATION, "the client does not read", abort=True)
            return
        self.queued += size
        await super().send(pkt)

    async def poll(self) -> list[Any]:
        packets: list[Any] = await super().poll()
        for pkt in packets:
            self.queued -= len(pkt.encode())
        return packets

    def _put(self, pkt: Any) -> None:
        self.queued += len(pkt.encode())
        self.queue.put_nowait(pkt)

    def _drop_queue(self) -> None:
        stop = False
        while True:
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            self.queue.task_done()
            stop = stop or item is None
        if stop:
            self.queue.put_nowait(None)  # the WebSocket writer's signal to end
        self.queued = 0

    # -- refusing and closing

    def refuse(self, code: int, reason: str, *, abort: bool = False) -> None:
        """End the session for breaking a bound: drop what is queued for it, keep nothing
        more, and close its transport (a WebSocket with ``code`` and ``reason``; with
        ``abort``, at once, for a client that does not read and would never take a close
        frame). Safe from any task."""
        if self.refused is not None or self.closing or self.closed:
            return
        self.refused = (code, reason)
        self._drop_queue()
        log.debug("closing an Engine.IO session: %s", reason, extra={"address": self.address})
        if self.ws is not None:
            if abort:
                if self._transport is not None:
                    self._transport.abort()
            elif asyncio.current_task() is not self._reader:
                # The reader is waiting for a frame: the close frame wakes it. (In the
                # reader itself, its loop sees ``refused`` and closes on the way out.)
                self.server.spawn(self._close_websocket())
        else:
            # A long-poll waiting now gets the close; nothing else will read the queue.
            self._put(engineio.packet.Packet(engineio.packet.CLOSE))
            self.server.spawn(
                self.close(wait=False, abort=True, reason=self.server.reason.SERVER_DISCONNECT)
            )

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        self.release()
        if self.refused is not None:
            wait = False  # nobody will read what is left: do not wait for it
        await super().close(wait=wait, abort=abort, reason=reason)

    def release(self) -> None:
        """Give back the session's place in its address's count, once."""
        if self._released:
            return
        self._released = True
        if self.join_timer is not None:
            self.join_timer.cancel()
            self.join_timer = None
        self.server.release(self.address)

    async def _close_websocket(self) -> None:
        ws, transport = self.ws, self._transport
        if ws is None:
            return
        code, reason = self.refused or (WSCloseCode.OK, "")
        try:
            await asyncio.wait_for(
                ws.close(code=code, message=reason.encode(), drain=False), CLOSE_GRACE
            )
        except (TimeoutError, OSError):
            pass  # a client that does not take the close frame is dropped below
        if transport is not None:
            # aiohttp closes the transport after flushing it, which a client that does not
            # read never lets happen.
            asyncio.get_running_loop().call_later(CLOSE_GRACE, transport.abort)

    # -- incoming

    async def _receive_text(self, data: str) -> None:
        if not self.packets.take():
            self.refuse(WSCloseCode.POLICY_VIOLATION, "too many packets")
            return
        kind = data[:1]
        if kind == "4":
            await self.server._trigger_event(
                "message", self.sid, data[1:], run_async=self.server.async_handlers
            )
        elif kind == "3":
            self.schedule_ping()
        elif kind == "1":
            await self.close(wait=False, abort=True,
                             reason=self.server.reason.CLIENT_DISCONNECT)
        elif kind == "5":
            await self.send(engineio.packet.Packet(engineio.packet.NOOP))
        elif kind == "b":
            self.refuse(WSCloseCode.UNSUPPORTED_DATA, "binary packets are not accepted")
        else:
            self.refuse(WSCloseCode.PROTOCOL_ERROR, "not an Engine.IO packet")

    async def handle_post_request(self, environ: dict[str, Any]) -> None:
        """A long-polling POST: at most ``max_frame_bytes``, text packets only."""
        try:
            length = int(environ.get("CONTENT_LENGTH", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= self.server.max_http_buffer_size:
            self.refuse(WSCloseCode.MESSAGE_TOO_BIG, "the body is too large")
            raise engineio.exceptions.ContentTooLongError()
        try:
            text = (await environ["wsgi.input"].readexactly(length)).decode("utf-8")
        except (asyncio.IncompleteReadError, UnicodeDecodeError):
            self.refuse(WSCloseCode.PROTOCOL_ERROR, "the body is not a text payload")
            raise engineio.exceptions.EngineIOError() from None
        if text.startswith("d="):  # a JSONP form post
            text = next(iter(parse_qs(text).get("d", [])), "")
        parts = text.split("\x1e") if text else []
        if len(parts) > engineio.payload.Payload.max_decode_packets:
            self.refuse(WSCloseCode.PROTOCOL_ERROR, "too many packets in one payload")
        for part in parts:
            if self.refused is None:
                await self._receive_text(part)
        if self.refused is not None and self.sid in self.server.sockets:
            raise engineio.exceptions.EngineIOError()  # the library answers 400

    async def _upgrade_websocket(self, environ: dict[str, Any]) -> web.StreamResponse:
        if self.upgraded:
            raise OSError("Socket has been upgraded already")
        request = environ["aiohttp.request"]
        ws = web.WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, timeout=CLOSE_GRACE
        )
        try:
            await ws.prepare(request)
        except BaseException as exc:
            if not self.connected:  # a new session that never started
                await self.close(wait=False, abort=True,
                                 reason=self.server.reason.TRANSPORT_ERROR)
            if isinstance(exc, ConnectionError):
                # The client went away before its upgrade was answered: an everyday event
                # on the internet, not a server error (aiohttp would log it as one).
                return web.Response(status=400, text="the connection was lost\n")
            raise
        self.ws, self._transport, self._reader = ws, request.transport, asyncio.current_task()
        try:
            await self._serve_websocket(ws)
        finally:
            if not self.upgraded:  # a failed upgrade: the session stays on polling
                self.ws = self._transport = self._reader = None
        return ws

    async def _upgrade_probe(self, ws: web.WebSocketResponse, timeout: float) -> bool:
        msg = await ws.receive(timeout)
        if msg.type is not WSMsgType.TEXT or msg.data != "2probe":
            return False
        await ws.send_str("3probe")
        self._put(engineio.packet.Packet(engineio.packet.NOOP))  # ends the pending poll
        msg = await ws.receive(timeout)
        return msg.type is WSMsgType.TEXT and msg.data[:1] == "5"

    async def _serve_websocket(self, ws: web.WebSocketResponse) -> None:
        timeout = self.server.ping_interval + self.server.ping_timeout
        if self.connected:  # an upgrade from long-polling
            self.upgrading = True
            try:
                ok = await self._upgrade_probe(ws, timeout)
            except (TimeoutError, OSError, RuntimeError):
                ok = False
            self.upgrading = False
            if not ok:
                return
        else:
            self.connected = True
        self.upgraded = True
        writer = asyncio.ensure_future(self._write(ws))
        try:
            while self.refused is None:
                try:
                    msg = await ws.receive(timeout)
                except (TimeoutError, RuntimeError):
                    break
                if msg.type is WSMsgType.TEXT:
                    await self._receive_text(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    self.refuse(WSCloseCode.UNSUPPORTED_DATA, "binary frames are not accepted")
                else:
                    break  # closed, or an error (a frame over the size limit got 1009)
        except engineio.exceptions.SocketIsClosedError:
            pass
        except asyncio.CancelledError:
            # aiohttp cancels the handler when the connection is lost (an aborted client
            # included): the session must still end, outside this task.
            writer.cancel()
            self.server.spawn(
                self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)
            )
            raise
        await self._close_websocket()
        self.queue.put_nowait(None)
        await writer
        await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)

    async def _write(self, ws: web.WebSocketResponse) -> None:
        queue = self.queue
        while True:
            pkt = await queue.get()
            queue.task_done()
            if pkt is None:
                break
            data = pkt.encode()
            self.queued -= len(data)
            try:
                if isinstance(data, str):
                    await ws.send_str(data)
                else:
                    await ws.send_bytes(data)
            except (OSError, RuntimeError):
                break  # the connection is gone; the reader sees it too
        if not ws.closed:
            await self._close_websocket()


class EngineServer(engineio.AsyncServer):  # type: ignore[misc]
    """python-engineio's server with chatd's admission and deadlines: a handshake is
    refused (HTTP 429, before anything is kept) past the address's connection cap or
    handshake rate, and a session that has joined no namespace ``join_timeout_seconds``
    after its handshake is closed."""

    start_service_task: bool
    service_task_handle: Any

    def __init__(self, limits: TransportLimits, clock: Clock, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limits = limits
        self.clock = clock
        self.handshakes = KeyedLimiter(
            clock, limits.handshake_rate, limits.handshake_burst, max_keys=limits.limiter_max_keys
        )
        self.per_address: dict[str, int] = {}
        # Whether an Engine.IO session has joined a namespace (set by the Socket.IO server).
        self.joined: Callable[[str], bool] = lambda sid: False
        self._tasks: set[asyncio.Future[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def release(self, address: str) -> None:
        left = self.per_address.get(address, 0) - 1
        if left > 0:
            self.per_address[address] = left
        else:
            self.per_address.pop(address, None)

    def refuse(self, sid: str, code: int, reason: str) -> None:
        socket = self.sockets.get(sid)
        if socket is not None:
            socket.refuse(code, reason)

    def watch_join(self, sid: str) -> None:
        """(Re)start the join deadline of a session, from now."""
        socket = self.sockets.get(sid)
        if socket is None or socket.closing or socket.closed:
            return
        if socket.join_timer is not None:
            socket.join_timer.cancel()
        socket.join_timer = asyncio.get_running_loop().call_later(
            self.limits.join_timeout_seconds, self._join_deadline, sid
        )

    def _join_deadline(self, sid: str) -> None:
        socket = self.sockets.get(sid)
        if socket is None:
            return
        socket.join_timer = None
        if not self.joined(sid):
            socket.refuse(WSCloseCode.POLICY_VIOLATION, "no namespace joined in time")

    def _refusal(self, message: str, retry_after: float | None = None) -> dict[str, Any]:
        headers = [("Content-Type", "application/json")]
        if retry_after is not None:
            headers.append(("Retry-After", str(retry_after_seconds(retry_after))))
        body = {"ok": False, "error": {"code": "rate_limited", "message": message}}
        return {
            "status": "429 TOO MANY REQUESTS",
            "headers": headers,
            "response": msgspec.json.encode(body),
        }

    def _admit(self, address: str) -> dict[str, Any] | None:
        if self.per_address.get(address, 0) >= self.limits.connections_per_address:
            return self._refusal("too many open connections from this address")
        if not self.handshakes.take(address):
            return self._refusal(
                "too many connection attempts from this address; try again shortly",
                self.handshakes.retry_after(address),
            )
        return None

    async def _handle_connect(
        self, environ: dict[str, Any], transport: str, jsonp_index: int | None = None
    ) -> Any:
        """The library's handshake, with chatd's admission first and its socket class."""
        request = environ.get("aiohttp.request")
        address = address_key(request.remote if request is not None else None)
        refusal = self._admit(address)
        if refusal is not None:
            return refusal

        if self.start_service_task:
            self.start_service_task = False
            self.service_task_handle = self.start_background_task(self._service_task)

        sid = self.generate_id()
        s = EngineSocket(self, sid, address)
        self.sockets[sid] = s
        self.per_address[address] = self.per_address.get(address, 0) + 1
        self.watch_join(sid)

        await s.send(engineio.packet.Packet(engineio.packet.OPEN, {
            "sid": sid,
            "upgrades": self._upgrades(sid, transport),
            "pingTimeout": int(self.ping_timeout * 1000),
            "pingInterval": int(self.ping_interval + self.ping_interval_grace_period) * 1000,
            "maxPayload": self.max_http_buffer_size,
        }))
        ret = await self._trigger_event("connect", sid, environ, run_async=False)
        if ret is not None and ret is not True:
            s.release()
            del self.sockets[sid]
            return self._unauthorized(ret or None)

        s.schedule_ping()
        if transport == "websocket":
            ret = await s.handle_get_request(environ)
            if s.closed and sid in self.sockets:
                del self.sockets[sid]
            return ret
        s.connected = True
        try:
            return self._ok(await s.poll(), jsonp_index=jsonp_index)
        except engineio.exceptions.QueueEmpty:
            return self._bad_request()


class Server(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server on :class:`EngineServer`, refusing what chatd never takes
    before anything is buffered or dispatched.

    Binary packets (BINARY_EVENT, BINARY_ACK) close the connection as soon as their header
    arrives: the library would keep every attachment frame until the announced count is
    reached, however large. So do frames that are not Socket.IO packets. The library also
    hands ``data[0]`` to the handlers as the event name without checking it, and treats a
    client event named ``connect`` or ``disconnect`` like the real thing; those get an
    error answer instead.
    """

    def __init__(self, *, transport: TransportLimits, clock: Clock, **kwargs: Any) -> None:
        self.transport_limits = transport
        self.clock = clock
        super().__init__(max_http_buffer_size=transport.max_frame_bytes, **kwargs)
        self.eio.joined = self._joined

    def _engineio_server_class(self) -> Callable[..., EngineServer]:
        return functools.partial(EngineServer, self.transport_limits, self.clock)

    def _joined(self, eio_sid: str) -> bool:
        for namespace in self.manager.get_namespaces():
            sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
            if sid is not None and self.manager.is_connected(sid, namespace):
                return True
        return False

    def _watch_join(self, eio_sid: str) -> None:
        if not self._joined(eio_sid):
            self.eio.watch_join(eio_sid)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        if eio_sid not in self.environ:
            # The Engine.IO session closed (e.g. a close packet earlier in the same frame
            # batch): what still arrives for it belongs to nobody.
            return
        if not isinstance(data, str):
            self.eio.refuse(eio_sid, WSCloseCode.UNSUPPORTED_DATA, "binary frames are not accepted")
            return
        kind = data[:1]
        if kind == "5" or kind == "6":
            self.eio.refuse(
                eio_sid, WSCloseCode.UNSUPPORTED_DATA, "binary packets are not accepted"
            )
            return
        try:
            pkt = self.packet_class(encoded_packet=data)
        except ValueError:
            self.eio.refuse(eio_sid, WSCloseCode.PROTOCOL_ERROR, "not a Socket.IO packet")
            return
        if pkt.packet_type == socketio.packet.EVENT:
            await self._handle_event(eio_sid, pkt.namespace, pkt.id, pkt.data)
        elif pkt.packet_type == socketio.packet.ACK:
            await self._handle_ack(eio_sid, pkt.namespace, pkt.id, pkt.data)
        elif pkt.packet_type == socketio.packet.CONNECT:
            await self._handle_connect(eio_sid, pkt.namespace, pkt.data)
        elif pkt.packet_type == socketio.packet.DISCONNECT:
            await self._handle_disconnect(eio_sid, pkt.namespace, self.reason.CLIENT_DISCONNECT)
            self._watch_join(eio_sid)
        else:  # CONNECT_ERROR, which only a server sends, or no packet type at all
            self.eio.refuse(eio_sid, WSCloseCode.PROTOCOL_ERROR, "not a Socket.IO packet")

    async def disconnect(
        self, sid: str, namespace: str | None = None, ignore_queue: bool = False
    ) -> None:
        eio_sid = self.manager.eio_sid_from_sid(sid, namespace or "/")
        await super().disconnect(sid, namespace=namespace, ignore_queue=ignore_queue)
        if eio_sid is not None:
            self._watch_join(eio_sid)

    async def _handle_event(
        self, eio_sid: str, namespace: str | None, id: int | None, data: Any
    ) -> None:
        if (
            isinstance(data, list)
            and data
            and isinstance(data[0], str)
            and data[0] not in RESERVED_EVENTS
        ):
            await super()._handle_event(eio_sid, namespace, id, data)
            return
        namespace = namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if id is None or sid is None or not self.manager.is_connected(sid, namespace):
            return
        error = {
            "ok": False,
            "error": {
                "code": "bad_request",
                "message": "an event needs a name (a string) that is not reserved",
            },
        }
        await self._send_packet(
            eio_sid, self.packet_class(socketio.packet.ACK, namespace=namespace, id=id,
                                       data=[error])
        )
