"""Monitoring over HTTP: ``/metrics``, ``/api/stats`` and the status banner
(docs/monitoring.md).

``Monitor`` owns what monitoring keeps between requests: the registry of this app, the
queue history for the monitor's charts (sampled every ``sample_interval`` seconds), the
status banner in force, and the background tasks that feed them.

``/metrics`` exports the desk's families only while this process runs the desk (holds the
desk's lease, ``app[keys.ROLE].leading``); every process exports its own process-level
ones (docs/monitoring.md#several-processes).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Annotated, Any, Protocol

import msgspec
from aiohttp import web

from ..alert_webhook import AlertWebhook
from ..config import Settings
from ..core.clock import Clock
from ..core.desk import CUSTOMER_NS, ENGINEER_NS, Desk
from ..core.errors import BadRequest, Forbidden, Unauthorized
from ..core.models import Engineer, iso
from ..core.observer import DeskObserver, Observers
from ..core.ports import OutboxStore, StatsStore
from ..core.stats import WINDOWS, QueueHistory, stats_report
from ..handoff.service import HANDOFF
from ..logs import DeskLog
from ..metrics import LoopLag, Metrics
from ..tasks import cancel_and_wait
from . import keys
from .auth import bearer
from .http import current_engineer, is_loopback_caller, json_body

log = logging.getLogger(__name__)

BANNER_MAX = 500
# The classic text format, which generate_latest writes and every Prometheus reads (newer
# clients label it version 1.0.0 by default; our metric names need none of its escaping).
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LINK_MAX = 2000



class MonitorStore(StatsStore, OutboxStore, Protocol):
    """What the monitor reads: outcomes, the banner, and the outbox's counts."""

class StatusPost(msgspec.Struct):
    """POST /api/status: a banner text, or null to clear it; an optional https link."""

    banner: Annotated[str, msgspec.Meta(max_length=BANNER_MAX)] | None
    link: Annotated[str, msgspec.Meta(max_length=LINK_MAX)] | None = None


class Monitor:
    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        desk: Desk,
        store: MonitorStore,
        metrics: Metrics,
        *,
        webhook: AlertWebhook | None = None,
        sample_interval: float = 10.0,
        history_horizon: float = 6 * 3600.0,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.desk = desk
        self.store = store
        self.metrics = metrics
        self.webhook = webhook
        self.sample_interval = sample_interval
        self.history = QueueHistory(sample_interval, history_horizon)
        self.banner: dict[str, Any] | None = None
        self.loop_lag = LoopLag(metrics.loop_lag)
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        self.banner = await self.store.status_banner()
        await self.sample()
        self._task = asyncio.create_task(self._sampler(), name="chatd-monitor-sampler")
        self.loop_lag.start()
        if self.webhook is not None:
            self.webhook.start()

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        await self.loop_lag.stop()
        if self.webhook is not None:
            await self.webhook.stop()

    async def sample(self) -> None:
        """One point of queue history, and the outbox backlog from the database (so that
        chatd_handoff_pending is right even while no handoff worker runs)."""
        live = self.desk.live()
        self.history.add(live.now, live.queue_length, live.oldest_wait)
        counts = await self.store.handoff_counts()
        self.metrics.handoffs.pending(counts.get("pending", 0))
        # Posted through another process of a cluster: new connections here are told it.
        self.banner = await self.store.status_banner()

    async def _sampler(self) -> None:
        while True:
            await asyncio.sleep(self.sample_interval)
            try:
                await self.sample()
            except asyncio.CancelledError:
                raise
            except Exception:  # a busy database must not stop the history
                log.exception("monitor sample failed")

    # ------------------------------------------------------------------ status banner

    def banner_wire(self) -> dict[str, Any]:
        """The payload of ``status:update``: ``banner`` is the text, or null when clear."""
        b = self.banner
        return {
            "banner": b["text"] if b else None,
            "link": b["link"] if b else None,
            "updated_at": iso(b["updated_at"]) if b else None,
        }

    def greeting(self) -> dict[str, Any] | None:
        """What a widget is told on connect: the banner, when one is up."""
        return self.banner_wire() if self.banner else None

    async def set_banner(self, text: str | None, link: str | None, by: Engineer) -> None:
        now = self.clock.now()
        await self.store.set_status_banner(text, link, now, by.id)
        self.banner = (
            None if text is None
            else {"text": text, "link": link, "updated_at": now, "updated_by": by.id}
        )
        log.info("status banner %s", "posted" if text else "cleared",
                 extra={"engineer_id": by.id})

    async def stats(self, clients: dict[str, int]) -> dict[str, Any]:
        now = self.clock.now()
        outcomes = await self.store.session_outcomes(now - max(WINDOWS.values()))
        handoffs = await self.store.handoff_counts()
        live = self.desk.live(forecast=True)
        return stats_report(
            live,
            outcomes,
            target=self.settings.wait_target_seconds,
            warning=self.settings.wait_warning_seconds,
            history=self.history.points(live.now),
            handoffs=handoffs,
            connected=clients,
            banner=self.banner_wire(),
        )


