"""The staffing forecast (docs/waits.md#staffing-forecast): slots needed for the objective,
from the arrivals the desk sees and the handle times and patience it observes."""

from __future__ import annotations

from chatd.core import staffing
from tests.core.helpers import Floor, customer


async def test_no_forecast_before_the_desk_has_seen_arrivals(floor: Floor) -> None:
    f = floor.desk.forecast()
    assert f["now"] == {"arrivals_per_hour": None, "slots": None, "engineers": None,
                        "abandon_share": None}
    assert f["next_hour"]["slots"] is None
    assert f["objective"] == 0.9 and f["target_seconds"] == 300
    assert f["model"] == "erlang_c" and f["patience_seconds"] is None


async def test_steady_arrivals_give_the_erlang_staffing(floor: Floor) -> None:
    # Two customers a minute for 40 minutes, each leaving the queue after 20 s unanswered.
    for i in range(80):
        c = customer(f"c{i}")
        session, _ = await floor.request(c)
        floor.clock.advance(20)
        await floor.desk.end(c, session["id"])
        floor.clock.advance(10)
    await floor.engineer("lee", available=False)

    f = floor.desk.forecast()
    per_hour = f["now"]["arrivals_per_hour"]
    assert 100 <= per_hour <= 140
    # Every customer left after 20 s: patience is short, Erlang A staffs with it.
    assert f["model"] == "erlang_a" and 15 <= f["patience_seconds"] <= 25
    handle = f["handle_seconds"]  # no chat answered yet: the configured default
    assert handle == 600
    needed = staffing.slots_needed(per_hour / 3600, 1 / handle, 300, 0.9, 1 / f["patience_seconds"])
    assert abs(f["now"]["slots"] - needed) <= 1
    without = staffing.slots_needed(per_hour / 3600, 1 / handle, 300, 0.9)
    assert f["now"]["slots"] < without  # patience makes fewer slots meet the objective
    assert f["now"]["engineers"] == -(-f["now"]["slots"] // 3)
    # Customers this impatient mostly leave whatever the desk: the forecast says how many.
    assert 0 < f["now"]["abandon_share"] < 1
    assert f["next_hour"]["slots"] is not None
    assert f["slots_online"] == 0 and f["engineers_online"] == 1
