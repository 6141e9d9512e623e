"""Staffing math: Erlang C against exact sums and published figures, Erlang A against an
exact closed form and a simulation of the queue, and the slot search."""

from __future__ import annotations

import math
import random
import time
from collections import deque
from decimal import Decimal, localcontext
from fractions import Fraction
from statistics import NormalDist

import pytest

from chatd.core.staffing import (
    abandon_share,
    erlang_b,
    erlang_c,
    halfin_whitt_wait_probability,
    service_level,
    slots_needed,
    square_root_staffing,
)

# -- independent references --------------------------------------------------------------


def exact_erlang_c(s: int, a: Fraction) -> Fraction:
    """The textbook formula in exact arithmetic: [aˢ/s!·s/(s−a)] / [Σ_{k<s} aᵏ/k! + same]."""
    top = a**s / math.factorial(s) * s / (s - a)
    return top / (sum(a**k / math.factorial(k) for k in range(s)) + top)


def log_space_erlang_c(s: int, a: float) -> float:
    """The same formula with every term in logs (lgamma), for loads where aˢ overflows."""
    log_top = s * math.log(a) - math.lgamma(s + 1) + math.log(s / (s - a))
    logs = [k * math.log(a) - math.lgamma(k + 1) for k in range(s)] + [log_top]
    peak = max(logs)
    total = math.fsum(math.exp(x - peak) for x in logs)
    return math.exp(log_top - peak) / total


def exact_erlang_a_weights(s: int, lam: Fraction, mu: Fraction, theta: Fraction) -> list[Fraction]:
    """π(k)/π(0) of the M/M/s+M birth–death chain, exact, until the next state would weigh
    less than 1e-30 of the total."""
    weights = [lam**k / math.factorial(k) / mu**k for k in range(s + 1)]
    n = 0
    while weights[-1] / sum(weights) > Fraction(1, 10**30) or n < 5:
        n += 1
        weights.append(weights[-1] * lam / (s * mu + n * theta))
    return weights


def exact_erlang_a_service_level(
    s: int, lam: Fraction, mu: Fraction, theta: Fraction, target: Fraction
) -> float:
    """Erlang A's P(V <= target) from the textbook pieces, by a different route than the
    module: the stationary distribution in exact fractions, and for an arrival finding n
    waiting the hypoexponential tail P(V > t) = Σ_j c_j·e^(−r_j·t) over the distinct
    rates r_j = sμ + jθ, j = 0…n, with c_j = Π_{i≠j} r_i/(r_i − r_j) exact and the
    alternating sum done in 80-digit decimals (it cancels far too much for floats)."""
    weights = exact_erlang_a_weights(s, lam, mu, theta)
    total = sum(weights)
    with localcontext() as ctx:
        ctx.prec = 80
        late = Decimal(0)
        for queued, weight in enumerate(weights[s:]):
            rates = [s * mu + j * theta for j in range(queued + 1)]
            tail = Decimal(0)
            for j, r_j in enumerate(rates):
                c_j = Fraction(1)
                for i, r_i in enumerate(rates):
                    if i != j:
                        c_j *= r_i / (r_i - r_j)
                decay = (-Decimal(r_j.numerator) * Decimal(target.numerator)) / (
                    Decimal(r_j.denominator) * Decimal(target.denominator)
                )
                tail += Decimal(c_j.numerator) / Decimal(c_j.denominator) * decay.exp()
            p = weight / total
            late += Decimal(p.numerator) / Decimal(p.denominator) * tail
        return float(1 - late)


