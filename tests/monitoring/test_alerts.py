"""Engineers are warned as the oldest wait passes the warning threshold and the target,
and told when the queue has recovered (docs/monitoring.md#on-the-consoles-queuealert)."""

from __future__ import annotations

from typing import Any

from chatd.core.clock import FakeClock
from chatd.core.desk import Desk
from chatd.core.observer import NullObserver
from chatd.metrics import Metrics
from chatd.store.sqlite import SQLiteStore
from tests.core.helpers import OBSERVER, SETTINGS, Floor, customer, to_engineers_room


class Recorder(NullObserver):
    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []

    def queue_alert(self, alert: dict[str, Any]) -> None:
        self.alerts.append(alert)


def levels(fx: Any) -> list[str]:
    return [a["level"] for a in to_engineers_room(fx, "queue:alert")]


async def test_alert_at_the_warning_threshold_at_the_target_and_when_clear(
    floor: Floor, metrics: Metrics
) -> None:
    alex = await floor.engineer("alex", available=False)
    [ann] = await floor.queue(customer("ann"))
    # Nobody is there to answer Ann: she is heading past the target from the start.
    fx = await floor.later(1)
    [predicted] = to_engineers_room(fx, "queue:alert")
    assert predicted["level"] == "predicted" and predicted["predicted_wait_seconds"] is None
    assert levels(await floor.later(238)) == []

    fx = await floor.later(1)
    [warning] = to_engineers_room(fx, "queue:alert")
    assert warning["level"] == "warning"
    assert warning["oldest_wait_seconds"] == 240
    assert warning["threshold_seconds"] == 240
    assert warning["target_seconds"] == 300
    assert warning["queue_length"] == 1
    assert warning["engineers_online"] == 1
    assert floor.desk.snapshot(OBSERVER)["alert"] == warning

    assert levels(await floor.later(30)) == []  # nothing new while the level holds
    fx = await floor.later(30)
    [breach] = to_engineers_room(fx, "queue:alert")
    assert breach["level"] == "breach"
    assert breach["oldest_wait_seconds"] == 300 and breach["threshold_seconds"] == 300
    assert levels(await floor.later(100)) == []

    await floor.available(alex)
    await floor.desk.accept(alex, ann)
    fx = await floor.later(1)
    [clear] = to_engineers_room(fx, "queue:alert")
    assert clear["level"] == "clear" and clear["queue_length"] == 0
    assert floor.desk.snapshot(OBSERVER)["alert"] is None
    assert levels(await floor.later(600)) == []
    assert metrics.registry.get_sample_value("chatd_queue_alerts_total",
                                             {"level": "warning"}) == 1
    assert metrics.registry.get_sample_value("chatd_queue_alerts_total",
                                             {"level": "clear"}) == 1


async def test_answering_the_oldest_steps_down_to_the_next_customers_wait(
    floor: Floor,
) -> None:
    alex = await floor.engineer("alex", available=False)
    [ann] = await floor.queue(customer("ann"))
    floor.clock.advance(50)
    await floor.queue(customer("bob"))
    assert levels(await floor.later(260)) == ["breach"]  # Ann 310 s, Bob 260 s

    await floor.available(alex, capacity=1)
    await floor.desk.accept(alex, ann)
    assert levels(await floor.desk.tick()) == ["warning"]  # Bob, 260 s, is now the oldest


async def test_a_customer_leaving_clears_the_alert(floor: Floor) -> None:
    [ann] = await floor.queue(customer("ann"))
    assert levels(await floor.later(250)) == ["warning"]
    await floor.desk.end(customer("ann"), ann)
    assert levels(await floor.desk.tick()) == ["clear"]


async def test_alerts_reach_the_observer_once_per_transition(
    store: SQLiteStore, clock: FakeClock
) -> None:
    recorder = Recorder()
    desk = Desk(store, clock, SETTINGS, observer=recorder)
    await desk.restore()
    floor = Floor(desk, store, clock)
    await floor.queue(customer("ann"))
    for _ in range(40):
        await floor.later(10)  # 400 s in steps: warning at 240, breach at 300
    # Predicted first: no engineer is there to answer.
    assert [a["level"] for a in recorder.alerts] == ["predicted", "warning", "breach"]


async def test_waits_carried_over_a_restart_alert_on_the_first_tick(
    store: SQLiteStore, clock: FakeClock
) -> None:
    desk = Desk(store, clock, SETTINGS)
    await desk.restore()
    await Floor(desk, store, clock).queue(customer("ann"))
    clock.advance(280)

    again = Desk(store, clock, SETTINGS)
    await again.restore()
    fx = await again.tick()
    [alert] = to_engineers_room(fx, "queue:alert")
    assert alert["level"] == "warning" and alert["oldest_wait_seconds"] == 280


async def test_a_predicted_breach_alerts_before_anyone_has_waited_long(
    floor: Floor, metrics: Metrics
) -> None:
    alex = await floor.engineer("alex", capacity=1)
    ann = await floor.assigned(alex, customer("ann"))
    # Bob waits for Ann's chat, which has only begun: minutes, past 0.8 x the 300 s target.
    [bob] = await floor.queue(customer("bob"))
    fx = await floor.later(1)
    [alert] = to_engineers_room(fx, "queue:alert")
    assert alert["level"] == "predicted"
    assert alert["oldest_wait_seconds"] == 1
    assert alert["predicted_wait_seconds"] >= 240
    assert alert["threshold_seconds"] == 240
    assert floor.desk.snapshot(OBSERVER)["alert"] == alert

    # The elapsed-time warning still comes, and takes over.
    assert levels(await floor.later(200)) == []
    assert levels(await floor.later(40)) == ["warning"]

    # Ann's chat ends, Bob is offered and answered: the queue is clear, and so is the
    # prediction.
    await floor.desk.end(alex, ann)
    await floor.desk.accept(alex, bob)
    assert levels(await floor.later(1)) == ["clear"]
    assert not floor.desk.alerts.predicting
    assert metrics.registry.get_sample_value("chatd_queue_alerts_total",
                                             {"level": "predicted"}) == 1


async def test_the_predictive_alert_holds_until_the_prediction_falls_well_below() -> None:
    from chatd.core.alerts import QueueAlerts

    alerts = QueueAlerts(240, 300, NullObserver())
    q = [customer_session()]
    now = q[0].created_at + 10
    assert alerts.check(now, q, 1, predicted=230.0) is None  # under 0.8 x 300
    raised = alerts.check(now, q, 1, predicted=250.0)
    assert raised is not None and raised["level"] == "predicted"
    assert alerts.check(now, q, 1, predicted=200.0) is None  # between 0.6 and 0.8: holds
    cleared = alerts.check(now, q, 1, predicted=170.0)
    assert cleared is not None and cleared["level"] == "clear"


def customer_session() -> Any:
    from chatd.core.models import Session, SessionState

    return Session("s1", SessionState.WAITING, "topic", 3, customer("ann"), 1_800_000_000.0, 1)
