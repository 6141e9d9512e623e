"""HTTP routes: login and logout, health, and the pages (docs/protocol.md#10-http)."""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import msgspec
from aiohttp import web
from aiohttp.typedefs import Middleware

from .. import accounts
from ..config import Settings
from ..core.clock import Clock
from ..core.desk import hash_token
from ..core.errors import BadRequest, DeskError, Forbidden, RateLimited, TooLarge, Unauthorized
from ..core.models import MAX_TEXT_LENGTH, Engineer, iso
from ..core.ratelimit import retry_after_seconds
from ..handoff.service import HANDOFF
from ..limits import Backoff, RateLimit, SharedLimits, limits_from_settings
from . import keys
from . import schemas as s
from .auth import (
    COOKIE_NAME,
    bearer,
    cookie_token,
    customer_from_jwt,
    guest_customer,
    is_same_origin,
)

log = logging.getLogger(__name__)

STATUS = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "session_closed": 409,
    "too_large": 413,
    "unsupported_type": 415,
    "insufficient_storage": 507,
    "rate_limited": 429,
    "unavailable": 503,
    "internal": 500,
}

STATIC_DIR = Path(__file__).resolve().parent.parent.parent / "static"


def error_response(code: str, message: str, **details: Any) -> web.Response:
    err: dict[str, Any] = {"code": code, "message": message}
    if details:
        err["details"] = details
    return web.json_response({"ok": False, "error": err}, status=STATUS.get(code, 500))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Domain errors and bad JSON become the protocol's error body; nothing leaks a trace."""
    try:
        return await handler(request)
    except DeskError as exc:
        details = dict(exc.details)
        retry_after = details.pop("retry_after", None)  # a header, not part of the body
        response = error_response(exc.code, exc.message, **details)
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after_seconds(float(retry_after)))
        return response
    except msgspec.ValidationError as exc:
        return error_response("bad_request", str(exc))
    except web.HTTPException as exc:
        if exc.status >= 400 and request.path.startswith("/api/"):
            code = {404: "not_found", 413: "too_large"}.get(exc.status, "bad_request")
            response = error_response(code, exc.reason)
            if exc.status == 405:  # a wrong method: say so, and which ones the path takes
                response.set_status(405, exc.reason)
                response.headers["Allow"] = exc.headers.get("Allow", "")
            return response
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response("internal", "internal error")


def client_address_middleware(trusted: tuple[str, ...]) -> Middleware:
    """Behind trusted reverse proxies, ``request.remote`` becomes the client's address
    from ``X-Forwarded-For``: the nearest address in it that is not a trusted proxy.
    Without ``trusted_proxies`` the peer address stays (a client cannot forge its own).
    Hops may carry a port (``203.0.113.9:51234``, ``[2001:db8::1]:443``); a hop that is
    not an address at all ends the walk at the last trusted one."""
    networks = [ipaddress.ip_network(n) for n in trusted]

    def is_trusted(ip: IPAddress) -> bool:
        return any(ip in net for net in networks)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = _ip(request.remote)
        forwarded = request.headers.getall("X-Forwarded-For", [])
        if not networks or not forwarded or peer is None or not is_trusted(peer):
            return await handler(request)
        hops = [h for value in forwarded for h in value.split(",")]
        client = peer
        for hop in reversed(hops):  # the nearest first: only trusted proxies append honestly
            ip = _ip(hop)
            if ip is None:
                break
            client = ip
            if not is_trusted(ip):
                break
        relayed = request.clone(remote=str(client))
        relayed[VIA_TRUSTED_PROXY] = True
        return await handler(relayed)

    return middleware


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Set on a request whose client address was taken from a trusted proxy's X-Forwarded-For.
VIA_TRUSTED_PROXY = web.RequestKey("via_trusted_proxy", bool)
FORWARDING_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


def is_loopback_caller(request: web.Request) -> bool:
    """Whether the client is on this host. A loopback peer that relays for someone else
    (it sends a forwarding header and is not a trusted proxy whose header was followed) is
    not: a reverse proxy on the same host must not make the whole internet local."""
    ip = _ip(request.remote)
    if ip is None or not ip.is_loopback:
        return False
    forwarded = any(h in request.headers for h in FORWARDING_HEADERS)
    return not forwarded or request.get(VIA_TRUSTED_PROXY, False)


