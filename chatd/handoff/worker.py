"""The outbox worker inside ``chatd serve``: claims due handoffs and delivers them
(docs/handoff.md#guarantees).

At-least-once delivery with an idempotency key makes it exactly-once in effect: a row is
marked delivered only after its backend said yes, and every attempt of a row carries the
row's id (the webhook-id; RT finds its own ticket by the session id). A row left claimed by
a process that died is due again when its claim's lease ends; on SQLite, which one process
owns, the next start releases it at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..core.clock import Clock
from ..core.ports import OutboxStore
from ..core.transcript import Handoff, Transcript
from ..tasks import cancel_and_wait
from .base import Backend, DeliveryError, Job, PermanentError
from .metrics import HandoffMetrics
from .policy import RetryPolicy

log = logging.getLogger(__name__)

TranscriptLoader = Callable[[str], Awaitable[Transcript]]
TicketCallback = Callable[[str, dict[str, Any]], Awaitable[None]]


class HandoffWorker:
    def __init__(
        self,
        store: OutboxStore,
        backends: Mapping[str, Backend],
        clock: Clock,
        transcripts: TranscriptLoader,
        *,
        policy: RetryPolicy | None = None,
        metrics: HandoffMetrics | None = None,
        rand: Callable[[], float] = random.random,
        on_ticket: TicketCallback | None = None,
        poll_interval: float = 1.0,
        batch: int = 16,
    ) -> None:
        self.store = store
        self.backends = dict(backends)
        self.clock = clock
        self.transcripts = transcripts
        self.policy = policy or RetryPolicy()
        self.metrics = metrics or HandoffMetrics()
        self.rand = rand
        self.on_ticket = on_ticket
        self.poll_interval = poll_interval
        self.batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def lease(self) -> float:
        # Longer than any attempt can run (each is cut at the policy's timeout): a claim
        # outlives its attempt only if its process died or stalled. Then the row is due
        # again when the lease ends, for whichever process claims it next (a stalled one's
        # late answer is harmless: the retry carries the same idempotency key).
        return self.policy.timeout + 15.0

    async def start(self) -> None:
        released = await self.store.release_handoff_claims(self.clock.now())
        if released:
            log.warning("retrying handoffs cut off by the last shutdown",
                        extra={"handoffs": released})
        await self._refresh_pending()
        self._task = asyncio.create_task(self._loop(), name="chatd-handoff-worker")

    async def stop(self) -> None:
        """Stop claiming. An attempt cut off here stays claimed and is retried, with the
        same key, when the server starts again."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        for backend in self.backends.values():
            try:
                await backend.close()
            except Exception:  # closing must not keep the server from stopping
                log.exception("closing handoff backend %s failed", backend.name)

    def wake(self) -> None:
        """Look for due rows now (e.g. right after a session ended)."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                done = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database may be busy; keep the outbox moving
                log.exception("handoff round failed")
                done = 0
            if done:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            except TimeoutError:
                pass
            self._wake.clear()

    async def run_once(self) -> int:
        """Claim one batch of due rows and deliver them concurrently. Returns how many."""
        if not self.backends:
            return 0
        claimed = await self.store.claim_handoffs(
            self.clock.now(), self.batch, self.lease, list(self.backends)
        )
        if claimed:
            results = await asyncio.gather(*(self.deliver(h) for h in claimed),
                                           return_exceptions=True)
            for h, result in zip(claimed, results, strict=True):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                if isinstance(result, BaseException):
                    # Recording the outcome failed (e.g. the database): the claim's lease
                    # brings the row back.
                    log.error("handoff %s: recording its outcome failed", h.id,
                              exc_info=result)
        await self._refresh_pending()
        return len(claimed)

    async def deliver(self, handoff: Handoff) -> None:
        backend = self.backends[handoff.backend]
        extra = {"handoff_id": handoff.id, "session_id": handoff.session_id,
                 "backend": handoff.backend, "attempt": handoff.attempts}
        try:
            transcript = await self.transcripts(handoff.session_id)
            outcome = await asyncio.wait_for(
                backend.deliver(Job(handoff, transcript)), self.policy.timeout
            )
        except asyncio.CancelledError:
            raise
        except PermanentError as exc:
            await self._dead_letter(handoff, exc.message, exc.status, exc.response, extra)
            return
        except DeliveryError as exc:
            await self._retry(handoff, exc.message, exc.status, exc.response,
                              exc.retry_after, extra)
            return
        except TimeoutError:
            # The outcome is unknown: give the backend an attempt's time to finish what it
            # may have started before asking again.
            await self._retry(handoff, f"no answer within {self.policy.timeout:g} s", None,
                              None, self.policy.timeout, extra)
            return
        except Exception as exc:
            log.exception("handoff delivery raised unexpectedly", extra=extra)
            await self._retry(handoff, f"unexpected error: {exc!r}", None, None, None, extra)
            return
        now = self.clock.now()
        ticket_set = await self.store.handoff_delivered(
            handoff.id, now, outcome.result, outcome.ticket, outcome.status, outcome.response
        )
        self.metrics.record(handoff.backend, "delivered")
        log.info("handoff delivered: %s", outcome.result, extra=extra)
        if ticket_set and outcome.ticket is not None and self.on_ticket is not None:
            try:
                await self.on_ticket(handoff.session_id, outcome.ticket)
            except Exception:  # telling clients is best effort; the ticket is stored
                log.exception("announcing the ticket failed", extra=extra)

    async def _retry(
        self,
        handoff: Handoff,
        error: str,
        status: int | None,
        response: str | None,
        retry_after: float | None,
        extra: dict[str, Any],
    ) -> None:
        now = self.clock.now()
        when = self.policy.next_attempt(handoff, now, self.rand, retry_after)
        if when is None:
            await self._dead_letter(
                handoff, f"gave up after {handoff.attempts} attempts: {error}", status,
                response, extra,
            )
            return
        await self.store.handoff_retry_later(handoff.id, now, when, error, status, response)
        self.metrics.record(handoff.backend, "retry")
        log.warning("handoff attempt failed, retrying in %.1f s: %s", when - now, error,
                    extra=extra)

    async def _dead_letter(
        self,
        handoff: Handoff,
        error: str,
        status: int | None,
        response: str | None,
        extra: dict[str, Any],
    ) -> None:
        await self.store.handoff_failed(handoff.id, self.clock.now(), error, status, response)
        self.metrics.record(handoff.backend, "failed")
        log.error("handoff dead-lettered: %s (chatd handoff retry %s)", error, handoff.id,
                  extra=extra)

    async def _refresh_pending(self) -> None:
        counts = await self.store.handoff_counts()
        self.metrics.set_pending(counts.get("pending", 0))
