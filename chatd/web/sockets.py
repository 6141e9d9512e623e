"""Socket.IO namespaces ``/customer`` and ``/engineer`` (docs/protocol.md).

Each handler validates its payload against the event's schema, calls the desk, emits the
desk's effects and acknowledges with ``{"ok": true, ...}``; every error, expected or not,
becomes ``{"ok": false, "error": {"code", "message"}}`` here, in one place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import engineio
import msgspec
import socketio

from ..accounts import engineer_for_token
from ..core.clock import Clock
from ..core.desk import (
    CUSTOMER_NS,
    ENGINEER_NS,
    ENGINEERS_ROOM,
    Desk,
    Outbound,
    customer_room,
    engineer_room,
    hash_token,
)
from ..core.errors import DeskError, Forbidden, RateLimited, TooLarge, Unauthorized
from ..core.models import Customer, Engineer, EngineerStatus, Message
from ..core.ratelimit import KeyedLimiter, TokenBucket
from . import schemas as s
from .auth import cookie_token, customer_from_jwt, guest_customer

log = logging.getLogger(__name__)

Handler = Callable[[str, Any], Awaitable[dict[str, Any]]]


@dataclass
class Limits:
    widget_secret: str
    allow_guests: bool
    message_rate: float
    message_burst: int
    connect_rate: float
    connect_burst: int
    max_event_bytes: int


def _error(code: str, message: str, **details: Any) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if details:
        err["details"] = details
    return {"ok": False, "error": err}


def _messages(messages: list[Message]) -> list[dict[str, Any]]:
    return [m.to_wire() for m in messages]


class Emitter:
    """Sends the desk's effects through the Socket.IO server."""

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self.sio = sio

    async def emit(self, effects: list[Outbound], origin: str | None = None) -> None:
        for fx in effects:
            await self.sio.emit(
                fx.event,
                fx.payload,
                room=fx.room,
                namespace="/" + fx.namespace,
                skip_sid=origin if fx.skip_origin else None,
            )


RESERVED_EVENTS = frozenset({"connect", "disconnect", "connect_error"})


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
            raise ValueError(str(exc)) from None


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