def _ip(text: str | None) -> IPAddress | None:
    """An address from a peer or X-Forwarded-For hop, without port or brackets; an
    IPv4-mapped IPv6 address as IPv4. None if it is not an address."""
    if not text:
        return None
    h = text.strip()
    if h.startswith("["):  # [v6] or [v6]:port
        h = h[1:].split("]", 1)[0]
    elif h.count(":") == 1:  # v4:port
        h = h.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@web.middleware
async def headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.path.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Engine.IO's long-polling requests: the Socket.IO layer judges their origin itself.
SOCKETIO_PATH = "/socket.io/"
# The one cookie-authenticated endpoint whose body is not JSON (the console's uploads).
MULTIPART_PATH = re.compile(r"^/api/sessions/[^/]+/attachments$")


def is_json(content_type: str | None) -> bool:
    """``application/json``, with or without parameters (``; charset=utf-8``)."""
    return (content_type or "").split(";", 1)[0].strip().lower() == "application/json"


def cross_site_middleware(public_url: str) -> Middleware:
    """Refuses state-changing requests a page of another origin could make with the
    engineer's cookie (docs/security.md#cookies-origins-and-cross-site-requests).

    The cookie is ``SameSite=Strict``, but a site is wider than an origin: a page on
    another host of the same site still sends it. So a request that changes something
    and authenticates by the cookie (not by an ``Authorization`` header, which a page
    elsewhere cannot fill: the cookie holding the token is HttpOnly) must come from
    chatd's own origin, and carry a JSON body unless it is an upload; a login, which has
    no cookie yet, must carry JSON too, so that no plain form can post one.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in SAFE_METHODS or request.path.startswith(SOCKETIO_PATH):
            return await handler(request)
        # An empty body (logout) needs no type; some clients label even that one.
        has_body = request.body_exists
        by_cookie = (
            bearer(request.headers.get("Authorization")) is None
            and cookie_token(request.headers.get("Cookie")) is not None
        )
        if by_cookie:
            if not is_same_origin(request.headers, public_url, request.scheme):
                return error_response(
                    "forbidden",
                    "a request signed in by the chatd_token cookie must come from chatd's "
                    "own pages (same Origin); other clients send Authorization: Bearer",
                )
            if has_body and not MULTIPART_PATH.match(request.path) and not is_json(
                request.headers.get("Content-Type")
            ):
                return error_response(
                    "forbidden", "the body must be sent as Content-Type: application/json"
                )
        elif request.path == "/api/login" and not is_json(request.headers.get("Content-Type")):
            return error_response(
                "forbidden", "log in with a JSON body (Content-Type: application/json)"
            )
        return await handler(request)

    return middleware


def address_key(remote: str | None) -> str:
    """The key of a client address in per-address limits: an IPv6 address by its /64
    (one subscriber's usual allocation, so rotating through it buys nothing), an IPv4
    address as itself."""
    ip = _ip(remote)
    if ip is None:
        return remote or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


async def json_body(request: web.Request, schema: type[s.T]) -> s.T:
    if request.content_length is not None and request.content_length > 64 * 1024:
        raise TooLarge("the body is larger than 64 KiB")
    raw = await request.read()
    try:
        data = msgspec.json.decode(raw) if raw else {}
    except msgspec.DecodeError:
        raise BadRequest("the body is not valid JSON") from None
    return s.convert(data, schema)


def request_token(request: web.Request) -> str | None:
    return bearer(request.headers.get("Authorization")) or cookie_token(
        request.headers.get("Cookie")
    )


async def current_engineer(request: web.Request) -> tuple[Engineer, str]:
    token = request_token(request)
    engineer = await accounts.engineer_for_token(
        request.app[keys.STORE], request.app[keys.CLOCK], token or ""
    )
    if engineer is None or token is None:
        raise Unauthorized("log in first: the engineer token is missing or invalid")
    return engineer, token


def engineer_wire(engineer: Engineer) -> dict[str, Any]:
    return {
        "id": engineer.id,
        "email": engineer.email,
        "name": engineer.name,
        "role": engineer.role.value,
    }


LOGIN_BACKOFF: web.AppKey[Backoff] = web.AppKey("login_backoff")
LOGIN_RATE: web.AppKey[RateLimit] = web.AppKey("login_rate")
PASSWORDS = web.AppKey("passwords", accounts.PasswordHashing)
SHARED_LIMITS: web.AppKey[SharedLimits] = web.AppKey("shared_limits")


def setup_shared_limits(app: web.Application, settings: Settings, clock: Clock) -> SharedLimits:
    """The limits of ``app`` that hold across processes (chatd.limits): in Redis when
    ``CHATD_REDIS_URL`` is set, else in this process; started and closed with ``app``.
    Made once: later calls return the same. The Engine.IO server's per-address counts
    move into them here (docs/security.md#several-processes)."""
    shared = app.get(SHARED_LIMITS)
    if shared is not None:
        return shared
    shared = app[SHARED_LIMITS] = limits_from_settings(settings, clock)
    sockets = app.get(keys.SOCKETS)
    if sockets is not None:
        sockets.sio.eio.use_limits(shared)

    async def running(app: web.Application) -> AsyncIterator[None]:
        await shared.start()
        yield
        await shared.close()

    app.cleanup_ctx.append(running)
    return shared


def setup_logins(app: web.Application, settings: Settings, clock: Clock) -> None:
    """The login limits and the password threads, created and stopped with ``app``
    (docs/security.md#logins)."""
    shared = setup_shared_limits(app, settings, clock)
    app[LOGIN_RATE] = shared.rate("login", 0.5, 10, max_keys=settings.limiter_max_keys)
    app[LOGIN_BACKOFF] = shared.backoff(
        "login", settings.login_backoff_after, settings.login_backoff_max_seconds,
        max_keys=settings.limiter_max_keys,
    )
    passwords = accounts.PasswordHashing(settings.password_hash_workers)
    app[PASSWORDS] = passwords

    async def close(app: web.Application) -> None:
        passwords.close()

    app.on_cleanup.append(close)


async def login(request: web.Request) -> web.Response:
    limiter = request.app[LOGIN_RATE]
    address = address_key(request.remote)
    if not await limiter.take(address):
        raise RateLimited("too many login attempts; wait a minute",
                          retry_after=await limiter.retry_after(address))
    body = await json_body(request, s.Login)
    settings = request.app[keys.SETTINGS]
    backoff = request.app[LOGIN_BACKOFF]
    account = accounts.account_key(body.email)
    wait = await backoff.wait(account)
    if wait > 0:
        # Refused before the password is looked at: during a back-off even the right one
        # cannot tell a guesser anything.
        raise RateLimited("too many failed logins for this account; wait before trying again",
                          retry_after=wait)
    try:
        token, engineer, expires_at = await accounts.login(
            request.app[keys.STORE], request.app[keys.CLOCK], body.email, body.password,
            settings.token_ttl_seconds, request.app[PASSWORDS],
        )
    except Unauthorized:
        delay = await backoff.failed(account)
        if delay > 0:
            log.warning("repeated failed logins: the account backs off for %.0f s", delay,
                        extra={"account": account if account.isprintable() else repr(account),
                               "client": request.remote})
        raise
    await backoff.succeeded(account)
    log.info("engineer logged in", extra={"engineer_id": engineer.id})
    response = web.json_response(
        {"ok": True, "token": token, "engineer": engineer_wire(engineer),
         "expires_at": iso(expires_at)}
    )
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=int(settings.token_ttl_seconds),
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        path="/",
    )
    return response


async def logout(request: web.Request) -> web.Response:
    engineer, token = await current_engineer(request)
    await request.app[keys.STORE].revoke_token(hash_token(token))
    await request.app[keys.SOCKETS].engineers.disconnect_tokens({hash_token(token)})
    log.info("engineer logged out", extra={"engineer_id": engineer.id})
    response = web.json_response({"ok": True})
    response.del_cookie(COOKIE_NAME, path="/")
    return response


async def me(request: web.Request) -> web.Response:
    engineer, _ = await current_engineer(request)
    return web.json_response({"ok": True, "engineer": engineer_wire(engineer)})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    role = request.app.get(keys.ROLE)
    if role is not None and not role.serving:  # another process runs the desk
        return web.json_response({"status": "standby"}, status=503)
    if await request.app[keys.STORE].ready():
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "not ready"}, status=503)