def simulate_erlang_a(
    s: int, lam: float, mu: float, theta: float, target: float, arrivals: int, seed: int
) -> tuple[float, float]:
    """(share of arrivals whose virtual wait is <= target, share who abandon) in a
    simulated M/M/s+M queue, first come first served.

    The chain is run event by event: with ``busy`` slots busy the next event comes after
    Exp(λ + busy·μ) and is an arrival with probability λ / (λ + busy·μ) (exponential
    clocks are memoryless, so they can be redrawn after every event). Each queued
    customer draws its patience on arrival and is removed lazily.

    The virtual wait of a customer is the time until a slot would reach it had it stayed.
    Those behind it never affect it (first come, first served), so it is the first moment
    after its arrival at which a slot is free and everyone ahead of it has been served or
    has left. A slot frees only at a service completion, and it then takes the first
    customer in line who is still waiting. So at each completion every customer popped
    from the front — the ones who already left, and the one who is served — has its
    virtual wait end now: all ahead of them are gone and the slot is free. A customer
    who gives up is thus measured as if censoring did not happen, without simulating a
    second, patient copy of the system. Arrivals that find a free slot wait 0. The
    first 10,000 arrivals (from an empty desk) are not counted; after the last arrival
    the queue drains so that every counted customer is measured.
    """
    warm_up = 10_000
    rng = random.Random(seed)
    now = 0.0
    busy = 0
    queue: deque[tuple[float, float, int]] = deque()  # (arrived, would leave, index)
    arrived = met = gave_up = 0

    def record(index: int, wait: float, left: bool) -> None:
        nonlocal met, gave_up
        if index >= warm_up:
            met += wait <= target
            gave_up += left

    while arrived < arrivals or queue:
        arriving = lam if arrived < arrivals else 0.0
        rate = arriving + busy * mu
        now += rng.expovariate(rate)
        if rng.random() * rate < arriving:
            if busy < s:
                busy += 1
                record(arrived, 0.0, False)
            else:
                queue.append((now, now + rng.expovariate(theta), arrived))
            arrived += 1
        else:
            busy -= 1
            while queue:
                came, leaves, index = queue.popleft()
                record(index, now - came, leaves < now)
                if leaves >= now:
                    busy += 1
                    break
    counted = arrivals - warm_up
    return met / counted, gave_up / counted


# -- Erlang C ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("s", "published"),
    # Erlang C tables for 10 Erlangs. (0.1008, sometimes quoted for s = 15, is not what
    # the formula gives: the exact sum is 0.10204…)
    [(11, 0.6821), (12, 0.4494), (13, 0.2853), (15, 0.1020)],
)
def test_erlang_c_matches_exact_sum_and_published_tables(s: int, published: float) -> None:
    exact = float(exact_erlang_c(s, Fraction(10)))
    assert erlang_c(s, 10.0) == pytest.approx(exact, rel=1e-12)
    assert erlang_c(s, 10.0) == pytest.approx(published, abs=5e-5)


@pytest.mark.parametrize(("s", "a"), [(3, Fraction(5, 2)), (7, Fraction(31, 10)), (40, 33)])
def test_erlang_c_matches_exact_sum_at_other_loads(s: int, a: Fraction) -> None:
    assert erlang_c(s, float(a)) == pytest.approx(float(exact_erlang_c(s, Fraction(a))), 1e-12)


@pytest.mark.parametrize(("s", "a"), [(930, 900.0), (2000, 1950.0), (2000, 1200.0)])
def test_erlang_c_large_loads_do_not_overflow(s: int, a: float) -> None:
    c = erlang_c(s, a)
    assert 0.0 <= c < 1.0
    assert c == pytest.approx(log_space_erlang_c(s, a), rel=1e-9, abs=1e-300)


def test_erlang_c_is_one_when_the_queue_is_unstable() -> None:
    assert erlang_c(10, 10.0) == 1.0
    assert erlang_c(10, 12.5) == 1.0
    assert erlang_c(0, 0.0) == 1.0
    assert erlang_c(5, 0.0) == 0.0


def test_erlang_b_matches_its_textbook_formula() -> None:
    a = Fraction(10)
    exact = a**12 / math.factorial(12) / sum(a**k / math.factorial(k) for k in range(13))
    assert erlang_b(12, 10.0) == pytest.approx(float(exact), rel=1e-12)


