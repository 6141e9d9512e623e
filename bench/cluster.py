"""The several-processes benchmark (docs/scaling.md#running-several-processes): chat
throughput and ack latency through HAProxy with 1, 2 and 3 ``chatd serve`` processes on
PostgreSQL and Redis, against one process on SQLite behind the same HAProxy, in one run;
and a failover figure.

Each target is the messaging benchmark's closed loop (bench/chat_load.py, its load
processes and its figures) pointed at HAProxy with deploy/haproxy/chatd.cfg, which spreads
the connections over the processes: a chat's customer and engineer are often on different
processes. Rounds alternate the targets and the best round of each is reported.

The bar: nothing is lost in any run (every acknowledged message delivered, no errors), and
3 processes reach at least 0.9 x the messages per second of 1 process.

Failover: 3 processes under the same load, the clients connected to the two that do not
run the desk (a client of the killed one reconnects, which the browser tests cover); the
desk's process is killed with SIGKILL in the middle of the measured window, and each
client sends a refused message again (same ``client_msg_id``) until it is acknowledged.
The figure is the longest any message waited for its ack, from its first send.

On one machine every process shares the same cores with the load processes, PostgreSQL,
Redis and HAProxy: more processes add work (a Redis hop per event, a call to the desk's
process per command from another one) without adding cores. The figure says what the
cluster costs, not what more machines would give.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import chat_load
from .harness import (
    POSTGRES_URL,
    BenchError,
    Benchmark,
    Report,
    add_engineer,
    chatd_env,
    drop_postgres_database,
    login,
    new_postgres_database,
)
from .server_process import ServerProcess, chatd_argv, free_port

ROOT = Path(__file__).resolve().parents[1]
HAPROXY_CFG = ROOT / "deploy" / "haproxy" / "chatd.cfg"
BAR = 0.9
TARGETS = ("sqlite-1", "cluster-1", "cluster-2", "cluster-3")
PASSWORD = chat_load.PASSWORD


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--cluster-rounds", type=int, default=3,
                       help="rounds of each target, alternating; the best is reported"
                            " (default %(default)s)")
    group.add_argument("--cluster-pairs", type=int, default=50,
                       help="chats in the cluster benchmark (default %(default)s)")
    group.add_argument("--no-failover", action="store_true",
                       help="leave out the failover measurement")
    group.add_argument("--cluster-targets", default=",".join(TARGETS),
                       help="comma-separated, from %(default)s (the bar needs cluster-1 and"
                            " cluster-3)")


class Group:
    """Several chatd processes (and HAProxy): the server of one benchmark round."""

    def __init__(self, servers: list[ServerProcess], proxy: subprocess.Popen[bytes] | None,
                 redis_url: str | None) -> None:
        self.servers = servers
        self.proxy = proxy
        self.redis_url = redis_url

    @property
    def pids(self) -> list[int]:
        return [s.pid for s in self.servers if s.proc.poll() is None]

    @property
    def pid(self) -> int:
        return self.servers[0].pid

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(s.log_tail(lines) for s in self.servers)

    async def stop_async(self) -> None:
        for s in self.servers:
            if s.proc.poll() is None:
                await s.stop_async()
        if self.proxy is not None and self.proxy.poll() is None:
            self.proxy.terminate()
            await asyncio.to_thread(self.proxy.wait, 10)


async def _start_group(
    tmp: Path, args: argparse.Namespace, processes: int, database_url: str | None,
    redis_url: str | None, *, lb: bool = True,
) -> tuple[Group, list[str]]:
    """``processes`` chatd serve (the first runs the desk) and HAProxy before them; the
    URLs to connect to (HAProxy's, or each process's when not ``lb``)."""
    settings: dict[str, Any] = dict(
        message_rate=10000, message_burst=100000, connect_rate=10000, connect_burst=100000,
        event_rate=10000, event_burst=100000, connections_per_address=100000,
        handshake_rate=10000, handshake_burst=100000, max_capacity=100,
        trusted_proxies="127.0.0.1", desk_lease_seconds=2,
    )
    if database_url is not None:
        settings["database_url"] = database_url
    if redis_url is not None:
        settings["redis_url"] = redis_url
    servers: list[ServerProcess] = []
    group = Group(servers, None, redis_url)
    try:
        for k in range(processes):
            folder = tmp / f"p{k}"
            folder.mkdir()
            env = chatd_env(folder, **settings)
            if k == 0:
                for j in range(args.engineers):
                    await add_engineer(env, folder, f"engineer{j}@bench.example",
                                       f"Engineer {j}", PASSWORD)
            port = free_port()
            server = ServerProcess.start(
                f"chatd {k + 1}", chatd_argv("serve", "--host", "127.0.0.1", "--port", str(port)),
                url=f"http://127.0.0.1:{port}", env=env, cwd=folder, log=folder / "chatd.log",
            )
            servers.append(server)
            await server.wait_ready(timeout=30.0)
        urls = [s.url for s in servers]
        if lb:
            lb_port = free_port()
            ports = [s.url.rsplit(":", 1)[1] for s in servers]
            ports += [str(free_port()) for _ in range(3 - len(ports))]  # never up
            env = {**os.environ, "CHATD_LB_PORT": str(lb_port),
                   **{f"CHATD_PORT_{n}": p for n, p in enumerate(ports, 1)}}
            group.proxy = subprocess.Popen(
                ["haproxy", "-db", "-f", str(HAPROXY_CFG)], env=env,
                stdout=(tmp / "haproxy.log").open("ab"), stderr=subprocess.STDOUT,
            )
            urls = [f"http://127.0.0.1:{lb_port}"]
            await _until_up(urls[0] + "/readyz")
            await asyncio.sleep(1.5)  # HAProxy counts every server up until its first check
        return group, urls
    except BaseException:
        await group.stop_async()
        raise


async def _until_up(url: str, limit: float = 20.0) -> None:
    import aiohttp

    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise BenchError(f"{url} did not answer 200 in {limit:g} s")


def _setup(processes: int, database_url: str | None, redis_url: str | None,
           lb: bool = True) -> chat_load.Setup:
    async def setup(
        tmp: Path, args: argparse.Namespace, capacity: int
    ) -> tuple[Any, Any, list[dict[str, Any]], list[dict[str, Any]]]:
        group, urls = await _start_group(tmp, args, processes, database_url, redis_url, lb=lb)
        try:
            tokens = [await login(urls[0], f"engineer{j}@bench.example", PASSWORD)
                      for j in range(args.engineers)]
        except BaseException:
            await group.stop_async()
            raise
        engineers = [{"token": t, "capacity": capacity} for t in tokens]
        customers = [{"name": f"Customer {i}", "email": f"customer{i}@bench.example"}
                     for i in range(args.pairs)]
        return group, urls if len(urls) > 1 else urls[0], engineers, customers

    return setup


async def _private_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server of the benchmark's own on a free port (no other desk's traffic)."""
    server = shutil.which("redis-server")
    if server is None:
        raise BenchError("redis-server is not installed (make services installs it)")
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    import redis.asyncio as aioredis

    client = aioredis.Redis(port=port)
    try:
        for _ in range(100):
            with contextlib.suppress(Exception):
                if await client.ping():
                    return proc, f"redis://127.0.0.1:{port}/0"
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()
    proc.kill()
    raise BenchError("redis-server did not start")


