"""A desk over a real SQLite store and a fake clock, restored as the app starts it."""

from __future__ import annotations

import pytest

from chatd.core.clock import FakeClock
from chatd.core.desk import Desk
from chatd.store.sqlite import SQLiteStore
from tests.core.helpers import SETTINGS, Floor


@pytest.fixture
async def desk(store: SQLiteStore, clock: FakeClock) -> Desk:
    d = Desk(store, clock, SETTINGS)
    assert await d.restore() == []
    return d


@pytest.fixture
def floor(desk: Desk, store: SQLiteStore, clock: FakeClock) -> Floor:
    return Floor(desk, store, clock)
