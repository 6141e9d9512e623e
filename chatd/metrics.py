"""Prometheus instruments: the metrics table is docs/monitoring.md#metrics.

Each app has its own ``CollectorRegistry`` (no module-level state), so that tests can run
several apps in one process. Counters and histograms are fed as things happen: the desk
through the ``DeskObserver`` protocol, the handoff worker through its ``HandoffMetrics``
listener, uploads by a middleware. Gauges of the live desk are read when Prometheus
scrapes, so they are never stale. No metric carries a per-customer or per-session label.

With several processes on one desk (docs/monitoring.md#several-processes) only the one that
runs the desk knows the desk: the families of DESK_FAMILIES are exported by that process
alone (elsewhere they would be an empty or stale copy, and sums over instances would be
wrong), every process exports its own process-level families, and ``chatd_desk_leader``
says which process leads.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .core.models import Session
from .core.observer import OFFER_RESULTS, SESSION_OUTCOMES, abandon_wait, answer_wait, outcome
from .core.stats import LiveDesk
from .tasks import cancel_and_wait

log = logging.getLogger(__name__)

# Seconds; 300 is the five-minute promise and 30 the short-abandon threshold, so both the
# service level and its exclusion can be read off the buckets.
WAIT_BUCKETS = (5, 15, 30, 60, 120, 180, 240, 300, 600, 1200, 1800)
MESSAGE_ROLES = ("customer", "engineer", "lead")
UPLOAD_RESULTS = (
    "stored", "repeated", "too_large", "unsupported_type", "rate_limited", "refused",
    "bad_request", "failed",
)
HANDOFF_RESULTS = ("delivered", "retry", "failed")
ALERT_LEVELS = ("predicted", "warning", "breach", "clear")
ENGINEER_STATUSES = ("available", "away")
NAMESPACES = ("customer", "engineer")
UPLOAD_ROUTE = "/api/sessions/{session_id}/attachments"
# The families (as the client names them: counters without ``_total``) that describe the
# desk: its gauges, the counters and histograms the desk and its handoff worker feed, and
# the settings the rules compare the waits with. Only the process running the desk exports
# them; the table of docs/monitoring.md#several-processes says the same per family.
DESK_FAMILIES = frozenset({
    "chatd_queue_wait_seconds", "chatd_abandon_wait_seconds",
    "chatd_queue_length", "chatd_queue_oldest_wait_seconds",
    "chatd_queue_wait_target_seconds", "chatd_queue_wait_warning_seconds",
    "chatd_engineers", "chatd_engineer_capacity",
    "chatd_forecast_slots_needed", "chatd_forecast_engineers_needed",
    "chatd_forecast_arrivals_per_hour",
    "chatd_sessions_active", "chatd_sessions_requested", "chatd_sessions",
    "chatd_offers", "chatd_messages", "chatd_queue_alerts",
    "chatd_handoffs", "chatd_handoff_pending",
})

LiveSource = Callable[[], LiveDesk]
ClientCounts = Callable[[], Mapping[str, int]]
Leading = Callable[[], bool]


class HandoffInstruments:
    """``chatd_handoffs_total{backend,result}`` and ``chatd_handoff_pending``.

    Implements the handoff worker's ``HandoffListener`` (chatd/handoff/metrics.py): pass
    it to ``HandoffMetrics.subscribe``; ``delivery`` is called once per attempt with its
    result (delivered, retry or failed) and ``pending`` with the outbox rows left to send.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.total = Counter(
            "chatd_handoffs", "Handoff delivery attempts by backend and result "
            "(delivered, retry, failed).", ["backend", "result"], registry=registry,
        )
        self.pending_rows = Gauge(
            "chatd_handoff_pending", "Transcripts in the outbox waiting to be delivered.",
            registry=registry,
        )

    def backends(self, names: Iterable[str]) -> None:
        """Start every series of these backends at zero, so that rates exist at once."""
        for name in names:
            for result in HANDOFF_RESULTS:
                self.total.labels(name, result)

    def delivery(self, backend: str, result: str) -> None:
        self.total.labels(backend, result).inc()

    def pending(self, count: int) -> None:
        self.pending_rows.set(count)


