"""The siege (``make soak``, ``python -m bench.siege``): hostile clients of every kind against
one chatd while honest pairs chat, and whether the honest pairs notice.

One ``chatd serve`` runs in its own process, behind ``trusted_proxies = 127.0.0.1``, so that
each client can stand for another machine with its own ``X-Forwarded-For`` address from the
documentation ranges: the honest people from 192.0.2.0/24; the attackers from a handful of
shared addresses in 203.0.113.0/24 (one attacker's machines) and, for a share of them
(``--spread``), each from an address of its own in 198.51.100.0/24 or 2001:db8::/32 (a
botnet).

- The honest side (bench/siege_honest.py, one process, python-socketio clients): ``--pairs``
  guests each in a chat with their own engineer (accounts made with ``chatd engineer add``
  before the server starts), both writing a message every 1 to 2 s, measuring each ack.
- The attackers (bench/siege_attack.py, one process per kind, raw WebSockets and HTTP),
  ``--attackers`` in all: never-reading (big ``session:resume`` answers never read),
  binary flood (a binary event header, then 512 KiB binary frames), handshake flood
  (Engine.IO sessions that never join), slow upload (one byte every 3 s), resume flood
  (``session:resume`` as fast as it can write, answers unread) and typing flood. Each
  treats a refusal or a disconnect as normal and tries again after a short pause. An
  attacker's CPU is on its own machines, not on the server's, so here they get only what
  the server and the honest clients leave: they run under Linux's idle scheduling policy
  (``--attacker-sched idle``, the default), which runs them only on a core nobody else
  wants and gives the core back as soon as the server or an honest client wakes up. With
  ``--attacker-sched nice`` they run at a lower priority instead (``--attacker-nice``),
  which still lets them finish their time slice before a waking server runs: the server's
  wake-ups then wait behind the attackers' own CPU, which a real server does not share.

The run: the honest pairs chat quietly (``--warmup``, then ``--quiet-seconds`` measured),
the attack runs for ``--attack-seconds``, every attacker closes its connections, and the
honest pairs are measured again from ``--after-delay`` seconds after that for
``--after-seconds``. The server's RSS is sampled all along (VmRSS of /proc/PID/status).

The bars (each printed with PASS or FAIL; the exit status is 1 if any fails):
- the honest pairs see no error (no error answer, no timeout, no disconnect, every
  acknowledged message delivered to the other side);
- their p99 ack latency under attack is at most 3x the quiet p99 of the same run;
- the server's RSS grows by at most 256 MiB (peak under attack and after, over the last
  sample before the attack);
- from 10 s after the attack, their p99 is back within 1.5x the quiet p99.

A message that timed out counts in the percentiles as its timeout (10 s). The CPU each side
used in each window is printed too; a run where other work on the machine used more than a
quarter of a CPU is flagged as not comparable. Every process is
stopped by its PID at the end, and the whole run is bounded in time. The exit status is 2
when the siege could not be carried out (a server that did not start, a client that failed
to set up).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import (
    BenchError,
    Child,
    Report,
    add_engineer,
    chatd_env,
    close_workers,
    command,
    cpu_seconds,
    login,
    machine_busy_seconds,
    percentile,
    plain_env,
    rss_bytes,
    start_chatd,
    start_child,
)
from .server_process import ServerProcess
from .siege_attack import KINDS
from .siege_honest import ACK_TIMEOUT

PASSWORD = "siege-password"
MiB = 1024 * 1024
# The bars.
ATTACK_P99_FACTOR = 3.0
AFTER_P99_FACTOR = 1.5
RSS_GROWTH_MAX = 256 * MiB
# The mix of 1,000 attackers; other totals keep the proportions.
MIX = {
    "never_reading": 150, "binary_flood": 100, "handshake_flood": 200,
    "slow_upload": 200, "resume_flood": 150, "typing_flood": 200,
}
SAMPLE_EVERY = 0.25  # seconds between RSS and CPU samples
# Past this share of one CPU used by other work on the machine in a measured window, the
# figures say more about the machine than about chatd.
BUSY_OTHER_PCT = 25.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.siege", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--attack-seconds", type=float, default=20.0,
                   help="how long the attack lasts (default %(default)s)")
    p.add_argument("--attackers", type=int, default=1000,
                   help="hostile clients in all, of every kind (default %(default)s)")
    p.add_argument("--kinds", default=",".join(KINDS),
                   help="comma-separated attack kinds (default: all: %(default)s)")
    p.add_argument("--pairs", type=int, default=20,
                   help="honest chats, each a guest and an engineer (default %(default)s)")
    p.add_argument("--seed", type=int, default=1,
                   help="seed of every random choice: addresses, pace (default %(default)s)")
    p.add_argument("--warmup", type=float, default=3.0,
                   help="honest chatting before the quiet measure (default %(default)s)")
    p.add_argument("--quiet-seconds", type=float, default=15.0,
                   help="the quiet measure, before the attack (default %(default)s)")
    p.add_argument("--after-delay", type=float, default=10.0,
                   help="from the end of the attack to the after measure (default %(default)s)")
    p.add_argument("--after-seconds", type=float, default=10.0,
                   help="the after measure (default %(default)s)")
    p.add_argument("--shared-addresses", type=int, default=8,
                   help="addresses the attackers share (default %(default)s)")
    p.add_argument("--spread", type=float, default=0.5,
                   help="share of attackers with an address of their own (default %(default)s)")
    p.add_argument("--attacker-sched", choices=("idle", "nice"), default="idle",
                   help="how the attacking processes yield the CPU: Linux's idle policy,"
                        " or a niceness (default %(default)s)")
    p.add_argument("--attacker-nice", type=int, default=10,
                   help="niceness of the attacking processes with --attacker-sched nice"
                        " (default %(default)s)")
    p.add_argument("--big-chat-messages", type=int, default=60,
                   help="10,000-character messages in each chat the never-reading attackers"
                        " resume (default %(default)s)")
    p.add_argument("--rss-abort-mib", type=int, default=2048,
                   help="stop the attack early if the server grows by this much; the run"
                        " then fails (default %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a chatd setting for this run, as CHATD_NAME (repeatable)")
    p.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    p.add_argument("--server-log", metavar="FILE", help="keep the server's log in FILE")
    return p


def check(args: argparse.Namespace) -> list[str]:
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    problems = []
    if not kinds or set(kinds) - set(KINDS):
        problems.append(f"--kinds takes some of {', '.join(KINDS)}")
    if not 0 < args.attack_seconds <= 600:
        problems.append("--attack-seconds must be in (0, 600]")
    if not len(kinds) <= args.attackers <= 5000:
        problems.append("--attackers must be from one per kind to 5000")
    if not 1 <= args.pairs <= 100:
        problems.append("--pairs must be 1 to 100")
    for name in ("warmup", "quiet_seconds", "after_delay", "after_seconds"):
        if not 0 <= getattr(args, name) <= 300:
            problems.append(f"--{name.replace('_', '-')} must be in [0, 300]")
    if args.quiet_seconds <= 0 or args.after_seconds <= 0:
        problems.append("--quiet-seconds and --after-seconds must be above 0")
    if not 1 <= args.shared_addresses <= 254 or not 0 <= args.spread <= 1:
        problems.append("--shared-addresses must be 1 to 254 and --spread in [0, 1]")
    if not 0 <= args.attacker_nice <= 19:
        problems.append("--attacker-nice must be 0 to 19")
    if not 1 <= args.big_chat_messages <= 1000:
        problems.append("--big-chat-messages must be 1 to 1000")
    for item in args.set:
        if "=" not in item:
            problems.append(f"--set {item!r}: NAME=VALUE")
    args.kind_list = kinds
    return problems


# ---------------------------------------------------------------------- addresses


def honest_address(i: int) -> str:
    return str(ipaddress.ip_address("192.0.2.1") + i)


def attacker_addresses(
    args: argparse.Namespace, counts: dict[str, int], rng: random.Random
) -> dict[str, list[str]]:
    shared = [str(ipaddress.ip_address("203.0.113.1") + i) for i in range(args.shared_addresses)]
    own = 0

    def address_of_its_own() -> str:
        nonlocal own
        own += 1
        if own <= 254:
            return str(ipaddress.ip_address("198.51.100.0") + own)
        # then one /64 each: IPv6 limits may key on the /64, not on the address
        return str(ipaddress.ip_address("2001:db8::1") + ((own - 254) << 64))

    return {
        kind: [address_of_its_own() if rng.random() < args.spread else rng.choice(shared)
               for _ in range(n)]
        for kind, n in counts.items()
    }


def mix(kinds: list[str], total: int) -> dict[str, int]:
    weights = {k: MIX[k] for k in kinds}
    scale = total / sum(weights.values())
    counts = {k: max(1, round(w * scale)) for k, w in weights.items()}
    biggest = max(counts, key=lambda k: counts[k])
    counts[biggest] += total - sum(counts.values())
    return counts


# ---------------------------------------------------------------------- measures


@dataclass
class Sample:
    t: float
    rss: int | None
    server_cpu: float | None
    honest_cpu: float | None
    attackers_cpu: float | None
    machine_busy: float | None


class Sampler:
    """RSS and CPU of the processes every SAMPLE_EVERY seconds, from start to stop."""

    def __init__(self, server: ServerProcess, honest: Child, attackers: list[Child]) -> None:
        self.server, self.honest, self.attackers = server, honest, attackers
        self.samples: list[Sample] = []
        self.baseline: int | None = None  # the server's RSS just before the attack
        self.abort_above: int | None = None
        self.aborted = asyncio.Event()

    def take(self) -> Sample:
        attackers: float | None = 0.0
        for a in self.attackers:
            used = cpu_seconds(a.pid) if a.proc.returncode is None else None
            attackers = None if used is None or attackers is None else attackers + used
        s = Sample(time.monotonic(), rss_bytes(self.server.pid), cpu_seconds(self.server.pid),
                   cpu_seconds(self.honest.pid), attackers, machine_busy_seconds())
        self.samples.append(s)
        return s

    async def run(self) -> None:
        while True:
            s = self.take()
            if (self.abort_above is not None and s.rss is not None
                    and s.rss > self.abort_above and not self.aborted.is_set()):
                self.aborted.set()
            await asyncio.sleep(SAMPLE_EVERY)

    def rss_peak(self, start: float, end: float) -> int | None:
        values = [s.rss for s in self.samples if start <= s.t <= end and s.rss is not None]
        return max(values) if values else None

    def cpu(self, start: float, end: float) -> dict[str, float | None]:
        """% of one core used by each side in the window."""
        inside = [s for s in self.samples if start <= s.t <= end]
        if len(inside) < 2:
            return {}
        a, b = inside[0], inside[-1]
        span = b.t - a.t

        def pct(x: float | None, y: float | None) -> float | None:
            return None if x is None or y is None or span <= 0 else round(100 * (y - x) / span)

        out = {"server": pct(a.server_cpu, b.server_cpu),
               "honest": pct(a.honest_cpu, b.honest_cpu),
               "attackers": pct(a.attackers_cpu, b.attackers_cpu),
               "machine": pct(a.machine_busy, b.machine_busy)}
        known = [out["server"], out["honest"], out["attackers"], out["machine"]]
        if all(v is not None for v in known):
            server, honest, attackers, machine = (float(v) for v in known if v is not None)
            out["others"] = max(0.0, machine - server - honest - attackers)
        return out


def latencies(samples: list[tuple[float, float | None]], start: float, end: float) -> list[float]:
    """Ack latencies (ms) of the messages sent in [start, end); a timeout counts as it."""
    return sorted(ACK_TIMEOUT * 1000 if lat is None else lat
                  for t, lat in samples if start <= t < end)


def figures(lat: list[float]) -> dict[str, Any]:
    return {"messages": len(lat), "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
            "max_ms": lat[-1] if lat else None}


# ---------------------------------------------------------------------- the run


async def run(args: argparse.Namespace) -> Report:
    rng = random.Random(args.seed)
    counts = mix(args.kind_list, args.attackers)
    addresses = attacker_addresses(args, counts, rng)
    print(f"siege: {args.attackers} attackers ("
          + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items())
          + f"), {args.pairs} honest pairs, attack {args.attack_seconds:g} s, seed {args.seed}",
          flush=True)
    print(f"attacker addresses: {len({a for v in addresses.values() for a in v})} distinct,"
          f" {args.shared_addresses} shared by {1 - args.spread:.0%} of them;"
          f" honest: 192.0.2.1-{honest_address(2 * args.pairs - 1)}", flush=True)
    if hasattr(os, "getloadavg"):
        print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
              flush=True)
    report: Report = {
        "attackers": counts, "pairs": args.pairs, "attack_seconds": args.attack_seconds,
        "seed": args.seed, "spread": args.spread, "shared_addresses": args.shared_addresses,
    }
    with tempfile.TemporaryDirectory(prefix="chatd-siege-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            async with contextlib.AsyncExitStack() as stack:
                await _siege(args, tmp, stack, counts, addresses, report)
        finally:
            log = tmp / "chatd.log"
            if args.server_log and log.exists():
                shutil.copyfile(log, args.server_log)
    return report


async def _siege(
    args: argparse.Namespace, tmp: Path, stack: contextlib.AsyncExitStack,
    counts: dict[str, int], addresses: dict[str, list[str]], report: Report,
) -> None:
    settings: dict[str, Any] = {"trusted_proxies": "127.0.0.1"}
    for item in args.set:
        name, value = item.split("=", 1)
        settings[name.strip().lower()] = value
    env = chatd_env(tmp, **settings)
    report["settings"] = settings

    # -- set-up: engineer accounts, the server, the honest pairs, the attackers
    t_setup = time.monotonic()
    emails = [f"engineer{j}@siege.example" for j in range(args.pairs)]
    gate = asyncio.Semaphore(4)

    async def add(j: int, email: str) -> None:
        async with gate:
            await add_engineer(env, tmp, email, f"Engineer {j}", PASSWORD)

    # the first alone: it creates the database, which the others then share
    await add(0, emails[0])
    await asyncio.gather(*(add(j, e) for j, e in enumerate(emails) if j))
    server, url = await start_chatd(tmp, env)
    stack.push_async_callback(server.stop_async)
    tokens = await asyncio.gather(*(
        login(url, email, PASSWORD, headers={"X-Forwarded-For": honest_address(args.pairs + j)})
        for j, email in enumerate(emails)
    ))
    honest = await start_child("honest clients", [sys.executable, "-m", "bench.siege_honest"],
                               env=plain_env(), cwd=tmp)
    stack.push_async_callback(honest.stop)
    stack.push_async_callback(close_workers, [honest])
    await command([honest], [{
        "cmd": "setup", "url": url, "seed": args.seed,
        "customers": [{"name": f"Customer {i}", "email": f"customer{i}@siege.example",
                       "address": honest_address(i)} for i in range(args.pairs)],
        "engineers": [{"token": tok, "address": honest_address(args.pairs + j)}
                      for j, tok in enumerate(tokens)],
    }])
    attackers: list[Child] = []
    for kind in counts:
        w = await start_child(f"{kind} attackers", [sys.executable, "-m", "bench.siege_attack"],
                              env=plain_env(), cwd=tmp)
        stack.push_async_callback(w.stop)
        attackers.append(w)
    stack.push_async_callback(close_workers, attackers)
    shared_first = str(ipaddress.ip_address("203.0.113.1"))
    prepared = await command(attackers, [{
        "cmd": "prepare", "kind": kind, "url": url, "clients": addresses[kind],
        "seed": args.seed, "nice": args.attacker_nice, "sched": args.attacker_sched,
        "seed_address": shared_first,
        "big_chats": 2, "big_chat_messages": args.big_chat_messages,
    } for kind in counts])
    big = [r["big_chats"] for r in prepared if r["big_chats"]]
    print(f"set up in {time.monotonic() - t_setup:.1f} s: {args.pairs} honest chats,"
          f" {len(attackers)} attacking processes"
          + (f", {big[0]} chats of {args.big_chat_messages} big messages to resume" if big
             else ""), flush=True)

    sampler = Sampler(server, honest, attackers)
    sampling = asyncio.create_task(sampler.run())
    stack.callback(sampling.cancel)

    # -- quiet, attack, after
    start_at = time.monotonic() + 0.5
    quiet = (start_at + args.warmup, start_at + args.warmup + args.quiet_seconds)
    attack_start, attack_end = quiet[1], quiet[1] + args.attack_seconds
    await command([honest], [{"cmd": "start", "start_at": start_at}])
    print(f"quiet: honest pairs chatting; measuring {args.quiet_seconds:g} s", flush=True)
    await asyncio.sleep(max(0.0, attack_start - 0.3 - time.monotonic()))
    sampler.take()
    baseline = sampler.samples[-1].rss
    if baseline is not None:
        sampler.abort_above = baseline + args.rss_abort_mib * MiB
    print(f"attack: {sum(counts.values())} attackers for {args.attack_seconds:g} s", flush=True)
    attack = asyncio.create_task(command(attackers, [
        {"cmd": "attack", "start_at": attack_start, "end_at": attack_end}
    ] * len(attackers), timeout=attack_end - time.monotonic() + 60))
    aborted = asyncio.create_task(sampler.aborted.wait())
    await asyncio.wait({attack, aborted}, return_when=asyncio.FIRST_COMPLETED)
    results: list[dict[str, Any]] = []
    if attack.done():
        aborted.cancel()
        results = attack.result()
    else:
        print(f"attack stopped early: the server grew by more than {args.rss_abort_mib} MiB",
              flush=True)
        for w in attackers:
            await w.stop(grace=2)
        with contextlib.suppress(BenchError):
            await attack
    attack_over = time.monotonic()
    after = (attack_over + args.after_delay, attack_over + args.after_delay + args.after_seconds)
    print(f"after: attackers gone {attack_over - attack_end:+.1f} s after the attack's end;"
          f" measuring from {args.after_delay:g} s later for {args.after_seconds:g} s",
          flush=True)
    await close_workers(attackers)
    await asyncio.sleep(max(0.0, after[1] - time.monotonic()))
    honest_result = (await command([honest], [{"cmd": "stop"}]))[0]
    sampling.cancel()
    end = time.monotonic()

    # -- figures
    samples = [(float(t), lat) for t, lat in honest_result["samples"]]
    windows = {"quiet": quiet, "attack": (attack_start, attack_end), "after": after}
    phase = {name: figures(latencies(samples, *span)) for name, span in windows.items()}
    for name, span in windows.items():
        phase[name]["cpu_pct"] = sampler.cpu(*span)
    errors = [(float(t), what) for t, what in honest_result["errors"]]
    rss_peak = sampler.rss_peak(attack_start, end)
    growth = None if rss_peak is None or baseline is None else rss_peak - baseline
    report.update(
        phases=phase,
        honest={"acked": honest_result["acked"], "delivered": honest_result["delivered"],
                "errors": len(errors), "first_errors": errors[:20]},
        server_rss={"baseline_mib": _mib(baseline), "peak_mib": _mib(rss_peak),
                    "growth_mib": _mib(growth),
                    "end_mib": _mib(sampler.samples[-1].rss if sampler.samples else None)},
        attacks={r["kind"]: {k: v for k, v in r.items() if k not in ("ok", "kind")}
                 for r in results},
        aborted=sampler.aborted.is_set(),
        timeline=_timeline(samples, errors, sampler, start_at, end, attack_start),
        server_log=_log_problems(server),
        server_exit=server.returncode,  # None: still running, as it should be
    )
    _print(report, windows, start_at)
    _judge(report, args)


def _mib(n: int | None) -> float | None:
    return None if n is None else round(n / MiB, 1)


def _timeline(
    samples: list[tuple[float, float | None]], errors: list[tuple[float, str]],
    sampler: Sampler, start: float, end: float, attack_start: float, step: float = 5.0,
) -> list[dict[str, Any]]:
    """Every ``step`` seconds: the honest figures and the server's RSS, timed from the attack."""
    rows = []
    t = start
    while t < end:
        lat = latencies(samples, t, t + step)
        rss = sampler.rss_peak(t, t + step)
        rows.append({"from_s": round(t - attack_start, 1), **figures(lat),
                     "errors": sum(1 for e, _ in errors if t <= e < t + step),
                     "rss_mib": _mib(rss)})
        t += step
    return rows


