"""``chatd simulate``: the estimate, the alerts and the staffing forecast measured on
simulated days through the real desk (docs/waits.md#the-simulator)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import statistics
import sys
import time
from typing import Any

from ..core.staffing import slots_needed
from .report import alert_leads, bucket_table, summarize, table
from .run import DayResult, simulate
from .scenario import BUILT_IN, STAFFING, EngineerGroup, Scenario, ScenarioError, load


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="measure the wait estimate, alerts and staffing forecast on simulated days",
        description="Replay simulated days through the real desk with a fake clock and "
                    "report how the estimates shown compared with the real waits "
                    "(docs/waits.md).",
    )
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                   help=f"a TOML file or a built-in name: {', '.join(BUILT_IN)} "
                        "(default: all of them)")
    p.add_argument("--seeds", type=int, default=5, help="days per scenario (default 5)")
    p.add_argument("--first-seed", type=int, default=1)
    p.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    p.add_argument("--check", action="store_true",
                   help="exit 1 when a loaded scenario misses a bar")
    p.add_argument("--staffing", action="store_true",
                   help="instead: check the staffing forecast against the smallest desk "
                        "that meets the objective in simulation (a steady day)")


def run(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        print("chatd simulate: --seeds must be at least 1", file=sys.stderr)
        return 2
    try:
        if args.staffing:
            scenario = load(args.scenarios[0] if args.scenarios else STAFFING)
            return asyncio.run(_staffing(scenario, args))
        scenarios = [load(s) for s in (args.scenarios or BUILT_IN)]
    except ScenarioError as exc:
        print(f"chatd simulate: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_accuracy(scenarios, args))


async def _days(scenario: Scenario, args: argparse.Namespace,
                forecast_every: float = 0.0) -> list[DayResult]:
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    return [await simulate(scenario, s, forecast_every=forecast_every) for s in seeds]


async def _accuracy(scenarios: list[Scenario], args: argparse.Namespace) -> int:
    summaries, out, failed = [], [], False
    for sc in scenarios:
        started = time.monotonic()
        days = await _days(sc, args)
        s = summarize(days)
        leads = alert_leads(days)
        summaries.append(s)
        print(f"\n{sc.name}: {s.customers} customers measured over {s.seeds} days "
              f"({time.monotonic() - started:.1f} s)")
        print(bucket_table(s))
        lead = leads.to_dict()
        print(f"predictive alert: {lead['breaches']} breaches, {lead['missed']} with no alert "
              f"up; lead min {_s(lead['lead_min'])}, p10 {_s(lead['lead_p10'])}, median "
              f"{_s(lead['lead_median'])}; {lead['alerts']} alerts, {lead['false_alerts']} "
              f"false ({leads.false_per_hour:.2f} an hour)")
        fails = s.failures()
        failed = failed or bool(fails)
        print("bars: " + ("; ".join(fails) if fails else "met" if sc.loaded else "reported only"))
        out.append({**s.to_dict(), "alerts": lead})
    print("\n" + table(summaries))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 1 if failed and args.check else 0


def _s(x: object) -> str:
    return "-" if x is None else f"{x:.0f} s"


def virtual_service_level(days: list[DayResult]) -> float | None:
    """The share answered within the target among customers patient enough to wait that
    long: P(V ≤ target), the virtual wait's service level that Erlang A staffs for (the
    simulator knows each customer's patience; a real desk does not)."""
    target = days[0].scenario.target
    patient = [c for d in days for c in d.customers
               if c.arrived >= d.scenario.warmup and c.patience >= target]
    if not patient:
        return None
    return sum(1 for c in patient if c.wait is not None and c.wait <= target) / len(patient)


async def _staffing(base: Scenario, args: argparse.Namespace) -> int:
    lam = base.peak_rate
    mu = 1 / base.handle_mean
    theta = 1 / base.patience_mean if base.patience_mean else None
    guess = slots_needed(lam, mu, base.target, base.objective, theta)
    print(f"{base.name}: {lam * 3600:.0f} arrivals an hour, handle {base.handle_mean:.0f} s, "
          f"patience {base.patience_mean or 'none'}, objective {base.objective:.0%} within "
          f"{base.target:.0f} s; Erlang {'A' if theta else 'C'} on the true figures: {guess}")
    levels: dict[int, float | None] = {}
    forecasts: dict[int, list[dict[str, Any]]] = {}
    for slots in range(max(1, guess - 3), guess + 4):
        sc = dataclasses.replace(
            base, engineers=(EngineerGroup(slots, 1, (0.0, math.inf)),),
        )
        days = await _days(sc, args, forecast_every=600.0)
        levels[slots] = virtual_service_level(days)
        forecasts[slots] = [f for d in days for t, f in d.forecasts if t >= base.warmup]
        print(f"  {slots} slots: service level {levels[slots]:.1%}" if levels[slots] is not None
              else f"  {slots} slots: nobody measured")
    meeting = [s for s, v in sorted(levels.items()) if v is not None and v >= base.objective]
    needed = meeting[0] if meeting else None
    told = [f["now"]["slots"] for fs in forecasts.values() for f in fs
            if f["now"]["slots"] is not None]
    forecast = round(statistics.median(told)) if told else None
    ok = needed is not None and forecast is not None and abs(forecast - needed) <= 1
    told.sort()
    spread = (told[len(told) // 10], told[len(told) * 9 // 10]) if told else None
    print(f"smallest desk meeting the objective in simulation: {needed} slots; the desk's "
          f"forecast (median over {len(told)} readings, one every 10 minutes of each run "
          f"after the warm-up; 80% of them {spread[0] if spread else '-'} to "
          f"{spread[1] if spread else '-'}): {forecast} slots -> "
          f"{'within' if ok else 'NOT within'} ±1")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"scenario": base.name, "service_levels": levels, "needed": needed,
                       "forecast": forecast, "forecast_p10_p90": spread,
                       "erlang_true": guess, "ok": ok}, f, indent=2)
    return 0 if ok or not args.check else 1
