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

import msgspec
import socketio
from aiohttp import WSCloseCode

from ..accounts import engineer_for_token
from ..core.clock import Clock
from ..core.desk import (
    CUSTOMER_NS,
    ENGINEER_NS,
    ENGINEERS_ROOM,
    Outbound,
    customer_room,
    engineer_room,
    hash_token,
)
from ..core.effects import QUEUE_ROOM, Membership
from ..core.errors import DeskError, Forbidden, TooLarge, Unauthorized
from ..core.models import Customer, Engineer, EngineerStatus, Message
from ..core.ports import AccountStore
from ..limits import LocalLimits, RateLimit, SharedLimits
from ..tasks import cancel_and_wait
from . import schemas as s
from .admission import Admission
from .admission import error_answer as _error
from .auth import cookie_token, customer_from_jwt, guest_customer, is_same_origin
from .link import DeskLink
from .transport import _JSON, Manager, Packet, Server, TransportLimits

log = logging.getLogger(__name__)

Handler = Callable[[str, Any], Awaitable[dict[str, Any]]]


@dataclass
class Limits:
    widget_secret: str
    allow_guests: bool
    connect_rate: float
    connect_burst: int
    max_event_bytes: int
    event_rate: float = 20.0  # every event, per connection
    event_burst: int = 60
    event_refusals_max: int = 10  # refused in a row, then the connection is closed
    public_url: str = ""  # where the console is served from; empty: the request's Host
    limiter_max_keys: int = 100_000
    # messages of history a second (session:resume answers), all connections together
    history_messages_rate_total: float = 2000.0


def _messages(messages: list[Message]) -> list[dict[str, Any]]:
    return [m.to_wire() for m in messages]


class Emitter:
    """Sends the desk's effects through the Socket.IO server."""

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self.sio = sio

    async def emit(self, effects: list[Outbound], origin: str | None = None) -> None:
        for fx in effects:
            if isinstance(fx, Membership):
                # A chat's customer connections join or leave a room (the board's), in
                # every process.
                await self.sio.manager.membership(
                    "/" + fx.namespace, fx.room, fx.payload["room"], fx.payload["join"]
                )
                continue
            await self.sio.emit(
                fx.event,
                fx.payload,
                room=fx.room,
                namespace="/" + fx.namespace,
                skip_sid=origin if fx.skip_origin else None,
            )


class BaseNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """Dispatches ``a:b`` event names through a table, with validation and error mapping."""

    def __init__(
        self, namespace: str, desk: DeskLink, clock: Clock, limits: Limits, emitter: Emitter
    ) -> None:
        super().__init__(namespace)
        self.desk = desk
        self.clock = clock
        self.limits = limits
        self.emitter = emitter
        self.connect_limiter: RateLimit
        self.use_limits(LocalLimits(clock))
        # Every event, per connection; the history budget is one for both namespaces
        # (Sockets gives them the same).
        self.admission = Admission(
            clock, event_rate=limits.event_rate, event_burst=limits.event_burst,
            refusals_max=limits.event_refusals_max,
            history_messages_rate=limits.history_messages_rate_total, close=self._close_flood,
        )
        self.handlers: dict[str, tuple[type[Any], Handler]] = {}
        self.conns: dict[str, Any] = {}

    async def trigger_event(self, event: str, *args: Any) -> Any:
        if event == "connect":
            sid, environ, auth = args[0], args[1], args[2] if len(args) > 2 else None
            self.admission.opened(sid)
            try:
                return await self.on_connect(sid, environ, auth)
            except socketio.exceptions.ConnectionRefusedError:
                self.admission.closed(sid)
                raise
            except DeskError as exc:  # e.g. unavailable: the desk is changing hands
                self.admission.closed(sid)
                self.conns.pop(sid, None)  # counted nowhere: the link undid its count
                raise _refuse(exc.code, exc.message) from None
            except Exception:
                self.admission.closed(sid)
                log.exception("connect failed")
                raise _refuse("internal", "internal error; try again") from None
        if event == "disconnect":
            self.admission.closed(args[0])
            await self.on_disconnect(args[0])
            return None
        sid = args[0]
        data = args[1] if len(args) > 1 else None
        return await self.dispatch(sid, event, data)

    async def dispatch(self, sid: str, event: Any, data: Any) -> dict[str, Any]:
        # First, before anything costs: an event past the connection's rate does nothing.
        refused = self.admission.refuse(sid, event)
        if refused is not None:
            return refused
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

    def _history_read(self, messages: list[Message]) -> list[dict[str, Any]]:
        """``messages``, read for a ``session:resume`` answer, on the wire; charged to the
        history budget (Admission.charge_history)."""
        self.admission.charge_history(messages)
        return _messages(messages)

    def _close_flood(self, sid: str) -> None:
        """Close the Engine.IO connection of ``sid`` (every namespace on it) for ignoring
        its event rate; its address is barred for a while (chatd.web.engine)."""
        eio_sid = self.server.manager.eio_sid_from_sid(sid, self.namespace)
        if eio_sid is not None:
            self.server.eio.refuse(
                eio_sid, WSCloseCode.POLICY_VIOLATION, "too many events refused"
            )

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any) -> bool:
        raise NotImplementedError

    async def on_disconnect(self, sid: str) -> None:
        raise NotImplementedError

    def use_limits(self, shared: SharedLimits) -> None:
        """Count connects per address in ``shared`` (in Redis, for every process
        together); before the first client. Messages per person are counted where the desk
        runs (chatd.web.link.METERED)."""
        name = self.namespace.strip("/")
        self.connect_limiter = shared.rate(
            f"connect:{name}", self.limits.connect_rate, self.limits.connect_burst
        )

    async def _check_connect_rate(self, environ: dict[str, Any]) -> None:
        request = environ.get("aiohttp.request")
        addr = (request.remote if request is not None else None) or "unknown"
        if not await self.connect_limiter.take(addr):
            raise _refuse("rate_limited", "too many connections; try again shortly")


