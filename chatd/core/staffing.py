"""How many chat slots a desk needs: Erlang C, Erlang A and square-root staffing
(docs/waits.md#staffing-forecast).

Notation as in docs/waits.md: ``s`` slots, ``lam`` arrivals a second, ``mu`` completions a
second per busy slot (1 / mean handle time), ``theta`` abandonments a second per waiting
customer (1 / mean patience), offered load ``a = lam / mu``.

The service level is P(W <= target) for an arriving customer, where W is the *virtual*
wait: the time until the customer would be answered if it never gave up. With abandonment
that is the figure to staff for (the wait of those who stay is shorter only because the
impatient left, and counting the ones who left as "answered in time" flatters the desk).

Pure functions of the standard library only; every figure is computed with positive
terms or in log space, so nothing overflows for thousands of slots.
"""

from __future__ import annotations

import math
from collections.abc import Callable

# Queue states whose probability, summed, is below this are left out of Erlang A.
_TAIL_MASS = 1e-12
# A guard against inputs whose queue would need more states than is reasonable to walk (an
# overload that only an almost-zero abandonment rate keeps stable).
_MAX_QUEUE_STATES = 5_000_000


def erlang_b(s: int, a: float) -> float:
    """The blocking probability of M/M/s/s with offered load ``a``.

    Computed by the recursion B(k) = a·B(k−1) / (k + a·B(k−1)), B(0) = 1: every step
    divides positive numbers, so it is stable for any ``s`` (the textbook ratio of
    aˢ/s! to a sum overflows past s ≈ 170).
    """
    _check_slots(s)
    _check_nonnegative("a (offered load)", a)
    b = 1.0
    for k in range(1, s + 1):
        ab = a * b
        b = ab / (k + ab)
    return b


def erlang_c(s: int, a: float) -> float:
    """The probability that an arrival waits in M/M/s with offered load ``a = lam / mu``.

    1.0 when ``s <= a`` (the queue grows without bound, everyone waits). From Erlang B:
    C = s·B / (s − a·(1 − B)).
    """
    _check_slots(s)
    _check_nonnegative("a (offered load)", a)
    if s <= a:
        return 1.0
    return _erlang_c_from_b(s, a, erlang_b(s, a))


def service_level(
    s: int, lam: float, mu: float, target: float, theta: float | None = None
) -> float:
    """P(W <= target) for an arriving customer, W its virtual wait (see the module doc).

    ``theta`` None or 0: Erlang C (M/M/s), 1 − C·exp(−(sμ − λ)·target), and 0.0 when
    sμ <= λ. ``theta`` > 0: Erlang A (M/M/s+M), which stays stable when λ > sμ because
    the impatient leave. 1.0 when nobody arrives.
    """
    _check_slots(s)
    _check_rates(lam, mu)
    _check_nonnegative("target", target)
    theta = _check_theta(theta)
    if lam == 0.0:
        return 1.0
    if theta == 0.0:
        return _service_level_c(s, lam, mu, target, erlang_b(s, lam / mu))
    return _service_level_a(s, lam, mu, target, theta, erlang_b(s, lam / mu))


def abandon_share(s: int, lam: float, mu: float, theta: float) -> float:
    """The share of arrivals who give up before being answered, in Erlang A.

    θ·E[queue length] / λ: customers leave the queue at rate θ each, and in the long run
    that outflow divided by the inflow λ is the share who leave unanswered.
    """
    _check_slots(s)
    _check_rates(lam, mu)
    theta = _check_theta(theta)
    if lam == 0.0 or theta == 0.0:
        return 0.0
    if s == 0:
        return 1.0
    found = _queue_found(s, lam, mu, theta, erlang_b(s, lam / mu))
    mean_queue = math.fsum(n * p for n, p in enumerate(found))
    return min(1.0, theta * mean_queue / lam)


def slots_needed(
    lam: float,
    mu: float,
    target: float,
    objective: float,
    theta: float | None = None,
    max_slots: int = 5000,
) -> int:
    """The smallest ``s`` with ``service_level(s, lam, mu, target, theta) >= objective``.

    0 when nobody arrives. Raises ValueError when even ``max_slots`` slots fall short.

    The service level rises with ``s``, so the search starts at the offered load (where
    the answer lies within a few √a) and walks out from there, carrying Erlang B from one
    ``s`` to the next in O(1) instead of recomputing it.
    """
    _check_rates(lam, mu)
    _check_nonnegative("target", target)
    theta = _check_theta(theta)
    if not 0.0 < objective < 1.0:
        raise ValueError(f"objective must lie strictly between 0 and 1, not {objective!r}")
    if isinstance(max_slots, bool) or not isinstance(max_slots, int) or max_slots < 1:
        raise ValueError(f"max_slots must be a positive integer, not {max_slots!r}")
    if lam == 0.0:
        return 0
    a = lam / mu
    if theta == 0.0:
        return _slots_needed_c(lam, mu, target, objective, max_slots)
    return _slots_needed_a(lam, mu, target, objective, theta, max_slots, a)


