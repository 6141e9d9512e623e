"""The surge benchmark (``python -m bench --only surge``): thousands of customers join the
queue at once and wait, and what that costs everyone else.

One ``chatd serve`` runs in its own process (SQLite, or a fresh PostgreSQL database with
``--backend postgres``) behind ``trusted_proxies = 127.0.0.1``, so that every client can
stand for a machine of its own with an ``X-Forwarded-For`` address: the crowd from
198.18.0.0/15 (the benchmarking range), the probes from 198.51.100.0/24, the honest pairs
and the engineers from 192.0.2.0/24. A desk's defaults apply, except where the run says
so (printed): the server-wide handshake budget, which the configuration guide says to raise
for a desk that must take thousands of customers joining at once, and the per-connection
event rate, because one engineer here moves the queue for a whole desk.

The run, each step bounded in time:

1. The measuring process (bench/surge_probe.py) sets up ``PAIRS`` honest chats (an
   engineer account each, made before the server starts) and starts ``/healthz`` every
   20 ms; the honest pairs chat for ``--warmup`` + 10 s with nobody waiting: the quiet
   measure.
2. The crowd: ``--waiting`` guest customers in ``--crowd-processes`` processes
   (bench/surge_crowd.py) connect and send ``chat:request`` as fast as they can; joins/s
   is counted from the first connect to the last acknowledgement. The server's RSS is read
   before, and 5 s after the last join. Then for 10 s the whole crowd waits and nothing
   moves, the honest pairs chatting: the measure "with everyone waiting".
3. ``PROBES`` probe customers join at the tail. The moving engineer goes available and for
   ``--surge-seconds`` (less if the whole crowd was answered) accepts each offer and ends
   the chat at once; the probes track the position they would show (``queue:position`` or
   ``queue:board``, whichever the server sends), the honest pairs go on chatting and
   ``/healthz`` goes on being asked. Nobody in the crowd leaves, so every position is known.

The bars (each printed with PASS or FAIL; the exit status is 1 if any fails):
joins/s >= 1000 with every customer in; server RSS per waiting customer <= 40 KiB; offer
latency (from the previous chat's ``session:end`` answer to the next ``offer:new``; an
offer that comes before that answer counts 0) p99 <= 10 ms; ``/healthz`` p99 <= 50 ms
while the queue moves; the probes' staleness (bench/surge_probe.py) <= 2.5 s, each probe
showing exactly its place at the end; the honest pairs' ack p99 with everyone waiting
<= 2x their quiet p99, without errors. Reported without a bar: the offer latency from the
moment ``session:end`` was sent, which includes storing the end; and the honest pairs' p99
while one engineer moves the queue as fast as they can (about a hundred chats a second,
far beyond any desk's pace, every move a broadcast to everyone waiting).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .harness import (
    BenchError,
    Benchmark,
    Child,
    Report,
    add_engineer,
    chatd_env,
    close_workers,
    command,
    cpu_seconds,
    drop_postgres_database,
    login,
    machine_busy_seconds,
    new_postgres_database,
    percentile,
    plain_env,
    rss_bytes,
    start_chatd,
    start_child,
)
from .siege_honest import ACK_TIMEOUT

PASSWORD = "surge-password"
PAIRS = 10
PROBES = 20
QUIET_SECONDS = 10.0
SETTLE_SECONDS = 5.0  # after the last join, before the RSS is read
# The honest pairs with the whole crowd waiting and the queue still (the issue's "with
# 10,000 customers waiting"), before one engineer moves it as fast as they can.
WAITING_SECONDS = 10.0
NEWS_SECONDS = 3.0  # after the queue stops, for the last position news to arrive
# Settings a desk expecting a surge would change, printed with every run.
SETTINGS: dict[str, Any] = {
    # docs/configuration.md: raise it for a desk that must take thousands joining at once
    "handshake_rate_total": 5000,
    # and the new connections those sessions arrive on (the same advice)
    "accept_rate": 5000,
    # one engineer stands in for a desk's many: two events per customer moved
    "event_rate": 1000, "event_burst": 2000,
}
# The bars.
JOINS_PER_S = 1000.0
KIB_PER_WAITING = 40.0
OFFER_P99_MS = 10.0
HEALTH_P99_MS = 50.0
STALE_S = 2.5
HONEST_FACTOR = 2.0
BACKENDS = ("sqlite", "postgres")
# Past this share of one CPU used by other work in a window, the figures say more about the
# machine than about chatd.
BUSY_OTHER_PCT = 25.0
PHASES = {"join": "the crowd joined", "move": "the queue moved"}


def backend_list(text: str) -> list[str]:
    """``--backend``: sqlite, postgres, or both comma-separated."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names or set(names) - set(BACKENDS):
        raise argparse.ArgumentTypeError("takes sqlite, postgres or sqlite,postgres")
    return list(dict.fromkeys(names))