def _refuse(code: str, message: str) -> socketio.exceptions.ConnectionRefusedError:
    # Socket.IO clients see ``err.message`` and ``err.data`` ({code, message}).
    return socketio.exceptions.ConnectionRefusedError(message, {"code": code, "message": message})


@dataclass
class CustomerConn:
    # Who connected (customer token or guest details); None for a connection that came with
    # a resume token alone. A resume token never becomes this identity: it authorises its
    # own chat only (``sessions``), not new chats or anyone else's.
    customer: Customer | None
    sessions: dict[str, Customer] = field(default_factory=dict)  # attached session -> owner

    def actor(self, session_id: str) -> Customer:
        owner = self.sessions.get(session_id) or self.customer
        if owner is None:
            raise Unauthorized(
                "this connection may only act on the chat of its resume token; resume that "
                "chat, or connect with a customer token or guest details"
            )
        return owner


class CustomerNamespace(BaseNamespace):
    def __init__(self, desk: DeskLink, clock: Clock, limits: Limits, emitter: Emitter) -> None:
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
            "queue:position": (s.SessionRef, self.queue_position),
        }

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any) -> bool:
        await self._check_connect_rate(environ)
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
        conn = CustomerConn(customer=customer)
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
        try:
            waiting = await self.desk.customer_connected(session_id)
        except DeskError:
            del conn.sessions[session_id]  # not counted: the link undid it
            raise
        if self.conns.get(sid) is not conn:
            # The client left while its request was in flight: the chat stays, and waits out
            # the grace period like any other chat whose customer went away.
            self.desk.customer_disconnected(session_id)
            return
        await self.enter_room(sid, customer_room(session_id))
        if waiting:
            await self.enter_room(sid, QUEUE_ROOM)

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

    async def chat_request(self, sid: str, p: s.ChatRequest) -> dict[str, Any]:
        conn = self._conn(sid)
        if conn.customer is None:
            raise Unauthorized("start a new chat with a customer token or guest details")
        session, token, fx = await self.desk.request_chat(
            conn.customer, p.topic, p.severity, p.message, p.client_msg_id, p.request_id
        )
        await self._attach(sid, conn, session["id"], conn.customer)
        await self.emitter.emit(fx, sid)
        return {
            "session": session,
            "resume_token": token,
            "engineers_online": await self.desk.engineers_online(),
        }

    async def session_resume(self, sid: str, p: s.CustomerResume) -> dict[str, Any]:
        conn = self._conn(sid)
        session = await self.desk.verify_resume_token(p.session_id, p.resume_token)
        if session.is_open:
            await self._attach(sid, conn, session.id, session.customer)
        wire, messages, more = await self.desk.history(session.customer, p.session_id, p.after_seq)
        return {"session": wire, "messages": self._history_read(messages), "more": more}

    async def message_send(self, sid: str, p: s.MessageSend) -> dict[str, Any]:
        actor = self._conn(sid).actor(p.session_id)
        msg, created, fx = await self.desk.send_message(
            actor, p.session_id, p.client_msg_id, p.body, origin=sid
        )
        await self.emitter.emit(fx, sid)
        return {"message": msg.to_wire(), "duplicate": not created}

    async def typing(self, sid: str, p: s.Typing) -> dict[str, Any]:
        conn = self._conn(sid)
        await self.emitter.emit(
            await self.desk.typing(conn.actor(p.session_id), p.session_id, p.typing, origin=sid)
        )
        return {}

    async def message_read(self, sid: str, p: s.MessageRead) -> dict[str, Any]:
        conn = self._conn(sid)
        fx = await self.desk.mark_read(conn.actor(p.session_id), p.session_id, p.seq, origin=sid)
        await self.emitter.emit(fx)
        return {}

    async def escalation(self, sid: str, p: s.EscalationRequest) -> dict[str, Any]:
        actor = self._conn(sid).actor(p.session_id)
        msg, fx = await self.desk.escalate(
            actor, p.session_id, p.kind, p.phone, p.note, origin=sid
        )
        await self.emitter.emit(fx, sid)
        return {"message": msg.to_wire()}

    async def session_end(self, sid: str, p: s.CustomerEnd) -> dict[str, Any]:
        conn = self._conn(sid)
        session, fx = await self.desk.end(conn.actor(p.session_id), p.session_id, origin=sid)
        await self.emitter.emit(fx, sid)
        return {"session": session}

    async def queue_position(self, sid: str, p: s.SessionRef) -> dict[str, Any]:
        return await self.desk.queue_position(self._conn(sid).actor(p.session_id), p.session_id)


