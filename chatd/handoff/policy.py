"""When to try a handoff again: exponential backoff with full jitter, Retry-After, and a
dead-letter horizon (docs/handoff.md#failures-and-retries)."""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from dataclasses import dataclass

from ..core.transcript import Handoff


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base: float = 10.0  # the ceiling of the first retry's delay, in seconds
    cap: float = 3600.0  # no retry waits longer than this (a Retry-After may)
    horizon: float = 86_400.0  # dead-letter once this much time has passed
    timeout: float = 30.0  # one attempt's limit

    def backoff(self, attempt: int, rand: Callable[[], float]) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]. Spreading retries
        over the whole window keeps many failed deliveries from returning in step when a
        backend comes back."""
        exponent = min(max(attempt - 1, 0), 62)
        ceiling = min(self.cap, self.base * (2.0**exponent))
        return max(0.0, min(1.0, rand())) * ceiling

    def next_attempt(
        self,
        handoff: Handoff,
        now: float,
        rand: Callable[[], float],
        retry_after: float | None = None,
    ) -> float | None:
        """When to try a failed attempt again, or None to dead-letter it.

        A Retry-After is honoured as a lower bound. The last try is made at the horizon
        itself, so that a backend down for a day still gets one attempt at its end.
        """
        deadline = handoff.horizon_start + self.horizon
        if now >= deadline:
            return None
        delay = self.backoff(handoff.attempts, rand)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(now + delay, deadline)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)