def _log_problems(server: ServerProcess) -> dict[str, Any]:
    if not server.log.exists():
        return {}
    lines = server.log.read_text(encoding="utf-8", errors="replace").splitlines()
    tracebacks = sum(1 for line in lines if line.startswith("Traceback"))
    errors = [line for line in lines if " ERROR " in line or line.startswith("ERROR")]
    return {"lines": len(lines), "tracebacks": tracebacks, "error_lines": len(errors),
            "first_errors": errors[:5]}


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _print(report: Report, windows: dict[str, tuple[float, float]], start_at: float) -> None:
    print(f"\n{'phase':<8}{'window s':>14}{'msgs':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'server CPU':>12}{'honest':>8}{'attackers':>11}{'others':>8}", flush=True)
    attack_start = windows["attack"][0]
    for name, (a, b) in windows.items():
        f = report["phases"][name]
        cpu = f["cpu_pct"]

        def pct(key: str, cpu: dict[str, Any] = cpu) -> str:
            return "-" if cpu.get(key) is None else f"{cpu[key]:.0f}%"

        print(f"{name:<8}{f'{a - attack_start:+.0f}..{b - attack_start:+.0f}':>14}"
              f"{f['messages']:>7}{_ms(f['p50_ms']):>9}{_ms(f['p99_ms']):>9}"
              f"{_ms(f['max_ms']):>9}{pct('server'):>12}{pct('honest'):>8}{pct('attackers'):>11}"
              f"{pct('others'):>8}", flush=True)
    print("\ntimeline (seconds from the attack's start; honest messages sent in each 5 s):")
    print(f"{'from s':>7}{'msgs':>6}{'p99 ms':>9}{'max ms':>9}{'errors':>8}{'RSS MiB':>9}")
    for row in report["timeline"]:
        print(f"{row['from_s']:>7.0f}{row['messages']:>6}{_ms(row['p99_ms']):>9}"
              f"{_ms(row['max_ms']):>9}{row['errors']:>8}{_ms(row['rss_mib']):>9}")
    rss = report["server_rss"]
    print(f"\nserver RSS: {_ms(rss['baseline_mib'])} MiB before the attack, peak"
          f" {_ms(rss['peak_mib'])} MiB, {_ms(rss['end_mib'])} MiB at the end"
          f" (growth {_ms(rss['growth_mib'])} MiB)")
    h = report["honest"]
    print(f"honest: {h['acked']} messages acknowledged, {h['delivered']} delivered,"
          f" {h['errors']} errors")
    for t, what in h["first_errors"]:
        print(f"  {t - attack_start:+.1f} s: {what}")
    print("\nattackers:")
    for kind, r in report["attacks"].items():
        refused = ", ".join(f"{n} {why}" for why, n in sorted(r["refused"].items())) or "none"
        failed = ", ".join(f"{n} {why}" for why, n in sorted(r["failed"].items()))
        sent = ", ".join(f"{n} {what}" for what, n in sorted(r["sent"].items()))
        if kind == "handshake_flood":  # sessions, not connections: the server ends them
            held = f"{r['connected']} answered"
        else:
            held = (f"{r['connected']} connected, held at most {r['held_peak']} at once"
                    f" ({r['held_at_end']} still up at the end), {r['disconnected']}"
                    " disconnected by the server")
        print(f"  {kind.replace('_', ' ')} ({r['clients']} clients, done"
              f" {r['late_s']:+.1f} s after the end): {r['attempts']} attempts, {held};"
              f" refused: {refused}"
              + (f"; failed: {failed}" if failed else "")
              + (f"; uploads held at most {r['uploads_held_peak']} at once"
                 if r.get("uploads_held_peak") else "")
              + (f"; sent: {sent}" if sent else ""))
    if report["server_exit"] is not None:
        print(f"\nchatd exited during the siege with status {report['server_exit']}")
    log = report["server_log"]
    if log.get("tracebacks") or log.get("error_lines"):
        print(f"\nserver log: {log['tracebacks']} tracebacks, {log['error_lines']} ERROR lines;"
              " first:")
        for line in log["first_errors"]:
            print(f"  {line[:300]}")
    sys.stdout.flush()