@dataclass
class EngineerConn:
    engineer: Engineer
    token_hash: str
    watch: bool = False  # listens to the desk-wide events; not on the desk, sends nothing


class EngineerNamespace(BaseNamespace):
    def __init__(self, desk: DeskLink, clock: Clock, limits: Limits, emitter: Emitter,
                 accounts: AccountStore) -> None:
        super().__init__("/" + ENGINEER_NS, desk, clock, limits, emitter)
        self.accounts = accounts  # engineers' tokens, checked at connect
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
        await self._check_connect_rate(environ)
        try:
            creds = s.convert(auth, s.EngineerAuth)
        except msgspec.ValidationError as exc:
            raise _refuse("bad_request", f"invalid auth: {exc}") from None
        token = creds.token or (
            cookie_token(environ.get("HTTP_COOKIE")) if self._cookie_allowed(environ) else None
        )
        engineer = await engineer_for_token(self.accounts, self.clock, token or "")
        if engineer is None:
            raise _refuse("unauthorized", "log in first: the engineer token is missing or invalid")
        self.conns[sid] = EngineerConn(
            engineer=engineer,
            token_hash=hash_token(token or ""),
            watch=creds.watch,
        )
        if creds.watch:
            # The monitor page: queue, alert and banner events, and no presence on the desk
            # (it is not an engineer online, available or away).
            await self.enter_room(sid, ENGINEERS_ROOM)
            return True
        await self.enter_room(sid, engineer_room(engineer.id))
        await self.enter_room(sid, ENGINEERS_ROOM)
        me = await self.desk.engineer_connected(engineer)
        await self.emit("engineer:status", {**me, "reason": "connected"}, to=sid)
        return True

    def _cookie_allowed(self, environ: dict[str, Any]) -> bool:
        """Whether the login cookie may stand for the token: only on chatd's own pages (the
        console and monitor) or outside a browser (no ``Origin``). A page on a widget origin,
        even one the browser sends the cookie from (same site), must send the token itself."""
        headers = {
            name: value
            for name, key in (
                ("Origin", "HTTP_ORIGIN"), ("Host", "HTTP_HOST"),
                ("X-Forwarded-Proto", "HTTP_X_FORWARDED_PROTO"),
                ("Sec-Fetch-Site", "HTTP_SEC_FETCH_SITE"),
            )
            if (value := environ.get(key)) is not None
        }
        if "Origin" not in headers:
            # Browsers leave Origin out of same-origin GETs (a polling handshake); one that
            # says the request is cross-site is not trusted with the cookie all the same.
            return headers.get("Sec-Fetch-Site", "same-origin").strip().lower() in (
                "same-origin", "none"
            )
        request = environ.get("aiohttp.request")
        scheme = request.scheme if request is not None else "http"
        return is_same_origin(headers, self.limits.public_url, scheme)

    async def on_disconnect(self, sid: str) -> None:
        conn = self.conns.pop(sid, None)
        if conn is None or conn.watch:
            return
        await self.emitter.emit(await self.desk.engineer_disconnected(conn.engineer))

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
        me, fx = await self.desk.set_status(
            conn.engineer, EngineerStatus(p.status), p.capacity, origin=sid
        )
        await self.emitter.emit(fx, sid)
        await self.emit(
            "engineer:status", {**me, "reason": "changed"},
            room=engineer_room(conn.engineer.id), skip_sid=sid,
        )
        return {"engineer": me}

    async def snapshot(self, sid: str, p: s.Empty) -> dict[str, Any]:
        return await self.desk.snapshot(self._conn(sid).engineer)

    async def accept(self, sid: str, p: s.SessionRef) -> dict[str, Any]:
        conn = self._conn(sid)
        session, messages, fx = await self.desk.accept(conn.engineer, p.session_id, origin=sid)
        await self.emitter.emit(fx, sid)
        return {"session": session, "messages": _messages(messages)}

    async def decline(self, sid: str, p: s.SessionRef) -> dict[str, Any]:
        conn = self._conn(sid)
        await self.emitter.emit(
            await self.desk.decline(conn.engineer, p.session_id, origin=sid), sid
        )
        return {}

    async def session_resume(self, sid: str, p: s.EngineerResume) -> dict[str, Any]:
        conn = self._conn(sid)
        wire, messages, more = await self.desk.history(conn.engineer, p.session_id, p.after_seq)
        return {"session": wire, "messages": self._history_read(messages), "more": more}

    async def message_send(self, sid: str, p: s.MessageSend) -> dict[str, Any]:
        conn = self._conn(sid)
        msg, created, fx = await self.desk.send_message(
            conn.engineer, p.session_id, p.client_msg_id, p.body, origin=sid
        )
        await self.emitter.emit(fx, sid)
        return {"message": msg.to_wire(), "duplicate": not created}

    async def typing(self, sid: str, p: s.Typing) -> dict[str, Any]:
        conn = self._conn(sid)
        await self.emitter.emit(
            await self.desk.typing(conn.engineer, p.session_id, p.typing, origin=sid)
        )
        return {}

    async def message_read(self, sid: str, p: s.MessageRead) -> dict[str, Any]:
        conn = self._conn(sid)
        await self.emitter.emit(
            await self.desk.mark_read(conn.engineer, p.session_id, p.seq, origin=sid)
        )
        return {}

    async def transfer(self, sid: str, p: s.Transfer) -> dict[str, Any]:
        conn = self._conn(sid)
        fx = await self.desk.transfer(
            conn.engineer, p.session_id, p.to_engineer_id, origin=sid
        )
        await self.emitter.emit(fx, sid)
        return {}

    async def session_end(self, sid: str, p: s.EngineerEnd) -> dict[str, Any]:
        conn = self._conn(sid)
        session, fx = await self.desk.end(
            conn.engineer, p.session_id, p.resolution, origin=sid
        )
        await self.emitter.emit(fx, sid)
        return {"session": session}