def square_root_staffing(a: float, beta: float) -> float:
    """The square-root staffing rule s ≈ a + β·√a (Halfin & Whitt 1981), never below 0.

    β is the quality margin: about 0.5–2 for a desk without abandonment; it may be
    negative where abandonment carries part of the load (Erlang A).
    """
    _check_nonnegative("a (offered load)", a)
    if not math.isfinite(beta):
        raise ValueError(f"beta must be a finite number, not {beta!r}")
    return max(0.0, a + beta * math.sqrt(a))


def halfin_whitt_wait_probability(beta: float) -> float:
    """The Halfin–Whitt limit of Erlang C with s = a + β√a: [1 + βΦ(β)/φ(β)]⁻¹.

    An approximation for large loads, used to sanity-check the exact figure. Written
    as φ / (φ + βΦ) so that large β gives 0 instead of dividing by an underflowed φ.
    """
    if not math.isfinite(beta) or beta < 0.0:
        raise ValueError(f"beta must be a finite number >= 0, not {beta!r}")
    density = math.exp(-0.5 * beta * beta) / math.sqrt(2.0 * math.pi)
    cumulative = 0.5 * (1.0 + math.erf(beta / math.sqrt(2.0)))
    return density / (density + beta * cumulative)


# -- Erlang C ----------------------------------------------------------------------------


def _erlang_c_from_b(s: int, a: float, b: float) -> float:
    return s * b / (s - a * (1.0 - b))


def _service_level_c(s: int, lam: float, mu: float, target: float, b: float) -> float:
    if s * mu <= lam:
        return 0.0
    c = _erlang_c_from_b(s, lam / mu, b)
    return 1.0 - c * math.exp(-(s * mu - lam) * target)


def _slots_needed_c(lam: float, mu: float, target: float, objective: float, max_slots: int) -> int:
    a = lam / mu
    # Below or at the load the queue is unstable (service level 0 < objective).
    s = math.floor(a) + 1
    if s > max_slots:
        raise _unreachable(objective, max_slots)
    b = erlang_b(s, a)
    while _service_level_c(s, lam, mu, target, b) < objective:
        s += 1
        if s > max_slots:
            raise _unreachable(objective, max_slots)
        b = a * b / (s + a * b)
    return s


# -- Erlang A ----------------------------------------------------------------------------


def _queue_found(s: int, lam: float, mu: float, theta: float, b: float) -> list[float]:
    """P(an arrival finds all s slots busy and n customers waiting), for n = 0, 1, …

    The stationary distribution of the birth–death chain with births λ and deaths
    min(k, s)·μ + max(0, k − s)·θ; an arrival sees it (PASTA). Below s it is Erlang's:
    relative to π(s), the states 0…s−1 weigh (1 − B)/B in all, B = Erlang B. Above s,
    π(s + n)/π(s) = Π_{j=1..n} λ / (sμ + jθ), kept in logs (an overload with little
    abandonment piles up a long queue whose weights overflow a float). The walk stops
    once the ratios fall below 1 and the geometric bound on the rest is < 1e-12 of the
    mass so far.
    """
    if b == 0.0:
        # Waiting is less likely than the smallest float: nobody waits.
        return []
    log_lower = math.log1p(-b) - math.log(b) if b < 1.0 else -math.inf
    logs = [0.0]
    log_total = _log_add(log_lower, 0.0)
    log_term = 0.0
    service = s * mu
    log_lam = math.log(lam)
    log_tail_mass = math.log(_TAIL_MASS)
    n = 0
    while True:
        ratio = lam / (service + (n + 1) * theta)
        if ratio < 1.0:
            # Later ratios are smaller still, so the rest is below a geometric series.
            bound = log_term + math.log(ratio) - math.log1p(-ratio)
            if bound < log_tail_mass + log_total:
                break
        n += 1
        if n > _MAX_QUEUE_STATES:
            raise ValueError(
                "the queue is too long to compute: the load exceeds the slots and the "
                "abandonment rate is too small to bound the queue"
            )
        log_term += log_lam - math.log(service + n * theta)
        logs.append(log_term)
        log_total = _log_add(log_total, log_term)
    return [math.exp(x - log_total) for x in logs]


