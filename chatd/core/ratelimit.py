"""Token buckets for per-connection and per-address limits."""

from __future__ import annotations

from .clock import Clock


class TokenBucket:
    """Allows ``rate`` events a second on average, with bursts up to ``burst``."""

    __slots__ = ("_clock", "_rate", "_burst", "_tokens", "_stamp")

    def __init__(self, clock: Clock, rate: float, burst: float) -> None:
        self._clock = clock
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp = clock.now()

    def take(self, cost: float = 1.0) -> bool:
        now = self._clock.now()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False


class KeyedLimiter:
    """One bucket per key (e.g. client address), forgetting idle keys."""

    def __init__(self, clock: Clock, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._rate = rate
        self._burst = burst
        self._max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                # A full table is cleared rather than grown: a flood of addresses must not
                # turn the limiter itself into the memory leak.
                self._buckets.clear()
            bucket = self._buckets[key] = TokenBucket(self._clock, self._rate, self._burst)
        return bucket.take()