class Sockets:
    """The Socket.IO server with both namespaces and the desk's background loops."""

    def __init__(
        self,
        desk: DeskLink,
        clock: Clock,
        limits: Limits,
        allowed_origins: list[str] | Callable[[str | None, dict[str, Any]], bool],
        *,
        accounts: AccountStore,
        tick_interval: float = 0.25,
        token_check_interval: float = 2.0,
        transport: TransportLimits | None = None,
        client_manager: Manager | None = None,
    ) -> None:
        self.sio = Server(
            async_mode="aiohttp",
            cors_allowed_origins=allowed_origins,
            # No credentialed CORS: the widget needs no cookie, and the console's cookie
            # must not ride along from a widget origin (docs/security.md).
            cors_credentials=False,
            transport=transport or TransportLimits(max_event_bytes=limits.max_event_bytes),
            clock=clock,
            serializer=Packet,
            json=_JSON,
            # Several processes: python-socketio's Redis manager (chatd.cluster.manager).
            client_manager=client_manager or Manager(),
            # Only our two namespaces: the default "/" would accept clients and answer nothing.
            namespaces=["/" + CUSTOMER_NS, "/" + ENGINEER_NS],
            logger=False,
            engineio_logger=False,
        )
        self.emitter = Emitter(self.sio)
        self.desk = desk
        self.clock = clock
        self.customers = CustomerNamespace(desk, clock, limits, self.emitter)
        self.engineers = EngineerNamespace(desk, clock, limits, self.emitter, accounts)
        self.accounts = accounts
        self.engineers.admission.history_budget = self.customers.admission.history_budget
        self.sio.register_namespace(self.customers)
        self.sio.register_namespace(self.engineers)
        self.tick_interval = tick_interval
        self.token_check_interval = token_check_interval
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Every process: close the connections of revoked engineer tokens."""
        self._tasks.append(asyncio.create_task(self._token_loop(), name="chatd-token-sweeper"))

    def lead(self) -> None:
        """The process that runs the desk: its clock (offers, grace periods, alerts)."""
        self._tasks.append(asyncio.create_task(self._tick_loop(), name="chatd-desk-ticker"))

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks = []

    def use_limits(self, shared: SharedLimits) -> None:
        """The namespaces' per-address and per-person limits in ``shared``."""
        self.customers.use_limits(shared)
        self.engineers.use_limits(shared)

    async def _tick_loop(self) -> None:
        while True:
            try:
                await self.emitter.emit(await self.desk.desk.tick())
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
                    live = await self.accounts.live_tokens(hashes, self.clock.now())
                    await self.engineers.disconnect_tokens(hashes - live)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("token check failed")