async def run(args: argparse.Namespace) -> Report:
    if shutil.which("haproxy") is None:
        raise BenchError("HAProxy is not installed (make services installs it)")
    args.pairs = args.cluster_pairs
    capacity = -(-args.pairs // args.engineers)
    print(f"cluster: {args.pairs} pairs through HAProxy, {args.warmup:g} s warm-up +"
          f" {args.seconds:g} s measured, best of {args.cluster_rounds}", flush=True)
    print(chat_load._HEADER, flush=True)
    report: Report = {"pairs": args.pairs, "rounds": args.cluster_rounds}
    targets = [t.strip() for t in args.cluster_targets.split(",") if t.strip()]
    if not targets or set(targets) - set(TARGETS):
        raise BenchError(f"--cluster-targets takes {', '.join(TARGETS)}")
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
    with tempfile.TemporaryDirectory(prefix="chatd-bench-cluster-") as top:
        redis_proc, redis_url = await _private_redis(Path(top))
        try:
            for r in range(args.cluster_rounds):
                for target in targets:
                    figures = await _round(target, args, capacity, redis_url)
                    runs[target].append(figures)
                    print(chat_load._row(f"{target} #{r + 1}", figures), flush=True)
            if not args.no_failover:
                report["failover"] = await _failover(args, capacity, redis_url)
        finally:
            redis_proc.terminate()
            redis_proc.wait(10)
    for target, figures_list in runs.items():
        best = max(figures_list, key=lambda f: f["msgs_per_s"])
        report[target] = {**best, "runs": figures_list}
        print(chat_load._row(f"{target} best", best), flush=True)
    clean = all(
        f["delivered"] == f["acked_total"] and not f["timeouts"] and not f["errors"]
        for figures_list in runs.values() for f in figures_list
    )
    if "cluster-1" not in report or "cluster-3" not in report:
        report["passed"] = None
        return report
    one, three = report["cluster-1"]["msgs_per_s"], report["cluster-3"]["msgs_per_s"]
    ratio = three / one if one else 0.0
    report["ratio_3_to_1"] = round(ratio, 3)
    if "sqlite-1" in report and report["sqlite-1"]["msgs_per_s"]:
        report["ratio_1_to_sqlite"] = round(one / report["sqlite-1"]["msgs_per_s"], 3)
    report["passed"] = clean and ratio >= BAR
    print(f"3 processes / 1 process: {ratio:.2f}  bar: >= {BAR:.2f}"
          f"  {'PASS' if report['passed'] else 'FAIL'}"
          + ("" if clean else "  (lost messages, timeouts or errors)"), flush=True)
    return report


async def _round(
    target: str, args: argparse.Namespace, capacity: int, redis_url: str
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"chatd-bench-{target}-") as tmp:
        if target == "sqlite-1":
            return await chat_load._measure(
                target, Path(tmp), args, capacity, setup=_setup(1, None, None)
            )
        database_url = await new_postgres_database()
        try:
            processes = int(target.rsplit("-", 1)[1])
            return await chat_load._measure(
                target, Path(tmp), args, capacity,
                setup=_setup(processes, database_url, redis_url),
            )
        finally:
            await drop_postgres_database(database_url)
            await _checkpoint()


async def _checkpoint() -> None:
    """PostgreSQL writes out what the round left (a checkpoint), rather than during the
    next round: every round starts from the same state."""
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_URL, timeout=10)
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def _failover(
    args: argparse.Namespace, capacity: int, redis_url: str
) -> dict[str, Any]:
    """3 processes; clients on the two that do not run the desk; SIGKILL to the desk's
    process halfway through the window."""
    database_url = await new_postgres_database()
    holder: list[Group] = []
    setup = _setup(3, database_url, redis_url, lb=False)

    async def started(
        tmp: Path, a: argparse.Namespace, c: int
    ) -> tuple[Any, Any, list[dict[str, Any]], list[dict[str, Any]]]:
        group, url, engineers, customers = await setup(tmp, a, c)
        holder.append(group)
        return group, url[1:], engineers, customers  # the followers only

    async def kill_leader(start_at: float) -> None:
        await asyncio.sleep(max(0.0, start_at + args.warmup + window / 3 - time.monotonic()))
        leader = holder[0].servers[0]
        os.kill(leader.pid, signal.SIGKILL)
        print(f"failover: killed the desk's process (PID {leader.pid})", flush=True)

    # Long enough that the takeover (the lease, 2 s here, and the rebuild) is inside it.
    window = max(args.seconds, 10.0)
    try:
        with tempfile.TemporaryDirectory(prefix="chatd-bench-failover-") as tmp:
            figures = await chat_load._measure(
                "failover", Path(tmp), argparse.Namespace(**{**vars(args), "seconds": window}),
                capacity, setup=started, during=kill_leader, retry=True,
            )
        stored = await _stored_texts(database_url)
    finally:
        await drop_postgres_database(database_url)
    print(chat_load._row("failover", figures), flush=True)
    # A message stored just before the kill may have lost its relay with the process: its
    # sender's retry is answered from the store (duplicate), and the other side reads it
    # with session:resume (docs/protocol.md#resync); here nobody resumes, so it is counted.
    lost = max(0, figures["acked_total"] - stored)
    missed = figures["acked_total"] - figures["delivered"]
    print(f"failover: longest wait for an ack across the kill {figures['longest_wait_ms']:.0f}"
          f" ms; acknowledged {figures['acked_total']}, stored {stored}, lost {lost};"
          f" relays missed live (read on resume) {missed}", flush=True)
    return {"longest_wait_ms": figures["longest_wait_ms"], "acked": figures["acked_total"],
            "stored": stored, "lost": lost, "relays_missed": missed,
            "errors": figures["errors"], "timeouts": figures["timeouts"]}


async def _stored_texts(database_url: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        n: int = await conn.fetchval("SELECT count(*) FROM messages WHERE kind = 'text'")
        return n
    finally:
        await conn.close()


BENCHMARK = Benchmark(
    name="cluster",
    help="chat throughput through HAProxy with 1, 2 and 3 processes (PostgreSQL + Redis)",
    run=run,
    add_arguments=add_arguments,
)

if __name__ == "__main__":  # pragma: no cover
    sys.exit("run it as: python -m bench --only cluster")