def add_backend_argument(group: argparse._ArgumentGroup) -> None:
    """The database option, shared by surge and the durability benchmarks (added once)."""
    with contextlib.suppress(argparse.ArgumentError):
        group.add_argument("--backend", type=backend_list, default=["sqlite"],
                           metavar="sqlite|postgres",
                           help="database of surge, handoff and restart: sqlite, postgres or"
                                " both as sqlite,postgres (default sqlite; PostgreSQL at"
                                " CHATD_BENCH_POSTGRES_URL)")


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--waiting", type=int, default=10000,
                       help="customers who join at once and wait (default %(default)s)")
    group.add_argument("--crowd-processes", type=int, default=2,
                       help="processes the crowd's clients run in (default %(default)s)")
    group.add_argument("--crowd-at-once", type=int, default=100,
                       help="joins in flight per crowd process (default %(default)s)")
    group.add_argument("--surge-seconds", type=float, default=20.0,
                       help="how long the queue moves (default %(default)s)")
    add_backend_argument(group)


def crowd_address(i: int) -> str:
    return str(ipaddress.ip_address("198.18.0.1") + i)


def honest_address(i: int) -> str:
    return str(ipaddress.ip_address("192.0.2.1") + i)


async def run(args: argparse.Namespace) -> Report:
    if not 1 <= args.waiting <= 100_000:
        raise BenchError("--waiting must be 1 to 100000")
    if not 1 <= args.crowd_processes <= 64 or not 1 <= args.crowd_at_once <= 10_000:
        raise BenchError("--crowd-processes must be 1 to 64 and --crowd-at-once 1 to 10000")
    if not 0 < args.surge_seconds <= 600:
        raise BenchError("--surge-seconds must be in (0, 600]")
    report: Report = {}
    for backend in args.backend:
        # set-up and every phase, each bounded on its own; this bounds the whole
        limit = 600 + args.waiting / 20 + args.surge_seconds + args.warmup
        with tempfile.TemporaryDirectory(prefix=f"chatd-surge-{backend}-") as tmp:
            try:
                async with asyncio.timeout(limit):
                    report[backend] = await _surge(args, backend, Path(tmp))
            except TimeoutError:
                raise BenchError(f"surge on {backend} did not finish in {limit:g} s") from None
    report["passed"] = all(r["passed"] for r in report.values() if isinstance(r, dict))
    return report


