"""Queue alerts to a chat channel: a Slack-compatible incoming webhook (docs/monitoring.md#alerts).

Every ``queue:alert`` transition becomes one POST of ``{"text": ...}``. Deliveries are
retried with the handoff's backoff (full jitter) and its judgement of HTTP answers
(chatd/handoff/base.py), but a bounded number of times and in memory only: an alert that
is minutes old is worth little, and one lost across a restart is followed by the next
transition anyway.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from .core.clock import Clock
from .core.observer import NullObserver
from .handoff.base import PermanentError, RetryableError, check_status
from .handoff.policy import RetryPolicy
from .tasks import cancel_and_wait

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    return f"{s // 60}m {s % 60:02d}s"


def _about(seconds: float) -> str:
    """A predicted wait, to the minute: a prediction is not worth its seconds."""
    s = int(round(seconds))
    return f"{s}s" if s < 60 else f"{round(s / 60)}m"


def alert_text(
    alert: dict[str, Any], monitor_url: str = "", *, previous: str | None = None
) -> str:
    """The chat line for one ``queue:alert``; ``previous`` is the level it follows, which
    tells what a ``clear`` ends (a wait past the warning, or only a prediction)."""
    level = alert.get("level")
    oldest = _duration(float(alert.get("oldest_wait_seconds") or 0))
    waiting = int(alert.get("queue_length") or 0)
    online = int(alert.get("engineers_online") or 0)
    target = _duration(float(alert.get("target_seconds") or 0))
    warning = _duration(float(alert.get("warning_seconds") or 0))
    people = f"{waiting} waiting, {online} engineer{'s' if online != 1 else ''} online"
    if level == "breach":
        text = (f":rotating_light: chatd: a customer has waited {oldest}, past the {target} "
                f"target ({people}).")
    elif level == "warning":
        text = (f":warning: chatd: a customer has waited {oldest}; the target is {target} "
                f"({people}).")
    elif level == "predicted":
        # Nobody has waited long yet: the desk predicts that someone will wait past the
        # target. No figure: customers wait and no engineer is available or expected back.
        predicted = alert.get("predicted_wait_seconds")
        longest = (f"a customer is predicted to wait about {_about(float(predicted))} in all"
                   if predicted is not None else "no engineer is available to answer")
        text = (f":hourglass_flowing_sand: chatd: heads-up, waits are heading past the {target} "
                f"target: {longest}; the oldest has waited {oldest} so far ({people}).")
    elif previous == "predicted":
        text = (f":white_check_mark: chatd: the predicted waits are back within the {target} "
                f"target ({people}).")
    else:
        text = f":white_check_mark: chatd: no customer has waited {warning} any more ({people})."
    if monitor_url:
        text += f" {monitor_url}"
    return text


class AlertWebhook(NullObserver):
    """A desk observer that posts queue alerts; every other event is ignored."""

    def __init__(
        self,
        url: str,
        clock: Clock,
        *,
        monitor_url: str = "",
        attempts: int = 5,
        policy: RetryPolicy | None = None,
        timeout: float = 10.0,
        max_pending: int = 50,
        sleep: Sleep = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.url = url
        self.clock = clock
        self.monitor_url = monitor_url
        self.attempts = attempts
        self.policy = policy or RetryPolicy(base=2.0, cap=60.0, timeout=timeout)
        self.sleep = sleep
        self.rand = rand
        # Each alert with the level before it (None: none in force).
        self._queue: asyncio.Queue[tuple[dict[str, Any], str | None]] = asyncio.Queue(max_pending)
        self._level: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self.delivered = 0
        self.dropped = 0

    def queue_alert(self, alert: dict[str, Any]) -> None:
        previous = self._level
        level = alert.get("level")
        self._level = None if level == "clear" else str(level)
        try:
            self._queue.put_nowait((alert, previous))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("alert webhook backlog full; an alert was dropped",
                        extra={"level": alert.get("level")})

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chatd-alert-webhook")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _run(self) -> None:
        while True:
            alert, previous = await self._queue.get()
            await self.deliver(alert, previous)

    async def deliver(self, alert: dict[str, Any], previous: str | None = None) -> bool:
        """Post one alert, retrying a bounded number of times. True once accepted."""
        body = {"text": alert_text(alert, self.monitor_url, previous=previous)}
        for attempt in range(1, self.attempts + 1):
            try:
                await self._post(body)
            except PermanentError as exc:
                log.error("alert webhook refused the alert: %s", exc.message,
                          extra={"status": exc.status})
                return False
            except (RetryableError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                if attempt == self.attempts:
                    log.error("alert webhook failed %d times; alert dropped: %r", attempt, exc)
                    return False
                delay = self.policy.backoff(attempt, self.rand)
                if isinstance(exc, RetryableError) and exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, self.policy.cap))
                log.warning("alert webhook attempt %d failed, retrying in %.1f s: %r",
                            attempt, delay, exc)
                await self.sleep(delay)
                continue
            self.delivered += 1
            return True
        return False  # pragma: no cover - the loop always returns

    async def _post(self, body: dict[str, Any]) -> None:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.policy.timeout),
                headers={"User-Agent": "chatd-alerts"},
            )
        async with self._http.post(self.url, json=body, allow_redirects=False) as r:
            text = await r.text(errors="replace")
            check_status(r.status, text, r.headers.get("Retry-After"), self.clock.now(),
                         "the alert webhook")
