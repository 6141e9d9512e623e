"""Waiting-time prediction: the wait each position in the queue is told (docs/waits.md).

The predictor is the queue-length (QL) predictor of Ibrahim & Whitt, conditioned on what the
desk knows now instead of assuming a fresh start:

- the servers are the capacity slots of available engineers; a slot busy with a chat frees
  when that chat ends, and a chat that has run a while ends sooner than a new one would
  (handle times are log-normal: Brown et al., "Statistical analysis of a telephone call
  center", 2005); a slot held by an offer frees after the engineer answers and handles it;
- a customer ahead may leave before being answered (exponential patience: the M/M/s+M
  extension), and then takes no slot;
- a customer who can be offered at once waits only for an engineer to accept.

The wait of every position is the first-come-first-served pass of the queue over the slots'
free times, sampled ``samples`` times (with the same random numbers each time, so that
estimates do not jitter between two computations of the same desk). Its mean is the
estimate; its quantiles make the range. Positions past ``depth`` extend the last sampled one
by the QL-with-abandonment increments 1 / (sμ + nθ). One computation serves every waiting
customer, so its cost does not grow with the number of customers told.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

_STD_NORMAL = NormalDist()
QUANTILE_POINTS = 1024
_Z = [_STD_NORMAL.inv_cdf((i + 0.5) / QUANTILE_POINTS) for i in range(QUANTILE_POINTS)]


@dataclass(frozen=True, slots=True)
class Wait:
    """One position's predicted wait, in whole seconds: ``low <= seconds <= high``."""

    seconds: int
    low: int
    high: int

    def to_wire(self) -> dict[str, Any]:
        return {
            "estimated_wait_seconds": self.seconds,
            "estimated_wait_low_seconds": self.low,
            "estimated_wait_high_seconds": self.high,
        }


NO_WAIT_WIRE: dict[str, Any] = {
    "estimated_wait_seconds": None,
    "estimated_wait_low_seconds": None,
    "estimated_wait_high_seconds": None,
}


def wait_wire(wait: Wait | None) -> dict[str, Any]:
    return wait.to_wire() if wait is not None else dict(NO_WAIT_WIRE)


NEWS_RATIO = 0.1  # a wait is told again when it moved by more than this share (or 1 s)


def news(told: Wait | None, now: Wait | None, least: float = 1.0) -> bool:
    """Whether a customer told ``told`` should hear ``now``: an estimate appeared or went,
    or the wait or a bound of its range moved by more than 10% of the wait told (and
    ``least`` seconds).
    Waits drift a little at every computation as chats age; customers are not told each
    drift."""
    if told is None or now is None:
        return told is not now
    step = max(least, NEWS_RATIO * told.seconds)
    return any(
        abs(b - a) > step
        for a, b in ((told.seconds, now.seconds), (told.low, now.low), (told.high, now.high))
    )


@dataclass(frozen=True, slots=True)
class LogNormal:
    """A log-normal distribution by the mean and standard deviation of its logarithm."""

    mu: float
    sigma: float

    @classmethod
    def from_mean(cls, mean: float, sigma: float) -> LogNormal:
        return cls(math.log(mean) - sigma * sigma / 2, sigma)

    @classmethod
    def fit(cls, values: Sequence[float]) -> LogNormal:
        logs = [math.log(max(v, 1e-3)) for v in values]
        mu = sum(logs) / len(logs)
        var = sum((x - mu) ** 2 for x in logs) / max(1, len(logs) - 1)
        return cls(mu, math.sqrt(var))

    @property
    def mean(self) -> float:
        return math.exp(self.mu + self.sigma * self.sigma / 2)

    def quantile(self, u: float) -> float:
        if self.sigma <= 0:
            return math.exp(self.mu)
        u = min(max(u, 1e-12), 1 - 1e-12)
        return math.exp(self.mu + self.sigma * _STD_NORMAL.inv_cdf(u))

    def cdf(self, x: float) -> float:
        if x <= 0:
            return 0.0
        if self.sigma <= 0:
            return 1.0 if x >= math.exp(self.mu) else 0.0
        return _STD_NORMAL.cdf((math.log(x) - self.mu) / self.sigma)

    def table(self) -> list[float]:
        """The quantiles at the middles of ``QUANTILE_POINTS`` equal slices of probability:
        the sampler looks a draw up here (``table[int(u * QUANTILE_POINTS)]``) thousands of
        times per prediction instead of inverting the normal distribution each time."""
        mu, sigma = self.mu, self.sigma
        return [math.exp(mu + sigma * z) for z in _Z]


