"""Queue alerts: engineers are warned as the oldest wait nears and passes the target.

A small state machine driven by the desk's tick (docs/monitoring.md#alerts). Its level
follows the oldest waiting customer's wait: ``ok`` below the warning threshold,
``warning`` from it, ``breach`` from the target. Each change of level is one
``queue:alert`` to the engineers' consoles ("clear" when it falls back to ok) and one call
to the observer, which may forward it to a webhook. Nothing is sent while the level holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .models import Session, iso
from .observer import DeskObserver

OK = "ok"
WARNING = "warning"
BREACH = "breach"
CLEAR = "clear"


class QueueAlerts:
    def __init__(self, warning: float, target: float, observer: DeskObserver) -> None:
        self.warning = warning
        self.target = target
        self.observer = observer
        self.level = OK
        self.since: float | None = None
        self._last: dict[str, Any] | None = None

    def level_for(self, oldest_wait: float | None) -> str:
        if oldest_wait is None or oldest_wait < self.warning:
            return OK
        if oldest_wait < self.target:
            return WARNING
        return BREACH

    def check(
        self, now: float, queue: Sequence[Session], engineers_online: int
    ) -> dict[str, Any] | None:
        """The ``queue:alert`` payload when the level changed, else None. ``queue`` is the
        desk's queue in arrival order: its head has waited longest."""
        oldest_wait = max(0.0, now - queue[0].created_at) if queue else None
        level = self.level_for(oldest_wait)
        if level == self.level:
            return None
        self.level = level
        self.since = None if level == OK else now
        threshold = self.target if level == BREACH else self.warning
        alert: dict[str, Any] = {
            "level": CLEAR if level == OK else level,
            "oldest_wait_seconds": round(oldest_wait or 0.0, 1),
            "threshold_seconds": threshold,
            "warning_seconds": self.warning,
            "target_seconds": self.target,
            "queue_length": len(queue),
            "engineers_online": engineers_online,
            "at": iso(now),
        }
        self._last = None if level == OK else alert
        self.observer.queue_alert(alert)
        return alert

    def current(self) -> dict[str, Any] | None:
        """The alert in force (the last warning or breach sent), None when all is well."""
        return self._last
