"""The messaging benchmark: chatd against a bare python-socketio relay, under the same load.

For each target in turn (the relay first, then chatd) the driver starts the server as its
own process, starts the load processes (bench/loadgen.py), sets up ``--pairs`` chats and
runs a closed loop: every participant sends its next ``message:send`` as soon as the
previous one is acknowledged, for ``--warmup`` + ``--seconds``. Only acks received in the
measured window count for throughput and latency; every ``message:new`` received by the
other side counts for delivery, checked against every acknowledged message.

chatd's chats are real: ``--engineers`` accounts are created with ``chatd engineer add``,
log in over HTTP, go ``available`` with capacity ceil(pairs / engineers) and accept the
offers of the customers' ``chat:request``s. Each engineer is one socket holding several
chats, as on a real desk; the relay gets the same sockets and the same sessions per socket.

The bar: chatd's acknowledged messages per second >= 0.7 x the relay's on SQLite and
>= 0.5 x on PostgreSQL (``chatd-postgres``: a database of its own on the local server,
``CHATD_BENCH_POSTGRES_URL``, dropped after), at 50 pairs, with every acknowledged message
delivered and no errors. ``writes/commit`` is how many of chatd's writes shared each
commit in the window (its ``chatd_store_*`` metrics): group commit at work.

Reading the table: ``server CPU`` is the server process's CPU in the window, in % of one
core (near 100%: the server is the bottleneck; well below with high latency: it waits on
something, e.g. its store); ``us/msg`` is that CPU per acknowledged message, which moves
less than msgs/s when the machine is shared; ``load CPU`` is the load processes together;
``other CPU`` is everything else on the machine. A run where others used more than a
quarter of a CPU is flagged as not comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import (
    REPLY_TIMEOUT,
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
    start_chatd,
    start_child,
    start_server,
)
from .server_process import ServerProcess

BAR = 0.7
BARS = {"chatd": BAR, "chatd-postgres": 0.5}
BAR_PAIRS = 50
CHATD_TARGETS = ("chatd", "chatd-postgres")

# Past this share of one CPU used by others in a measured window, say the run is skewed.
BUSY_OTHER_PCT = 25.0
PASSWORD = "benchmark-password"


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--pairs", type=int, default=BAR_PAIRS,
                       help="chats, each a customer and an engineer (default %(default)s)")
    group.add_argument("--engineers", type=int, default=5,
                       help="engineer sockets (accounts), each holding ceil(pairs/engineers)"
                            " chats (default %(default)s; logins past 10 are rate limited)")
    group.add_argument("--workers", type=int, default=2,
                       help="load-generating processes (default %(default)s)")
    group.add_argument("--body-size", type=int, default=100,
                       help="characters per message body (default %(default)s)")
    group.add_argument("--targets", default="relay,chatd,chatd-postgres",
                       help="comma-separated, from relay, chatd (on SQLite), chatd-postgres"
                            " and relay-inline: the relay with chatd's room manager, for"
                            " comparison (default %(default)s)")
    group.add_argument("--sqlite-synchronous", choices=["full", "normal"],
                       help="chatd's SQLite synchronous mode (default: chatd's own default)")
    group.add_argument("--rounds", type=int, default=3,
                       help="measure each target this many times, alternating; the round"
                            " with the best throughput is reported (default %(default)s)")
    group.add_argument("--profile-chatd", metavar="FILE",
                       help="run chatd under cProfile and write its stats to FILE")


async def run(args: argparse.Namespace) -> Report:
    pairs, engineers, workers = args.pairs, args.engineers, args.workers
    if pairs < 1 or not 1 <= engineers <= pairs or workers < 1 or args.rounds < 1:
        raise BenchError("need pairs >= 1, 1 <= engineers <= pairs, workers >= 1, rounds >= 1")
    if not 1 <= args.body_size <= 10_000:
        raise BenchError("--body-size must be 1 to 10000 characters (chatd's text limit)")
    capacity = math.ceil(pairs / engineers)
    if capacity > 100:
        raise BenchError("at most 100 chats per engineer: raise --engineers")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not targets or set(targets) - {"relay", *CHATD_TARGETS, "relay-inline"}:
        raise BenchError("--targets takes relay, chatd, chatd-postgres and/or relay-inline")
    print(
        f"chat: {pairs} pairs ({engineers} engineer sockets x up to {capacity} chats,"
        f" {pairs} customer sockets), {args.warmup:g} s warm-up + {args.seconds:g} s"
        f" measured, {workers} load process(es), {args.body_size}-character bodies",
        flush=True,
    )
    report: Report = {
        "pairs": pairs, "engineers": engineers, "capacity": capacity, "workers": workers,
        "warmup": args.warmup, "seconds": args.seconds, "body_size": args.body_size,
        "rounds": args.rounds,
    }
    if hasattr(os, "getloadavg"):
        # the machine may be shared: a load average near or above its cores skews msgs/s
        load = os.getloadavg()[0]
        report["loadavg_at_start"] = round(load, 2)
        print(f"load average at start: {load:.2f} on {os.cpu_count()} CPUs", flush=True)
    print(_HEADER, flush=True)
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
    # Rounds alternate the targets, so that a busy moment of a shared machine does not
    # land on one target only.
    for r in range(args.rounds):
        for target in targets:
            with tempfile.TemporaryDirectory(prefix=f"chatd-bench-{target}-") as tmp:
                figures = await _measure(target, Path(tmp), args, capacity)
            runs[target].append(figures)
            label = target if args.rounds == 1 else f"{target} #{r + 1}"
            print(_row(label, figures), flush=True)
    for target, figures_list in runs.items():
        # Other work on the machine only ever slows a run down: the best round (of those
        # the machine left alone, if any) is the closest to what the target can do, as
        # timeit takes the fastest repeat.
        quiet = [f for f in figures_list if not _skewed(f)]
        best = max(quiet or figures_list, key=lambda f: f["msgs_per_s"])
        report[target] = {**best, "runs": figures_list}
        if args.rounds > 1:
            print(_row(f"{target} best", report[target]), flush=True)
    busy = [(t, report[t]["other_cpu_pct"]) for t in runs if _skewed(report[t])]
    report["reliable"] = not busy
    advice = "rerun on a quieter machine" + (", or with --rounds 3" if args.rounds == 1 else "")
    for target, pct in busy:
        print(f"warning: other work used {pct:.0f}% of a CPU during the {target} run;"
              f" its figures are not comparable ({advice})", file=sys.stderr, flush=True)
    verdicts = []
    clean = all(
        f["delivered"] == f["acked_total"] and not f["timeouts"] and not f["errors"]
        for runs_of_target in runs.values() for f in runs_of_target
    )
    for target in [t for t in CHATD_TARGETS if t in report]:
        if "relay" not in report:
            continue
        relay, chatd = report["relay"], report[target]
        ratio = chatd["msgs_per_s"] / relay["msgs_per_s"] if relay["msgs_per_s"] else 0.0
        bar = BARS[target]
        ok = ratio >= bar and clean
        verdicts.append(ok)
        key = "ratio" if target == "chatd" else "ratio_postgres"
        report[key] = round(ratio, 3)
        report["bar" if target == "chatd" else "bar_postgres"] = bar
        if chatd["server_cpu_us_per_msg"] and relay["server_cpu_us_per_msg"]:
            cost = chatd["server_cpu_us_per_msg"] / relay["server_cpu_us_per_msg"]
            report[f"cpu_cost_ratio{'' if target == 'chatd' else '_postgres'}"] = round(cost, 3)
            print(f"server CPU per message: {target} {chatd['server_cpu_us_per_msg']:.0f} us,"
                  f" relay {relay['server_cpu_us_per_msg']:.0f} us ({cost:.2f}x)", flush=True)
        at = "" if pairs == BAR_PAIRS else f" (bar is set at {BAR_PAIRS} pairs; ran {pairs})"
        per = chatd.get("writes_per_commit")
        print(f"{target}/relay throughput: {ratio:.2f}  bar: >= {bar:.2f}{at}"
              + (f"  writes/commit {per:.1f}" if per else "")
              + f"  {'PASS' if ok else 'FAIL'}"
              + ("" if clean else "  (lost messages, timeouts or errors)")
              + ("" if not busy else "  (unreliable: the machine was busy)"), flush=True)
    report["passed"] = all(verdicts) if verdicts else None
    if "relay-inline" in report and "chatd" in report and report["relay-inline"]["msgs_per_s"]:
        extra = report["chatd"]["msgs_per_s"] / report["relay-inline"]["msgs_per_s"]
        report["ratio_to_relay_inline"] = round(extra, 3)
        print(f"chatd/relay-inline throughput: {extra:.2f} (for comparison; not the bar)",
              flush=True)
    return report


def _skewed(figures: dict[str, Any]) -> bool:
    other = figures["other_cpu_pct"]
    return other is not None and other > BUSY_OTHER_PCT


_HEADER = (
    f"{'target':<18}{'msgs/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    f"{'acked':>9}{'delivered':>11}{'errors':>8}{'server CPU':>12}{'us/msg':>8}"
    f"{'load CPU':>10}{'other CPU':>11}"
)


def _row(target: str, f: dict[str, Any]) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}%"

    errors = f["timeouts"] + sum(f["errors"].values())
    return (
        f"{target:<18}{f['msgs_per_s']:>9.0f}{ms(f['p50_ms']):>9}{ms(f['p99_ms']):>9}"
        f"{ms(f['max_ms']):>9}{f['acked_total']:>9}{f['delivered']:>11}{errors:>8}"
        f"{pct(f['server_cpu_pct']):>12}{ms(f['server_cpu_us_per_msg']):>8}"
        f"{pct(f['loadgen_cpu_pct']):>10}{pct(f['other_cpu_pct']):>11}"
    )


Setup = Callable[
    [Path, argparse.Namespace, int],
    Awaitable[tuple[Any, str, list[dict[str, Any]], list[dict[str, Any]]]],
]


async def _measure(
    target: str, tmp: Path, args: argparse.Namespace, capacity: int,
    setup: Setup | None = None, during: Callable[[float], Awaitable[Any]] | None = None,
    retry: bool = False,
) -> dict[str, Any]:
    """One round against ``target``; ``setup`` starts servers of another kind (bench/
    cluster.py: their ``pids`` are the server's CPU), ``during(start_at)`` runs alongside
    the load, and with ``retry`` a refused message is sent again until acknowledged."""
    async with contextlib.AsyncExitStack() as stack:
        if setup is not None:
            server, url, engineer_specs, customer_specs = await setup(tmp, args, capacity)
        elif target in CHATD_TARGETS:
            database_url = None
            if target == "chatd-postgres":
                database_url = await new_postgres_database()
                stack.push_async_callback(drop_postgres_database, database_url)
            server, url, engineer_specs, customer_specs = await _chatd(
                tmp, args, capacity, database_url
            )
        else:
            server, url, engineer_specs, customer_specs = await _relay(
                tmp, args, inline=target == "relay-inline"
            )
        stack.push_async_callback(server.stop_async)
        workers: list[Child] = []
        for k in range(args.workers):
            w = await start_child(f"load worker {k}", [sys.executable, "-m", "bench.loadgen"],
                                  env=plain_env(), cwd=tmp)
            stack.push_async_callback(w.stop)
            workers.append(w)
        stack.push_async_callback(close_workers, workers)
        n = len(workers)
        # ``url`` may be several (one per load process, in turn): bench/cluster.py's
        # clients connected to given processes.
        urls = url if isinstance(url, list) else [url]
        url = urls[0]
        await command(workers, [
            {"cmd": "engineers",
             "target": "chatd" if target in CHATD_TARGETS or setup else target,
             "url": urls[k % len(urls)], "engineers": engineer_specs[k::n]}
            for k in range(n)
        ])
        await command(workers, [
            {"cmd": "customers", "customers": customer_specs[k::n]} for k in range(n)
        ])
        settled = await command(workers, [{"cmd": "settle"}] * n)
        held = sum(r["engineer_sessions"] for r in settled)
        asked = sum(r["customer_sessions"] for r in settled)
        if held != args.pairs or asked != args.pairs:
            raise BenchError(
                f"{target}: {asked} customers and {held} engineer chats set up,"
                f" {args.pairs} wanted; accept errors: {[r['accept_errors'] for r in settled]}"
            )
        start_at = time.monotonic() + 0.5
        window = (start_at + args.warmup, start_at + args.warmup + args.seconds)
        pids = [w.pid for w in workers]
        cpu = asyncio.create_task(
            _cpu_in_window(getattr(server, "pids", [server.pid]), pids, *window)
        )
        commits = (
            asyncio.create_task(_commits_in_window(url, *window))
            if target in CHATD_TARGETS and setup is None else None
        )
        side = asyncio.create_task(during(start_at)) if during is not None else None
        try:
            results = await command(workers, [{
                "cmd": "run", "start_at": start_at, "warmup": args.warmup,
                "seconds": args.seconds, "body_size": args.body_size, "retry": retry,
            }] * n, timeout=REPLY_TIMEOUT + args.warmup + args.seconds + (30 if retry else 0))
        except BaseException:
            cpu.cancel()
            if commits is not None:
                commits.cancel()
            if side is not None:
                side.cancel()
            raise
        if side is not None:
            await side
        used = await cpu
        grouped = await commits if commits is not None else None
        await close_workers(workers)
        log_lines = "\n".join(
            line for line in server.log_tail(200).splitlines()
            if not line.startswith("chatd listening on ")
        )[-2000:]
    latencies = sorted(x for r in results for x in r["latencies_ms"])
    errors: dict[str, int] = {}
    for r in results:
        for code, count in r["errors"].items():
            errors[code] = errors.get(code, 0) + count
    figures = {
        "participants": sum(r["participants"] for r in results),
        "msgs_per_s": round(len(latencies) / args.seconds, 1),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else None,
        "mean_ms": round(sum(latencies) / len(latencies), 3) if latencies else None,
        # the longest any message waited for its ack, retries included (with ``retry``)
        "longest_wait_ms": max((r.get("longest_wait_ms", 0.0) for r in results), default=0.0),
        "acked_window": len(latencies),
        "acked_total": sum(r["acked_total"] for r in results),
        "delivered": sum(r["delivered"] for r in results),
        "timeouts": sum(r["timeouts"] for r in results),
        "errors": errors,
        # % of one core: a server near 100% is the bottleneck; load processes near
        # 100% each mean the clients are
        "server_cpu_pct": _pct(used.server, args.seconds),
        "loadgen_cpu_pct": _pct(used.load, args.seconds),
        # the driver itself, the kernel's own threads and whatever else runs on the machine
        "other_cpu_pct": _pct(used.others, args.seconds),
        # server CPU per acknowledged message: steadier than msgs/s on a busy machine
        "server_cpu_us_per_msg": (
            round(used.server / len(latencies) * 1e6, 1) if used.server and latencies else None
        ),
    }
    if grouped is not None and grouped[0]:
        figures["commits"], figures["writes"] = grouped
        figures["writes_per_commit"] = round(grouped[1] / grouped[0], 2)
    if log_lines:
        figures["server_log_tail"] = log_lines
        print(f"{target} logged (last lines):\n{log_lines}", file=sys.stderr, flush=True)
    return figures


def _pct(cpu: float | None, seconds: float) -> float | None:
    return None if cpu is None else round(100 * cpu / seconds, 1)


async def _commits_in_window(url: str, start: float, end: float) -> tuple[int, int] | None:
    """(commits, writes) of chatd's store over the window, from its /metrics."""
    import aiohttp

    async def read(http: aiohttp.ClientSession) -> tuple[int, int]:
        async with http.get(url + "/metrics") as r:
            text = await r.text()
        values = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in ("chatd_store_commits_total", "chatd_store_writes_total"):
                values[name] = int(float(value))
        return values["chatd_store_commits_total"], values["chatd_store_writes_total"]

    async with aiohttp.ClientSession() as http:
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        c0, w0 = await read(http)
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        c1, w1 = await read(http)
    return c1 - c0, w1 - w0


async def _chatd(
    tmp: Path, args: argparse.Namespace, capacity: int, database_url: str | None = None
) -> tuple[ServerProcess, str, list[dict[str, Any]], list[dict[str, Any]]]:
    extra: dict[str, Any] = {}
    if database_url is not None:
        extra["database_url"] = database_url
    elif args.sqlite_synchronous:
        sync = args.sqlite_synchronous
        extra["database_url"] = f"sqlite:///{tmp / 'bench.db'}?synchronous={sync}"
    env = chatd_env(
        tmp,
        **extra,
        message_rate=10000, message_burst=100000,
        connect_rate=10000, connect_burst=100000,
        # A closed loop sends as fast as acks come back, from one address: the bounds on
        # hostile clients (docs/security.md) are raised so that they measure nothing here.
        event_rate=10000, event_burst=100000,
        connections_per_address=100000, handshake_rate=10000, handshake_burst=100000,
        max_capacity=100,
    )
    emails = [f"engineer{j}@bench.example" for j in range(args.engineers)]
    for j, email in enumerate(emails):
        await add_engineer(env, tmp, email, f"Engineer {j}", PASSWORD)
    profile = Path(args.profile_chatd).resolve() if args.profile_chatd else None
    server, url = await start_chatd(tmp, env, profile_to=profile)
    try:
        tokens = [await login(url, email, PASSWORD) for email in emails]
    except BaseException:
        await server.stop_async()
        raise
    engineers = [{"token": t, "capacity": capacity} for t in tokens]
    customers = [
        {"name": f"Customer {i}", "email": f"customer{i}@bench.example"}
        for i in range(args.pairs)
    ]
    return server, url, engineers, customers


async def _relay(
    tmp: Path, args: argparse.Namespace, *, inline: bool = False
) -> tuple[ServerProcess, str, list[dict[str, Any]], list[dict[str, Any]]]:
    server, url = await start_server(
        "relay",
        lambda port: [sys.executable, "-m", "bench.relay", "--host", "127.0.0.1",
                      "--port", str(port), *(["--inline-emit"] if inline else [])],
        "/healthz", env=plain_env(), cwd=tmp, log=tmp / "relay.log",
    )
    sessions = [str(uuid.uuid4()) for _ in range(args.pairs)]
    # chatd offers each chat to the engineer idle longest: round robin, as here
    engineers = [{"sessions": sessions[j::args.engineers]} for j in range(args.engineers)]
    customers = [{"session_id": s} for s in sessions]
    return server, url, engineers, customers


@dataclass
class WindowCPU:
    """CPU seconds used in the measured window (None where unknown)."""

    server: float | None
    load: float | None
    others: float | None  # everything else on the machine: other users' work


async def _cpu_in_window(
    server_pids: list[int], worker_pids: list[int], start: float, end: float
) -> WindowCPU:
    def servers_cpu() -> float | None:
        each = [cpu_seconds(p) for p in server_pids]
        return None if any(c is None for c in each) else sum(c or 0.0 for c in each)

    await asyncio.sleep(max(0.0, start - time.monotonic()))
    m0 = machine_busy_seconds()
    s0 = servers_cpu()
    w0 = [cpu_seconds(p) for p in worker_pids]
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    m1 = machine_busy_seconds()
    s1 = servers_cpu()
    w1 = [cpu_seconds(p) for p in worker_pids]
    server = None if s0 is None or s1 is None else s1 - s0
    load: float | None = 0.0
    for a, b in zip(w0, w1, strict=True):
        load = None if a is None or b is None or load is None else load + b - a
    others = None
    if m0 is not None and m1 is not None and server is not None and load is not None:
        others = max(0.0, (m1 - m0) - server - load)
    return WindowCPU(server, load, others)


BENCHMARK = Benchmark(
    name="chat",
    help="messages/s and ack latency of chatd against a bare python-socketio relay",
    run=run,
    add_arguments=add_arguments,
)