def test_erlang_c_service_level_follows_the_exponential_tail() -> None:
    s, lam, mu, target = 12, 10 / 300, 1 / 300, 20.0
    c = float(exact_erlang_c(s, Fraction(10)))
    expected = 1.0 - c * math.exp(-(s * mu - lam) * target)
    assert service_level(s, lam, mu, target) == pytest.approx(expected, rel=1e-12)
    assert service_level(s, lam, mu, target, theta=0.0) == pytest.approx(expected, rel=1e-12)
    assert service_level(s, lam, mu, 0.0) == pytest.approx(1.0 - c, rel=1e-12)


def test_erlang_c_service_level_is_zero_when_slots_cannot_keep_up() -> None:
    assert service_level(10, 10.0, 1.0, 60.0) == 0.0
    assert service_level(10, 11.0, 1.0, 60.0) == 0.0
    assert service_level(0, 1.0, 1.0, 60.0) == 0.0


def test_nobody_arriving_is_full_service() -> None:
    assert service_level(0, 0.0, 1.0, 10.0) == 1.0
    assert service_level(3, 0.0, 1.0, 10.0, theta=0.5) == 1.0
    assert abandon_share(3, 0.0, 1.0, 0.5) == 0.0


# -- Erlang A ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("s", "lam", "mu", "theta", "target"),
    [
        (2, Fraction(3, 2), Fraction(1), Fraction(7, 10), Fraction(4, 5)),
        (3, Fraction(5), Fraction(1), Fraction(2), Fraction(1, 3)),  # λ > sμ
        (1, Fraction(1, 2), Fraction(1), Fraction(1, 5), Fraction(3)),
    ],
)
def test_erlang_a_matches_exact_arithmetic(
    s: int, lam: Fraction, mu: Fraction, theta: Fraction, target: Fraction
) -> None:
    expected = exact_erlang_a_service_level(s, lam, mu, theta, target)
    got = service_level(s, float(lam), float(mu), float(target), theta=float(theta))
    assert got == pytest.approx(expected, abs=1e-10)
    # Abandonment: θ·E[queue]/λ with the exact stationary distribution.
    weights = exact_erlang_a_weights(s, lam, mu, theta)
    mean_queue = sum(max(0, k - s) * w for k, w in enumerate(weights)) / sum(weights)
    expected_share = float(theta * mean_queue / lam)
    assert abandon_share(s, float(lam), float(mu), float(theta)) == pytest.approx(
        expected_share, rel=1e-9
    )


@pytest.mark.parametrize(
    ("s", "lam", "mu", "theta", "target", "seed"),
    [
        (10, 9.0, 1.0, 0.5, 0.2, 1),  # a busy desk with patient customers
        (10, 12.0, 1.0, 1.0, 0.5, 2),  # overloaded (λ > sμ), kept stable by abandonment
        (3, 2.5, 1.0, 0.3, 1.0, 3),  # a small desk
    ],
)
def test_erlang_a_matches_a_simulated_queue(
    s: int, lam: float, mu: float, theta: float, target: float, seed: int
) -> None:
    simulated, abandoned = simulate_erlang_a(s, lam, mu, theta, target, 200_000, seed)
    assert service_level(s, lam, mu, target, theta=theta) == pytest.approx(simulated, abs=0.01)
    assert abandon_share(s, lam, mu, theta) == pytest.approx(abandoned, abs=0.01)


def test_erlang_a_differs_from_erlang_c_where_customers_give_up() -> None:
    # The simulated points above would not pass against Erlang C: abandonment matters.
    assert service_level(10, 9.0, 1.0, 0.2) < service_level(10, 9.0, 1.0, 0.2, theta=0.5) - 0.2


@pytest.mark.parametrize(("s", "lam", "target"), [(12, 10.0, 0.2), (11, 10.0, 0.0), (3, 1.0, 2)])
def test_erlang_a_tends_to_erlang_c_as_patience_grows(s: int, lam: float, target: float) -> None:
    erlang_c_level = service_level(s, lam, 1.0, target)
    gaps = [
        abs(service_level(s, lam, 1.0, target, theta=theta) - erlang_c_level)
        for theta in (1e-2, 1e-4, 1e-6)
    ]
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 1e-5