@dataclass(frozen=True, slots=True)
class WaitSettings:
    """How the predictor learns and how much it computes (docs/waits.md#settings)."""

    default_handle_seconds: float = 600.0
    # Completions before the observed handle times are trusted alone; until then they are
    # pooled with this many of the default (a shrinkage towards the configured mean).
    warmup_completions: int = 10
    default_sigma: float = 0.8  # spread of log handle time before any completion
    default_response_seconds: float = 10.0  # offer to accept, before any accept is seen
    history: int = 200  # completions, accepts and departures remembered
    min_departures: int = 20  # before the abandonment rate is estimated (0 until then)
    samples: int = 128
    depth: int = 30  # positions sampled; deeper ones extend the last
    coverage: float = 0.8  # share of waits the range should hold
    min_calibration: int = 20  # answered customers per group of positions before calibrating
    seed: int = 20_091


@dataclass(frozen=True, slots=True)
class Slots:
    """One available engineer's part in the prediction."""

    capacity: int
    chat_ages: tuple[float, ...]  # chats in progress, seconds since each was answered
    offer_ages: tuple[float, ...]  # offers waiting for this engineer, seconds since made
    away_for: float | None = None  # connected but away (a break), for this long; None: available


@dataclass(frozen=True, slots=True)
class Waiting:
    """One customer in the queue, in arrival order."""

    offered_for: float | None  # seconds since their offer was made; None while waiting