async def index(request: web.Request) -> web.StreamResponse:
    page = STATIC_DIR / "index.html"
    if page.is_file():
        return web.FileResponse(page)
    return web.Response(text="chatd is running\n", content_type="text/plain")


# ---------------------------------------------------------------------- transcripts, tickets
# (docs/handoff.md#transcripts, docs/handoff.md#tickets-without-a-chat)

TRANSCRIPT_TYPES = {"json": "application/json", "text": "text/plain", "html": "text/html"}
TRANSCRIPT_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox allow-popups"


class TicketRequest(msgspec.Struct):
    topic: s.Topic
    description: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT_LENGTH)]
    severity: s.Severity = 3
    attachments: list[Annotated[str, msgspec.Meta(max_length=64)]] = msgspec.field(
        default_factory=list
    )
    guest: s.Guest | None = None
    # A chat of the same customer (typically the one they are queued in) whose files go
    # with the ticket: its resume token proves the chat, not who the customer is.
    session_id: s.SessionId | None = None
    resume_token: s.Token | None = None


async def transcript(request: web.Request) -> web.Response:
    """GET /api/sessions/{id}/transcript?format=json|text|html for the session's engineers,
    leads, and its customer by Bearer resume token."""
    session_id = request.match_info["id"]
    fmt = request.query.get("format", "json")
    if fmt not in TRANSCRIPT_TYPES:
        raise BadRequest("format must be json, text or html")
    desk = request.app[keys.DESK]
    token = request_token(request)
    engineer = await accounts.engineer_for_token(
        request.app[keys.STORE], request.app[keys.CLOCK], token or ""
    )
    past_engineer = False
    if engineer is not None:
        try:
            await desk.find_session(engineer, session_id)
        except Forbidden:
            past_engineer = True  # allowed below if they had the chat before a transfer
    else:
        resume = bearer(request.headers.get("Authorization"))
        if not resume:
            raise Unauthorized("send an engineer token or the session's resume token")
        await desk.verify_resume_token(session_id, resume)
    t = await request.app[HANDOFF].transcript(session_id)
    if past_engineer and engineer is not None and engineer.id not in {
        a.engineer_id for a in t.assignments
    }:
        raise Forbidden("this session is not assigned to you")
    if fmt == "json":
        body = t.to_json_bytes()
    elif fmt == "text":
        body = t.to_text().encode("utf-8")
    else:
        body = t.to_html().encode("utf-8")
    response = web.Response(body=body, content_type=TRANSCRIPT_TYPES[fmt], charset="utf-8")
    if fmt == "html":
        response.headers["Content-Security-Policy"] = TRANSCRIPT_CSP
    if request.query.get("download") in ("1", "true"):
        ext = {"json": "json", "text": "txt", "html": "html"}[fmt]
        response.headers["Content-Disposition"] = (
            f'attachment; filename="chat-{session_id}.{ext}"'
        )
    return response