def test_erlang_a_stays_finite_in_heavy_overload() -> None:
    level = service_level(100, 200.0, 1.0, 0.05, theta=0.01)  # a queue of ~10,000
    assert 0.0 <= level < 0.01
    assert abandon_share(100, 200.0, 1.0, 0.01) == pytest.approx(0.5, abs=1e-3)
    assert 0.0 < service_level(50, 60.0, 1.0, 0.05, theta=2.0) < 1.0


def test_abandon_share_is_everyone_without_slots() -> None:
    assert abandon_share(0, 3.0, 1.0, 0.5) == pytest.approx(1.0)
    assert service_level(0, 3.0, 1.0, 10.0, theta=0.5) == 0.0


def test_service_level_rises_with_slots() -> None:
    for theta in (None, 0.02, 1.0):
        levels = [service_level(s, 5.0, 0.1, 4.0, theta) for s in range(30, 90)]
        assert levels == sorted(levels)
        assert levels[-1] > 0.99


# -- slots_needed --------------------------------------------------------------------------


@pytest.mark.parametrize("theta", [None, 1 / 180])
def test_slots_needed_is_the_smallest_count_meeting_the_objective(theta: float | None) -> None:
    lam, mu, target = 500 / 300, 1 / 300, 20.0
    s = slots_needed(lam, mu, target, 0.8, theta=theta)
    assert service_level(s, lam, mu, target, theta) >= 0.8
    assert service_level(s - 1, lam, mu, target, theta) < 0.8


@pytest.mark.parametrize(
    ("lam", "mu", "target", "theta"),
    [
        (3.7, 1.0, 0.25, None),
        (3.7, 1.0, 0.25, 0.4),
        (25.0, 1.0, 0.1, 0.05),
        (80.0, 1.0, 0.05, 0.5),
        (80.0, 1.0, 0.05, 3.0),  # abandonment pulls the need below the load
    ],
)
def test_slots_needed_agrees_with_a_plain_scan(
    lam: float, mu: float, target: float, theta: float | None
) -> None:
    for objective in (0.3, 0.5, 0.65, 0.8, 0.9, 0.97):
        expected = next(
            s for s in range(1, 500) if service_level(s, lam, mu, target, theta) >= objective
        )
        assert slots_needed(lam, mu, target, objective, theta) == expected


def test_slots_needed_for_erlang_c_agrees_with_exact_arithmetic() -> None:
    # 10 Erlangs, 20 s target, 300 s handle time: the first s with 1 − C·e^{−(s−10)/15}
    # >= 0.8, each C exact.
    def exact_level(s: int) -> float:
        if s <= 10:
            return 0.0
        return 1.0 - float(exact_erlang_c(s, Fraction(10))) * math.exp(-(s - 10) * 20 / 300)

    expected = next(s for s in range(1, 40) if exact_level(s) >= 0.8)
    assert slots_needed(10 / 300, 1 / 300, 20.0, 0.8) == expected


def test_slots_needed_rises_with_the_objective_and_the_load() -> None:
    for theta in (None, 1 / 120):
        by_objective = [
            slots_needed(1.0, 1 / 240, 30.0, objective, theta)
            for objective in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
        ]
        assert by_objective == sorted(by_objective)
        assert by_objective[0] < by_objective[-1]
        by_load = [slots_needed(lam, 1 / 240, 30.0, 0.8, theta) for lam in (0.1, 0.5, 1.0, 2.0)]
        assert by_load == sorted(by_load)
        assert by_load[0] < by_load[-1]


@pytest.mark.parametrize(("lam", "theta"), [(0.5, 1 / 600), (2.0, 1 / 120), (5.0, 1 / 30)])
def test_abandonment_never_needs_more_slots(lam: float, theta: float) -> None:
    with_abandonment = slots_needed(lam, 1 / 240, 30.0, 0.8, theta=theta)
    assert with_abandonment <= slots_needed(lam, 1 / 240, 30.0, 0.8)


