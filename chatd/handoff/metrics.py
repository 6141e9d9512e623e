"""Counters of handoff deliveries, kept as plain attributes for the /metrics layer:
``chatd_handoffs_total{backend,result}`` and ``chatd_handoff_pending``."""

from __future__ import annotations

from collections import Counter
from typing import Protocol

# Outcomes of one attempt: delivered; failed but tried again later; dead-lettered.
RESULTS = ("delivered", "retry", "failed")


class HandoffListener(Protocol):
    def delivery(self, backend: str, result: str) -> None: ...

    def pending(self, count: int) -> None: ...


class HandoffMetrics:
    def __init__(self) -> None:
        self.deliveries: Counter[tuple[str, str]] = Counter()
        self.pending = 0
        self._listeners: list[HandoffListener] = []

    def subscribe(self, listener: HandoffListener) -> None:
        self._listeners.append(listener)

    def record(self, backend: str, result: str) -> None:
        self.deliveries[(backend, result)] += 1
        for listener in self._listeners:
            listener.delivery(backend, result)

    def set_pending(self, count: int) -> None:
        self.pending = count
        for listener in self._listeners:
            listener.pending(count)

    def total(self, backend: str, result: str) -> int:
        return self.deliveries[(backend, result)]
