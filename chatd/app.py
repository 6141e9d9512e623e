"""create_app: the one place where settings, store, desk and transport are wired."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from .config import Settings, derive
from .core.clock import Clock, SystemClock
from .core.desk import Desk, DeskSettings
from .core.errors import ClusterError
from .core.ports import Store
from .handoff.service import HANDOFF, HandoffService
from .metrics import Metrics
from .retention import setup_purge
from .store import desk_key, redact, store_from_url
from .web import keys
from .web.attachments import setup_attachments
from .web.gate import run_app
from .web.http import (
    client_address_middleware,
    cross_site_middleware,
    errors_middleware,
    headers_middleware,
    setup_logins,
    setup_routes,
    setup_shared_limits,
)
from .web.link import DeskLink
from .web.monitoring import MONITOR, Monitor, desk_observers, setup_monitoring
from .web.role import DeskRole, exit_fenced, node_name, standby_middleware
from .web.sockets import Limits, Sockets
from .web.transport import TransportLimits, handshake_budget
from .web.uploads import UPLOADS

log = logging.getLogger(__name__)


def desk_settings(settings: Settings) -> DeskSettings:
    """The desk's settings, as declared in ``Settings`` (``desk=`` names the field)."""
    desk: DeskSettings = derive(settings, DeskSettings, via="desk")
    return desk


def origin_checker(settings: Settings) -> Any:
    """Socket.IO origins: the configured widget origins plus the server's own."""
    allowed = set(settings.allowed_origins)
    if settings.public_url:
        parts = urlsplit(settings.public_url)
        allowed.add(f"{parts.scheme}://{parts.netloc}")

    def check(origin: str | None, environ: dict[str, Any]) -> bool:
        if origin is None:
            return True  # not a browser: no cross-origin risk to guard
        if origin in allowed:
            return True
        host = environ.get("HTTP_HOST")
        scheme = environ.get("HTTP_X_FORWARDED_PROTO", environ.get("wsgi.url_scheme", "http"))
        return bool(host) and origin == f"{scheme.split(',')[0].strip()}://{host}"

    return check


def cluster_manager(settings: Settings, store: Store) -> Any:
    """python-socketio's Redis manager when ``CHATD_REDIS_URL`` is set (several processes on
    one desk), else None. SQLite serves one process: a Redis URL with it is refused."""
    if not settings.redis_url:
        return None
    if not store.standby_possible:
        raise ClusterError(
            "CHATD_REDIS_URL runs several processes on one desk, which needs PostgreSQL "
            "(CHATD_DATABASE_URL=postgresql://…); a SQLite database is served by one process"
        )
    from .cluster.manager import ClusterManager

    return ClusterManager(settings.redis_url, channel=cluster_prefix(settings) + ":sio")


def cluster_prefix(settings: Settings) -> str:
    """The desk's own Redis channels: two desks (databases) may share one Redis."""
    return desk_key(settings.database_url)