class LiveCollector:
    """Gauges read from the desk and the Socket.IO layer at scrape time."""

    def __init__(self, live: LiveSource, clients: ClientCounts, target: float,
                 warning: float) -> None:
        self.live = live
        self.clients = clients
        self.target = target
        self.warning = warning

    def _families(self) -> dict[str, GaugeMetricFamily]:
        return {
            "queue_length": GaugeMetricFamily(
                "chatd_queue_length", "Customers waiting (including those on offer)."),
            "oldest": GaugeMetricFamily(
                "chatd_queue_oldest_wait_seconds",
                "How long the longest-waiting customer has waited; 0 with an empty queue."),
            "target": GaugeMetricFamily(
                "chatd_queue_wait_target_seconds", "The configured wait target."),
            "warning": GaugeMetricFamily(
                "chatd_queue_wait_warning_seconds", "The configured warning threshold."),
            "engineers": GaugeMetricFamily(
                "chatd_engineers", "Connected engineers by status.", labels=["status"]),
            "capacity": GaugeMetricFamily(
                "chatd_engineer_capacity",
                "Chats available engineers can hold at once (the estimate's capacity)."),
            "active": GaugeMetricFamily(
                "chatd_sessions_active", "Chats in progress (answered, not ended)."),
            "clients": GaugeMetricFamily(
                "chatd_connected_clients", "Socket.IO connections by namespace.",
                labels=["namespace"]),
            "arrivals": GaugeMetricFamily(
                "chatd_forecast_arrivals_per_hour",
                "The smoothed arrival rate now and forecast over the next hour "
                "(absent until known).", labels=["horizon"]),
            "slots": GaugeMetricFamily(
                "chatd_forecast_slots_needed",
                "Capacity slots needed for the service-level objective, by Erlang A "
                "(Erlang C without abandonment), now and over the next hour.",
                labels=["horizon"]),
            "needed_engineers": GaugeMetricFamily(
                "chatd_forecast_engineers_needed",
                "The slots needed as engineers at the default capacity.", labels=["horizon"]),
        }

    def describe(self) -> Iterable[Metric]:
        return list(self._families().values())

    def collect(self) -> Iterable[Metric]:
        f = self._families()
        live = self.live()
        f["queue_length"].add_metric([], live.queue_length)
        f["oldest"].add_metric([], live.oldest_wait)
        f["target"].add_metric([], self.target)
        f["warning"].add_metric([], self.warning)
        by_status = live.engineers_by_status()
        for status in sorted({*ENGINEER_STATUSES, *by_status}):
            f["engineers"].add_metric([status], by_status.get(status, 0))
        f["capacity"].add_metric([], live.online_capacity)
        f["active"].add_metric([], len(live.active))
        for horizon in ("now", "next_hour"):
            part = (live.forecast or {}).get(horizon) or {}
            for family, key in (("arrivals", "arrivals_per_hour"), ("slots", "slots"),
                                ("needed_engineers", "engineers")):
                if part.get(key) is not None:
                    f[family].add_metric([horizon], part[key])
        counts = self.clients()
        for ns in sorted({*NAMESPACES, *counts}):
            f["clients"].add_metric([ns], counts.get(ns, 0))
        return list(f.values())


class LeaderCollector:
    """``chatd_desk_leader``: 1 on the process that runs the desk, 0 on the others."""

    def __init__(self, leading: Leading) -> None:
        self.leading = leading

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "chatd_desk_leader",
            "1 on the process that runs the desk (and exports its metrics), 0 elsewhere.")

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        family.add_metric([], 1 if self.leading() else 0)
        return [family]


