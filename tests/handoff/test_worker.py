"""Retry policy and the outbox worker, with a fake clock, a chosen random source and a
scripted backend over the real SQLite store."""

from __future__ import annotations

import asyncio
import email.utils
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chatd.core.clock import FakeClock
from chatd.core.models import (
    SYSTEM_SENDER,
    Customer,
    EndReason,
    MessageKind,
    NewMessage,
    Session,
    SessionState,
    Tier,
)
from chatd.core.ports import Store
from chatd.core.transcript import Handoff
from chatd.handoff.base import Delivered, Job, PermanentError, RetryableError
from chatd.handoff.policy import RetryPolicy, parse_retry_after
from chatd.handoff.service import HandoffService
from chatd.handoff.worker import HandoffWorker
from tests.conftest import make_settings

CUSTOMER = Customer("cust-1", "Carol", "carol@client.example", "Client Corp", Tier.PREMIER)


def handoff(created: float = 1000.0, attempts: int = 1, requeued: float | None = None) -> Handoff:
    return Handoff(id="h", session_id="s", backend="x", state="pending", attempts=attempts,
                   next_attempt_at=created, created_at=created, updated_at=created,
                   requeued_at=requeued)


def test_full_jitter_is_uniform_up_to_the_exponential_ceiling() -> None:
    p = RetryPolicy(base=10, cap=100)
    assert [p.backoff(n, lambda: 1.0) for n in (1, 2, 3, 4, 5, 50)] == [10, 20, 40, 80, 100, 100]
    assert p.backoff(3, lambda: 0.0) == 0
    assert p.backoff(3, lambda: 0.25) == 10


def test_retry_after_is_a_lower_bound_and_the_horizon_gets_one_last_attempt() -> None:
    p = RetryPolicy(base=10, cap=100, horizon=1000)
    h = handoff(created=1000.0, attempts=2)
    assert p.next_attempt(h, 1010.0, lambda: 0.0, retry_after=50) == 1060.0
    assert p.next_attempt(h, 1010.0, lambda: 1.0, retry_after=5) == 1030.0
    assert p.next_attempt(h, 1990.0, lambda: 1.0) == 2000.0  # the last try, at the horizon
    assert p.next_attempt(h, 2000.0, lambda: 1.0) is None  # then dead-lettered
    # An operator's retry starts a new horizon.
    assert p.next_attempt(handoff(1000.0, 2, requeued=5000.0), 5010.0, lambda: 0.0) == 5010.0


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == 30
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


class Scripted:
    """A backend answering from a script: a Delivered, an exception, or "hang"."""

    def __init__(self, name: str, *script: Any) -> None:
        self.name = name
        self.script = list(script)
        self.jobs: list[Job] = []

    async def deliver(self, job: Job) -> Delivered:
        self.jobs.append(job)
        step = self.script.pop(0) if self.script else Delivered("ok")
        if step == "hang":
            await asyncio.sleep(3600)
        if isinstance(step, BaseException):
            raise step
        assert isinstance(step, Delivered)
        return step

    async def close(self) -> None:
        return None


async def ended_session(store: Store, clock: FakeClock, backends: tuple[str, ...],
                        sid: str = "5d0b3c0e-8d0a-4c52-9a57-2c1b0b1b0a01") -> str:
    s = Session(id=sid, state=SessionState.WAITING, topic="Export fails", severity=1,
                customer=CUSTOMER, created_at=clock.now(), arrival_seq=1)
    await store.create_session(s, "hash", None)
    s.state, s.ended_at, s.ended_by = SessionState.ABANDONED, clock.now(), "customer"
    s.end_reason = EndReason.CANCELLED
    await store.end_session(
        s, NewMessage(id=sid[:8] + "-end", session_id=sid, ts=clock.now(), sender=SYSTEM_SENDER,
                      kind=MessageKind.SYSTEM, body="Carol left the queue"), backends)
    return sid


def make_worker(store: Store, clock: FakeClock, *backends: Scripted,
                rand: Callable[[], float] = lambda: 0.5, **policy: float) -> HandoffWorker:
    service = HandoffService(make_settings_for(store), store, clock,
                             backends={b.name: b for b in backends})
    return HandoffWorker(store, service.backends, clock, service.transcript,
                         policy=RetryPolicy(**{"base": 10, "cap": 100, "horizon": 1000,
                                               "timeout": 5, **policy}),
                         rand=rand)


def make_settings_for(store: Store) -> Any:
    # The scripted backends write no files: the folder is never made.
    return make_settings(Path(tempfile.gettempdir()) / "chatd-worker-tests-unused")


async def only_row(store: Store, sid: str) -> Handoff:
    rows = await store.session_handoffs(sid)
    assert len(rows) == 1
    return rows[0]