class Observations:
    """What the desk has seen lately: handle times, how fast offers are accepted, and how
    many customers leave the queue before an answer (bounded by ``history``)."""

    def __init__(self, settings: WaitSettings) -> None:
        self.settings = settings
        # The last chats answered, by session: [answered at, handle time or -1 while open].
        self.chats: OrderedDict[str, list[float]] = OrderedDict()
        self._restored = 0
        self._model: tuple[LogNormal, list[float]] | None = None
        self.response: deque[float] = deque(maxlen=settings.history)
        # (seconds waited, whether they left without an answer) per departure from the queue
        self.departures: deque[tuple[float, bool]] = deque(maxlen=settings.history)
        self.breaks: deque[float] = deque(maxlen=settings.history)  # away, then back: how long
        self.misses: list[deque[float]] = [
            deque(maxlen=settings.history) for _ in range(len(POSITION_GROUPS) + 1)
        ]

    @property
    def handle(self) -> list[float]:
        """Handle times of the recent chats that have ended."""
        return [d for _, d in self.chats.values() if d >= 0]

    def started(self, session_id: str, at: float) -> None:
        """A chat was answered (the first time: a transfer keeps it going)."""
        if session_id not in self.chats:
            self.chats[session_id] = [at, -1.0]
            while len(self.chats) > self.settings.history:
                self.chats.popitem(last=False)

    def ended(self, session_id: str, at: float) -> None:
        chat = self.chats.get(session_id)
        if chat is not None and chat[1] < 0:
            chat[1] = max(0.0, at - chat[0])
            self._model = None

    def dropped(self, session_id: str) -> None:
        """A chat went back to the queue (its engineer left): its length says nothing."""
        self.chats.pop(session_id, None)

    def handled(self, seconds: float) -> None:
        """A handle time from before a restart."""
        self._restored += 1
        self.chats[f"restored-{self._restored}"] = [0.0, max(0.0, seconds)]
        while len(self.chats) > self.settings.history:
            self.chats.popitem(last=False)
        self._model = None

    def accepted(self, seconds: float) -> None:
        self.response.append(max(0.0, seconds))

    def unit(self) -> float:
        """A hundredth of the mean handle time: the seconds a range's bounds are offset by
        before they are compared or stretched in ratio, so that a bound of 0 s can move."""
        return self.mean_handle() / 100

    def waited(self, position: int, model: tuple[float, float, float], seconds: float) -> None:
        """A customer told the model's (mean, low, high) at ``position`` when they joined was
        answered after ``seconds``: how far outside the model's range that fell (in log
        ratio; negative inside) is remembered for that group of positions."""
        u = self.unit()
        _, low, high = model
        w = max(0.0, seconds) + u
        miss = max(math.log((max(0.0, low) + u) / w), math.log(w / (max(0.0, high) + u)))
        self.misses[position_group(position)].append(miss)

    def widening(self, group: int) -> float:
        """How much to stretch the model's range (log ratio) for ``group`` so that it would
        have held ``coverage`` of the recent waits there (split conformal prediction:
        the ⌈(n + 1)·coverage⌉-th smallest miss); 0 until ``min_calibration`` were seen."""
        misses = self.misses[group]
        n = len(misses)
        if n < self.settings.min_calibration:
            return 0.0
        rank = min(n, math.ceil((n + 1) * self.settings.coverage))
        return sorted(misses)[rank - 1]

    def came_back(self, seconds: float) -> None:
        self.breaks.append(max(0.0, seconds))

    def left_queue(self, waited: float, abandoned: bool) -> None:
        self.departures.append((max(0.0, waited), abandoned))

    def handle_model(self) -> LogNormal:
        """Log-normal handle times (as last fitted by ``refit``)."""
        return self._handle()[0]

    def _handle(self) -> tuple[LogNormal, list[float]]:
        if self._model is None:
            return self.refit(None)
        return self._model

    def refit(self, now: float | None) -> tuple[LogNormal, list[float]]:
        """Fit the handle-time distribution to the last chats answered: those that ended by
        their length, those still open as lasting at least as long as they have so far
        (right-censored), so that a burst of short chats ending first does not make the
        desk look faster than it is. Until ``warmup_completions`` have ended, their mean
        is pooled with ``default_handle_seconds``."""
        s = self.settings
        done = self.handle
        n = len(done)
        if n >= max(2, s.warmup_completions):
            running = (
                [now - at for at, d in self.chats.values() if d < 0 and now > at]
                if now is not None else []
            )
            model = _censored_fit(done, running)
        else:
            pooled = (sum(done) + (s.warmup_completions - n) * s.default_handle_seconds) / (
                max(1, s.warmup_completions)
            )
            model = LogNormal.from_mean(max(pooled, 1e-3), s.default_sigma)
        self._model = (model, model.table())
        return self._model

    def mean_handle(self) -> float:
        return self.handle_model().mean

    def abandon_rate(self) -> float:
        """θ, customers leaving per second of waiting: departures without an answer over all
        the time waited by recent departures (the maximum-likelihood estimate for exponential
        patience, counting answered customers' waits as censored)."""
        if len(self.departures) < self.settings.min_departures:
            return 0.0
        waited = sum(w for w, _ in self.departures)
        left = sum(1 for _, a in self.departures if a)
        return left / waited if waited > 0 else 0.0

    def response_quantiles(self) -> list[float]:
        """How long engineers take to accept an offer, as equally likely values: those seen
        lately, or an exponential distribution with the default mean before there is any."""
        if not self.response:
            mean = self.settings.default_response_seconds
            n = 64
            return [-mean * math.log(1 - (i + 0.5) / n) for i in range(n)]
        return sorted(self.response)


def _censored_fit(done: Sequence[float], running: Sequence[float], rounds: int = 6) -> LogNormal:
    """Maximum-likelihood log-normal for lengths ``done`` and lower bounds ``running``
    (expectation-maximisation on the logarithms, started from the ended ones alone)."""
    start = LogNormal.fit(done)
    logs = [math.log(max(d, 1e-3)) for d in done]
    cut = [math.log(r) for r in running if r > 1e-3]
    if not cut or start.sigma <= 0:
        return start
    mu, sigma = start.mu, start.sigma
    n = len(logs) + len(cut)
    s1, s2 = sum(logs), sum(y * y for y in logs)
    for _ in range(rounds):
        e1, e2 = s1, s2
        for c in cut:
            a = (c - mu) / sigma
            tail = 1 - _STD_NORMAL.cdf(a)
            if tail < 1e-12:  # far past anything seen: it lasts about as long as it has
                e1 += c
                e2 += c * c
                continue
            lam = _STD_NORMAL.pdf(a) / tail
            e1 += mu + sigma * lam
            e2 += mu * mu + sigma * sigma + sigma * (mu + c) * lam
        mu = e1 / n
        sigma = math.sqrt(max(e2 / n - mu * mu, 1e-6))
    return LogNormal(mu, sigma)