class Exported:
    """What ``/metrics`` shows: the registry, less DESK_FAMILIES on a process that does not
    run the desk (``leading`` is read once per scrape, so one scrape is consistent)."""

    def __init__(self, registry: CollectorRegistry, leading: bool) -> None:
        self.registry = registry
        self.leading = leading

    def collect(self) -> Iterable[Metric]:
        for family in self.registry.collect():
            if self.leading or family.name not in DESK_FAMILIES:
                yield family


class CountsCollector:
    """Unlabelled families whose values are read at scrape time: ``families`` makes them
    (empty), ``counts`` gives their values in the same order."""

    def __init__(
        self, families: Callable[[], tuple[GaugeMetricFamily | CounterMetricFamily, ...]],
        counts: Callable[[], tuple[int, ...]],
    ) -> None:
        self.families = families
        self.counts = counts

    def describe(self) -> Iterable[Metric]:
        return list(self.families())

    def collect(self) -> Iterable[Metric]:
        families = self.families()
        for family, value in zip(families, self.counts(), strict=True):
            family.add_metric([], value)
        return list(families)


def _store_families() -> tuple[CounterMetricFamily, CounterMetricFamily]:
    return (
        CounterMetricFamily("chatd_store_commits", "Transactions of writes the store committed."),
        CounterMetricFamily(
            "chatd_store_writes", "Writes committed (writes per commit: group commit)."
        ),
    )


def _accept_families() -> tuple[GaugeMetricFamily, CounterMetricFamily]:
    return (
        GaugeMetricFamily(
            "chatd_accept_waiting", "New connections waiting for their turn at the accept gate."
        ),
        CounterMetricFamily(
            "chatd_accept_reset",
            "New connections reset by the accept gate: its queue was full, or what the"
            " waiting connections sent was too much.",
        ),
    )


