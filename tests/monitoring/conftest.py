"""A desk that reports to a real Prometheus registry, over a real store and a fake clock."""

from __future__ import annotations

import pytest

from chatd.core.clock import FakeClock
from chatd.core.desk import Desk
from chatd.metrics import Metrics
from chatd.store.sqlite import SQLiteStore
from tests.core.helpers import SETTINGS, Floor


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def floor(store: SQLiteStore, clock: FakeClock, metrics: Metrics) -> Floor:
    desk = Desk(store, clock, SETTINGS, observer=metrics)
    assert await desk.restore() == []
    metrics.watch(lambda: desk.live(forecast=True), lambda: {"customer": 0, "engineer": 0},
                  target=SETTINGS.wait_target, warning=SETTINGS.wait_warning)
    return Floor(desk, store, clock)
