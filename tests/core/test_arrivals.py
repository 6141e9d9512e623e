"""The live arrival rate: Holt smoothing over 15-minute intervals, blended with the
interval in progress, fed with seeded Poisson streams."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator

import pytest

from chatd.core.arrivals import ArrivalRate

T0 = 1_800_000_000.0
HOUR = 3600.0
INTERVAL = 900.0


def poisson(
    rng: random.Random, rate: Callable[[float], float], start: float, end: float, peak: float
) -> Iterator[float]:
    """Arrival times of a Poisson process with time-varying ``rate`` <= ``peak`` on
    [start, end), by thinning a process of rate ``peak``."""
    t = start
    while True:
        t += rng.expovariate(peak)
        if t >= end:
            return
        if rng.random() * peak < rate(t):
            yield t


def feed(
    arrivals: ArrivalRate,
    times: Iterator[float],
    checkpoints: list[float],
    look: Callable[[float], None],
) -> None:
    """Observe every arrival, calling ``look(t)`` at each checkpoint as time passes it."""
    pending = iter(sorted(checkpoints))
    nxt = next(pending, None)
    for t in times:
        while nxt is not None and nxt <= t:
            look(nxt)
            nxt = next(pending, None)
        arrivals.observe(t)
    while nxt is not None:
        look(nxt)
        nxt = next(pending, None)


def test_constant_stream_converges_to_its_rate() -> None:
    rate = 0.1  # 360 an hour
    arrivals = ArrivalRate(start=T0)
    seen: list[float] = []
    forecasts: list[float] = []

    def look(t: float) -> None:
        now, ahead = arrivals.rate_now(t), arrivals.forecast(t, HOUR)
        assert now is not None and ahead is not None
        seen.append(now)
        forecasts.append(ahead)

    checkpoints = [T0 + 4 * HOUR + k * 300 for k in range(49)]  # every 5 min, hours 4 to 8
    stream = poisson(random.Random(7), lambda t: rate, T0, T0 + 8 * HOUR, rate)
    feed(arrivals, stream, checkpoints, look)
    # Each figure rests on an interval or so of a Poisson count, so it wanders by several
    # per cent; on average over four hours it is within 10% of the truth.
    assert sum(abs(x / rate - 1) for x in seen) / len(seen) < 0.10
    assert sum(abs(x / rate - 1) for x in forecasts) / len(forecasts) < 0.10
    assert all(0.6 * rate < x < 1.4 * rate for x in seen)


def test_step_up_shows_within_minutes_and_clearly_within_two_intervals() -> None:
    step = T0 + 4 * HOUR + INTERVAL / 2  # mid-interval
    arrivals = ArrivalRate(start=T0)
    seen: dict[float, float] = {}

    def look(t: float) -> None:
        value = arrivals.rate_now(t)
        assert value is not None
        seen[t] = value

    checkpoints = [step, step + 300, step + 2 * INTERVAL]
    stream = poisson(
        random.Random(11), lambda t: 0.01 if t < step else 0.05, T0, step + 2 * INTERVAL, 0.05
    )
    feed(arrivals, stream, checkpoints, look)
    assert seen[step] < 0.02
    # Five minutes in, the interval in progress already moves the figure.
    assert seen[step + 300] > seen[step] + 0.003
    # Two intervals on, the figure is well over twice the old rate (0.01 → 0.05).
    assert seen[step + 2 * INTERVAL] > 0.025


def test_forecast_of_a_ramp_beats_the_current_rate() -> None:
    def truth(t: float) -> float:
        return 0.02 + 0.1 * (t - T0) / (6 * HOUR)  # the morning rush: 72 → 432 an hour

    arrivals = ArrivalRate(start=T0)
    forecast_error = current_error = 0.0

    def look(t: float) -> None:
        nonlocal forecast_error, current_error
        ahead, now = arrivals.forecast(t, HOUR), arrivals.rate_now(t)
        assert ahead is not None and now is not None
        hour_ahead = truth(t + HOUR / 2)  # the mean of a linear rate over the next hour
        forecast_error += abs(ahead - hour_ahead)
        current_error += abs(now - hour_ahead)

    checkpoints = [T0 + 3 * HOUR + k * 300 for k in range(36)]
    feed(arrivals, poisson(random.Random(5), truth, T0, T0 + 6 * HOUR, 0.12), checkpoints, look)
    assert forecast_error < current_error


def test_quiet_gap_decays_the_rate_and_arrivals_bring_it_back() -> None:
    arrivals = ArrivalRate(start=T0)
    for t in poisson(random.Random(3), lambda t: 0.05, T0, T0 + 4 * HOUR, 0.05):
        arrivals.observe(t)
    end = T0 + 4 * HOUR
    during = [arrivals.rate_now(end + k * INTERVAL) for k in range(9)]
    assert all(x is not None for x in during)
    values = [x for x in during if x is not None]
    assert values[0] > 0.04
    assert all(later < earlier for earlier, later in zip(values[:4], values[1:5], strict=True))
    assert values[4] < 0.4 * values[0]  # an hour of silence
    assert values[8] < 0.01 * values[0]  # two hours
    forecast = arrivals.forecast(end + 2 * HOUR, 2 * HOUR)
    assert forecast is not None and forecast >= 0.0
    # When arrivals resume, the fall before the silence holds nothing back: the rate
    # comes back as it would on a desk that had always been quiet.
    back = end + 2 * HOUR
    always_quiet = ArrivalRate(start=T0)
    for t in poisson(random.Random(4), lambda t: 0.05, back, back + 2 * INTERVAL, 0.05):
        arrivals.observe(t)
        always_quiet.observe(t)
    recovered = arrivals.rate_now(back + 2 * INTERVAL)
    assert recovered is not None and recovered > 0.02
    assert recovered == pytest.approx(always_quiet.rate_now(back + 2 * INTERVAL))


def test_a_long_gap_is_not_replayed_interval_by_interval() -> None:
    arrivals = ArrivalRate(start=T0)
    for t in poisson(random.Random(9), lambda t: 0.05, T0, T0 + 2 * HOUR, 0.05):
        arrivals.observe(t)
    started = time.perf_counter()
    # A thousand years is 35 million intervals; skipping them one by one would take
    # tens of seconds.
    assert arrivals.rate_now(T0 + 1000 * 365 * 24 * HOUR) == 0.0
    assert time.perf_counter() - started < 0.1
    arrivals.observe(T0 + 1000 * 365 * 24 * HOUR + 1)
    after = arrivals.rate_now(T0 + 1000 * 365 * 24 * HOUR + 2)
    assert after == pytest.approx(1 / INTERVAL)


def test_warm_up_needs_a_closed_interval_or_enough_arrivals() -> None:
    arrivals = ArrivalRate(warm_up=5, start=T0)
    assert arrivals.rate_now(T0 + 60) is None
    assert arrivals.forecast(T0 + 60, HOUR) is None
    for k in range(4):
        arrivals.observe(T0 + 10 * (k + 1))
    assert arrivals.rate_now(T0 + 100) is None
    arrivals.observe(T0 + 50)
    assert arrivals.rate_now(T0 + 100) == pytest.approx(5 / 100)
    assert arrivals.forecast(T0 + 100, HOUR) == pytest.approx(5 / 100)

    quiet = ArrivalRate(warm_up=5, start=T0)
    quiet.observe(T0 + 10)
    assert quiet.rate_now(T0 + INTERVAL - 1) is None
    # Once an interval has closed there is a figure, however few arrivals it held.
    assert quiet.rate_now(T0 + INTERVAL) == pytest.approx(1 / INTERVAL)


def test_without_a_start_the_first_arrival_only_starts_the_clock() -> None:
    arrivals = ArrivalRate(warm_up=1)
    assert arrivals.rate_now(T0) is None
    arrivals.observe(T0)
    assert arrivals.rate_now(T0 + 10) is None
    arrivals.observe(T0 + 20)
    assert arrivals.rate_now(T0 + 40) == pytest.approx(1 / 40)


def test_blend_weighs_the_interval_in_progress_by_its_elapsed_share() -> None:
    arrivals = ArrivalRate(start=T0)
    for k in range(9):  # 9 arrivals in the first interval: 0.01 a second
        arrivals.observe(T0 + 100 * k + 1)
    assert arrivals.rate_now(T0 + INTERVAL) == pytest.approx(0.01)
    for k in range(6):  # then 6 in the first third of the next
        arrivals.observe(T0 + INTERVAL + 50 * k + 1)
    # Two thirds the estimate for the interval (level 0.01, no trend yet), plus the six.
    assert arrivals.rate_now(T0 + INTERVAL + 300) == pytest.approx(2 / 3 * 0.01 + 6 / INTERVAL)


def test_holt_update_follows_its_recurrence() -> None:
    alpha, beta = 0.5, 0.2
    arrivals = ArrivalRate(alpha=alpha, beta=beta, start=T0)
    counts = [9, 18, 27, 0]
    for i, count in enumerate(counts):
        for k in range(count):
            arrivals.observe(T0 + i * INTERVAL + (k + 1) * INTERVAL / (count + 1))
    level, trend = counts[0] / INTERVAL, 0.0
    for count in counts[1:]:
        new_level = alpha * count / INTERVAL + (1 - alpha) * (level + trend)
        trend = beta * (new_level - level) + (1 - beta) * trend
        level = new_level
    now = T0 + len(counts) * INTERVAL
    assert arrivals.rate_now(now) == pytest.approx(level + trend)
    # The level is the rate at the middle of the last interval; the next hour is centred
    # 2.5 intervals later.
    assert arrivals.forecast(now, HOUR) == pytest.approx(max(0.0, level + 2.5 * trend))


def test_late_arrival_counts_in_the_interval_in_progress() -> None:
    late = ArrivalRate(start=T0)
    on_time = ArrivalRate(start=T0)
    late.observe(T0 + INTERVAL + 100)
    late.observe(T0 + 500)  # reported late: its interval has closed
    on_time.observe(T0 + INTERVAL + 100)
    on_time.observe(T0 + INTERVAL + 101)
    for t in (T0 + INTERVAL + 200, T0 + 2 * INTERVAL, T0 + 3 * INTERVAL + 5):
        assert late.rate_now(t) == pytest.approx(on_time.rate_now(t))


def test_forecast_is_never_negative_after_a_fall() -> None:
    alpha = beta = 0.5
    arrivals = ArrivalRate(alpha=alpha, beta=beta, start=T0)
    counts = [90, 70, 50, 30]
    for i, count in enumerate(counts):
        for k in range(count):
            arrivals.observe(T0 + i * INTERVAL + (k + 1) * INTERVAL / (count + 1))
    level, trend = counts[0] / INTERVAL, 0.0
    for count in counts[1:]:
        new_level = alpha * count / INTERVAL + (1 - alpha) * (level + trend)
        trend = beta * (new_level - level) + (1 - beta) * trend
        level = new_level
    assert level + 16 * trend < 0.0  # the straight line would go far below zero
    now = T0 + len(counts) * INTERVAL
    # The mean over the next four hours of the line cut at zero, by a midpoint sum; the
    # line starts half an interval after the middle of the last closed interval.
    steps = 16_000
    expected = (
        sum(max(0.0, level + trend * (0.5 + 16 * (j + 0.5) / steps)) for j in range(steps)) / steps
    )
    ahead = arrivals.forecast(now, 4 * HOUR)
    assert ahead is not None and ahead > 0.0
    assert ahead == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"interval": 0.0},
        {"interval": math.inf},
        {"alpha": 0.0},
        {"alpha": 1.5},
        {"beta": -0.1},
        {"warm_up": 0},
        {"start": math.nan},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ArrivalRate(**kwargs)  # type: ignore[arg-type]


def test_bad_horizon_is_refused() -> None:
    with pytest.raises(ValueError, match="horizon"):
        ArrivalRate(start=T0).forecast(T0, -1.0)
