"""The desk's metrics have the right values after chats with known waits
(docs/monitoring.md#metrics)."""

from __future__ import annotations

from chatd.core.models import Role
from chatd.metrics import WAIT_BUCKETS, Metrics
from tests.core.helpers import Floor, customer, offers

BOUNDS = [*(str(float(b)) for b in WAIT_BUCKETS), "+Inf"]


def value(metrics: Metrics, name: str, **labels: str) -> float:
    v = metrics.registry.get_sample_value(name, labels)
    assert v is not None, f"no sample {name}{labels}"
    return v


def buckets(metrics: Metrics, name: str) -> dict[str, float]:
    return {le: value(metrics, f"{name}_bucket", le=le) for le in BOUNDS}


def cumulative(*waits: float) -> dict[str, float]:
    return {
        le: float(sum(1 for w in waits if le == "+Inf" or w <= float(le))) for le in BOUNDS
    }


async def test_each_answered_chat_is_observed_once_with_its_wait(
    floor: Floor, metrics: Metrics
) -> None:
    alex = await floor.engineer("alex", available=False)
    ids = []
    for name, gap in (("ann", 0), ("bob", 190), ("cat", 50), ("dan", 50)):
        floor.clock.advance(gap)
        ids += await floor.queue(customer(name))
    floor.clock.advance(10)  # t = 300: Ann has waited 300 s, Dan 10 s
    fx = await floor.available(alex, capacity=5)
    assert offers(fx, alex) == ids
    for sid in ids:
        await floor.desk.accept(alex, sid)

    assert buckets(metrics, "chatd_queue_wait_seconds") == cumulative(300, 110, 60, 10)
    assert value(metrics, "chatd_queue_wait_seconds_count") == 4
    assert value(metrics, "chatd_queue_wait_seconds_sum") == 300 + 110 + 60 + 10
    assert value(metrics, "chatd_sessions_total", outcome="answered") == 4
    assert value(metrics, "chatd_sessions_requested_total") == 4
    assert value(metrics, "chatd_offers_total", result="accepted") == 4


async def test_a_chat_back_in_the_queue_is_not_answered_twice(
    floor: Floor, metrics: Metrics
) -> None:
    alex = await floor.engineer("alex")
    sid = await floor.assigned(alex, customer("ann"))  # answered at once: wait 0
    await floor.desk.engineer_disconnected(alex.id)
    await floor.later(61)  # past the grace period: Ann is back at the head of the queue
    bea = await floor.engineer("bea")
    floor.clock.advance(5)
    await floor.desk.accept(bea, sid)

    assert value(metrics, "chatd_queue_wait_seconds_count") == 1
    assert value(metrics, "chatd_queue_wait_seconds_bucket", le="5.0") == 1
    assert value(metrics, "chatd_sessions_total", outcome="answered") == 1
    assert value(metrics, "chatd_offers_total", result="accepted") == 2


async def test_abandons_and_cancels_are_counted_with_their_wait(
    floor: Floor, metrics: Metrics
) -> None:
    alex = await floor.engineer("alex", available=False)
    [gone, leaving] = await floor.queue(customer("ann"), customer("bob"))
    floor.desk.customer_disconnected(gone)
    floor.clock.advance(20)
    await floor.desk.end(customer("bob"), leaving)  # cancelled after 20 s
    await floor.later(39)
    assert value(metrics, "chatd_sessions_total", outcome="abandoned") == 0
    await floor.later(1)  # the 60 s grace has passed: Ann has abandoned after 60 s

    await floor.available(alex)
    answered = await floor.assigned(alex, customer("cat"))
    await floor.desk.end(alex, answered)

    assert value(metrics, "chatd_sessions_total", outcome="abandoned") == 1
    assert value(metrics, "chatd_sessions_total", outcome="cancelled") == 1
    assert value(metrics, "chatd_sessions_total", outcome="ended") == 1
    assert buckets(metrics, "chatd_abandon_wait_seconds") == cumulative(60, 20)
    assert value(metrics, "chatd_abandon_wait_seconds_sum") == 80
    # Only the answered chat is in the wait histogram.
    assert value(metrics, "chatd_queue_wait_seconds_count") == 1