# A range's high bound is at most this many times its low one; a wait too uncertain for
# that is told as an upper bound (low 0) instead (docs/waits.md#the-range).
RANGE_RATIO = 2.5
# Ranges are calibrated apart for these groups of positions: 1, 2-3, 4-8, 9-20, 21 and on.
POSITION_GROUPS = (1, 3, 8, 20)


def position_group(position: int) -> int:
    for i, last in enumerate(POSITION_GROUPS):
        if position <= last:
            return i
    return len(POSITION_GROUPS)


class WaitTable:
    """The predicted wait of every queue position, computed once for the whole queue."""

    def __init__(
        self, sampled: list[tuple[float, float, float]], tail_step: tuple[float, float],
        widen: Sequence[float], unit: float,
    ) -> None:
        self._sampled = sampled  # (mean, low, high) of the model, by position
        self._rate, self._theta = tail_step  # sμ and θ for the positions past them
        self._widen = widen  # by position group: how much the model's range is stretched
        self._unit = unit  # seconds added before stretching, so that a 0 s bound can move
        self._cache: dict[int, Wait] = {}

    def __len__(self) -> int:
        return len(self._sampled)

    def model(self, position: int) -> tuple[float, float, float]:
        """The model's own (mean, low, high) at ``position``, before calibration: sampled,
        or past the sampled positions, extended by the QL steps with a spread that shrinks
        like 1/√k (a sum of k steps)."""
        if position <= len(self._sampled):
            return self._sampled[position - 1]
        n = len(self._sampled)
        mean0, low0, high0 = self._sampled[-1]
        mean = mean0 + _steps(self._rate, self._theta, n, position)
        if mean0 <= 0:
            return mean, mean, mean
        shrink = math.sqrt(n / position)
        lo = 1 - (1 - low0 / mean0) * shrink
        hi = 1 + (high0 / mean0 - 1) * shrink
        return mean, mean * lo, mean * hi

    def at(self, position: int) -> Wait:
        """The wait told at ``position`` (1 is next): the model's mean, and its range
        stretched by what the last customers at such positions really waited."""
        wait = self._cache.get(position)
        if wait is None:
            mean, low, high = self.model(position)
            k = math.exp(self._widen[position_group(position)])
            u = self._unit
            wait = _wait(mean, (low + u) / k - u, (high + u) * k - u)
            if wait.high > RANGE_RATIO * wait.low:
                # Too uncertain for a range that says something ("1-20 min"): an upper
                # bound instead ("up to 20 min"); it holds as many waits, and more.
                wait = Wait(wait.seconds, 0, wait.high)
            if len(self._cache) < 4096:
                self._cache[position] = wait
        return wait



def _steps(rate: float, theta: float, first: int, last: int) -> float:
    """Σ 1 / (rate + aθ) for a = first … last - 1, in O(1): for θ > 0 by the midpoint
    integral (1/θ)·ln((rate + (last - ½)θ) / (rate + (first - ½)θ)), which is within a small
    fraction of a percent of the sum for the positions it is used at."""
    if last <= first:
        return 0.0
    if theta <= 0:
        return (last - first) / rate
    return math.log((rate + (last - 0.5) * theta) / (rate + (first - 0.5) * theta)) / theta


def _wait(mean: float, low: float, high: float) -> Wait:
    seconds = round(mean)
    return Wait(seconds, max(0, min(seconds, math.floor(low))), max(seconds, math.ceil(high)))