async def _surge(args: argparse.Namespace, backend: str, tmp: Path) -> Report:
    n, procs = args.waiting, args.crowd_processes
    print(f"surge ({backend}): {n} customers join at once from {procs} processes"
          f" ({args.crowd_at_once} joins in flight each), {PROBES} probes behind them,"
          f" {PAIRS} honest pairs; the queue moves for {args.surge_seconds:g} s", flush=True)
    print("settings changed from a desk's defaults: "
          + ", ".join(f"{k} = {v}" for k, v in SETTINGS.items()), flush=True)
    if hasattr(os, "getloadavg"):
        print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
              flush=True)
    async with contextlib.AsyncExitStack() as stack:
        extra: dict[str, Any] = {}
        if backend == "postgres":
            extra["database_url"] = await new_postgres_database()
            stack.push_async_callback(drop_postgres_database, extra["database_url"])
        env = chatd_env(tmp, trusted_proxies="127.0.0.1", allow_guests=True, **SETTINGS,
                        **extra)
        emails = [f"engineer{j}@surge.example" for j in range(PAIRS + 1)]
        await add_engineer(env, tmp, emails[0], "Engineer 0", PASSWORD)  # creates the schema
        gate = asyncio.Semaphore(4)

        async def add(j: int) -> None:
            async with gate:
                await add_engineer(env, tmp, emails[j], f"Engineer {j}", PASSWORD)

        await asyncio.gather(*(add(j) for j in range(1, PAIRS + 1)))
        server, url = await start_chatd(tmp, env)
        stack.push_async_callback(server.stop_async)
        tokens = await asyncio.gather(*(
            login(url, e, PASSWORD, headers={"X-Forwarded-For": honest_address(PAIRS + j)})
            for j, e in enumerate(emails)))

        probe = await start_child("measuring process", [sys.executable, "-m",
                                                        "bench.surge_probe"],
                                  env=plain_env(), cwd=tmp)
        stack.push_async_callback(probe.stop)
        crowd: list[Child] = []
        for k in range(procs):
            w = await start_child(f"crowd process {k}", [sys.executable, "-m",
                                                         "bench.surge_crowd"],
                                  env=plain_env(), cwd=tmp)
            stack.push_async_callback(w.stop)
            crowd.append(w)
        stack.push_async_callback(close_workers, [probe, *crowd])
        await command([probe], [{
            "cmd": "setup", "url": url, "seed": 1,
            "customers": [{"name": f"Customer {i}", "email": f"customer{i}@surge.example",
                           "address": honest_address(i)} for i in range(PAIRS)],
            "engineers": [{"token": t, "address": honest_address(PAIRS + j)}
                          for j, t in enumerate(tokens[:PAIRS])],
            "mover": {"token": tokens[PAIRS], "address": honest_address(2 * PAIRS)},
        }])

        # -- quiet: nobody waits
        start_at = time.monotonic() + 0.5
        quiet = (start_at + args.warmup, start_at + args.warmup + QUIET_SECONDS)
        await command([probe], [{"cmd": "start", "start_at": start_at}])
        await asyncio.sleep(max(0.0, quiet[1] - time.monotonic()))

        # -- the crowd joins
        rss_before = rss_bytes(server.pid)
        share = [list(range(k, n, procs)) for k in range(procs)]
        join_at = time.monotonic() + 0.2
        pids = [server.pid, probe.pid, *(w.pid for w in crowd)]
        cpu0 = _cpu(pids)
        overflows = listen_overflows()
        joined = await command(crowd, [
            {"cmd": "join", "url": url, "start_at": join_at, "at_once": args.crowd_at_once,
             "customers": [crowd_address(i) for i in part]} for part in share
        ], timeout=60 + n / 20)
        join_end = time.monotonic()
        cpu1 = _cpu(pids)
        overflows_after = listen_overflows()
        await asyncio.sleep(SETTLE_SECONDS)
        rss_after = rss_bytes(server.pid)
        # -- everyone waits, nothing moves
        waiting = (time.monotonic(), time.monotonic() + WAITING_SECONDS)
        await asyncio.sleep(WAITING_SECONDS)

        # -- probes at the tail, then the queue moves
        probes = (await command([probe], [{
            "cmd": "probes",
            "addresses": [str(ipaddress.ip_address("198.51.100.1") + i) for i in range(PROBES)],
        }]))[0]
        cpu2, move_at = _cpu(pids), time.monotonic()
        moved = (await command([probe], [{
            "cmd": "move", "seconds": args.surge_seconds, "settle": NEWS_SECONDS,
        }], timeout=args.surge_seconds + NEWS_SECONDS + 120))[0]
        cpu3, move_end = _cpu(pids), time.monotonic()
        stopped = (await command([probe], [{"cmd": "stop"}]))[0]
        crowd_stats = await command(crowd, [{"cmd": "stats"}] * procs)
        server_alive = server.returncode is None
        log = _log_problems(server.log)
        await close_workers([probe, *crowd])

    report = _figures(args, backend, joined, crowd_stats, probes, moved, stopped,
                      quiet=quiet, join_window=(join_at, join_end), waiting=waiting,
                      rss=(rss_before, rss_after),
                      cpu={"join": _cpu_pct(cpu0, cpu1, join_end - join_at),
                           "move": _cpu_pct(cpu2, cpu3, move_end - move_at)})
    report["join"]["listen_overflows"] = (
        None if overflows is None or overflows_after is None else overflows_after - overflows)
    report["server_exited"] = not server_alive
    report["windows"] = {"quiet": quiet, "joining": (join_at, join_end), "all waiting": waiting,
                         "moving": (move_at, move_end)}
    report["server_log"] = log
    _print(report)
    return report