def _judge(report: Report, args: argparse.Namespace) -> None:
    quiet = report["phases"]["quiet"]["p99_ms"]
    under = report["phases"]["attack"]["p99_ms"]
    after = report["phases"]["after"]["p99_ms"]
    growth = report["server_rss"]["growth_mib"]
    errors = report["honest"]["errors"]

    def within(value: float | None, factor: float) -> bool:
        return value is not None and quiet is not None and value <= factor * quiet

    bars = [
        ("honest pairs see no error", f"{errors} errors",
         errors == 0 and report["server_exit"] is None),
        (f"p99 under attack <= {ATTACK_P99_FACTOR:g}x quiet",
         f"{_ms(under)} ms vs {_ms(quiet)} ms", within(under, ATTACK_P99_FACTOR)),
        (f"server RSS growth <= {RSS_GROWTH_MAX // MiB} MiB", f"{_ms(growth)} MiB",
         growth is not None and growth <= RSS_GROWTH_MAX / MiB and not report["aborted"]),
        (f"p99 {args.after_delay:g} s after the attack <= {AFTER_P99_FACTOR:g}x quiet",
         f"{_ms(after)} ms vs {_ms(quiet)} ms", within(after, AFTER_P99_FACTOR)),
    ]
    print()
    for name, value, ok in bars:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {value}")
    report["bars"] = [{"bar": n, "value": v, "passed": ok} for n, v, ok in bars]
    report["passed"] = all(ok for _, _, ok in bars)
    busy = {name: f["cpu_pct"].get("others") for name, f in report["phases"].items()}
    busy = {name: pct for name, pct in busy.items() if pct is not None and pct > BUSY_OTHER_PCT}
    report["reliable"] = not busy
    print(f"siege: {'PASS' if report['passed'] else 'FAIL'}", flush=True)
    if busy:
        print("warning: other work on this machine used "
              + ", ".join(f"{pct:.0f}% of a CPU in the {name} window" for name, pct in busy.items())
              + ": these figures are not comparable; rerun on a quiet machine",
              file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    problems = check(args)
    if problems:
        for p in problems:
            print(f"siege: {p}", file=sys.stderr)
        return 2
    # set-up (engineer accounts, logins, the big chats) plus the phases, plus stopping
    limit = 300 + args.warmup + args.quiet_seconds + args.attack_seconds + args.after_delay \
        + args.after_seconds

    async def bounded() -> Report:
        async with asyncio.timeout(limit):
            return await run(args)

    try:
        report = asyncio.run(bounded())
    except BenchError as exc:
        print(f"siege: could not run: {exc}", file=sys.stderr, flush=True)
        return 2
    except TimeoutError:
        print(f"siege: did not finish in {limit:g} s", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:  # every child was stopped on the way out
        print("siege: interrupted", file=sys.stderr)
        return 130
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
