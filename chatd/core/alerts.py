"""Queue alerts: engineers are warned as the oldest wait nears and passes the target, and
before that, when the predicted waits say it will.

A small state machine driven by the desk's tick (docs/monitoring.md#alerts). Its level
follows the oldest waiting customer's wait: ``ok`` below the warning threshold,
``warning`` from it, ``breach`` from the target. Below the warning, the level is
``predicted`` while some waiting customer's wait so far plus their predicted wait from now
reaches ``raise_ratio`` × the target; it holds until that falls below ``clear_ratio`` × the
target (hysteresis, so that one customer hovering at the line does not flap it). Each
change of level is one ``queue:alert`` to the engineers' consoles ("clear" when it falls
back to ok) and one call to the observer, which may forward it to a webhook. Nothing is
sent while the level holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .models import Session, iso
from .observer import DeskObserver

OK = "ok"
PREDICTED = "predicted"
WARNING = "warning"
BREACH = "breach"
CLEAR = "clear"


class QueueAlerts:
    def __init__(self, warning: float, target: float, observer: DeskObserver, *,
                 raise_ratio: float = 0.8, clear_ratio: float = 0.6) -> None:
        self.warning = warning
        self.target = target
        self.observer = observer
        self.raise_ratio = raise_ratio
        self.clear_ratio = clear_ratio
        self.predicting = False  # the predictive signal, whatever the level shows
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
        self, now: float, queue: Sequence[Session], engineers_online: int,
        predicted: float | None = None,
    ) -> dict[str, Any] | None:
        """The ``queue:alert`` payload when the level changed, else None. ``queue`` is the
        desk's queue in arrival order: its head has waited longest. ``predicted`` is the
        longest total wait (so far plus predicted) of anyone waiting: None when nobody
        waits, inf when nobody is there to answer them."""
        if predicted is not None and predicted >= self.raise_ratio * self.target:
            self.predicting = True
        elif predicted is None or predicted < self.clear_ratio * self.target:
            self.predicting = False
        oldest_wait = max(0.0, now - queue[0].created_at) if queue else None
        level = self.level_for(oldest_wait)
        if level == OK and self.predicting:
            level = PREDICTED
        if level == self.level:
            return None
        self.level = level
        self.since = None if level == OK else now
        threshold = {BREACH: self.target, WARNING: self.warning}.get(
            level, self.raise_ratio * self.target
        )
        alert: dict[str, Any] = {
            "level": CLEAR if level == OK else level,
            "oldest_wait_seconds": round(oldest_wait or 0.0, 1),
            "threshold_seconds": threshold,
            "warning_seconds": self.warning,
            "target_seconds": self.target,
            "predicted_wait_seconds": (
                round(predicted) if predicted is not None and math.isfinite(predicted) else None
            ),
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
