"""/metrics with several processes on one desk (docs/monitoring.md#several-processes): only
the process that runs the desk exports the desk's families, every process exports its own,
and ``chatd_desk_leader`` says which one leads. Real chatd apps over HTTP; the second one on
the same PostgreSQL database stands by, as a second ``chatd serve`` does."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chatd.metrics import DESK_FAMILIES
from chatd.web import keys
from tests.conftest import Chatd
from tests.e2e.helpers import call, guest
from tests.monitoring.helpers import http, sample, scrape

LEASE = 2.0  # a standby tries to take the lease every half second
REDIS = "redis://127.0.0.1:6379/0"
# What every process exports of its own, leading or not.
PROCESS_FAMILIES = {
    "chatd_desk_leader", "chatd_connected_clients", "chatd_event_loop_lag_seconds",
    "chatd_uploads", "chatd_upload_bytes", "chatd_store_commits", "chatd_store_writes",
    "process_resident_memory_bytes", "python_info",
}


async def families(chatd: Chatd) -> set[str]:
    """The names of the metric families on /metrics (counters without ``_total``)."""
    status, text, _ = await http(chatd, "GET", "/metrics")
    assert status == 200, text
    return {f.name for f in text_string_to_metric_families(text)}


async def until_leading(chatd: Chatd, limit: float) -> None:
    started = time.monotonic()
    while not chatd.app[keys.ROLE].leading:
        assert time.monotonic() - started < limit, "the standby did not take the desk"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("db_backend", ["postgres"])
async def test_only_the_process_running_the_desk_exports_the_desk(chatd_factory: Any) -> None:
    first = await chatd_factory(desk_lease_seconds=LEASE)
    second = await chatd_factory(desk_lease_seconds=LEASE)  # the lease is the first's
    assert first.app[keys.ROLE].leading
    assert not second.app[keys.ROLE].leading
    cust, _ = await guest(first)
    r = await call(cust, "/customer", "chat:request", {"topic": "Printer on fire"})
    assert r["ok"], r

    led = await scrape(first)
    assert sample(led, "chatd_desk_leader") == 1
    assert sample(led, "chatd_queue_length") == 1
    assert sample(led, "chatd_sessions_requested_total") == 1
    assert sample(led, "chatd_connected_clients", namespace="customer") == 1
    assert DESK_FAMILIES | PROCESS_FAMILIES <= await families(first)

    # The standby: its own process metrics and chatd_desk_leader 0, nothing of the desk
    # (neither the empty desk it holds nor zero counters that a sum would add).
    stood_by = await scrape(second)
    assert sample(stood_by, "chatd_desk_leader") == 0
    assert sample(stood_by, "chatd_connected_clients", namespace="customer") == 0
    assert sample(stood_by, "chatd_event_loop_lag_seconds") >= 0
    assert sample(stood_by, "chatd_uploads_total", result="stored") == 0
    assert sample(stood_by, "process_resident_memory_bytes") > 0
    names = await families(second)
    assert PROCESS_FAMILIES <= names
    assert names & DESK_FAMILIES == set()
    assert not any(name.startswith(("chatd_queue", "chatd_sessions", "chatd_engineer",
                                    "chatd_handoff", "chatd_forecast", "chatd_offers",
                                    "chatd_messages")) for name, _ in stood_by)

    # The first stops and gives the lease up: the second runs the desk, restored from the
    # database (the customer is still waiting, in the grace period), and exports it.
    await cust.disconnect()
    await first.server.close()
    await until_leading(second, limit=LEASE + 8)
    took_over = await scrape(second)
    assert sample(took_over, "chatd_desk_leader") == 1
    assert sample(took_over, "chatd_queue_length") == 1
    assert sample(took_over, "chatd_queue_wait_target_seconds") == 300
    assert DESK_FAMILIES | PROCESS_FAMILIES <= await families(second)


async def test_a_single_process_leads_and_exports_everything(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    m = await scrape(chatd)
    assert sample(m, "chatd_desk_leader") == 1
    assert sample(m, "chatd_queue_length") == 0
    assert DESK_FAMILIES | PROCESS_FAMILIES <= await families(chatd)


@pytest.mark.parametrize("db_backend", ["postgres"])
async def test_a_process_serving_for_anothers_desk_exports_its_own_clients(
    chatd_factory: Any,
) -> None:
    # A cluster: the second process serves clients too, through the one that runs the desk
    # (Redis carries the calls; the channels are the test database's own).
    leader = await chatd_factory(desk_lease_seconds=LEASE, redis_url=REDIS)
    follower = await chatd_factory(desk_lease_seconds=LEASE, redis_url=REDIS)
    assert not follower.app[keys.ROLE].leading
    cust, _ = await guest(follower)
    deadline = time.monotonic() + 10
    while True:  # until the follower has heard from the process that runs the desk
        r = await call(cust, "/customer", "chat:request", {"topic": "Printer on fire"})
        if r["ok"] or r["error"]["code"] != "unavailable" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert r["ok"], r

    here = await scrape(follower)
    assert sample(here, "chatd_desk_leader") == 0
    assert sample(here, "chatd_connected_clients", namespace="customer") == 1
    assert await families(follower) & DESK_FAMILIES == set()
    there = await scrape(leader)
    assert sample(there, "chatd_desk_leader") == 1
    assert sample(there, "chatd_connected_clients", namespace="customer") == 0
    # The chat asked for through the follower is on the desk, counted once, by the leader.
    assert sample(there, "chatd_queue_length") == 1
    assert sample(there, "chatd_sessions_requested_total") == 1