async def test_a_retryable_answer_waits_for_retry_after(store: Store,
                                                        clock: FakeClock) -> None:
    sid = await ended_session(store, clock, ("x",))
    backend = Scripted("x", RetryableError("answered 503", status=503, response="busy",
                                           retry_after=120))
    worker = make_worker(store, clock, backend, rand=lambda: 0.0)
    assert await worker.run_once() == 1
    row = await only_row(store, sid)
    assert (row.state, row.attempts, row.last_status, row.last_response) == (
        "pending", 1, 503, "busy")
    assert row.next_attempt_at == clock.now() + 120 and row.claimed_at is None
    assert await worker.run_once() == 0  # not due yet
    clock.advance(120)
    assert await worker.run_once() == 1
    row = await only_row(store, sid)
    assert (row.state, row.attempts) == ("delivered", 2)
    assert worker.metrics.total("x", "retry") == 1 and worker.metrics.total("x", "delivered") == 1
    assert worker.metrics.pending == 0
    # Every attempt carried the same idempotency key.
    assert {j.key for j in backend.jobs} == {row.id}


async def test_a_client_error_is_dead_lettered_at_once_with_the_answer(
    store: Store, clock: FakeClock
) -> None:
    sid = await ended_session(store, clock, ("x",))
    worker = make_worker(store, clock, Scripted(
        "x", PermanentError("refused with 422", status=422, response='{"error":"bad queue"}')))
    await worker.run_once()
    row = await only_row(store, sid)
    assert (row.state, row.attempts, row.last_status) == ("failed", 1, 422)
    assert row.last_response == '{"error":"bad queue"}'
    clock.advance(10_000)
    assert await worker.run_once() == 0
    assert worker.metrics.total("x", "failed") == 1


async def test_timeouts_and_surprises_are_retried_until_the_horizon(
    store: Store, clock: FakeClock
) -> None:
    sid = await ended_session(store, clock, ("x",))
    backend = Scripted("x", "hang", ValueError("a bug"), *[RetryableError("down")] * 50)
    worker = make_worker(store, clock, backend, rand=lambda: 1.0, timeout=0.05)
    await worker.run_once()
    row = await only_row(store, sid)
    assert row.state == "pending" and row.last_error == "no answer within 0.05 s"
    clock.advance(10)
    await worker.run_once()
    row = await only_row(store, sid)
    assert row.state == "pending" and "a bug" in (row.last_error or "")
    for _ in range(20):
        clock.advance(100)
        await worker.run_once()
        row = await only_row(store, sid)
        if row.state != "pending":
            break
    assert row.state == "failed" and (row.last_error or "").startswith("gave up after")


async def test_a_delivery_cut_off_by_a_crash_is_retried_with_the_same_key(
    store: Store, clock: FakeClock
) -> None:
    sid = await ended_session(store, clock, ("x",))
    # The crashed process claimed the row and never answered.
    (claimed,) = await store.claim_handoffs(clock.now(), 10, 600, ["x"])
    assert claimed.claimed_at is not None
    # The next process starts after the claim's lease (a database other processes share
    # keeps a claim until then; SQLite's sole process releases it as it starts).
    clock.advance(600)
    backend = Scripted("x")
    worker = make_worker(store, clock, backend)
    await worker.start()
    try:
        await worker.run_once()
    finally:
        await worker.stop()
    row = await only_row(store, sid)
    assert (row.state, row.attempts) == ("delivered", 2)
    assert [j.key for j in backend.jobs] == [claimed.id]


async def test_the_first_ticket_is_kept_on_the_session_and_announced_once(
    store: Store, clock: FakeClock
) -> None:
    sid = await ended_session(store, clock, ("a", "b"))
    announced: list[tuple[str, dict[str, Any]]] = []

    async def on_ticket(session_id: str, ticket: dict[str, Any]) -> None:
        announced.append((session_id, ticket))

    first = {"backend": "a", "id": "A-1", "url": "https://a.example/1"}
    second = {"backend": "b", "id": "B-9", "url": None}
    for backend in (Scripted("a", Delivered("ok", ticket=first)),
                    Scripted("b", Delivered("ok", ticket=second))):
        worker = make_worker(store, clock, backend)
        worker.on_ticket = on_ticket
        assert await worker.run_once() == 1
    session = await store.get_session(sid)
    assert session is not None and session.ticket == first
    assert announced == [(sid, first)]
    rows = {h.backend: h for h in await store.session_handoffs(sid)}
    assert rows["a"].ticket == first and rows["b"].ticket == second


async def test_rows_of_backends_not_configured_wait(store: Store, clock: FakeClock) -> None:
    sid = await ended_session(store, clock, ("gone",))
    worker = make_worker(store, clock, Scripted("x"))
    assert await worker.run_once() == 0
    assert (await only_row(store, sid)).state == "pending"
    assert worker.metrics.pending == 1


@pytest.mark.parametrize("state", ["failed", "pending"])
async def test_an_operator_retry_makes_a_row_due_with_a_fresh_horizon(
    store: Store, clock: FakeClock, state: str
) -> None:
    sid = await ended_session(store, clock, ("x",))
    worker = make_worker(store, clock, Scripted(
        "x", PermanentError("no", status=404) if state == "failed" else RetryableError("down")))
    await worker.run_once()
    clock.advance(5000)
    row = await store.retry_handoff((await only_row(store, sid)).id, clock.now())
    assert row.state == "pending" and row.next_attempt_at == clock.now()
    assert row.requeued_at == clock.now()
    await worker.run_once()
    assert (await only_row(store, sid)).state == "delivered"
