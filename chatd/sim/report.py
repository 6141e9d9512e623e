"""What a simulated day says about the estimate (docs/waits.md#measured-accuracy).

Measured over answered customers who arrived after the warm-up, a day (all seeds pooled),
not one customer: the weighted absolute error Σ|Ŵ − W| / ΣW, the bias ΣŴ / ΣW, the share of
waits inside the range shown, and the range's width; per bucket of the position at join,
the error against the accuracy floor of a perfect queue-length estimate (FLOOR below,
docs/waits.md#the-accuracy-floor); the
service level (answered within the target, over customers answered or still waiting at the
target) and the share who left before an answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .run import CustomerRecord, DayResult, Told

BUCKETS: tuple[tuple[str, int, int], ...] = (
    ("1", 1, 1), ("2-3", 2, 3), ("4-8", 4, 8), ("9-20", 9, 20), ("21+", 21, 1 << 30),
)
# Median |W − Ŵ| / Ŵ of a perfect queue-length estimate under M/M/s, by customers ahead.
FLOOR = ((0, 0.64), (1, 0.47), (2, 0.38), (4, 0.30), (9, 0.21), (19, 0.15), (49, 0.10))
# The bars on every loaded scenario (docs/waits.md#measured-accuracy).
MAX_ERROR = 0.35
BIAS = (0.9, 1.1)
MIN_COVERAGE = 0.80
FLOOR_FACTOR = 1.3
WIDTH_RATIO = 2.5  # a range is bounded when high <= 2.5 x low (else it is an upper bound)


def floor_at(ahead: float) -> float:
    """The accuracy floor for ``ahead`` customers ahead, interpolated in the table (and
    falling as 1/√(n + 1) past it)."""
    if ahead >= FLOOR[-1][0]:
        return FLOOR[-1][1] * math.sqrt((FLOOR[-1][0] + 1) / (ahead + 1))
    for (n0, f0), (n1, f1) in zip(FLOOR, FLOOR[1:], strict=False):
        if ahead <= n1:
            return f0 + (f1 - f0) * (max(ahead, n0) - n0) / (n1 - n0)
    return FLOOR[-1][1]  # pragma: no cover


@dataclass(frozen=True, slots=True)
class Accuracy:
    customers: int
    error: float | None  # Σ|Ŵ − W| / ΣW
    bias: float | None  # ΣŴ / ΣW
    coverage: float | None  # share of W in [low, high]
    width: float | None  # mean high − low, seconds
    bounded: float | None  # share told a range with high <= 2.5 × low (the rest: "up to")
    ratio: float | None  # mean high / low over those ranges
    mean_wait: float | None
    mean_estimate: float | None
    floor: float | None  # the accuracy floor at the bucket's mean customers ahead
    median_error: float | None  # median |W − Ŵ| / Ŵ: the floor's own statistic

    def to_dict(self) -> dict[str, float | int | None]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def accuracy(pairs: Sequence[tuple[Told, float]], *, legacy: bool = False) -> Accuracy:
    """``pairs`` of (what was told, the real wait)."""
    def est(t: Told) -> float | None:
        return t.legacy if legacy else t.seconds

    rows = [(t, w, e) for t, w in pairs if (e := est(t)) is not None]
    n = len(rows)
    if n == 0:
        return Accuracy(0, None, None, None, None, None, None, None, None, None, None)
    total = sum(w for _, w, _ in rows)
    ranged = [(t.low, t.high, w) for t, w, _ in rows if t.low is not None and t.high is not None]
    coverage = width = bounded = ratio = None
    if ranged and not legacy:
        coverage = sum(1 for lo, hi, w in ranged if lo <= w <= hi) / len(ranged)
        width = sum(hi - lo for lo, hi, _ in ranged) / len(ranged)
        bounded = sum(1 for lo, hi, _ in ranged if 0 < lo and hi <= WIDTH_RATIO * lo) / len(
            ranged)
        ratios = [hi / lo for lo, hi, _ in ranged if lo > 0]
        ratio = sum(ratios) / len(ratios) if ratios else None
    ahead = sum(t.position - 1 for t, _, _ in rows) / n
    return Accuracy(
        customers=n,
        error=sum(abs(e - w) for _, w, e in rows) / total if total > 0 else None,
        bias=sum(e for _, _, e in rows) / total if total > 0 else None,
        coverage=coverage,
        width=width,
        bounded=bounded,
        ratio=ratio,
        mean_wait=total / n,
        mean_estimate=sum(e for _, _, e in rows) / n,
        floor=floor_at(ahead),
        median_error=_median([abs(w - e) / e for _, w, e in rows if e > 0]),
    )


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    values.sort()
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def measured(days: Iterable[DayResult]) -> list[CustomerRecord]:
    return [c for d in days for c in d.customers if c.arrived >= d.scenario.warmup]


def patient(days: Iterable[DayResult]) -> list[CustomerRecord]:
    """The measured customers patient enough to be answered whatever their wait (patience
    beyond the longest wait of that day). The estimate is of the wait of a customer who
    stays; among all answered customers, those with long waits are missing more often
    (they gave up), which would make any estimate look too long. Patience does not depend
    on the wait, so these customers are a fair sample of the waits told."""
    out = []
    for d in days:
        longest = max((c.wait for c in d.customers if c.wait is not None), default=0.0)
        out += [c for c in d.customers
                if c.arrived >= d.scenario.warmup and c.patience > longest]
    return out


def pairs_at(customers: Sequence[CustomerRecord], which: str,
             keep: Callable[[Told], bool] = lambda t: True) -> list[tuple[Told, float]]:
    out = []
    for c in customers:
        told = c.joined if which == "join" else (c.last or c.joined)
        if told is not None and c.answered is not None and keep(told):
            # What was told is the wait from then on: from joining, or from the last update.
            out.append((told, c.answered - told.at))
    return out


@dataclass(frozen=True, slots=True)
class Summary:
    scenario: str
    loaded: bool
    seeds: int
    customers: int
    told: int  # customers measured: answered, and patient enough (see ``patient``)
    everyone: Accuracy  # at join over every answered customer, the impatient too
    new: Accuracy
    old: Accuracy
    new_last: Accuracy
    old_last: Accuracy
    buckets: dict[str, tuple[Accuracy, Accuracy]]  # bucket -> (new, old)
    service_level: float | None
    abandoned: float | None
    target: float

    def to_dict(self) -> dict[str, object]:
        return {
            "scenario": self.scenario,
            "loaded": self.loaded,
            "seeds": self.seeds,
            "customers": self.customers,
            "measured": self.told,
            "target_seconds": self.target,
            "at_join_all_answered": self.everyone.to_dict(),
            "service_level": self.service_level,
            "abandoned": self.abandoned,
            "at_join": {"new": self.new.to_dict(), "old": self.old.to_dict()},
            "last_shown": {"new": self.new_last.to_dict(), "old": self.old_last.to_dict()},
            "buckets": {
                b: {"new": n.to_dict(), "old": o.to_dict()} for b, (n, o) in self.buckets.items()
            },
            "failures": self.failures(),
        }

    def failures(self) -> list[str]:
        """The bars this scenario misses (none for an unloaded one: reported only)."""
        if not self.loaded:
            return []
        out = []
        a = self.new
        if a.error is None or a.error > MAX_ERROR:
            out.append(f"error at join {_pct(a.error)} > {_pct(MAX_ERROR)}")
        lo, hi = BIAS
        if a.bias is None or not lo <= a.bias <= hi:
            out.append(f"bias {_num(a.bias)} outside {lo}-{hi}")
        if a.coverage is None or a.coverage < MIN_COVERAGE:
            out.append(f"range coverage {_pct(a.coverage)} < {_pct(MIN_COVERAGE)}")
        for name, (b, _) in self.buckets.items():
            if b.median_error is not None and b.floor is not None and (
                b.median_error > FLOOR_FACTOR * b.floor
            ):
                out.append(f"positions {name}: median error {_pct(b.median_error)} > "
                           f"1.3 x floor = {_pct(FLOOR_FACTOR * b.floor)}")
        return out


def summarize(days: Sequence[DayResult]) -> Summary:
    sc = days[0].scenario
    customers = measured(days)
    join = pairs_at(patient(days), "join")
    last = pairs_at(patient(days), "last")
    buckets = {}
    for name, lo, hi in BUCKETS:
        sel = [(t, w) for t, w in join if lo <= t.position <= hi]
        buckets[name] = (accuracy(sel), accuracy(sel, legacy=True))
    answered_in = sum(1 for c in customers if c.wait is not None and c.wait <= sc.target)
    # Customers who left before the target are neither answered in time nor late.
    counted = sum(
        1 for c in customers
        if c.wait is not None or (c.left is not None and c.left - c.arrived > sc.target)
    )
    left = sum(1 for c in customers if c.left is not None)
    return Summary(
        scenario=sc.name,
        loaded=sc.loaded,
        seeds=len(days),
        customers=len(customers),
        told=len(join),
        everyone=accuracy(pairs_at(customers, "join")),
        new=accuracy(join),
        old=accuracy(join, legacy=True),
        new_last=accuracy(last),
        old_last=accuracy(last, legacy=True),
        buckets=buckets,
        service_level=answered_in / counted if counted else None,
        abandoned=left / len(customers) if customers else None,
        target=sc.target,
    )


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def table(summaries: Sequence[Summary]) -> str:
    """The side-by-side table the README shows (markdown)."""
    lines = [
        "| scenario | customers | error at join (old → new) | bias (old → new) "
        "| error, last shown (old → new) | range coverage | range width | bounded "
        "| service level | left |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in summaries:
        lines.append(
            f"| {s.scenario}{'' if s.loaded else ' (reported only)'} | {s.customers} "
            f"| {_pct(s.old.error)} → {_pct(s.new.error)} "
            f"| {_num(s.old.bias)} → {_num(s.new.bias)} "
            f"| {_pct(s.old_last.error)} → {_pct(s.new_last.error)} "
            f"| {_pct(s.new.coverage)} | {_num(s.new.width, 0)} s | {_pct(s.new.bounded)} "
            f"| {_pct(s.service_level)} | {_pct(s.abandoned)} |"
        )
    return "\n".join(lines)


def bucket_table(s: Summary) -> str:
    lines = [
        f"{s.scenario}: by position at join",
        "| positions | customers | mean wait | error old → new | median error old → new "
        "| floor ×1.3 | bias old → new | coverage | width | bounded |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, (n, o) in s.buckets.items():
        if not n.customers:
            continue
        lines.append(
            f"| {name} | {n.customers} | {_num(n.mean_wait, 1)} s "
            f"| {_pct(o.error)} → {_pct(n.error)} "
            f"| {_pct(o.median_error)} → {_pct(n.median_error)} "
            f"| {_pct(None if n.floor is None else FLOOR_FACTOR * n.floor)} "
            f"| {_num(o.bias)} → {_num(n.bias)} | {_pct(n.coverage)} "
            f"| {_num(n.width, 0)} s | {_pct(n.bounded)} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class AlertLead:
    """How far ahead the predictive alert saw the breaches coming (elapsed-time levels left
    out): a breach is a customer still waiting at the target."""

    breaches: int
    missed: int  # breaches with no predictive alert up at that moment
    leads: list[float]  # seconds from the alert going up to each breach it covered
    alerts: int
    false_alerts: int  # alerts with no breach within FALSE_AFTER of going up
    hours: float

    @property
    def false_per_hour(self) -> float:
        return self.false_alerts / self.hours if self.hours else 0.0

    def to_dict(self) -> dict[str, object]:
        leads = sorted(self.leads)
        return {
            "breaches": self.breaches,
            "missed": self.missed,
            "lead_min": leads[0] if leads else None,
            "lead_p10": _quantile(leads, 0.1),
            "lead_median": _quantile(leads, 0.5),
            "lead_max": leads[-1] if leads else None,
            "alerts": self.alerts,
            "false_alerts": self.false_alerts,
            "false_per_hour": self.false_per_hour,
        }


FALSE_AFTER = 600.0  # an alert not followed by a breach within 10 minutes is a false one


def _quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(q * len(values)))]


def alert_leads(days: Sequence[DayResult]) -> AlertLead:
    breaches = missed = alerts = false = 0
    leads: list[float] = []
    hours = 0.0
    for d in days:
        sc = d.scenario
        hours += (d.end - sc.warmup) / 3600
        episodes = []
        start: float | None = None
        for t, on in d.predictive:
            if on and start is None:
                start = t
            elif not on and start is not None:
                episodes.append((start, t))
                start = None
        if start is not None:
            episodes.append((start, d.end))
        times = sorted(
            c.arrived + sc.target for c in d.customers
            if c.arrived + sc.target >= sc.warmup
            and (c.answered is None or c.answered - c.arrived > sc.target)
            and (c.left is None or c.left - c.arrived > sc.target)
        )
        for b in times:
            breaches += 1
            cover = [s for s, e in episodes if s <= b < e]
            if cover:
                leads.append(b - cover[0])
            else:
                missed += 1
        for s, _ in episodes:
            if s < sc.warmup:
                continue
            alerts += 1
            if not any(s <= b <= s + FALSE_AFTER for b in times):
                false += 1
    return AlertLead(breaches, missed, leads, alerts, false, hours)
