"""Token buckets for per-connection and per-address limits, the addresses barred for a
while after breaking a bound, and the per-account back-off of logins
(docs/security.md#logins)."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from .clock import Clock

V = TypeVar("V")


class BoundedTable(Generic[V]):
    """At most ``max_keys`` entries; past it the least recently touched is forgotten. A
    flood of new keys costs a bounded table, and the keys in use now are the last to go.
    Every call is O(1)."""

    def __init__(self, max_keys: int) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._max_keys = max_keys
        self._entries: OrderedDict[str, V] = OrderedDict()

    def get(self, key: str) -> V | None:
        """``key``'s entry, without touching it."""
        return self._entries.get(key)

    def touch(self, key: str, make: Callable[[], V]) -> V:
        """``key``'s entry (made by ``make`` if it has none), now the most recent."""
        entry = self._entries.get(key)
        if entry is None:
            self._make_room()
            entry = self._entries[key] = make()
        else:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, value: V) -> None:
        """Set ``key``'s entry, now the most recent."""
        self._entries.pop(key, None)
        self._make_room()
        self._entries[key] = value

    def pop(self, key: str) -> None:
        self._entries.pop(key, None)

    def _make_room(self) -> None:
        if len(self._entries) >= self._max_keys:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def smooth_burst(rate: float) -> float:
    """The burst of a server-wide budget: a tenth of a second's worth (at least one), so
    that what a crowd asks for at once is let through at an even pace rather than all in
    one turn of the event loop."""
    return max(1.0, rate / 10)


class TokenBucket:
    """Allows ``rate`` events a second on average, with bursts up to ``burst``."""

    __slots__ = ("_clock", "_rate", "_burst", "_tokens", "_stamp")

    def __init__(self, clock: Clock, rate: float, burst: float) -> None:
        self._clock = clock
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp = clock.now()

    def _refill(self) -> None:
        now = self._clock.now()
        # The clock is wall time: a step back (NTP) refills nothing, rather than charging
        # the bucket the step and holding everything back until it has passed again.
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._stamp = now

    def take(self, cost: float = 1.0) -> bool:
        self._refill()
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def charge(self, cost: float) -> None:
        """Take ``cost`` whether it is there or not, for work whose price is known only once
        it is done: the bucket may go into debt, and gives nothing until it is paid back."""
        self._refill()
        self._tokens -= cost

    def wait(self, cost: float = 1.0) -> float:
        """Seconds until ``cost`` could be taken; 0 if it can be now."""
        self._refill()
        return max(0.0, (cost - self._tokens) / self._rate)


class EventBucket(TokenBucket):
    """A connection's event bucket, counting the events it refused in a row: a client that
    slows down when told ``rate_limited`` has a refusal or two between accepted events; a
    flood has nothing else."""

    __slots__ = ("refused",)

    def __init__(self, clock: Clock, rate: float, burst: float) -> None:
        super().__init__(clock, rate, burst)
        self.refused = 0

    def take(self, cost: float = 1.0) -> bool:
        if super().take(cost):
            self.refused = 0
            return True
        self.refused += 1
        return False


class Penalties:
    """Keys (client addresses) barred until a moment, at most ``max_keys`` of them: past it
    the one barred longest ago is forgotten. ``seconds`` 0 bars nothing. Every call is O(1).
    """

    def __init__(self, clock: Clock, seconds: float, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._seconds = seconds
        self._until: BoundedTable[float] = BoundedTable(max_keys)

    def bar(self, key: str) -> None:
        """Bar ``key`` for ``seconds`` from now (again from now, if it already is)."""
        if self._seconds <= 0:
            return
        self._until.put(key, self._clock.now() + self._seconds)

    def remaining(self, key: str) -> float:
        """Seconds ``key`` is still barred; 0 if it is not."""
        until = self._until.get(key)
        if until is None:
            return 0.0
        left = until - self._clock.now()
        if left <= 0:
            self._until.pop(key)
            return 0.0
        return left

    def __len__(self) -> int:
        return len(self._until)


class KeyedLimiter:
    """One bucket per key (e.g. client address), at most ``max_keys`` of them.

    Past ``max_keys`` the least recently used key is forgotten: a flood of new keys costs
    the limiter a bounded table, and the keys that are busy now (the ones a limit is
    holding back) are the last to go. Every call is O(1).
    """

    def __init__(self, clock: Clock, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._rate = rate
        self._burst = burst
        self._buckets: BoundedTable[TokenBucket] = BoundedTable(max_keys)

    def _new_bucket(self) -> TokenBucket:
        return TokenBucket(self._clock, self._rate, self._burst)

    def take(self, key: str, cost: float = 1.0) -> bool:
        return self._buckets.touch(key, self._new_bucket).take(cost)

    def retry_after(self, key: str, cost: float = 1.0) -> float:
        """Seconds until ``key`` may take ``cost`` again (for a ``Retry-After``); 0 if it
        may now."""
        bucket = self._buckets.get(key)
        return 0.0 if bucket is None else bucket.wait(cost)

    def __len__(self) -> int:
        return len(self._buckets)


class _Failures:
    __slots__ = ("count", "last", "until")

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0
        self.until = 0.0


class AccountBackoff:
    """Consecutive failed logins per account: after ``after`` of them the account backs
    off for ``base`` seconds, doubling with each further failure up to ``max_seconds``.

    A success forgets the account's failures, and so does a quiet spell of twice
    ``max_seconds`` without one (longer than the longest back-off, so waiting one out does
    not reset the count). Attempts refused during a back-off are not failures: they neither
    extend it nor double the next one. At most ``max_keys`` accounts are remembered, the
    least recently failed forgotten first.
    """

    def __init__(
        self, clock: Clock, after: int, max_seconds: float, *, base: float = 1.0,
        max_keys: int = 100_000,
    ) -> None:
        if after < 1 or max_seconds <= 0 or base <= 0 or max_keys < 1:
            raise ValueError("after, max_seconds, base and max_keys must be positive")
        self._clock = clock
        self._after = after
        self._max = max_seconds
        self._base = base
        self._accounts: BoundedTable[_Failures] = BoundedTable(max_keys)

    def _live(self, key: str, now: float) -> _Failures | None:
        state = self._accounts.get(key)
        if state is not None and now - state.last > 2 * self._max and now >= state.until:
            self._accounts.pop(key)
            return None
        return state

    def wait(self, key: str) -> float:
        """Seconds the account must still wait before a login is checked; 0 if none."""
        now = self._clock.now()
        state = self._live(key, now)
        return 0.0 if state is None else max(0.0, state.until - now)

    def failed(self, key: str) -> float:
        """Count a failed login; returns the back-off it starts (0 below the threshold)."""
        now = self._clock.now()
        self._live(key, now)  # a forgotten run of failures starts again from none
        state = self._accounts.touch(key, _Failures)
        state.count += 1
        state.last = now
        over = state.count - self._after
        if over < 0:
            return 0.0
        # 2 ** over overflows a float long after it passes any sane maximum.
        delay = self._max if over >= 64 else min(self._max, self._base * 2.0**over)
        state.until = now + delay
        return delay

    def succeeded(self, key: str) -> None:
        self._accounts.pop(key)

    def __len__(self) -> int:
        return len(self._accounts)


def retry_after_seconds(wait: float) -> int:
    """A ``Retry-After`` value: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(wait))