class Server(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server, refusing malformed event packets before dispatch.

    The library hands ``data[0]`` to the handlers as the event name without checking it, and
    treats a client event named ``connect`` or ``disconnect`` like the real thing; a hostile
    client must not reach either path.
    """

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
        error = _error("bad_request", "an event needs a name (a string) that is not reserved")
        await self._send_packet(
            eio_sid, self.packet_class(socketio.packet.ACK, namespace=namespace, id=id,
                                       data=[error])
        )


class BaseNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """Dispatches ``a:b`` event names through a table, with validation and error mapping."""

    def __init__(
        self, namespace: str, desk: Desk, clock: Clock, limits: Limits, emitter: Emitter
    ) -> None:
        super().__init__(namespace)
        self.desk = desk
        self.clock = clock
        self.limits = limits
        self.emitter = emitter
        self.connect_limiter = KeyedLimiter(clock, limits.connect_rate, limits.connect_burst)
        self.handlers: dict[str, tuple[type[Any], Handler]] = {}

    async def trigger_event(self, event: str, *args: Any) -> Any:
        if event == "connect":
            sid, environ, auth = args[0], args[1], args[2] if len(args) > 2 else None
            try:
                return await self.on_connect(sid, environ, auth)
            except socketio.exceptions.ConnectionRefusedError:
                raise
            except Exception:
                log.exception("connect failed")
                raise _refuse("internal", "internal error; try again") from None
        if event == "disconnect":
            await self.on_disconnect(args[0])
            return None
        sid = args[0]
        data = args[1] if len(args) > 1 else None
        return await self.dispatch(sid, event, data)

    async def dispatch(self, sid: str, event: Any, data: Any) -> dict[str, Any]:
        entry = self.handlers.get(event) if isinstance(event, str) else None
        if entry is None:
            return _error("bad_request", f"unknown event {str(event)[:64]!r}")
        schema, handler = entry
        try:
            if len(msgspec.json.encode(data)) > self.limits.max_event_bytes:
                raise TooLarge(f"the event is larger than {self.limits.max_event_bytes} bytes")
            payload = s.convert(data, schema)
            return {"ok": True, **await handler(sid, payload)}
        except msgspec.ValidationError as exc:
            return _error("bad_request", str(exc))
        except (TypeError, msgspec.EncodeError) as exc:
            return _error("bad_request", f"payload is not valid JSON data: {exc}")
        except DeskError as exc:
            return _error(exc.code, exc.message, **exc.details)
        except Exception:
            log.exception("event %s failed", event)
            return _error("internal", "internal error; the request may be retried")

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any) -> bool:
        raise NotImplementedError

    async def on_disconnect(self, sid: str) -> None:
        raise NotImplementedError

    def _check_connect_rate(self, environ: dict[str, Any]) -> None:
        request = environ.get("aiohttp.request")
        addr = (request.remote if request is not None else None) or "unknown"
        if not self.connect_limiter.take(addr):
            raise _refuse("rate_limited", "too many connections; try again shortly")


def _refuse(code: str, message: str) -> socketio.exceptions.ConnectionRefusedError:
    # Socket.IO clients see ``err.message`` and ``err.data`` ({code, message}).
    return socketio.exceptions.ConnectionRefusedError(message, {"code": code, "message": message})


@dataclass
class CustomerConn:
    customer: Customer | None
    bucket: TokenBucket
    sessions: dict[str, Customer] = field(default_factory=dict)  # attached session -> owner

    def actor(self, session_id: str) -> Customer:
        owner = self.sessions.get(session_id) or self.customer
        if owner is None:
            raise Unauthorized("this connection has no customer identity; resume a session")
        return owner


class CustomerNamespace(BaseNamespace):
    def __init__(self, desk: Desk, clock: Clock, limits: Limits, emitter: Emitter) -> None:
        super().__init__("/" + CUSTOMER_NS, desk, clock, limits, emitter)
        self.conns: dict[str, CustomerConn] = {}
        # What a widget hears as it connects (the status banner); set by create_app.
        self.greeting: Callable[[], dict[str, Any] | None] = lambda: None
        self.handlers = {
            "chat:request": (s.ChatRequest, self.chat_request),
            "session:resume": (s.CustomerResume, self.session_resume),
            "message:send": (s.MessageSend, self.message_send),
            "typing": (s.Typing, self.typing),
            "message:read": (s.MessageRead, self.message_read),
            "escalation:request": (s.EscalationRequest, self.escalation),
            "session:end": (s.CustomerEnd, self.session_end),
        }

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any) -> bool:
        self._check_connect_rate(environ)
        try:
            creds = s.convert(auth, s.CustomerAuth)
        except msgspec.ValidationError as exc:
            raise _refuse("bad_request", f"invalid auth: {exc}") from None
        customer: Customer | None = None
        try:
            if creds.token:
                customer = customer_from_jwt(creds.token, self.limits.widget_secret)
            elif creds.guest is not None:
                if not self.limits.allow_guests:
                    raise Unauthorized("guests are not allowed; a signed customer token is needed")
                customer = guest_customer(creds.guest.name, creds.guest.email)
            resumed = None
            if creds.session_id and creds.resume_token:
                resumed = await self.desk.verify_resume_token(creds.session_id, creds.resume_token)
                if customer is not None and creds.token and customer.id != resumed.customer.id:
                    raise Unauthorized("the resume token belongs to another customer")
            elif customer is None:
                raise Unauthorized("send a customer token, guest details or a resume token")
        except DeskError as exc:
            raise _refuse(exc.code, exc.message) from None
        conn = CustomerConn(
            customer=customer,
            bucket=TokenBucket(self.clock, self.limits.message_rate, self.limits.message_burst),
        )
        self.conns[sid] = conn
        if resumed is not None:
            await self._attach(sid, conn, resumed.id, resumed.customer)
        if (status := self.greeting()) is not None:
            await self.emit("status:update", status, to=sid)
        return True

    async def _attach(self, sid: str, conn: CustomerConn, session_id: str, owner: Customer) -> None:
        if session_id in conn.sessions:
            return
        conn.sessions[session_id] = owner
        if conn.customer is None:
            conn.customer = owner
        await self.enter_room(sid, customer_room(session_id))
        self.desk.customer_connected(session_id)

    async def on_disconnect(self, sid: str) -> None:
        conn = self.conns.pop(sid, None)
        if conn is None:
            return
        for session_id in conn.sessions:
            self.desk.customer_disconnected(session_id)

    def _conn(self, sid: str) -> CustomerConn:
        conn = self.conns.get(sid)
        if conn is None:
            raise Unauthorized("not connected")
        return conn

    def _limit(self, conn: CustomerConn) -> None:
        if not conn.bucket.take():
            raise RateLimited("too many messages; slow down")

    async def chat_request(self, sid: str, p: s.ChatRequest) -> dict[str, Any]:
        conn = self._conn(sid)
        self._limit(conn)
        if conn.customer is None:
            raise Unauthorized("this connection has no customer identity")
        session, token, fx = await self.desk.request_chat(
            conn.customer, p.topic, p.severity, p.message, p.client_msg_id, p.request_id
        )
        await self._attach(sid, conn, session["id"], conn.customer)
        await self.emitter.emit(fx, sid)
        return {
            "session": session,
            "resume_token": token,
            "engineers_online": self.desk.engineers_online(),
        }

    async def session_resume(self, sid: str, p: s.CustomerResume) -> dict[str, Any]:
        conn = self._conn(sid)
        session = await self.desk.verify_resume_token(p.session_id, p.resume_token)
        if session.is_open:
            await self._attach(sid, conn, session.id, session.customer)
        wire, messages, more = await self.desk.history(session.customer, p.session_id, p.after_seq)
        return {"session": wire, "messages": _messages(messages), "more": more}

    async def message_send(self, sid: str, p: s.MessageSend) -> dict[str, Any]:
        conn = self._conn(sid)
        self._limit(conn)
        msg, created, fx = await self.desk.send_message(
            conn.actor(p.session_id), p.session_id, p.client_msg_id, p.body
        )
        await self.emitter.emit(fx, sid)
        return {"message": msg.to_wire(), "duplicate": not created}

    async def typing(self, sid: str, p: s.Typing) -> dict[str, Any]:
        conn = self._conn(sid)
        await self.emitter.emit(self.desk.typing(conn.actor(p.session_id), p.session_id, p.typing))
        return {}

    async def message_read(self, sid: str, p: s.MessageRead) -> dict[str, Any]:
        conn = self._conn(sid)
        await self.emitter.emit(self.desk.mark_read(conn.actor(p.session_id), p.session_id, p.seq))
        return {}

    async def escalation(self, sid: str, p: s.EscalationRequest) -> dict[str, Any]:
        conn = self._conn(sid)
        self._limit(conn)
        msg, fx = await self.desk.escalate(
            conn.actor(p.session_id), p.session_id, p.kind, p.phone, p.note
        )
        await self.emitter.emit(fx, sid)
        return {"message": msg.to_wire()}

    async def session_end(self, sid: str, p: s.CustomerEnd) -> dict[str, Any]:
        conn = self._conn(sid)
        session, fx = await self.desk.end(conn.actor(p.session_id), p.session_id)
        await self.emitter.emit(fx, sid)
        return {"session": session}


@dataclass
class EngineerConn:
    engineer: Engineer
    token_hash: str
    bucket: TokenBucket
    watch: bool = False  # listens to the desk-wide events; not on the desk, sends nothing


class EngineerNamespace(BaseNamespace):
    def __init__(self, desk: Desk, clock: Clock, limits: Limits, emitter: Emitter) -> None:
        super().__init__("/" + ENGINEER_NS, desk, clock, limits, emitter)
        self.conns: dict[str, EngineerConn] = {}
        self.handlers = {
            "engineer:status": (s.EngineerStatusChange, self.status),
            "queue:snapshot": (s.Empty, self.snapshot),
            "offer:accept": (s.SessionRef, self.accept),
            "offer:decline": (s.SessionRef, self.decline),
            "session:resume": (s.EngineerResume, self.session_resume),
            "message:send": (s.MessageSend, self.message_send),
            "typing": (s.Typing, self.typing),
            "message:read": (s.MessageRead, self.message_read),
            "session:transfer": (s.Transfer, self.transfer),
            "session:end": (s.EngineerEnd, self.session_end),
        }

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any) -> bool:
        self._check_connect_rate(environ)
        try:
            creds = s.convert(auth, s.EngineerAuth)
        except msgspec.ValidationError as exc:
            raise _refuse("bad_request", f"invalid auth: {exc}") from None
        token = creds.token or cookie_token(environ.get("HTTP_COOKIE"))
        engineer = await engineer_for_token(self.desk.store, self.clock, token or "")
        if engineer is None:
            raise _refuse("unauthorized", "log in first: the engineer token is missing or invalid")
        self.conns[sid] = EngineerConn(
            engineer=engineer,
            token_hash=hash_token(token or ""),
            bucket=TokenBucket(self.clock, self.limits.message_rate, self.limits.message_burst),
            watch=creds.watch,
        )
        if creds.watch:
            # The monitor page: queue, alert and banner events, and no presence on the desk
            # (it is not an engineer online, available or away).
            await self.enter_room(sid, ENGINEERS_ROOM)
            return True
        await self.enter_room(sid, engineer_room(engineer.id))
        await self.enter_room(sid, ENGINEERS_ROOM)
        me = self.desk.engineer_connected(engineer)
        await self.emit("engineer:status", {**me, "reason": "connected"}, to=sid)
        return True

    async def on_disconnect(self, sid: str) -> None:
        conn = self.conns.pop(sid, None)
        if conn is None or conn.watch:
            return
        await self.emitter.emit(await self.desk.engineer_disconnected(conn.engineer.id))

    def _conn(self, sid: str) -> EngineerConn:
        conn = self.conns.get(sid)
        if conn is None:
            raise Unauthorized("not connected")
        if conn.watch:
            raise Forbidden("this connection only watches (auth.watch); connect without it")
        return conn

    async def disconnect_tokens(self, token_hashes: set[str]) -> int:
        """Close every connection authenticated by one of these (revoked) tokens."""
        doomed = [sid for sid, c in self.conns.items() if c.token_hash in token_hashes]
        for sid in doomed:
            await self.disconnect(sid)
        return len(doomed)

    async def status(self, sid: str, p: s.EngineerStatusChange) -> dict[str, Any]:
        conn = self._conn(sid)
        me, fx = await self.desk.set_status(conn.engineer, EngineerStatus(p.status), p.capacity)
        await self.emitter.emit(fx, sid)
        await self.emit(
            "engineer:status", {**me, "reason": "changed"},
            room=engineer_room(conn.engineer.id), skip_sid=sid,
        )
        return {"engineer": me}

    async def snapshot(self, sid: str, p: s.Empty) -> dict[str, Any]:
        return self.desk.snapshot(self._conn(sid).engineer)

    async def accept(self, sid: str, p: s.SessionRef) -> dict[str, Any]:
        conn = self._conn(sid)
        session, messages, fx = await self.desk.accept(conn.engineer, p.session_id)
        await self.emitter.emit(fx, sid)
        return {"session": session, "messages": _messages(messages)}

    async def decline(self, sid: str, p: s.SessionRef) -> dict[str, Any]:
        conn = self._conn(sid)
        await self.emitter.emit(await self.desk.decline(conn.engineer, p.session_id), sid)
        return {}

    async def session_resume(self, sid: str, p: s.EngineerResume) -> dict[str, Any]:
        conn = self._conn(sid)
        wire, messages, more = await self.desk.history(conn.engineer, p.session_id, p.after_seq)
        return {"session": wire, "messages": _messages(messages), "more": more}

    async def message_send(self, sid: str, p: s.MessageSend) -> dict[str, Any]:
        conn = self._conn(sid)
        if not conn.bucket.take():
            raise RateLimited("too many messages; slow down")
        msg, created, fx = await self.desk.send_message(
            conn.engineer, p.session_id, p.client_msg_id, p.body
        )
        await self.emitter.emit(fx, sid)
        return {"message": msg.to_wire(), "duplicate": not created}

    async def typing(self, sid: str, p: s.Typing) -> dict[str, Any]:
        conn = self._conn(sid)
        await self.emitter.emit(self.desk.typing(conn.engineer, p.session_id, p.typing))
        return {}

    async def message_read(self, sid: str, p: s.MessageRead) -> dict[str, Any]:
        conn = self._conn(sid)
        await self.emitter.emit(self.desk.mark_read(conn.engineer, p.session_id, p.seq))
        return {}

    async def transfer(self, sid: str, p: s.Transfer) -> dict[str, Any]:
        conn = self._conn(sid)
        fx = await self.desk.transfer(conn.engineer, p.session_id, p.to_engineer_id)
        await self.emitter.emit(fx, sid)
        return {}

    async def session_end(self, sid: str, p: s.EngineerEnd) -> dict[str, Any]:
        conn = self._conn(sid)
        session, fx = await self.desk.end(conn.engineer, p.session_id, p.resolution)
        await self.emitter.emit(fx, sid)
        return {"session": session}


class Sockets:
    """The Socket.IO server with both namespaces and the desk's background loops."""

    def __init__(
        self,
        desk: Desk,
        clock: Clock,
        limits: Limits,
        allowed_origins: list[str],
        *,
        tick_interval: float = 0.25,
        token_check_interval: float = 2.0,
    ) -> None:
        self.sio = Server(
            async_mode="aiohttp",
            cors_allowed_origins=allowed_origins,
            max_http_buffer_size=max(limits.max_event_bytes * 2, 1_000_000),
            serializer=Packet,
            json=_JSON,
            client_manager=Manager(),
            # Only our two namespaces: the default "/" would accept clients and answer nothing.
            namespaces=["/" + CUSTOMER_NS, "/" + ENGINEER_NS],
            logger=False,
            engineio_logger=False,
        )
        self.emitter = Emitter(self.sio)
        self.desk = desk
        self.clock = clock
        self.customers = CustomerNamespace(desk, clock, limits, self.emitter)
        self.engineers = EngineerNamespace(desk, clock, limits, self.emitter)
        self.sio.register_namespace(self.customers)
        self.sio.register_namespace(self.engineers)
        self.tick_interval = tick_interval
        self.token_check_interval = token_check_interval
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._tick_loop(), name="chatd-desk-ticker"),
            asyncio.create_task(self._token_loop(), name="chatd-token-sweeper"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []

    async def _tick_loop(self) -> None:
        while True:
            try:
                await self.emitter.emit(await self.desk.tick())
            except asyncio.CancelledError:
                raise
            except Exception:  # keep the desk's clock running whatever one tick hit
                log.exception("desk tick failed")
            await asyncio.sleep(self.tick_interval)

    async def _token_loop(self) -> None:
        """Logouts, expiries and disabled accounts close live sockets (also when done by the
        command line in another process)."""
        while True:
            await asyncio.sleep(self.token_check_interval)
            try:
                hashes = {c.token_hash for c in self.engineers.conns.values()}
                if hashes:
                    live = await self.desk.store.live_tokens(hashes, self.clock.now())
                    await self.engineers.disconnect_tokens(hashes - live)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("token check failed")
