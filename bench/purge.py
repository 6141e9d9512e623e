"""The purge benchmark: message acknowledgements while chatd purges 100,000 old messages.

``python -m bench --only purge`` (not in the default set: ``make bench`` does not run it).
Before the server starts, the driver stores ``--purge-messages`` messages (default
100,000) in ``--purge-chats`` closed chats whose transcripts were delivered, through
chatd's own store. They are dated so that they pass ``CHATD_RETENTION_DAYS=1``
``--purge-after`` seconds later. Then ``chatd serve`` starts as its own process (purge
interval 1 s), load processes (this module run as ``python -m bench.purge``: bench/loadgen.py
workers that also report when each ack came) set up ``--purge-pairs`` chats and run a
closed loop of ``message:send`` (as bench/chat_load.py does) through a quiet window and on
until the purge has removed every old chat, which the driver watches in the database.

Figures: the p99 of ack latency in the quiet window and during the purge (from the first
old chat seen gone to the last), their ratio, and how fast the purge went. The bar: the
p99 during the purge is at most twice the quiet one, every old chat is purged and no
message is lost or refused. The machine may be shared: the CPU others used is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import sys
import tempfile
import time
import uuid
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
    serve_commands,
    start_chatd,
    start_child,
)
from .loadgen import ACK_TIMEOUT, Worker

BAR = 2.0
PASSWORD = "benchmark-password"
DAY = 86_400.0
POLL = 0.1  # seconds between two looks at what is left to purge


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--purge-messages", type=int, default=100_000,
                       help="messages stored in old closed chats (default %(default)s)")
    group.add_argument("--purge-chats", type=int, default=2_000,
                       help="old closed chats holding them (default %(default)s)")
    group.add_argument("--purge-pairs", type=int, default=20,
                       help="live chats sending during the run (default %(default)s)")
    group.add_argument("--purge-workers", type=int, default=2,
                       help="load-generating processes (default %(default)s)")
    group.add_argument("--purge-backend", choices=["sqlite", "postgres"], default="sqlite",
                       help="chatd's database (default %(default)s)")
    group.add_argument("--purge-after", type=float, default=45.0,
                       help="seconds after the old chats are stored at which they become"
                            " purgeable: room for the start, the set-up and the quiet"
                            " window (default %(default)s)")
    group.add_argument("--purge-timeout", type=float, default=300.0,
                       help="longest wait for the purge to finish (default %(default)s)")


async def run(args: argparse.Namespace) -> Report:
    if not 1 <= args.purge_chats <= args.purge_messages:
        raise BenchError("need 1 <= --purge-chats <= --purge-messages")
    if args.purge_pairs < 1 or args.purge_workers < 1:
        raise BenchError("need --purge-pairs >= 1 and --purge-workers >= 1")
    print(
        f"purge: {args.purge_messages} messages in {args.purge_chats} old closed chats"
        f" ({args.purge_backend}); {args.purge_pairs} live chats in a closed loop,"
        f" {args.seconds:g} s quiet window, then until the purge ends", flush=True,
    )
    report: Report = {"messages": args.purge_messages, "chats": args.purge_chats,
                      "pairs": args.purge_pairs, "backend": args.purge_backend}
    if hasattr(os, "getloadavg"):
        load = os.getloadavg()[0]
        report["loadavg_at_start"] = round(load, 2)
        print(f"load average at start: {load:.2f} on {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="chatd-bench-purge-") as tmp:
        report.update(await _measure(Path(tmp), args))
    ratio = report["ratio"]
    ok = (
        ratio is not None and ratio <= BAR and report["left_unpurged"] == 0
        and not report["timeouts"] and not report["errors"]
        and report["delivered"] == report["acked_total"]
    )
    report["bar"] = BAR
    report["passed"] = ok
    shown = "-" if ratio is None else f"{ratio:.2f}"
    print(f"purge/quiet p99: {shown}  bar: <= {BAR:.1f}  {'PASS' if ok else 'FAIL'}",
          flush=True)
    return report


async def _measure(tmp: Path, args: argparse.Namespace) -> Report:
    async with contextlib.AsyncExitStack() as stack:
        database_url = f"sqlite:///{tmp / 'bench.db'}"
        if args.purge_backend == "postgres":
            database_url = await new_postgres_database()
            stack.push_async_callback(drop_postgres_database, database_url)
        engineers = max(1, math.ceil(args.purge_pairs / 10))
        capacity = math.ceil(args.purge_pairs / engineers)
        env = chatd_env(
            tmp, database_url=database_url, retention_days=1, purge_interval_seconds=1,
            message_rate=10000, message_burst=100000, connect_rate=10000,
            connect_burst=100000, event_rate=10000, event_burst=100000,
            connections_per_address=100000, handshake_rate=10000, handshake_burst=100000,
            max_capacity=100,
            # The closed loop runs through the quiet window, the wait and the purge.
            chat_max_messages=10_000_000,
        )
        emails = [f"engineer{j}@bench.example" for j in range(engineers)]
        for j, email in enumerate(emails):  # this also creates the schema
            await add_engineer(env, tmp, email, f"Engineer {j}", PASSWORD)
        t = time.perf_counter()
        switch_wall = await _store_old_chats(database_url, args)
        stored_in = time.perf_counter() - t
        print(f"stored {args.purge_messages} old messages in {stored_in:.1f} s", flush=True)
        # The same moment on the monotonic clock the load processes share.
        switch = time.monotonic() + (switch_wall - time.time())

        server, url = await start_chatd(tmp, env)
        stack.push_async_callback(server.stop_async)
        tokens = [await login(url, email, PASSWORD) for email in emails]
        workers: list[Child] = []
        for k in range(args.purge_workers):
            w = await start_child(f"load worker {k}", [sys.executable, "-m", "bench.purge"],
                                  env=plain_env(), cwd=tmp)
            stack.push_async_callback(w.stop)
            workers.append(w)
        stack.push_async_callback(close_workers, workers)
        n = len(workers)
        specs = [{"token": tk, "capacity": capacity} for tk in tokens]
        await command(workers, [{"cmd": "engineers", "target": "chatd", "url": url,
                                 "engineers": specs[k::n]} for k in range(n)])
        customers = [{"name": f"Customer {i}", "email": f"customer{i}@bench.example"}
                     for i in range(args.purge_pairs)]
        await command(workers, [{"cmd": "customers", "customers": customers[k::n]}
                                for k in range(n)])
        settled = await command(workers, [{"cmd": "settle"}] * n)
        if sum(r["engineer_sessions"] for r in settled) != args.purge_pairs:
            raise BenchError(f"live chats not all set up: {settled}")

        start_at = time.monotonic() + 0.5
        quiet = (start_at + args.warmup, min(start_at + args.warmup + args.seconds,
                                             switch - 0.5))
        if quiet[1] - quiet[0] < 3.0:
            raise BenchError(
                f"only {max(0.0, quiet[1] - quiet[0]):.1f} s of quiet before the old chats"
                " become purgeable: raise --purge-after"
            )
        cpu = asyncio.create_task(_busy(server.pid, *quiet))
        running = asyncio.create_task(command(workers, [{
            "cmd": "timed_run", "start_at": start_at, "warmup": args.warmup,
            "limit": args.purge_after + args.purge_timeout, "body_size": 100,
        }] * n, timeout=REPLY_TIMEOUT + args.purge_after + args.purge_timeout))
        try:
            began, ended, left, busy = await _watch_purge(
                database_url, args.purge_chats, switch, args.purge_timeout, running,
                server.pid,
            )
        finally:
            for w in workers:  # end the closed loop (or it would run to its limit)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signal.SIGUSR1)
        results = await running
        quiet_cpu = await cpu
        await close_workers(workers)
        log_tail = server.log_tail(40)
    acks = sorted((a[0], a[1]) for r in results for a in r["acks"])
    quiet_ms = sorted(ms for at, ms in acks if quiet[0] <= at < quiet[1])
    purge_ms = sorted(ms for at, ms in acks if began <= at < ended)
    q99, p99 = percentile(quiet_ms, 99), percentile(purge_ms, 99)
    ratio = round(p99 / q99, 3) if q99 and p99 is not None else None
    seconds = ended - began
    figures: Report = {
        "stored_seconds": round(stored_in, 1),
        "quiet_seconds": round(quiet[1] - quiet[0], 2),
        "quiet_acks": len(quiet_ms), "quiet_p50_ms": percentile(quiet_ms, 50),
        "quiet_p99_ms": q99, "quiet_max_ms": quiet_ms[-1] if quiet_ms else None,
        "purge_seconds": round(seconds, 2),
        "purge_acks": len(purge_ms), "purge_p50_ms": percentile(purge_ms, 50),
        "purge_p99_ms": p99, "purge_max_ms": purge_ms[-1] if purge_ms else None,
        "purged_messages_per_s": round(args.purge_messages / seconds) if seconds > 0 else None,
        "ratio": ratio, "left_unpurged": left,
        "acked_total": sum(r["acked_total"] for r in results),
        "delivered": sum(r["delivered"] for r in results),
        "timeouts": sum(r["timeouts"] for r in results),
        "errors": _summed([r["errors"] for r in results]),
        "other_cpu_pct_quiet": quiet_cpu,
        "other_cpu_pct_purge": busy,
    }
    print(f"{'window':<8}{'acks':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'seconds':>9}",
          flush=True)
    for name in ("quiet", "purge"):
        print(f"{name:<8}{figures[name + '_acks']:>8}{_ms(figures[name + '_p50_ms']):>9}"
              f"{_ms(figures[name + '_p99_ms']):>9}{_ms(figures[name + '_max_ms']):>9}"
              f"{figures[name + '_seconds']:>9.1f}", flush=True)
    print(f"purged {args.purge_messages} messages in {seconds:.1f} s"
          f" ({figures['purged_messages_per_s']} messages/s); left: {left} chats;"
          f" CPU used by others: quiet {_pct(quiet_cpu)}, purge {_pct(busy)}", flush=True)
    if left:
        print(f"chatd logged (last lines):\n{log_tail}", file=sys.stderr, flush=True)
    return figures


def _summed(counts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}% of a CPU"


async def _busy(server_pid: int, start: float, end: float) -> float | None:
    """CPU others than the server used in [start, end] (monotonic), in % of one CPU."""
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    m0, s0 = machine_busy_seconds(), cpu_seconds(server_pid)
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    m1, s1 = machine_busy_seconds(), cpu_seconds(server_pid)
    if None in (m0, m1, s0, s1) or end <= start:
        return None
    assert m0 is not None and m1 is not None and s0 is not None and s1 is not None
    return round(100 * max(0.0, (m1 - m0) - (s1 - s0)) / (end - start), 1)


async def _store_old_chats(database_url: str, args: argparse.Namespace) -> float:
    """The old chats, through chatd's own store; returns the wall time at which they
    become purgeable under a retention of one day."""
    from chatd.core.models import (
        SYSTEM_SENDER,
        Customer,
        EndReason,
        MessageKind,
        NewMessage,
        Sender,
        Session,
        SessionState,
        Tier,
    )
    from chatd.store import store_from_url

    switch: float = time.time() + args.purge_after
    closed = switch - DAY
    store = store_from_url(database_url, pool_size=4)
    await store.open()
    per_chat = args.purge_messages // args.purge_chats
    extra = args.purge_messages - per_chat * args.purge_chats

    async def one(i: int) -> None:
        c = Customer(id=f"old-{i}-{uuid.uuid4()}", name=f"Old customer {i}",
                     email=f"old{i}@bench.example", account="Old Ltd", tier=Tier.STANDARD)
        s = Session(id=str(uuid.uuid4()), state=SessionState.WAITING, topic="old chat",
                    severity=3, customer=c, created_at=closed - 600, arrival_seq=i + 1)
        count = per_chat + (1 if i < extra else 0)
        sender = Sender("customer", c.id, c.name)

        def msg(k: int) -> NewMessage:
            return NewMessage(id=str(uuid.uuid4()), session_id=s.id, ts=closed - 600 + k,
                              sender=sender, kind=MessageKind.TEXT,
                              body=f"old message {k} " + "lorem ipsum " * 8)

        await store.create_session(s, "x", msg(0))
        for k in range(1, count - 1):
            await store.append_message(msg(k))
        end = NewMessage(id=str(uuid.uuid4()), session_id=s.id, ts=closed,
                         sender=SYSTEM_SENDER, kind=MessageKind.SYSTEM, body="ended",
                         event={"type": "ended", "reason": "engineer_ended"})
        done = Session(id=s.id, state=SessionState.ENDED, topic=s.topic, severity=3,
                       customer=c, created_at=s.created_at, arrival_seq=s.arrival_seq,
                       ended_at=closed, ended_by="engineer",
                       end_reason=EndReason.ENGINEER_ENDED)
        await store.end_session(done, end, ["file"])

    try:
        for start in range(0, args.purge_chats, 200):  # appends of 200 chats commit together
            await asyncio.gather(*(one(i) for i in range(start, min(start + 200,
                                                                    args.purge_chats))))
        while claimed := await store.claim_handoffs(closed, 1000, 60.0, ["file"]):
            await asyncio.gather(*(
                store.handoff_delivered(h.id, closed, "ok", None, None, None)
                for h in claimed
            ))
    finally:
        await store.close()
    if time.time() > switch - 10:
        raise BenchError("storing the old chats took too long: raise --purge-after")
    return switch


async def _watch_purge(
    database_url: str, total: int, switch: float, timeout: float, running: asyncio.Task[Any],
    server_pid: int,
) -> tuple[float, float, int, float | None]:
    """(when the first old chat was seen gone, when the last was, chats left, CPU others
    used meanwhile in % of one CPU); times are monotonic."""
    count = await _counter(database_url)
    try:
        began = ended = 0.0
        deadline = switch + timeout
        left = total
        previous = first = (time.monotonic(), machine_busy_seconds(), cpu_seconds(server_pid))
        while time.monotonic() < deadline:
            if running.done():  # a worker failed: its error is raised by the caller
                break
            sample = (time.monotonic(), machine_busy_seconds(), cpu_seconds(server_pid))
            left = await count()
            if left < total and not began:
                began, first = previous[0], previous  # it went since the previous look
            if left == 0:
                ended = time.monotonic()
                break
            previous = sample
            await asyncio.sleep(POLL)
        if not began or not ended:
            raise BenchError(f"the purge did not finish in {timeout:g} s ({left} chats left)")
        if began < switch - 1.0:
            raise BenchError("old chats went before they were due: clocks disagree?")
        last = (ended, machine_busy_seconds(), cpu_seconds(server_pid))
        busy = None
        if None not in (*first[1:], *last[1:]) and ended > began:
            used = (last[1] - first[1]) - (last[2] - first[2])  # type: ignore[operator]
            busy = round(100 * max(0.0, used) / (ended - began), 1)
        return began, ended, left, busy
    finally:
        await count.close()


async def _counter(database_url: str) -> Any:
    """A callable counting the old chats left (outside chatd: a connection of its own)."""
    sql = "SELECT COUNT(*) FROM sessions WHERE topic = 'old chat'"
    if database_url.startswith("sqlite"):
        import sqlite3

        from chatd.store import sqlite_path

        con = sqlite3.connect(f"file:{sqlite_path(database_url)}?mode=ro", uri=True,
                              check_same_thread=False)

        async def count_sqlite() -> int:
            return int(await asyncio.to_thread(lambda: con.execute(sql).fetchone()[0]))

        async def close_sqlite() -> None:
            con.close()

        count_sqlite.close = close_sqlite  # type: ignore[attr-defined]
        return count_sqlite
    import asyncpg

    conn = await asyncpg.connect(database_url)

    async def count_pg() -> int:
        return int(await conn.fetchval(sql))

    count_pg.close = conn.close  # type: ignore[attr-defined]
    return count_pg


# ---------------------------------------------------------------------- the load process


class TimedWorker(Worker):
    """bench/loadgen.py's worker, whose closed loop runs until SIGUSR1 (or ``limit``) and
    reports when each ack came (time.monotonic) with its latency."""

    def __init__(self) -> None:
        super().__init__()
        self.stop_at = math.inf
        self.acks: list[tuple[float, float]] = []

    async def timed_run_cmd(self, cmd: dict[str, Any]) -> dict[str, Any]:
        start_at = float(cmd["start_at"])
        window_start = start_at + float(cmd["warmup"])
        self.stop_at = start_at + float(cmd["limit"])
        body = "benchmark message " * (int(cmd["body_size"]) // 18 + 1)
        self.acks = []
        loops = [(conn, sid, f"c{i}") for i, conn in enumerate(self.customers)
                 for sid in conn.sessions]
        loops += [(conn, sid, f"e{i}.{j}") for i, conn in enumerate(self.engineers)
                  for j, sid in enumerate(conn.sessions)]
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        await asyncio.gather(*(self._timed_loop(c, sid, tag, body, window_start)
                               for c, sid, tag in loops))
        await self._drain()
        s = self.stats
        return {
            "acks": [[round(at, 4), round(lat * 1000, 3)] for at, lat in self.acks],
            "acked_total": s.acked_total, "timeouts": s.timeouts, "errors": dict(s.errors),
            "delivered": sum(c.delivered for c in self.customers + self.engineers),
        }

    async def _timed_loop(
        self, conn: Any, session_id: str, tag: str, body: str, window_start: float
    ) -> None:
        import socketio

        stats, n = self.stats, 0
        while time.monotonic() < self.stop_at:
            n += 1
            data = {"session_id": session_id, "client_msg_id": f"{tag}-t{n}", "body": body}
            t0 = time.monotonic()
            try:
                ack = await conn.client.call("message:send", data, namespace=conn.namespace,
                                             timeout=ACK_TIMEOUT)
            except socketio.exceptions.TimeoutError:
                stats.timeouts += 1
                continue
            except socketio.exceptions.SocketIOError as exc:
                stats.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.05)
                continue
            t1 = time.monotonic()
            if type(ack) is dict and ack.get("ok"):
                stats.acked_total += 1
                if t1 >= window_start:
                    self.acks.append((t1, t1 - t0))
            else:
                code = ack.get("error", {}).get("code") if isinstance(ack, dict) else None
                stats.errors[str(code)] += 1
                await asyncio.sleep(0.05)


async def worker_main() -> None:
    worker = TimedWorker()
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGUSR1, lambda: setattr(worker, "stop_at", time.monotonic())
    )

    async def handle(name: str, cmd: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await getattr(worker, f"{name}_cmd")(cmd)
        return result

    if not await serve_commands(handle):
        await worker.close_cmd({})


BENCHMARK = Benchmark(
    name="purge",
    help="p99 ack latency while chatd purges 100,000 old messages, against quiet"
         " (not run by default)",
    run=run,
    add_arguments=add_arguments,
)


if __name__ == "__main__":
    asyncio.run(worker_main())