def predict(
    engineers: Sequence[Slots],
    queue: Sequence[Waiting],
    observed: Observations,
    settings: WaitSettings,
    now: float,
) -> WaitTable | None:
    """The wait of each position in ``queue`` given the engineers' slots; None when no
    engineer is available or expected back from a break (nobody can say when one will
    be)."""
    breaks = sorted(observed.breaks)
    capacity = sum(
        e.capacity for e in engineers
        if e.away_for is None or any(b > e.away_for for b in breaks)
    )
    if capacity <= 0:
        return None
    handle, hq = observed.refit(now)
    rq = observed.response_quantiles()
    theta = observed.abandon_rate()
    rng = random.Random(settings.seed)
    rand = rng.random
    pop, push, exp = heapq.heappop, heapq.heappush, math.exp
    # One position past the queue too: the wait a customer joining now is told.
    depth = min(len(queue) + 1, settings.depth)
    k = settings.samples
    nh, nr = len(hq), len(rq)
    top = 1 - 1 / nh  # a chat older than nearly all ends within the last slice of the table
    draws: list[list[float]] = [[] for _ in range(depth)]
    # A chat in progress ends at a quantile of its handle time given the time it has run:
    # u in [F(age), 1), looked up as hq[int(a + rand() * b)]. An offer frees its slot after
    # the engineer answers and handles it. Engineers with more chats than slots (their
    # capacity was lowered) free a slot only when the excess has ended: sampled apart.
    chats: list[tuple[float, float, float]] = []
    offers: list[float] = []
    crowded: list[tuple[int, list[tuple[float, float, float]], tuple[float, ...]]] = []
    idle = 0
    away: list[tuple[int, list[tuple[float, float, float]], list[float]]] = []
    for e in engineers:
        if e.away_for is not None:
            # Away while connected: back after one of the breaks seen that lasted longer than
            # this one has so far (resampled); never, as far as the wait goes, if none did.
            longer = [b - e.away_for for b in breaks if b > e.away_for]
            if longer:
                away.append((e.capacity, [(age, lo * nh, (1 - lo) * nh)
                                          for age in e.chat_ages
                                          for lo in (min(handle.cdf(age), top),)], longer))
            continue
        mine = []
        for age in e.chat_ages:
            lo = min(handle.cdf(age), top)
            mine.append((age, lo * nh, (1 - lo) * nh))
        if len(mine) + len(e.offer_ages) > e.capacity:
            crowded.append((e.capacity, mine, e.offer_ages))
            continue
        chats.extend(mine)
        offers.extend(e.offer_ages)
        idle += e.capacity - len(mine) - len(e.offer_ages)
    zeros = [0.0] * idle
    offered = [w.offered_for for w in queue[:depth]] + [None] * (depth - len(queue))
    for j in range(k):
        # Each sample starts from its own seed: the same sample of the same desk draws the
        # same numbers however many positions are sampled, so that estimates move only when
        # the desk does.
        rng.seed(settings.seed + j)
        free = [hq[int(a + rand() * b)] - age for age, a, b in chats]
        for age in offers:
            answer = rq[int(rand() * nr)] - age
            free.append((answer if answer > 0 else 0.0) + hq[int(rand() * nh)])
        for cap, mine, offer_ages in crowded:
            ends = [hq[int(a + rand() * b)] - age for age, a, b in mine]
            for age in offer_ages:
                answer = rq[int(rand() * nr)] - age
                ends.append((answer if answer > 0 else 0.0) + hq[int(rand() * nh)])
            ends.sort()
            free += ends[-cap:]
        for cap, mine, longer in away:
            back = longer[int(rand() * len(longer))]
            ends = sorted(hq[int(a + rand() * b)] - age for age, a, b in mine)[-cap:]
            free += [e if e > back else back for e in ends]
            free += [back] * (cap - len(ends))
        free += zeros
        heapq.heapify(free)
        for i in range(depth):
            since = offered[i]
            if since is not None:
                answer = rq[int(rand() * nr)] - since
                draws[i].append(answer if answer > 0 else 0.0)
                continue
            start = pop(free)
            if start < 0:
                start = 0.0
            wait = start + rq[int(rand() * nr)]
            draws[i].append(wait)
            # Exponential patience: they leave before a slot frees with P = 1 - exp(-θ·start).
            if theta > 0 and rand() > exp(-theta * start):
                push(free, start)  # the slot goes to the next in line
            else:
                push(free, wait + hq[int(rand() * nh)])
    alpha = (1 - settings.coverage) / 2
    sampled = []
    for d in draws:
        d.sort()
        sampled.append((sum(d) / k, d[int(alpha * k)], d[min(k - 1, int((1 - alpha) * k))]))
    rate = capacity / handle.mean
    widen = [observed.widening(g) for g in range(len(POSITION_GROUPS) + 1)]
    return WaitTable(sampled, (rate, theta), widen, observed.unit())
