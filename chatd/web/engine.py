"""The Engine.IO layer under chatd's Socket.IO server: one session, and the server that
admits them.

:class:`EngineSocket` is one Engine.IO session: it counts what is queued for its client
and closes a client that does not read, takes text packets only (WebSocket frames or
long-polling bodies) at a bounded rate, and ends with a close code that says why.
:class:`EngineServer` refuses a handshake past its address's connection cap or handshake
rate (HTTP 429, before anything is kept) and closes a session that joins no namespace in
time. The numbers are chatd.web.bounds' :class:`TransportLimits`; the counts per address
are kept by chatd.limits (in this process, or in Redis for all processes together); how
each refusal looks on the wire is in docs/protocol.md#1-transport.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qs

import engineio
import msgspec
from aiohttp import WSCloseCode, WSMsgType, web

from ..core.clock import Clock
from ..core.ratelimit import Penalties, TokenBucket, retry_after_seconds
from ..limits import LocalLimits, RateLimit, SharedLimits, SlotLimit
from .bounds import TransportLimits
from .http import address_key

log = logging.getLogger(__name__)

# How long a refused WebSocket is given to take its close frame before it is dropped.
CLOSE_GRACE = 2.0
# A frame is written at once, in the sending task, only while less than this waits in the
# connection's write buffer (so that the send never waits for a slow reader).
DIRECT_WRITE_MAX = 16 * 1024


def ws_frame(pkt: Any) -> bytes:
    """``pkt`` as one whole WebSocket frame from a server (unmasked, uncompressed: RFC 6455
    section 5.2), built once and kept on the packet: a broadcast to thousands (the queue
    board) encodes its frame once, not once per recipient."""
    frame: bytes | None = getattr(pkt, "ws_frame", None)
    if frame is None:
        data = pkt.encode()
        if isinstance(data, str):
            payload, opcode = data.encode("utf-8"), 0x1
        else:
            payload, opcode = bytes(data), 0x2
        n = len(payload)
        if n < 126:
            head = bytes((0x80 | opcode, n))
        elif n < 1 << 16:
            head = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
        else:
            head = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
        frame = head + payload
        pkt.ws_frame = frame
    return frame


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
        if self._direct():
            # Nothing of this session waits to be written, and its connection takes more
            # at once: write the frame now, in the sending task, instead of waking the
            # session's writer task for it. A broadcast to thousands (the queue board) then
            # costs a frame each, not a task switch each; the order is kept, since the
            # writer has written everything queued before.
            # The frame's bytes are the same for every recipient (a server's frames are
            # not masked, chatd's not compressed): built once per packet, written as is.
            assert self._transport is not None
            self._transport.write(ws_frame(pkt))
            return
        if self.queued and self.queued + size > self.server.limits.send_queue_max_bytes:
            self.refuse(WSCloseCode.POLICY_VIOLATION, "the client does not read", abort=True)
            return
        self.queued += size
        await super().send(pkt)

    def _direct(self) -> bool:
        """Whether a packet can be written now, bypassing the queue (see send)."""
        ws, transport = self.ws, self._transport
        return (
            self.upgraded and not self.upgrading and not self.closed
            and ws is not None and transport is not None and not ws.closed
            and not ws.compress and not transport.is_closing()
            and self.queue.empty()
            and transport.get_write_buffer_size() < DIRECT_WRITE_MAX
            and not (self.last_ping
                     and time.time() - self.last_ping > self.server.ping_timeout)
        )

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

    def refuse(
        self, code: int, reason: str, *, abort: bool = False, penalise: bool = True
    ) -> None:
        """End the session for breaking a bound: drop what is queued for it, keep nothing
        more, and close its transport (a WebSocket with ``code`` and ``reason``; with
        ``abort``, at once, for a client that does not read and would never take a close
        frame). With ``penalise``, its address may not open another session for
        ``abuse_penalty_seconds``: a client that breaks a bound on purpose would otherwise
        come straight back and cost a handshake, a join and a refusal again. Safe from any
        task."""
        if self.refused is not None or self.closing or self.closed:
            return
        self.refused = (code, reason)
        if penalise:
            self.server.penalties.bar(self.address)
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
        # No permessage-deflate: chatd's frames are small JSON, and the compressor and
        # decompressor a browser asks for made each waiting browser cost the server about
        # 138 KiB of RSS instead of 38; frames are also written whole, at once (send).
        ws = web.WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, timeout=CLOSE_GRACE, compress=False
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
                    # closed, or an error (a frame over the size limit got 1009)
                    if msg.type is WSMsgType.ERROR and getattr(
                        msg.data, "code", None
                    ) == WSCloseCode.MESSAGE_TOO_BIG:
                        self.server.penalties.bar(self.address)
                    break
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
    after its handshake is closed.

    The open connections and the handshake rate per address are counted in this process
    until :meth:`use_limits` hands them to limits shared by every process (Redis).
    """

    start_service_task: bool
    service_task_handle: Any

    def __init__(self, limits: TransportLimits, clock: Clock, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limits = limits
        self.clock = clock
        self.handshakes: RateLimit
        self.connections: SlotLimit
        self.use_limits(LocalLimits(clock))
        # Addresses barred for a while after a session of theirs broke a bound (in this
        # process: the process that saw it).
        self.penalties = Penalties(clock, limits.abuse_penalty_seconds, limits.limiter_max_keys)
        # Whether an Engine.IO session has joined a namespace (set by the Socket.IO server).
        self.joined: Callable[[str], bool] = lambda sid: False
        self._tasks: set[asyncio.Future[Any]] = set()

    def use_limits(self, shared: SharedLimits) -> None:
        """Count handshakes and open connections per address in ``shared``; before the
        first handshake."""
        limits = self.limits
        self.handshakes = shared.rate(
            "handshake", limits.handshake_rate, limits.handshake_burst,
            max_keys=limits.limiter_max_keys,
        )
        self.connections = shared.slots("connection")

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def release(self, address: str) -> None:
        self.connections.release(address)

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
            # not penalised: a browser on a stalling network gets here too
            socket.refuse(WSCloseCode.POLICY_VIOLATION, "no namespace joined in time",
                          penalise=False)

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

    async def _admit(self, address: str) -> dict[str, Any] | None:
        """None, with a place in the address's count taken for the new session; or the
        refusal, with nothing taken."""
        barred = self.penalties.remaining(address)
        if barred > 0:
            return self._refusal(
                "a connection from this address broke a limit; connect again later", barred
            )
        if not await self.connections.acquire(address, self.limits.connections_per_address):
            return self._refusal("too many open connections from this address")
        try:
            if not await self.handshakes.take(address):
                self.connections.release(address)
                return self._refusal(
                    "too many connection attempts from this address; try again shortly",
                    await self.handshakes.retry_after(address),
                )
        except BaseException:
            self.connections.release(address)  # e.g. the client went away meanwhile
            raise
        return None

    async def _handle_connect(
        self, environ: dict[str, Any], transport: str, jsonp_index: int | None = None
    ) -> Any:
        """The library's handshake, with chatd's admission first and its socket class."""
        request = environ.get("aiohttp.request")
        address = address_key(request.remote if request is not None else None)
        refusal = await self._admit(address)
        if refusal is not None:
            return refusal

        if self.start_service_task:
            self.start_service_task = False
            self.service_task_handle = self.start_background_task(self._service_task)

        sid = self.generate_id()
        s = EngineSocket(self, sid, address)
        self.sockets[sid] = s  # it holds the place _admit took (EngineSocket.release)
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
