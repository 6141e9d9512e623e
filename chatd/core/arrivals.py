"""The live arrival rate and its forecast for this hour and the next
(docs/waits.md#staffing-forecast).

Arrivals are counted in fixed intervals (15 minutes by default). Each closed interval's
rate y (count / interval) updates Holt's double exponential smoothing:

    level' = α·y + (1 − α)·(level + trend)
    trend' = β·(level' − level) + (1 − β)·trend

so the level follows the rate and the trend its change per interval; a ramp through the
morning is forecast ahead instead of trailing behind. The interval in progress is blended
in as it fills (see ``rate_now``), so a surge shows within minutes rather than only when
its interval closes.

Level and level + trend are kept at or above zero: a rate is never negative, and a
falling trend carried on through a quiet spell would hold the rate down once arrivals
resume.

Intervals without arrivals count as zero: a quiet desk has a low rate, not an unknown
one. They are applied lazily, when the next call finds time has moved on, at O(1) each
and a bounded number in all however long the gap: once level and trend are below 1e-15 a
second they are zero and the rest is skipped (with the defaults that takes a handful of
intervals; at most about 40/α). State is a handful of numbers; no arrival is kept.
Times are expected not to go backwards; see ``ArrivalRate`` for late arrivals.
"""

from __future__ import annotations

import math

# Below this (arrivals a second, i.e. one arrival in ~30 million years) level and trend
# are zero: a long quiet gap then costs nothing more to skip.
_NEGLIGIBLE = 1e-15


class ArrivalRate:
    """Holt-smoothed arrivals a second, with a forecast over the next ``horizon`` seconds.

    ``start`` is when counting began (e.g. when the desk opened). Without it, the first
    arrival starts the clock and is not itself counted: for Poisson arrivals the stream
    after an arrival is again Poisson, so the count from there is unbiased, whereas
    counting it would inflate the first interval by one arrival.

    Warm-up: ``rate_now`` is None until either an interval has closed or ``warm_up``
    arrivals have been counted (before that a figure would rest on a handful of events).
    Until the first interval closes the rate is the count over the time elapsed.

    Out-of-order times: an arrival stamped before the interval in progress (a late
    report) is counted in the interval in progress, as if it came at its start. Nothing
    is dropped, so the totals stay right; the closed intervals are not revisited.
    """

    __slots__ = (
        "interval",
        "alpha",
        "beta",
        "warm_up",
        "_start",
        "_count",
        "_primed",
        "_level",
        "_trend",
    )

    def __init__(
        self,
        interval: float = 900.0,
        alpha: float = 0.3,
        beta: float = 0.1,
        *,
        warm_up: int = 20,
        start: float | None = None,
    ) -> None:
        if not math.isfinite(interval) or interval <= 0.0:
            raise ValueError(f"interval must be a number of seconds > 0, not {interval!r}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must lie in (0, 1], not {alpha!r}")
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must lie in [0, 1], not {beta!r}")
        if isinstance(warm_up, bool) or not isinstance(warm_up, int) or warm_up < 1:
            raise ValueError(f"warm_up must be a positive integer, not {warm_up!r}")
        if start is not None and not math.isfinite(start):
            raise ValueError(f"start must be a finite time, not {start!r}")
        self.interval = interval
        self.alpha = alpha
        self.beta = beta
        self.warm_up = warm_up
        self._start = start  # start of the interval in progress
        self._count = 0  # arrivals in the interval in progress
        self._primed = False  # an interval has closed: level and trend mean something
        self._level = 0.0  # arrivals a second
        self._trend = 0.0  # change of the level per interval, arrivals a second

    def observe(self, ts: float) -> None:
        """Count one arrival at wall time ``ts`` (seconds)."""
        if self._start is None:
            self._start = ts
            return
        self._advance(ts)
        self._count += 1

    def rate_now(self, now: float) -> float | None:
        """Arrivals a second at ``now``: Holt's estimate for the interval in progress
        (level + trend), blended with that interval's own count in proportion to how much
        of it has elapsed. None during the warm-up.

        With a fraction f of the interval elapsed and n arrivals in it, the figure is
        (1 − f)·(level + trend) + f·n/(f·interval), i.e. (1 − f)·(level + trend) +
        n/interval: a surge moves it as soon as it starts, and near the end of the
        interval it leans on that interval's own count.
        """
        if self._start is None:
            return None
        self._advance(now)
        elapsed = max(0.0, now - self._start)
        if not self._primed:
            # Until then every arrival counted is in the interval in progress.
            if self._count < self.warm_up or elapsed <= 0.0:
                return None
            return self._count / elapsed
        fraction = min(1.0, elapsed / self.interval)
        expected = max(0.0, self._level + self._trend)
        return (1.0 - fraction) * expected + self._count / self.interval

    def forecast(self, now: float, horizon: float) -> float | None:
        """The mean arrival rate (a second) over [now, now + horizon), never negative.

        The level is the rate at the middle of the last closed interval and the trend its
        change per interval, so the rate at time u is level + trend·(u − middle)/interval,
        cut at zero; this returns its mean over the window (its value at ``now`` when
        ``horizon`` is 0). Before an interval has closed there is no trend: the warm-up
        rate of ``rate_now`` (None while that is None). Meant for an hour or two ahead: a
        trend extrapolated over a day would not hold.
        """
        if not math.isfinite(horizon) or horizon < 0.0:
            raise ValueError(f"horizon must be a number of seconds >= 0, not {horizon!r}")
        current = self.rate_now(now)
        if current is None or not self._primed:
            return current
        assert self._start is not None  # set, since rate_now gave a figure
        middle = self._start - 0.5 * self.interval
        u0 = (now - middle) / self.interval
        u1 = (now + horizon - middle) / self.interval
        return _mean_positive_line(self._level, self._trend, u0, u1)

    def _advance(self, now: float) -> None:
        """Close every interval that ended by ``now``: the one in progress with its count,
        then any quiet ones after it with zero."""
        assert self._start is not None
        passed = math.floor((now - self._start) / self.interval)
        if passed < 1:
            return
        self._update(self._count / self.interval)
        self._count = 0
        for _ in range(passed - 1):
            if abs(self._level) < _NEGLIGIBLE and abs(self._trend) < _NEGLIGIBLE:
                self._level = self._trend = 0.0
                break
            self._update(0.0)
        self._start += passed * self.interval

    def _update(self, rate: float) -> None:
        if not self._primed:
            # Holt's usual start: the first interval is the level, with no trend yet.
            self._level, self._trend = rate, 0.0
            self._primed = True
            return
        level = self.alpha * rate + (1.0 - self.alpha) * (self._level + self._trend)
        # The floors of the module doc: level >= 0 and level + trend >= 0.
        level = max(0.0, level)
        trend = self.beta * (level - self._level) + (1.0 - self.beta) * self._trend
        self._level = level
        self._trend = max(trend, -level)


def _mean_positive_line(level: float, slope: float, u0: float, u1: float) -> float:
    """The mean of max(0, level + slope·u) over [u0, u1] (its value at u0 if u1 == u0)."""

    def at(u: float) -> float:
        return level + slope * u

    if u1 <= u0:
        return max(0.0, at(u0))
    lo, hi = u0, u1
    if slope > 0.0:
        lo = max(lo, -level / slope)  # where the line crosses zero going up
    elif slope < 0.0:
        hi = min(hi, -level / slope)  # where it crosses zero going down
    elif level <= 0.0:
        return 0.0
    if hi <= lo:
        return 0.0
    area = 0.5 * (at(lo) + at(hi)) * (hi - lo)
    return max(0.0, area / (u1 - u0))
