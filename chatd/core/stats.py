"""The service level and the desk's other numbers, computed from stored sessions
(docs/monitoring.md#service-level).

Pure functions over ``SessionOutcome`` rows that the store reads; nothing here knows a
database or a clock. The rolling windows end at ``now`` and count each session where its
outcome happened: an answered session at its first answer, an abandoned one when the
customer left.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .models import Session, iso

# Customers who leave within this many seconds are not counted for or against the service
# level: they changed their mind before anyone could reasonably have answered.
SHORT_ABANDON_SECONDS = 30.0
WINDOWS = {"1h": 3600.0, "24h": 86_400.0}


@dataclass(frozen=True, slots=True)
class SessionOutcome:
    """A chat (never an offline ticket) as the statistics see it."""

    created_at: float
    first_assigned_at: float | None
    ended_at: float | None
    state: str  # a SessionState value
    engineer_id: str | None = None
    engineer_name: str | None = None

    @property
    def answered(self) -> bool:
        return self.first_assigned_at is not None

    @property
    def wait(self) -> float | None:
        """Seconds to the first answer, or until the customer left unanswered."""
        end = self.first_assigned_at if self.answered else self.ended_at
        return None if end is None else max(0.0, end - self.created_at)

    @property
    def handle_time(self) -> float | None:
        """Seconds from the first answer to the end of an answered, ended chat."""
        if self.state != "ended" or self.first_assigned_at is None or self.ended_at is None:
            return None
        return max(0.0, self.ended_at - self.first_assigned_at)


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank percentile (p in 0..100): the smallest value with at least p% of
    the values at or below it. None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _r(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def service_window(
    outcomes: Iterable[SessionOutcome],
    now: float,
    window: float,
    target: float,
    short_abandon: float = SHORT_ABANDON_SECONDS,
) -> dict[str, Any]:
    """The service level and waits of sessions answered or abandoned in (now-window, now].

    service_level = answered within target / (answered + abandoned after ``short_abandon``)
    """
    start = now - window
    waits: list[float] = []
    within = 0
    abandoned = 0
    short = 0
    handle: list[float] = []
    for o in outcomes:
        if o.answered:
            assert o.first_assigned_at is not None
            if start < o.first_assigned_at <= now:
                wait = o.wait or 0.0
                waits.append(wait)
                if wait <= target:
                    within += 1
        elif o.state == "abandoned" and o.ended_at is not None and start < o.ended_at <= now:
            abandoned += 1
            if (o.wait or 0.0) <= short_abandon:
                short += 1
        ht = o.handle_time
        if ht is not None and o.ended_at is not None and start < o.ended_at <= now:
            handle.append(ht)
    answered = len(waits)
    counted = answered + abandoned - short
    offered = answered + abandoned
    return {
        "window_seconds": window,
        "target_seconds": target,
        "answered": answered,
        "answered_within_target": within,
        "abandoned": abandoned,
        "abandoned_short": short,
        "service_level": round(within / counted, 4) if counted else None,
        "abandon_rate": round(abandoned / offered, 4) if offered else None,
        "average_wait_seconds": _r(_mean(waits)),
        "p90_wait_seconds": _r(percentile(waits, 90)),
        "max_wait_seconds": _r(max(waits) if waits else None),
        "ended": len(handle),
        "average_handle_seconds": _r(_mean(handle)),
    }


def per_engineer(
    outcomes: Iterable[SessionOutcome], now: float, window: float
) -> dict[str, dict[str, Any]]:
    """Per engineer id: chats they ended in the window and their average handle time."""
    start = now - window
    times: dict[str, list[float]] = {}
    names: dict[str, str] = {}
    for o in outcomes:
        ht = o.handle_time
        if ht is None or o.engineer_id is None or o.ended_at is None:
            continue
        if not start < o.ended_at <= now:
            continue
        times.setdefault(o.engineer_id, []).append(ht)
        names[o.engineer_id] = o.engineer_name or ""
    return {
        eid: {
            "name": names[eid],
            "sessions_handled": len(ts),
            "average_handle_seconds": _r(_mean(ts)),
        }
        for eid, ts in times.items()
    }


# The waiting chats /api/stats lists, from the head (``length`` counts them all).
LISTED_WAITING = 200


@dataclass(frozen=True, slots=True)
class LiveDesk:
    """The desk as it is now, read without waiting for its lock."""

    now: float
    queue: list[Session]  # waiting and offered, in arrival order
    active: list[Session]
    engineers: list[dict[str, Any]]  # as in queue:snapshot
    offers: dict[str, str] = field(default_factory=dict)  # session id -> engineer id
    alert: dict[str, Any] | None = None
    online_capacity: int = 0  # chats available engineers can take at once
    average_handle_seconds: float = 0.0  # the estimate's recent average
    forecast: dict[str, Any] | None = None  # Desk.forecast(), when asked for

    @property
    def queue_length(self) -> int:
        return len(self.queue)

    @property
    def oldest_wait(self) -> float:
        return max(0.0, self.now - self.queue[0].created_at) if self.queue else 0.0

    def engineers_by_status(self) -> dict[str, int]:
        """Connected engineers per status; engineers who are not connected are not counted."""
        out = {"available": 0, "away": 0}
        for e in self.engineers:
            if e["online"]:
                out[e["status"]] = out.get(e["status"], 0) + 1
        return out

    def to_wire(self) -> dict[str, Any]:
        queue = []
        for i, s in enumerate(self.queue[:LISTED_WAITING]):
            item = {
                "id": s.id,
                "state": s.state.value,
                "topic": s.topic,
                "severity": s.severity,
                "customer": {"name": s.customer.name, "account": s.customer.account,
                             "tier": s.customer.tier.value},
                "position": i + 1,
                "created_at": iso(s.created_at),
                "waited_seconds": round(self.now - s.created_at, 1),
            }
            if s.id in self.offers:
                item["offered_to"] = self.offers[s.id]
            queue.append(item)
        active = [
            {
                "id": s.id,
                "topic": s.topic,
                "severity": s.severity,
                "customer": {"name": s.customer.name, "account": s.customer.account,
                             "tier": s.customer.tier.value},
                "engineer": s.engineer.ref() if s.engineer else None,
                "created_at": iso(s.created_at),
                "assigned_at": iso(s.assigned_at),
                "duration_seconds": round(self.now - (s.assigned_at or s.created_at), 1),
            }
            for s in self.active
        ]
        return {
            "length": self.queue_length,
            "oldest_wait_seconds": round(self.oldest_wait, 1),
            "queue": queue,
            "sessions_active": len(self.active),
            "sessions": active,
            "engineers": self.engineers,
            "engineers_by_status": self.engineers_by_status(),
            "alert": self.alert,
        }


class QueueHistory:
    """Queue length and oldest wait sampled every few seconds, for the monitor's charts.
    In memory: it starts empty after a restart, while the service level comes from the
    database."""

    def __init__(self, interval: float = 10.0, horizon: float = 6 * 3600.0) -> None:
        self.interval = interval
        self.horizon = horizon
        self._points: deque[tuple[float, int, float]] = deque(
            maxlen=max(1, int(horizon / interval) + 1)
        )

    def add(self, ts: float, length: int, oldest_wait: float) -> None:
        self._points.append((ts, length, oldest_wait))

    def points(self, now: float) -> list[dict[str, Any]]:
        start = now - self.horizon
        return [
            {"t": iso(ts), "length": length, "oldest_wait_seconds": round(oldest, 1)}
            for ts, length, oldest in self._points
            if ts > start
        ]


def engineer_rows(
    live: Sequence[dict[str, Any]],
    handled_1h: dict[str, dict[str, Any]],
    handled_24h: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """Each engineer seen since the start or in the last day: status and load now, chats
    handled in the windows. Engineers not connected show as ``offline``."""
    rows: dict[str, dict[str, Any]] = {}
    for e in live:
        load = int(e["active"]) + int(e["offers"])
        rows[e["id"]] = {
            "id": e["id"],
            "name": e["name"],
            "role": e.get("role"),
            "status": e["status"] if e["online"] else "offline",
            "online": e["online"],
            "capacity": e["capacity"],
            "active": e["active"],
            "offers": e["offers"],
            "load": load,
            "utilisation": round(load / e["capacity"], 3) if e["capacity"] else None,
        }
    for eid, h in handled_24h.items():
        rows.setdefault(eid, {
            "id": eid, "name": h["name"], "role": None, "status": "offline", "online": False,
            "capacity": None, "active": 0, "offers": 0, "load": 0, "utilisation": None,
        })
    for eid, row in rows.items():
        day = handled_24h.get(eid, {})
        row["sessions_handled_1h"] = handled_1h.get(eid, {}).get("sessions_handled", 0)
        row["sessions_handled_24h"] = day.get("sessions_handled", 0)
        row["average_handle_seconds_24h"] = day.get("average_handle_seconds")
    return sorted(rows.values(), key=lambda r: (not r["online"], str(r["name"]).lower()))


def stats_report(
    live: LiveDesk,
    outcomes: Sequence[SessionOutcome],
    *,
    target: float,
    warning: float,
    history: list[dict[str, Any]],
    handoffs: dict[str, int],
    connected: dict[str, int],
    banner: dict[str, Any] | None,
) -> dict[str, Any]:
    """Everything GET /api/stats answers (docs/monitoring.md#get-apistats)."""
    now = live.now
    windows = {
        name: service_window(outcomes, now, seconds, target) for name, seconds in WINDOWS.items()
    }
    rows = engineer_rows(
        live.engineers,
        per_engineer(outcomes, now, WINDOWS["1h"]),
        per_engineer(outcomes, now, WINDOWS["24h"]),
    )
    wire = live.to_wire()
    return {
        "now": iso(now),
        "target_seconds": target,
        "warning_seconds": warning,
        "short_abandon_seconds": SHORT_ABANDON_SECONDS,
        "service_level": windows,
        "queue": {
            "length": wire["length"],
            "oldest_wait_seconds": wire["oldest_wait_seconds"],
            "waiting": wire["queue"],
        },
        "alert": live.alert,
        "estimate": {
            "online_capacity": live.online_capacity,
            "average_handle_seconds": round(live.average_handle_seconds, 1),
        },
        "forecast": live.forecast,
        "sessions_active": wire["sessions_active"],
        "sessions": wire["sessions"],
        "engineers_by_status": wire["engineers_by_status"],
        "engineers": rows,
        "handoffs": {
            "pending": handoffs.get("pending", 0),
            "delivered": handoffs.get("delivered", 0),
            "failed": handoffs.get("failed", 0),
        },
        "connected_clients": connected,
        "status_banner": banner,
        "history": history,
    }