def listen_overflows() -> int | None:
    """Connections the machine's listening sockets had no room for so far (TcpExt
    ListenOverflows of /proc/net/netstat; all sockets, so only a hint)."""
    try:
        with open("/proc/net/netstat", encoding="ascii") as f:
            rows = [line.split() for line in f if line.startswith("TcpExt:")]
        names, values = rows[0], rows[1]
        return int(values[names.index("ListenOverflows")])
    except (OSError, IndexError, ValueError):
        return None


def _cpu(pids: list[int]) -> list[float | None]:
    """CPU seconds of the server, the measuring process and each crowd process, then
    of the whole machine."""
    return [*(cpu_seconds(p) for p in pids), machine_busy_seconds()]


def _cpu_pct(a: list[float | None], b: list[float | None], span: float) -> dict[str, Any]:
    """% of one core used between two readings: by the server, the measuring process,
    each crowd process, and the rest of the machine (other work skews the figures)."""
    pct = [None if x is None or y is None or span <= 0 else round(100 * (y - x) / span)
           for x, y in zip(a, b, strict=True)]
    ours, machine = pct[:-1], pct[-1]
    others = None
    if machine is not None and all(v is not None for v in ours):
        others = max(0, machine - sum(v for v in ours if v is not None))
    return {"server": pct[0], "probe": pct[1], "crowd": pct[2:-1], "others": others}