async def test_offers_are_counted_by_how_they_ended(floor: Floor, metrics: Metrics) -> None:
    alex = await floor.engineer("alex", capacity=1)
    bea = await floor.engineer("bea", capacity=1, available=False)
    [sid] = await floor.queue(customer("ann"))
    await floor.desk.decline(alex, sid)  # ...and it comes straight back to Alex
    await floor.later(31)  # Alex lets it expire: he is set away
    await floor.available(bea)  # offered to Bea
    await floor.away(bea)  # withdrawn: Bea went away
    await floor.available(bea)
    await floor.desk.accept(bea, sid)

    assert value(metrics, "chatd_offers_total", result="declined") == 1
    assert value(metrics, "chatd_offers_total", result="expired") == 1
    assert value(metrics, "chatd_offers_total", result="withdrawn") == 1
    assert value(metrics, "chatd_offers_total", result="accepted") == 1


async def test_messages_are_counted_by_the_senders_role(floor: Floor, metrics: Metrics) -> None:
    alex = await floor.engineer("alex")
    lee = await floor.engineer("lee", role=Role.LEAD, available=False)
    ann = customer("ann")
    session, _ = await floor.request(ann, message="It crashes on start")
    sid = session["id"]
    await floor.desk.accept(alex, sid)
    await floor.desk.send_message(ann, sid, "c1", "Here is more")
    await floor.desk.send_message(ann, sid, "c1", "Here is more")  # a retry: stored once
    await floor.desk.send_message(alex, sid, "e1", "Looking")
    await floor.desk.send_message(lee, sid, "l1", "Joining")

    # The first message came with the request; it is stored by create_session.
    assert value(metrics, "chatd_messages_total", role="customer") == 1
    assert value(metrics, "chatd_messages_total", role="engineer") == 1
    assert value(metrics, "chatd_messages_total", role="lead") == 1


async def test_live_gauges_are_read_from_the_desk_when_scraped(
    floor: Floor, metrics: Metrics
) -> None:
    alex = await floor.engineer("alex", capacity=1)
    await floor.engineer("bea", capacity=2, available=False)
    await floor.engineer("cy", capacity=4, connected=False)
    await floor.assigned(alex, customer("ann"))
    await floor.queue(customer("bob"))
    floor.clock.advance(42)
    await floor.queue(customer("cat"))
    floor.clock.advance(8)

    assert value(metrics, "chatd_queue_length") == 2
    assert value(metrics, "chatd_queue_oldest_wait_seconds") == 50
    assert value(metrics, "chatd_sessions_active") == 1
    assert value(metrics, "chatd_engineers", status="available") == 1
    assert value(metrics, "chatd_engineers", status="away") == 1
    assert value(metrics, "chatd_engineer_capacity") == 1
    assert value(metrics, "chatd_queue_wait_target_seconds") == 300
    assert value(metrics, "chatd_queue_wait_warning_seconds") == 240

    await floor.desk.engineer_disconnected(alex.id)
    floor.clock.advance(10)
    assert value(metrics, "chatd_queue_oldest_wait_seconds") == 60
    assert value(metrics, "chatd_engineers", status="available") == 0


async def test_no_metric_has_a_per_customer_or_per_session_label(
    floor: Floor, metrics: Metrics
) -> None:
    alex = await floor.engineer("alex")
    sid = await floor.assigned(alex, customer("ann"))
    await floor.desk.send_message(alex, sid, "e1", "Hello")
    await floor.desk.end(alex, sid)

    labels = {
        key
        for family in metrics.registry.collect()
        for sample in family.samples
        for key in sample.labels
    }
    assert labels <= {"outcome", "result", "role", "status", "namespace", "backend", "le",
                      "level", "implementation", "major", "minor", "patchlevel", "version"}
    values = {v for family in metrics.registry.collect() for s in family.samples
              for v in s.labels.values()}
    assert not values & {sid, "cust-ann", alex.id}


async def test_the_staffing_forecast_is_exported_once_it_is_known(
    floor: Floor, metrics: Metrics
) -> None:
    assert metrics.registry.get_sample_value(
        "chatd_forecast_slots_needed", {"horizon": "now"}) is None
    for i in range(30):  # a customer every 30 s: 120 an hour
        await floor.queue(customer(f"c{i}"))
        floor.clock.advance(30)

    forecast = floor.desk.forecast()
    assert forecast["now"]["slots"] is not None
    assert value(metrics, "chatd_forecast_slots_needed", horizon="now") == forecast["now"]["slots"]
    assert value(metrics, "chatd_forecast_engineers_needed", horizon="now") == (
        forecast["now"]["engineers"])
    assert value(metrics, "chatd_forecast_arrivals_per_hour", horizon="now") == (
        forecast["now"]["arrivals_per_hour"])
    assert value(metrics, "chatd_forecast_slots_needed", horizon="next_hour") == (
        forecast["next_hour"]["slots"])