def test_slots_needed_may_fall_below_the_load_when_many_give_up() -> None:
    s = slots_needed(10.0, 1.0, 1.0, 0.5, theta=5.0)
    assert s < 10
    assert service_level(s, 10.0, 1.0, 1.0, 5.0) >= 0.5
    assert s == 1 or service_level(s - 1, 10.0, 1.0, 1.0, 5.0) < 0.5


def test_slots_needed_is_zero_without_arrivals() -> None:
    assert slots_needed(0.0, 1.0, 20.0, 0.8) == 0
    assert slots_needed(0.0, 1.0, 20.0, 0.8, theta=0.1) == 0


def test_slots_needed_refuses_an_unreachable_objective() -> None:
    with pytest.raises(ValueError, match="max_slots"):
        slots_needed(100.0, 1.0, 1.0, 0.8, max_slots=50)
    with pytest.raises(ValueError, match="max_slots"):
        slots_needed(100.0, 1.0, 1.0, 0.8, theta=0.01, max_slots=50)


def test_slots_needed_is_fast_for_a_large_desk() -> None:
    lam, mu = 500 / 300, 1 / 300  # 500 Erlangs
    started = time.perf_counter()
    for theta in (None, 1 / 60, 1 / 180, 1 / 1800):
        slots_needed(lam, mu, 20.0, 0.8, theta=theta)
    # A few ms in all here; the bound is loose so that a slow machine does not fail it,
    # while a plain scan up from s = 1 (about a second) would.
    assert time.perf_counter() - started < 0.25


# -- square-root staffing ------------------------------------------------------------------


def test_halfin_whitt_probability_matches_its_formula() -> None:
    normal = NormalDist()
    for beta in (0.0, 0.25, 1.0, 2.5):
        expected = 1.0 / (1.0 + beta * normal.cdf(beta) / normal.pdf(beta))
        assert halfin_whitt_wait_probability(beta) == pytest.approx(expected, rel=1e-12)
    assert halfin_whitt_wait_probability(60.0) == 0.0


def test_square_root_staffing_approaches_erlang_c_for_large_loads() -> None:
    errors = {}
    for a in (100.0, 2000.0):
        s = math.ceil(square_root_staffing(a, 1.0))
        assert s == math.ceil(a + math.sqrt(a))
        beta = (s - a) / math.sqrt(a)
        errors[a] = abs(erlang_c(s, a) - halfin_whitt_wait_probability(beta))
    assert errors[2000.0] < 0.005
    assert errors[2000.0] < errors[100.0]


def test_square_root_staffing_is_never_negative() -> None:
    assert square_root_staffing(4.0, -3.0) == 0.0
    assert square_root_staffing(400.0, -1.0) == pytest.approx(380.0)


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: erlang_c(-1, 1.0), "slots"),
        (lambda: erlang_c(2.5, 1.0), "slots"),  # type: ignore[arg-type]
        (lambda: erlang_c(3, -1.0), "offered load"),
        (lambda: erlang_c(3, math.nan), "offered load"),
        (lambda: service_level(3, -1.0, 1.0, 10.0), "arrival rate"),
        (lambda: service_level(3, 1.0, 0.0, 10.0), "service rate"),
        (lambda: service_level(3, 1.0, 1.0, -5.0), "target"),
        (lambda: service_level(3, 1.0, 1.0, 5.0, theta=-0.1), "abandonment"),
        (lambda: abandon_share(3, 1.0, 1.0, math.inf), "abandonment"),
        (lambda: slots_needed(1.0, 1.0, 10.0, 1.0), "objective"),
        (lambda: slots_needed(1.0, 1.0, 10.0, 0.0), "objective"),
        (lambda: slots_needed(1.0, 1.0, 10.0, 0.8, max_slots=0), "max_slots"),
        (lambda: halfin_whitt_wait_probability(-0.5), "beta"),
        (lambda: square_root_staffing(-1.0, 1.0), "offered load"),
    ],
)
def test_bad_arguments_are_refused(call: object, message: str) -> None:
    assert callable(call)
    with pytest.raises(ValueError, match=message):
        call()