async def join_cluster(cluster: Any, manager: Any) -> None:
    """Reach Redis before serving; ClusterError (chatd serve exits 1) when it cannot."""
    try:
        manager.start()
        await asyncio.wait_for(manager.subscribed.wait(), 10)
        await cluster.start()
    except (TimeoutError, OSError, ConnectionError) as exc:
        raise ClusterError(
            f"cannot reach Redis at {redact(cluster.url)}: {str(exc) or 'no answer in 10 s'}"
        ) from None
    except Exception as exc:
        if type(exc).__module__.startswith("redis"):
            raise ClusterError(f"cannot reach Redis at {redact(cluster.url)}: {exc}") from None
        raise


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    clock: Clock | None = None,
    on_lost: Callable[[], None] | None = None,
) -> web.Application:
    """The whole server. ``on_lost`` is what to do once another process has taken the
    desk's lease from this one (by default: exit, ``chatd.web.role.exit_fenced``)."""
    clock = clock or SystemClock()
    store = store or store_from_url(
        settings.database_url, pool_size=settings.database_pool_size
    )
    middlewares: list[Middleware] = [
        headers_middleware, errors_middleware, cross_site_middleware(settings.public_url)
    ]
    if settings.trusted_proxies:  # first: every handler (and Socket.IO) sees the client
        middlewares.insert(0, client_address_middleware(settings.trusted_proxies))
    app = web.Application(middlewares=middlewares)
    metrics = Metrics()  # a registry per app: no process-wide metric state
    handoff = HandoffService(settings, store, clock)
    observer, alert_webhook = desk_observers(settings, clock, metrics, handoff.observer())
    desk = Desk(store, clock, desk_settings(settings), observer=observer)
    leading = [False]  # whether this process runs the desk (DeskRole below says)
    link = DeskLink(desk, leading=lambda: leading[0])
    # Messages per person, counted where the desk runs: once for every process.
    link.meter_messages(
        clock, settings.message_rate, settings.message_burst, settings.limiter_max_keys
    )
    manager = cluster_manager(settings, store)
    limits = Limits(
        widget_secret=settings.widget_secret,
        allow_guests=settings.allow_guests,
        connect_rate=settings.connect_rate,
        connect_burst=settings.connect_burst,
        max_event_bytes=settings.max_event_bytes,
        event_rate=settings.event_rate,
        event_burst=settings.event_burst,
        event_refusals_max=settings.event_refusals_max,
        public_url=settings.public_url,
        limiter_max_keys=settings.limiter_max_keys,
        history_messages_rate_total=settings.history_messages_rate_total,
    )
    sockets = Sockets(
        link, clock, limits, origin_checker(settings), accounts=store,
        transport=TransportLimits.from_settings(settings), client_manager=manager,
    )
    cluster = None
    if manager is not None:
        from .cluster.link import ClusterLink

        cluster = ClusterLink(
            settings.redis_url, cluster_prefix(settings), link, sockets.emitter.emit
        )
        manager.ready_for_resync = cluster.passing
    sockets.sio.attach(app)
    app[keys.SETTINGS] = settings
    app[keys.CLOCK] = clock
    app[keys.STORE] = store
    app[keys.DESK] = desk
    app[keys.LINK] = link
    link.emit = sockets.emitter.emit
    app[keys.SOCKETS] = sockets
    # Per-address and per-person limits, in Redis when several processes share one
    # (docs/security.md#several-processes): the namespaces', and the Engine.IO server's.
    sockets.use_limits(setup_shared_limits(app, settings, clock))
    setup_logins(app, settings, clock)  # the login limits and the password threads
    app[HANDOFF] = handoff
    setup_routes(app)
    setup_attachments(app, settings, clock)
    purge = setup_purge(app, settings, store, clock, app[UPLOADS].folder)
    setup_monitoring(app, Monitor(settings, clock, desk, store, metrics, webhook=alert_webhook))
    app.middlewares.insert(0, handshake_budget(clock, settings.handshake_rate_total))

    async def ticket_known(session_id: str, ticket: dict[str, Any]) -> None:
        await sockets.emitter.emit(await link.ticket_known(session_id))

    async def lead() -> None:
        """Run the desk: once this process holds the desk's lease, before it serves."""
        await sockets.emitter.emit(await desk.restore())
        leading[0] = True
        link.replay()  # this process's own clients, if it served them for another
        if cluster is not None:
            cluster.lead()
            manager.leading = True
        sockets.lead()
        if cluster is None:  # in a cluster every process delivers (started below)
            await handoff.start(ticket_known)
        purge.start()  # the process that runs the desk runs the purge
        log.info("chatd ready", extra={"open_sessions": len(desk.open_session_ids())})

    role = DeskRole(
        store.desk_lease(node_name(), settings.desk_lease_seconds, on_lost or exit_fenced),
        settings.desk_lease_seconds, standby_possible=store.standby_possible, lead=lead,
        on_lost=on_lost or exit_fenced, clustered=cluster is not None,
    )
    app[keys.ROLE] = role
    app.middlewares.insert(0, standby_middleware(role))

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        try:
            if cluster is not None:
                await join_cluster(cluster, manager)
            sockets.start()
            if cluster is not None:
                # Every process of a cluster delivers handoffs: claims are rows locked with
                # SKIP LOCKED, so each transcript still goes out once.
                await handoff.start(ticket_known)
            await role.start()
        except BaseException:
            await sockets.stop()
            if cluster is not None:
                await handoff.stop()
                await cluster.stop()
                await manager.stop()
            await store.close()
            raise
        yield
        await role.stop()
        if role.term is not None or cluster is not None:
            await handoff.stop()
        if role.term is not None:  # the desk ran here
            await purge.stop()
        await sockets.stop()
        await role.release()
        if cluster is not None:
            await cluster.stop()
            await manager.stop()
        await store.close()

    async def on_shutdown(app: web.Application) -> None:
        # Engine.IO clients see their transport close and reconnect to the next process.
        await sockets.sio.shutdown()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
    return app


def serve_app(app: web.Application, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
    """Serve ``app`` on the settings' address until SIGINT or SIGTERM, new connections
    through the accept gate (chatd.web.gate)."""
    run_app(app, loop, host=settings.host, port=settings.port, backlog=settings.listen_backlog,
            accept_rate=settings.accept_rate, shutdown_timeout=10.0,
            listening=lambda gate: app[MONITOR].metrics.watch_accept(gate.counts))