def _service_level_a(s: int, lam: float, mu: float, target: float, theta: float, b: float) -> float:
    """Erlang A's P(V <= target), V the virtual wait.

    An arrival that finds n waiting is answered after n + 1 departures from the line
    ahead of it, at rates sμ + nθ, sμ + (n−1)θ, …, sμ (service or abandonment of those
    ahead; its own patience does not count). That sum of exponentials is the (n+1)-th of
    m + n exponential clocks of rate θ to ring, m = sμ/θ: ringing clocks drop out one at
    a time, at rate (clocks left)·θ. So P(V <= t | n) = P(Bin(m + n, x) >= n + 1) with
    x = 1 − e^(−θt), which for real m is the regularised incomplete beta I_x(n + 1, m),
    equivalently P(V > t | n) = P(Y <= n) for Y negative binomial with
    P(Y = k) = Γ(m + k) / (Γ(m)·k!) · (1 − x)^m · x^k. Its cumulative sums are sums of
    positive terms, stable for any n; as θ → 0 Y tends to Poisson(sμt) and the formula
    to Erlang C's.
    """
    if s == 0:
        return 0.0  # nobody is ever answered
    found = _queue_found(s, lam, mu, theta, b)
    if not found:
        return 1.0
    if target == 0.0:
        return max(0.0, 1.0 - math.fsum(found))
    m = s * mu / theta
    # log P(Y = 0) = m·log(1 − x) = −sμ·t exactly; log x computed without cancellation.
    log_pmf = -s * mu * target
    log_x = math.log(-math.expm1(-theta * target))
    late = 0.0  # Σ_n P(found n) · P(V > target | n)
    cdf = 0.0
    for n, p in enumerate(found):
        if n:
            log_pmf += math.log((m + n - 1) / n) + log_x
        cdf = min(1.0, cdf + math.exp(log_pmf))
        late += p * cdf
    return min(1.0, max(0.0, 1.0 - late))


def _slots_needed_a(
    lam: float, mu: float, target: float, objective: float, theta: float, max_slots: int, a: float
) -> int:
    """Galloping then bisection from the offered load, with Erlang B for every s visited
    kept in a table filled by the O(1) step of the recursion."""
    start = min(max(1, math.floor(a)), max_slots)
    erlang_bs = [1.0]  # Erlang B for s = 0, 1, …, filled on demand

    def meets(s: int) -> bool:
        while len(erlang_bs) <= s:
            k = len(erlang_bs)
            ab = a * erlang_bs[-1]
            erlang_bs.append(ab / (k + ab))
        return _service_level_a(s, lam, mu, target, theta, erlang_bs[s]) >= objective

    if meets(start):
        # Abandonment can carry part of the load: look below a.
        good = start
        step = 1
        while good > 1 and meets(max(1, good - step)):
            good = max(1, good - step)
            step *= 2
        if good == 1:
            return 1
        bad = max(1, good - step)
        return _bisect(bad, good, meets)
    bad = start
    step = 1
    while True:
        if bad >= max_slots:
            raise _unreachable(objective, max_slots)
        candidate = min(max_slots, bad + step)
        if meets(candidate):
            return _bisect(bad, candidate, meets)
        bad = candidate
        step *= 2


def _bisect(bad: int, good: int, meets: Callable[[int], bool]) -> int:
    """The smallest s in (bad, good] that meets the objective, given meets(good)."""
    while good - bad > 1:
        middle = (bad + good) // 2
        if meets(middle):
            good = middle
        else:
            bad = middle
    return good


# -- helpers -----------------------------------------------------------------------------


def _log_add(x: float, y: float) -> float:
    """log(eˣ + eʸ) without overflow."""
    if x < y:
        x, y = y, x
    if y == -math.inf:
        return x
    return x + math.log1p(math.exp(y - x))


def _unreachable(objective: float, max_slots: int) -> ValueError:
    return ValueError(f"the objective {objective} is not met even with max_slots={max_slots}")


def _check_slots(s: int) -> None:
    if isinstance(s, bool) or not isinstance(s, int) or s < 0:
        raise ValueError(f"s (slots) must be a non-negative integer, not {s!r}")


def _check_nonnegative(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")


def _check_rates(lam: float, mu: float) -> None:
    _check_nonnegative("lam (arrival rate)", lam)
    if not math.isfinite(mu) or mu <= 0.0:
        raise ValueError(f"mu (service rate) must be a finite number > 0, not {mu!r}")


def _check_theta(theta: float | None) -> float:
    if theta is None:
        return 0.0
    _check_nonnegative("theta (abandonment rate)", theta)
    return float(theta)
