"""The service level and the desk's numbers, from stored sessions
(docs/monitoring.md#service-level)."""

from __future__ import annotations

from pathlib import Path

from chatd.core.clock import FakeClock
from chatd.core.desk import Desk
from chatd.core.stats import SessionOutcome, per_engineer, percentile, service_window
from chatd.store.sqlite import SQLiteStore
from tests.core.helpers import SETTINGS, Floor, customer

NOW = 1_800_000_000.0
HOUR = 3600.0


def answered(wait: float, at: float, ended_after: float | None = None,
             engineer: str = "eng-alex") -> SessionOutcome:
    """A chat answered at ``at`` (seconds before NOW) after ``wait`` seconds."""
    first = NOW - at
    return SessionOutcome(
        created_at=first - wait,
        first_assigned_at=first,
        ended_at=None if ended_after is None else first + ended_after,
        state="active" if ended_after is None else "ended",
        engineer_id=engineer,
        engineer_name=engineer.removeprefix("eng-").title(),
    )


def abandoned(wait: float, at: float) -> SessionOutcome:
    left = NOW - at
    return SessionOutcome(created_at=left - wait, first_assigned_at=None, ended_at=left,
                          state="abandoned")


def test_service_level_counts_late_abandons_as_missed_and_ignores_short_ones() -> None:
    outcomes = [
        answered(10, at=60),
        answered(299, at=120),
        answered(300, at=180),  # exactly on target: within
        answered(301, at=240),  # missed
        abandoned(29, at=300),  # short: not counted either way
        abandoned(30, at=310),  # 30 s is still short
        abandoned(31, at=320),  # missed
        abandoned(400, at=330),  # missed
    ]
    w = service_window(outcomes, NOW, HOUR, target=300)

    assert w["answered"] == 4
    assert w["answered_within_target"] == 3
    assert w["abandoned"] == 4 and w["abandoned_short"] == 2
    # 3 within target of 4 answered + 2 abandoned after 30 s
    assert w["service_level"] == round(3 / 6, 4)
    assert w["abandon_rate"] == round(4 / 8, 4)
    assert w["average_wait_seconds"] == round((10 + 299 + 300 + 301) / 4, 1)
    assert w["p90_wait_seconds"] == 301
    assert w["max_wait_seconds"] == 301


def test_windows_count_sessions_where_their_outcome_happened() -> None:
    outcomes = [
        answered(400, at=30 * 60),  # in the last hour (its request was earlier)
        answered(10, at=2 * HOUR),  # only in the day
        abandoned(100, at=3 * HOUR),  # only in the day
        answered(10, at=25 * HOUR),  # in neither
    ]
    hour = service_window(outcomes, NOW, HOUR, target=300)
    day = service_window(outcomes, NOW, 24 * HOUR, target=300)
    assert (hour["answered"], hour["abandoned"], hour["service_level"]) == (1, 0, 0.0)
    assert (day["answered"], day["abandoned"]) == (2, 1)
    assert day["service_level"] == round(1 / 3, 4)


def test_an_empty_window_has_no_service_level_rather_than_a_perfect_one() -> None:
    w = service_window([abandoned(5, at=60)], NOW, HOUR, target=300)
    assert w["service_level"] is None
    assert w["average_wait_seconds"] is None and w["p90_wait_seconds"] is None
    assert w["abandon_rate"] == 1.0


def test_handle_time_runs_from_the_answer_to_the_end_of_ended_chats() -> None:
    outcomes = [
        answered(10, at=1000, ended_after=600),
        answered(10, at=900, ended_after=300, engineer="eng-bea"),
        answered(10, at=800, ended_after=None),  # still in progress: no handle time yet
        answered(10, at=700, ended_after=200),
    ]
    w = service_window(outcomes, NOW, HOUR, target=300)
    assert w["ended"] == 3 and w["average_handle_seconds"] == round(1100 / 3, 1)
    load = per_engineer(outcomes, NOW, HOUR)
    assert load == {
        "eng-alex": {"name": "Alex", "sessions_handled": 2, "average_handle_seconds": 400.0},
        "eng-bea": {"name": "Bea", "sessions_handled": 1, "average_handle_seconds": 300.0},
    }


def test_p90_is_the_nearest_rank() -> None:
    assert percentile([], 90) is None
    assert percentile([5.0], 90) == 5
    assert percentile([float(v) for v in range(1, 11)], 90) == 9
    assert percentile([float(v) for v in range(1, 12)], 90) == 10
    assert percentile([float(v) for v in range(100, 0, -1)], 90) == 90


async def test_outcomes_come_from_the_database_and_survive_a_restart(
    tmp_path: Path, clock: FakeClock
) -> None:
    store = SQLiteStore(tmp_path / "stats.db", synchronous="normal")
    await store.open()
    desk = Desk(store, clock, SETTINGS)
    await desk.restore()
    floor = Floor(desk, store, clock)
    alex = await floor.engineer("alex", available=False)
    start = clock.now()
    [ann, _bob, cat] = await floor.queue(customer("ann"), customer("bob"), customer("cat"))
    clock.advance(100)
    await desk.end(customer("cat"), cat)  # cancelled after 100 s: missed
    clock.advance(250)  # Ann and Bob have waited 350 s
    await floor.available(alex)
    await desk.accept(alex, ann)
    clock.advance(120)
    await desk.end(alex, ann)
    await store.close()

    reopened = SQLiteStore(tmp_path / "stats.db", synchronous="normal")
    await reopened.open()
    try:
        rows = await reopened.session_outcomes(start - 1)
    finally:
        await reopened.close()

    # Bob is still on offer (not answered, not closed): not an outcome yet.
    assert sorted((r.state, r.wait, r.handle_time, r.engineer_name) for r in rows) == [
        ("abandoned", 100.0, None, None),
        ("ended", 350.0, 120.0, "Alex"),
    ]
    w = service_window(rows, clock.now(), HOUR, target=300)
    assert (w["answered"], w["answered_within_target"], w["abandoned"]) == (1, 0, 1)
    assert w["service_level"] == 0.0


async def test_offline_tickets_are_not_chats(store: SQLiteStore, clock: FakeClock) -> None:
    from chatd.core.desk import hash_token
    from chatd.core.models import Session, SessionState

    c = customer("ann")
    ticket = Session(id="3f1e7f4a-0000-4000-8000-000000000001", state=SessionState.ENDED,
                     topic="Printer on fire", severity=2, customer=c, created_at=clock.now(),
                     arrival_seq=0, ended_at=clock.now())
    await store.create_offline_ticket(ticket, hash_token("x"), [], [])
    assert await store.session_outcomes(clock.now() - HOUR) == []