def _log_problems(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    errors = [line for line in lines if " ERROR " in line or line.startswith("ERROR")]
    return {"lines": len(lines), "tracebacks": sum(1 for x in lines if x.startswith("Traceback")),
            "error_lines": len(errors), "first_errors": errors[:5],
            "gc_pauses": [_gc_pause(x) for x in lines if "garbage collection stopped" in x]}


def _gc_pause(line: str) -> tuple[float, float, str]:
    """(when, on this process's time.monotonic clock; seconds; generation) of a garbage
    collection the server logged (chatd.memory logs those over 50 ms)."""
    import datetime

    when = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    seconds = float(line.rsplit("seconds=", 1)[1].split()[0])
    generation = line.rsplit("generation=", 1)[1].split()[0]
    return when - (time.time() - time.monotonic()), seconds, generation


def _window(samples: list[Any], start: float, end: float, timeout_ms: float) -> list[float]:
    """Latencies (ms) of what was sent in [start, end); a timeout counts as ``timeout_ms``."""
    return sorted(timeout_ms if lat is None else float(lat)
                  for t, lat in samples if start <= float(t) < end)


def _stats(lat: list[float]) -> dict[str, Any]:
    return {"count": len(lat), "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
            "max_ms": lat[-1] if lat else None}


def _figures(
    args: argparse.Namespace, backend: str, joined: list[dict[str, Any]],
    crowd_stats: list[dict[str, Any]], probes: dict[str, Any], moved: dict[str, Any],
    stopped: dict[str, Any], *, quiet: tuple[float, float], join_window: tuple[float, float],
    waiting: tuple[float, float],
    rss: tuple[int | None, int | None], cpu: dict[str, dict[str, Any]],
) -> Report:
    n = args.waiting
    ok = sum(r["joined"] for r in joined)
    starts = [r["first_start"] for r in joined if r["first_start"] is not None]
    lasts = [r["last_ack"] for r in joined if r["last_ack"] is not None]
    span = max(lasts) - min(starts) if starts and lasts else None
    failures: dict[str, int] = {}
    for r in joined:
        for why, count in r["failures"].items():
            failures[why] = failures.get(why, 0) + count
    lost = sorted(t for s in crowd_stats for t in s["disconnects"])
    events: dict[str, int] = {}
    for s in crowd_stats:
        for name, count in s["events"].items():
            events[name] = events.get(name, 0) + count
    rss_before, rss_after = rss
    growth = None if rss_before is None or rss_after is None else rss_after - rss_before
    move_window = (moved["started"], moved["moved_until"])
    samples = stopped["samples"]
    honest_quiet = _stats(_window(samples, *quiet, ACK_TIMEOUT * 1000))
    honest_join = _stats(_window(samples, *join_window, ACK_TIMEOUT * 1000))
    honest_wait = _stats(_window(samples, *waiting, ACK_TIMEOUT * 1000))
    honest_move = _stats(_window(samples, *move_window, ACK_TIMEOUT * 1000))
    health_move = _stats(_window(stopped["health"], *move_window, 10_000))
    health_quiet = _stats(_window(stopped["health"], *quiet, 10_000))
    offers = sorted(moved["offer_after_end_ack_ms"])
    offers_sent = sorted(moved["offer_after_end_sent_ms"])
    stale = [p["max_stale_s"] for p in moved["probes"]]
    # once the news settled, each probe shows its place less the customers moved
    wrong = sum(1 for p in moved["probes"] if p["start_position"] is None
                or p["end_position"] != p["start_position"] - len(moved["dequeues"]))
    kinds = {k: sum(p["events"].get(k, 0) for p in moved["probes"])
             for k in ("queue:position", "queue:board")}
    moving = moved["moved_until"] - moved["started"]
    return {
        "backend": backend, "waiting": n, "crowd_processes": args.crowd_processes,
        "crowd_at_once": args.crowd_at_once, "settings": SETTINGS,
        "join": {"joined": ok, "seconds": None if span is None else round(span, 3),
                 "per_s": None if not span else round(ok / span, 1),
                 "p50_ms": _median([r["join_p50_ms"] for r in joined]),
                 "p99_ms": max((r["join_p99_ms"] for r in joined if r["join_p99_ms"]),
                               default=None),
                 "retries": sum(r["retries"] for r in joined), "failures": failures,
                 "cpu_pct": cpu["join"]},
        "rss": {"before_mib": _mib(rss_before), "after_mib": _mib(rss_after),
                "kib_per_waiting": None if growth is None else round(growth / 1024 / n, 2)},
        "crowd": {"events": events, "connected": sum(s["connected"] for s in crowd_stats),
                  "disconnects": len(lost),
                  "disconnects_by_phase": {
                      "join": sum(1 for t in lost if t < join_window[1] + SETTLE_SECONDS),
                      "probes": sum(1 for t in lost if join_window[1] + SETTLE_SECONDS <= t
                                    < moved["started"]),
                      "move": sum(1 for t in lost if t >= moved["started"])}},
        "probes": {"start_positions": probes["positions"], "news": kinds,
                   "max_stale_s": max(stale) if stale else None, "wrong_at_end": wrong,
                   "each": moved["probes"]},
        "move": {"seconds": round(moving, 2), "dequeues": len(moved["dequeues"]),
                 "per_s": round(len(moved["dequeues"]) / moving, 1) if moving > 0 else None,
                 "stopped_by": moved["stopped_by"], "errors": moved["error_count"],
                 "first_errors": moved["errors"],
                 "offer_p50_ms": percentile(offers, 50), "offer_p99_ms": percentile(offers, 99),
                 "offer_after_end_sent_p99_ms": percentile(offers_sent, 99),
                 "offers_before_end_ack": moved["offers_before_end_ack"],
                 "cpu_pct": cpu["move"]},
        "health": {"quiet": health_quiet, "move": health_move},
        "honest": {"quiet": honest_quiet, "join": honest_join, "wait": honest_wait,
                   "move": honest_move,
                   "errors": len(stopped["errors"]), "first_errors": stopped["errors"][:10],
                   "acked": stopped["acked"], "delivered": stopped["delivered"]},
    }


def _cpu_text(c: dict[str, Any], backend: str) -> str:
    others = "other work" if backend == "sqlite" else "other work (PostgreSQL's among it)"
    return (f"server {_f(c['server'], '.0f')}%, measuring {_f(c['probe'], '.0f')}%, crowd "
            + "+".join(f"{_f(v, '.0f')}%" for v in c["crowd"])
            + f", {others} {_f(c['others'], '.0f')}%")


def _median(values: list[Any]) -> float | None:
    known = sorted(v for v in values if v is not None)
    return known[len(known) // 2] if known else None


def _mib(n: int | None) -> float | None:
    return None if n is None else round(n / 1024 / 1024, 1)


def _f(v: float | None, fmt: str = ".1f") -> str:
    return "-" if v is None else format(v, fmt)


def _print(r: Report) -> None:
    j, m, h, p = r["join"], r["move"], r["honest"], r["probes"]
    n = r["waiting"]
    print(f"\njoin: {j['joined']} of {n} in {_f(j['seconds'], '.2f')} s; per customer p50"
          f" {_f(j['p50_ms'])} ms, p99 {_f(j['p99_ms'])} ms; {j['retries']} retries;"
          f" CPU: {_cpu_text(j['cpu_pct'], r['backend'])}"
          + f"; {_f(j['listen_overflows'], '.0f')} connections found the listen queue full",
          flush=True)
    for why, count in sorted(j["failures"].items(), key=lambda kv: -kv[1])[:8]:
        print(f"  {count} x {why}")
    print(f"server RSS: {_f(r['rss']['before_mib'])} MiB before the crowd,"
          f" {_f(r['rss']['after_mib'])} MiB with it")
    print(f"queue moved {m['dequeues']} customers in {m['seconds']:.1f} s"
          f" ({_f(m['per_s'])}/s; stopped by {m['stopped_by']}); CPU:"
          f" {_cpu_text(m['cpu_pct'], r['backend'])}; offer after end answer p50"
          f" {_f(m['offer_p50_ms'], '.2f')} ms, after end sent p99"
          f" {_f(m['offer_after_end_sent_p99_ms'], '.2f')} ms;"
          f" {m['offers_before_end_ack']} offers came before the end's answer;"
          f" {m['errors']} errors")
    for e in m["first_errors"][:5]:
        print(f"  {e[:200]}")
    ends = [x["end_position"] for x in p["each"]]
    print(f"probes: positions {p['start_positions'][0]}..{p['start_positions'][-1]} at the"
          f" start, {ends[0]}..{ends[-1]} at the end ({p['wrong_at_end']} not"
          f" {m['dequeues']} places ahead); news: {p['news']['queue:position']} queue:position,"
          f" {p['news']['queue:board']} queue:board,"
          f" {sum(x['resyncs'] for x in p['each'])} missed boards asked again;"
          f" staleness per probe (s): "
          + " ".join(f"{x['max_stale_s']:.2f}" for x in p["each"]))
    for x in p["each"]:
        for problem in x["problems"][:2]:
            print(f"  probe: {problem[:200]}")
    c = r["crowd"]
    by = c["disconnects_by_phase"]
    print(f"crowd: {c['connected']} still connected, {c['disconnects']} disconnected"
          f" ({by['join']} while joining and settling, {by['probes']} while the probes"
          f" joined, {by['move']} once the queue moved);"
          " received " + (", ".join(f"{v} {k}" for k, v in c["events"].items()) or "nothing"))
    print(f"honest pairs: {h['acked']} acked, {h['delivered']} delivered, {h['errors']}"
          f" errors; p99 quiet {_f(h['quiet']['p99_ms'])} ms, while joining"
          f" {_f(h['join']['p99_ms'])} ms, with all waiting {_f(h['wait']['p99_ms'])} ms,"
          f" while moving {_f(h['move']['p99_ms'])} ms")
    for _t, what in h["first_errors"][:5]:
        print(f"  {what}")
    if r["server_exited"]:
        print("chatd exited during the run")
    log = r["server_log"]
    windows = r["windows"]
    for when, seconds, gen in log.get("gc_pauses", []):
        phase = next((name for name, (a, b) in windows.items() if a <= when < b), "between")
        print(f"server: a garbage collection (generation {gen}) stopped it for"
              f" {seconds * 1000:.0f} ms ({phase})")
    if log.get("tracebacks") or log.get("error_lines"):
        print(f"server log: {log['tracebacks']} tracebacks, {log['error_lines']} ERROR lines")
        for line in log["first_errors"]:
            print(f"  {line[:300]}")
    _judge(r)
    sys.stdout.flush()


def _judge(r: Report) -> None:
    j, m, h = r["join"], r["move"], r["honest"]
    n, quiet, moving = r["waiting"], h["quiet"]["p99_ms"], h["move"]["p99_ms"]
    waiting = h["wait"]["p99_ms"]
    per = r["rss"]["kib_per_waiting"]
    stale = r["probes"]["max_stale_s"]
    rows = [
        ("joins/s, first connect to last answer", _f(j["per_s"], ".0f"),
         f">= {JOINS_PER_S:g} (all {n})",
         j["per_s"] is not None and j["per_s"] >= JOINS_PER_S and j["joined"] == n),
        ("server RSS per waiting customer, KiB", _f(per), f"<= {KIB_PER_WAITING:g}",
         per is not None and per <= KIB_PER_WAITING),
        ("offer latency p99, ms", _f(m["offer_p99_ms"], ".2f"), f"<= {OFFER_P99_MS:g}",
         m["offer_p99_ms"] is not None and m["offer_p99_ms"] <= OFFER_P99_MS
         and m["errors"] == 0),
        ("offer after the end was sent, p99, ms", _f(m["offer_after_end_sent_p99_ms"], ".2f"),
         "(reported only)", None),
        ("/healthz p99 while moving, ms", _f(r["health"]["move"]["p99_ms"]),
         f"<= {HEALTH_P99_MS:g}",
         r["health"]["move"]["p99_ms"] is not None
         and r["health"]["move"]["p99_ms"] <= HEALTH_P99_MS),
        ("position staleness, max s", _f(stale, ".2f"), f"<= {STALE_S:g}, exact",
         stale is not None and stale <= STALE_S and m["dequeues"] > 0
         and r["probes"]["wrong_at_end"] == 0),
        ("honest p99 all waiting vs quiet, ms", f"{_f(waiting)} vs {_f(quiet)}",
         f"<= {HONEST_FACTOR:g}x, no errors",
         waiting is not None and quiet is not None and waiting <= HONEST_FACTOR * quiet
         and h["errors"] == 0),
        ("honest p99 moving vs quiet, ms", f"{_f(moving)} vs {_f(quiet)}",
         "(reported only)", None),
    ]
    ok_run = not r["server_exited"]
    print(f"\n{'figure':<40}{'value':>16}  {'bar':<22}result")
    for name, value, bar, ok in rows:
        verdict = "-" if ok is None else "PASS" if ok else "FAIL"
        print(f"{name:<40}{value:>16}  {bar:<22}{verdict}")
    r["bars"] = [{"figure": a, "value": v, "bar": b, "passed": ok} for a, v, b, ok in rows]
    r["passed"] = ok_run and all(ok for *_, ok in rows if ok is not None)
    db = "SQLite" if r["backend"] == "sqlite" else "PostgreSQL"
    print(f"\nREADME lines (surge, {n:,} waiting, {db}):")
    for name, value, bar, _ok in rows:
        shown = bar.replace(">=", "≥").replace("<=", "≤")
        print(f"| surge, {n:,} waiting, {db}: {name} | {value} | | | {shown} |")
    print(f"surge ({r['backend']}): {'PASS' if r['passed'] else 'FAIL'}", flush=True)
    # on PostgreSQL the database server's work is among the others: no telling them apart
    busy = {name: c["others"] for name, c in (("join", j["cpu_pct"]), ("move", m["cpu_pct"]))
            if c["others"] is not None and c["others"] > BUSY_OTHER_PCT
            and r["backend"] == "sqlite"}
    r["reliable"] = not busy and not r["crowd"]["disconnects"]
    if r["crowd"]["disconnects"]:
        print(f"warning: {r['crowd']['disconnects']} of the crowd's connections were lost (a"
              " client that hears no ping for its ping window gives up: a crowd process too"
              " busy to keep up, or a server late to ping); rerun with more"
              " --crowd-processes to tell which", file=sys.stderr, flush=True)
    if busy:
        print("warning: other work on this machine used "
              + ", ".join(f"{pct:.0f}% of a CPU while " + PHASES[name]
                          for name, pct in busy.items())
              + ": these figures are not comparable; rerun on a quiet machine",
              file=sys.stderr, flush=True)


BENCHMARK = Benchmark(
    name="surge",
    help="thousands of customers join at once and wait: joins/s, memory, queue news,"
         " and what the desk's people see meanwhile",
    run=run,
    add_arguments=add_arguments,
)
