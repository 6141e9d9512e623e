"""Scenarios for ``chatd simulate``: a day at the desk, as a small TOML file (docs/waits.md).

```toml
name = "normal day"
duration_seconds = 28800        # arrivals stop here; the queue is then served to the end
warmup_seconds = 1800           # customers arriving before this are not measured
loaded = true                   # the accuracy bars apply (false: reported only)

[arrivals]                      # Poisson, rate per hour at these times, linear in between
per_hour = [[0, 60], [7200, 120], [28800, 60]]

[handle]                        # log-normal handle times
mean_seconds = 600
sigma = 0.6

[patience]                      # exponential patience; leave the table out for none
mean_seconds = 1800

[response]                      # how long an engineer takes to accept an offer (log-normal)
mean_seconds = 8
sigma = 0.5
ignore_share = 0.01             # offers left to expire (the desk sets that engineer away)
back_after_seconds = 120        # ... who comes back this long after

[[engineers]]                   # a group of identical engineers
count = 10
capacity = 3
shift = [0, 28800]              # connected and available in between (default: all day,
                                # and until the queue is served)
breaks = [[10800, 11700]]       # away in between

[desk]                          # chatd.core.desk.DeskSettings fields (wait_target, …)
wait_target = 300
```
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

# The days ``chatd simulate`` measures by default, and the steady one for --staffing.
BUILT_IN = ("quiet-day", "normal-day", "surge", "understaffed", "compressed-day")
STAFFING = "staffing"


class ScenarioError(ValueError):
    """A scenario file that cannot be run, with what is wrong in it."""


@dataclass(frozen=True, slots=True)
class EngineerGroup:
    count: int
    capacity: int
    shift: tuple[float, float]
    breaks: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    duration: float
    warmup: float
    loaded: bool
    arrivals: tuple[tuple[float, float], ...]  # (time, arrivals per second)
    handle_mean: float
    handle_sigma: float
    patience_mean: float | None
    response_mean: float
    response_sigma: float
    ignore_share: float
    back_after: float
    engineers: tuple[EngineerGroup, ...]
    target: float = 300.0
    objective: float = 0.9
    tick: float = 0.25
    desk: dict[str, Any] = field(default_factory=dict)

    def rate(self, t: float) -> float:
        """Arrivals per second at ``t`` (linear between the given points, flat outside)."""
        pts = self.arrivals
        if t <= pts[0][0]:
            return pts[0][1]
        for (t0, r0), (t1, r1) in zip(pts, pts[1:], strict=False):
            if t <= t1:
                return r0 + (r1 - r0) * (t - t0) / (t1 - t0) if t1 > t0 else r1
        return pts[-1][1]

    @property
    def peak_rate(self) -> float:
        return max(r for _, r in self.arrivals)

    def slots_at(self, t: float) -> int:
        """Capacity on shift and not on a break at ``t``."""
        return sum(
            g.count * g.capacity
            for g in self.engineers
            if g.shift[0] <= t < g.shift[1] and not any(b0 <= t < b1 for b0, b1 in g.breaks)
        )


def _num(table: dict[str, Any], key: str, where: str, *, default: float | None = None,
         low: float = 0.0, high: float = math.inf, positive: bool = False) -> float:
    value = table.get(key, default)
    if value is None:
        raise ScenarioError(f"{where}.{key} is required")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{where}.{key} must be a number")
    v = float(value)
    if not low <= v <= high or (positive and v <= 0):
        raise ScenarioError(f"{where}.{key} is out of range: {value}")
    return v


def _span(value: Any, where: str) -> tuple[float, float]:
    if (
        not isinstance(value, list) or len(value) != 2
        or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in value)
        or value[0] > value[1]
    ):
        raise ScenarioError(f"{where} must be [start, end] in seconds, start <= end")
    return float(value[0]), float(value[1])


def parse(data: dict[str, Any], name: str = "scenario") -> Scenario:
    duration = _num(data, "duration_seconds", name, positive=True)
    arrivals = data.get("arrivals", {})
    points = arrivals.get("per_hour") if isinstance(arrivals, dict) else None
    if not isinstance(points, list) or not points:
        raise ScenarioError(f"{name}: arrivals.per_hour must list [seconds, per hour] points")
    rates = []
    for i, p in enumerate(points):
        if (
            not isinstance(p, list) or len(p) != 2
            or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in p)
            or p[1] < 0
        ):
            raise ScenarioError(f"arrivals.per_hour[{i}] must be [seconds, per hour >= 0]")
        rates.append((float(p[0]), float(p[1]) / 3600))
    if [t for t, _ in rates] != sorted(t for t, _ in rates) or max(r for _, r in rates) <= 0:
        raise ScenarioError("arrivals.per_hour: times must increase and some rate be > 0")
    handle = data.get("handle", {})
    patience = data.get("patience")
    response = data.get("response", {})
    groups = data.get("engineers")
    if not isinstance(groups, list) or not groups:
        raise ScenarioError(f"{name}: at least one [[engineers]] group is required")
    engineers = []
    for i, g in enumerate(groups):
        where = f"engineers[{i}]"
        engineers.append(EngineerGroup(
            count=int(_num(g, "count", where, low=1, high=10_000)),
            capacity=int(_num(g, "capacity", where, default=1, low=1, high=20)),
            # Without a shift: there all day, and until the queue is served after it.
            shift=_span(g["shift"], f"{where}.shift") if "shift" in g else (0.0, math.inf),
            breaks=tuple(_span(b, f"{where}.breaks") for b in g.get("breaks", [])),
        ))
    desk = data.get("desk", {})
    if not isinstance(desk, dict):
        raise ScenarioError("[desk] must be a table of desk settings")
    return Scenario(
        name=str(data.get("name", name)),
        description=str(data.get("description", "")),
        duration=duration,
        warmup=_num(data, "warmup_seconds", name, default=0.0, high=duration),
        loaded=bool(data.get("loaded", True)),
        arrivals=tuple(rates),
        handle_mean=_num(handle, "mean_seconds", "handle", positive=True),
        handle_sigma=_num(handle, "sigma", "handle", default=0.6, high=3.0),
        patience_mean=(
            _num(patience, "mean_seconds", "patience", positive=True)
            if isinstance(patience, dict) else None
        ),
        response_mean=_num(response, "mean_seconds", "response", default=5.0, positive=True),
        response_sigma=_num(response, "sigma", "response", default=0.5, high=3.0),
        ignore_share=_num(response, "ignore_share", "response", default=0.0, high=1.0),
        back_after=_num(response, "back_after_seconds", "response", default=60.0),
        engineers=tuple(engineers),
        target=_num(desk, "wait_target", "desk", default=300.0, positive=True),
        objective=_num(data, "objective", name, default=0.9, low=0.01, high=0.999),
        tick=_num(data, "tick_seconds", name, default=0.25, low=0.01, high=60.0),
        desk=dict(desk),
    )


def load(spec: str) -> Scenario:
    """A built-in scenario by name (``normal-day``) or a TOML file by path."""
    if spec in (*BUILT_IN, STAFFING):
        text = resources.files("chatd.sim").joinpath(f"scenarios/{spec}.toml").read_text()
        name = spec
    else:
        path = Path(spec)
        if not path.is_file():
            raise ScenarioError(
                f"no scenario {spec!r}: give a TOML file or one of {', '.join(BUILT_IN)}"
            )
        text, name = path.read_text(), path.stem
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{spec}: {exc}") from None
    return parse(data, name)