MONITOR = web.AppKey("monitor", Monitor)


def desk_observers(
    settings: Settings, clock: Clock, metrics: Metrics, *extra: DeskObserver
) -> tuple[DeskObserver, AlertWebhook | None]:
    """What the desk reports to: metrics, the log, the alert webhook when configured, and
    ``extra`` (the handoff worker)."""
    webhook = None
    if settings.alert_webhook_url:
        monitor_url = settings.public_url.rstrip("/") + "/monitor/" if settings.public_url else ""
        webhook = AlertWebhook(settings.alert_webhook_url, clock, monitor_url=monitor_url)
    observers: list[DeskObserver] = [metrics, DeskLog()]
    if webhook is not None:
        observers.append(webhook)
    observers += extra
    return Observers(*observers, on_error=_observer_failed), webhook


def _observer_failed(exc: Exception) -> None:
    log.error("a desk observer failed", exc_info=exc)


def _clients(app: web.Application) -> dict[str, int]:
    sockets = app[keys.SOCKETS]
    return {CUSTOMER_NS: len(sockets.customers.conns), ENGINEER_NS: len(sockets.engineers.conns)}


def _leading(app: web.Application) -> bool:
    """Whether this process runs the desk now (holds the desk's lease), and so exports the
    desk's metrics; an app without a desk role is a single process, which always does."""
    role = app.get(keys.ROLE)
    return role is None or role.leading


async def _lead(request: web.Request) -> Engineer:
    engineer, _ = await current_engineer(request)
    if not engineer.is_lead:
        raise Forbidden("only a lead may do this")
    return engineer


async def metrics_view(request: web.Request) -> web.Response:
    """With ``metrics_token``, for its bearer only; without, for callers on this host only
    (docs/security.md#metrics): the metrics tell a stranger how busy the desk is."""
    expected = request.app[keys.SETTINGS].metrics_token
    if expected:
        given = bearer(request.headers.get("Authorization")) or ""
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthorized("/metrics needs the configured bearer token")
    elif not is_loopback_caller(request):
        raise Forbidden(
            "/metrics answers only this host; set CHATD_METRICS_TOKEN and send it as "
            "Authorization: Bearer to scrape from elsewhere"
        )
    body = request.app[MONITOR].metrics.render()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def stats_view(request: web.Request) -> web.Response:
    await _lead(request)
    # Made where the desk runs, whichever process is asked (docs/scaling.md).
    report = await request.app[keys.LINK].extra("stats")
    return web.json_response({"ok": True, **report})


async def status_view(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, **request.app[MONITOR].banner_wire()})


async def status_post(request: web.Request) -> web.Response:
    lead = await _lead(request)
    body = await json_body(request, StatusPost)
    text = body.banner.strip() if body.banner is not None else None
    link = body.link.strip() if body.link else None
    if not text:
        text, link = None, None
    if link is not None and not link.startswith(("https://", "http://")):
        raise BadRequest("link must be an http:// or https:// URL")
    monitor = request.app[MONITOR]
    await monitor.set_banner(text, link, lead)
    payload = monitor.banner_wire()
    sio = request.app[keys.SOCKETS].sio
    # Every widget (and every console) hears it, whatever chat it is in or not yet in.
    await sio.emit("status:update", payload, namespace="/" + CUSTOMER_NS)
    await sio.emit("status:update", payload, namespace="/" + ENGINEER_NS)
    return web.json_response({"ok": True, **payload})


def setup_monitoring(app: web.Application, monitor: Monitor) -> None:
    """Register the routes and the background tasks of ``monitor`` on ``app``."""
    app[MONITOR] = monitor
    app.middlewares.insert(0, monitor.metrics.upload_middleware())
    app[keys.SOCKETS].customers.greeting = monitor.greeting
    link = app[keys.LINK]
    link.clients = lambda: _clients(app)

    async def stats() -> dict[str, Any]:
        return await monitor.stats(link.all_clients())

    link.extras["stats"] = stats
    if HANDOFF in app:
        handoff = app[HANDOFF]
        handoff.metrics.subscribe(monitor.metrics.handoffs)
        monitor.metrics.handoffs.backends(handoff.backends)
    store = app[keys.STORE]
    monitor.metrics.watch_store(lambda: (store.batches, store.batched_ops))
    monitor.metrics.watch(
        lambda: monitor.desk.live(forecast=True), lambda: _clients(app),
        target=monitor.settings.wait_target_seconds,
        warning=monitor.settings.wait_warning_seconds,
    )
    monitor.metrics.watch_leading(lambda: _leading(app))
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/api/stats", stats_view)
    app.router.add_get("/api/status", status_view)
    app.router.add_post("/api/status", status_post)

    # After the store has opened (cleanup contexts run first) and before it closes.
    async def start(app: web.Application) -> None:
        if monitor.settings.metrics_token:
            log.info("/metrics: bearer token required")
        else:
            log.info("/metrics: loopback only; set CHATD_METRICS_TOKEN to scrape from elsewhere")
        await monitor.start()

    async def stop(app: web.Application) -> None:
        await monitor.stop()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