class Metrics:
    """The app's registry and instruments; also the desk's observer for metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # The *_created series would read as metrics of their own (chatd_sessions_created
        # is not a count of sessions); Prometheus does not need them for rates.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # the library lacks hints
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.queue_wait = Histogram(
            "chatd_queue_wait_seconds",
            "Seconds from chat:request to the first answer, once per answered chat.",
            buckets=WAIT_BUCKETS, registry=r,
        )
        self.abandon_wait = Histogram(
            "chatd_abandon_wait_seconds",
            "Seconds customers waited before leaving unanswered (abandoned or cancelled).",
            buckets=WAIT_BUCKETS, registry=r,
        )
        self.requested = Counter(
            "chatd_sessions_requested", "Chats requested (customers joining the queue).",
            registry=r,
        )
        self.sessions = Counter(
            "chatd_sessions", "Chats by outcome: answered (first accepted), then ended, "
            "abandoned or cancelled.", ["outcome"], registry=r,
        )
        self.offers = Counter(
            "chatd_offers", "Offers by how they ended.", ["result"], registry=r,
        )
        self.messages = Counter(
            "chatd_messages", "Messages sent by people, by the sender's role.", ["role"],
            registry=r,
        )
        self._message_children: dict[str, Any] = {}
        self.uploads = Counter(
            "chatd_uploads", "Attachment uploads by result.", ["result"], registry=r,
        )
        self.upload_bytes = Counter(
            "chatd_upload_bytes", "Bytes of attachments stored.", registry=r,
        )
        self.alerts = Counter(
            "chatd_queue_alerts", "queue:alert transitions sent to engineers, by level.",
            ["level"], registry=r,
        )
        self.loop_lag = Gauge(
            "chatd_event_loop_lag_seconds",
            "How late the event loop ran a timer at the last measurement.", registry=r,
        )
        self.handoffs = HandoffInstruments(r)
        for o in SESSION_OUTCOMES:
            self.sessions.labels(o)
        for result in OFFER_RESULTS:
            self.offers.labels(result)
        for role in MESSAGE_ROLES:
            self.messages.labels(role)
        for result in UPLOAD_RESULTS:
            self.uploads.labels(result)
        for level in ALERT_LEVELS:
            self.alerts.labels(level)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self._live: LiveCollector | None = None
        self._leading: Leading = _always
        r.register(LeaderCollector(lambda: self._leading()))

    def watch(self, live: LiveSource, clients: ClientCounts, *, target: float,
              warning: float) -> None:
        """Read the live gauges from these sources at every scrape."""
        if self._live is not None:
            self.registry.unregister(self._live)
        self._live = LiveCollector(live, clients, target, warning)
        self.registry.register(self._live)

    def watch_store(self, counts: Callable[[], tuple[int, int]]) -> None:
        """Read the store's (commits, writes) at every scrape."""
        self.registry.register(CountsCollector(_store_families, counts))

    def watch_accept(self, counts: Callable[[], tuple[int, int]]) -> None:
        """Read the accept gate's (waiting, reset) at every scrape (``chatd serve``)."""
        self.registry.register(CountsCollector(_accept_families, counts))

    def watch_leading(self, leading: Leading) -> None:
        """Whether this process runs the desk, asked at every scrape; until this is called,
        it does (one process)."""
        self._leading = leading

    def render(self) -> bytes:
        """The text of ``/metrics``: without the desk's families unless this process leads."""
        return generate_latest(Exported(self.registry, self._leading()))

    # ------------------------------------------------------------------ DeskObserver

    def session_requested(self, session: Session) -> None:
        self.requested.inc()

    def session_answered(self, session: Session) -> None:
        wait = answer_wait(session)
        if wait is not None:
            self.queue_wait.observe(wait)
        self.sessions.labels("answered").inc()

    def session_closed(self, session: Session) -> None:
        self.sessions.labels(outcome(session)).inc()
        wait = abandon_wait(session)
        if wait is not None:
            self.abandon_wait.observe(wait)

    def offer_resolved(self, result: str) -> None:
        self.offers.labels(result).inc()

    def message_stored(self, role: str) -> None:
        # Called for every message: keep the labelled children instead of looking them up.
        child = self._message_children.get(role)
        if child is None:
            child = self._message_children[role] = self.messages.labels(role)
        child.inc()

    def queue_alert(self, alert: dict[str, Any]) -> None:
        self.alerts.labels(str(alert.get("level"))).inc()

    # ------------------------------------------------------------------ uploads

    def count_upload(self, status: int, body: bytes | None) -> None:
        result = _upload_result(status)
        self.uploads.labels(result).inc()
        if result == "stored" and body:
            try:
                size = json.loads(body)["attachment"]["size"]
            except (ValueError, KeyError, TypeError):
                return
            if isinstance(size, int) and size >= 0:
                self.upload_bytes.inc(size)

    def upload_middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        """Counts answers to attachment uploads; outermost, so that it sees the status the
        client got (errors included)."""

        @web.middleware
        async def middleware(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            route = request.match_info.route.resource
            if request.method != "POST" or route is None or route.canonical != UPLOAD_ROUTE:
                return await handler(request)
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                self.count_upload(exc.status, None)
                raise
            except BaseException:
                self.count_upload(500, None)
                raise
            body = response.body if isinstance(response, web.Response) else None
            self.count_upload(response.status, body if isinstance(body, bytes) else None)
            return response

        return middleware


def _always() -> bool:
    return True


def _upload_result(status: int) -> str:
    if status == 200:  # a retry answered with the file its upload id stored before
        return "repeated"
    if 200 <= status < 300:
        return "stored"
    return {
        400: "bad_request",
        413: "too_large",
        415: "unsupported_type",
        429: "rate_limited",
    }.get(status, "failed" if status >= 500 else "refused")


class LoopLag:
    """Measures how late the event loop wakes a sleeping task: a loop kept busy by
    blocking work shows here before customers notice it."""

    def __init__(self, gauge: Gauge, interval: float = 0.5) -> None:
        self.gauge = gauge
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chatd-loop-lag")

    async def stop(self) -> None:
        if self._task is None:
            return
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval)
            self.gauge.set(max(0.0, loop.time() - start - self.interval))