async def create_ticket(request: web.Request) -> web.Response:
    """POST /api/tickets: a ticket left without a chat (e.g. no engineer online). The
    customer is the Bearer widget JWT's, or a guest's when guests are allowed. A chat's
    session_id + resume_token only let that chat's files go with the ticket: a resume
    token authorises its own chat, never a new one."""
    handoff = request.app[HANDOFF]
    if not handoff.ticket_limiter.take(address_key(request.remote)):
        raise RateLimited("too many tickets from here; wait a minute")
    body = await json_body(request, TicketRequest)
    settings = request.app[keys.SETTINGS]
    token = bearer(request.headers.get("Authorization"))
    if token:
        customer = customer_from_jwt(token, settings.widget_secret)
    elif body.guest is None:
        raise Unauthorized(
            "send a customer token (Bearer) or guest details; a chat's resume token"
            " does not open a ticket"
        )
    elif not settings.allow_guests:
        raise Unauthorized("guests are not allowed; a signed customer token is needed")
    else:
        customer = guest_customer(body.guest.name, body.guest.email)
    chat_id = None
    if body.session_id and body.resume_token:
        chat = await request.app[keys.DESK].verify_resume_token(
            body.session_id, body.resume_token
        )
        # A guest is someone new on every visit, so only the kind must match.
        same = (
            chat.customer.id == customer.id
            if token
            else chat.customer.id.startswith("guest:")
        )
        if not same:
            raise Unauthorized("the resume token belongs to another customer")
        chat_id = chat.id
    session, resume_token, handoffs = await handoff.create_ticket(
        customer, body.topic, body.severity, body.description, body.attachments, chat_id
    )
    log.info("offline ticket left", extra={"session_id": session["id"]})
    return web.json_response(
        {
            "ok": True,
            "session": session,
            "resume_token": resume_token,
            "handoffs": [{"id": h.id, "backend": h.backend} for h in handoffs],
        },
        status=201,
    )


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/api/sessions/{id}/transcript", transcript)
    app.router.add_post("/api/tickets", create_ticket)
    app.router.add_post("/api/login", login)
    app.router.add_post("/api/logout", logout)
    app.router.add_get("/api/me", me)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/", index)
    from .customers import setup_customers
    from .pages import setup_pages

    setup_customers(app)
    setup_pages(app)
