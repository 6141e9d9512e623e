"""A load-generating process for the messaging benchmark (``python -m bench.loadgen``).

Python Socket.IO clients cost about as much CPU per message as the server they talk to, so
the clients run in processes of their own, apart from the driver (bench/chat_load.py),
and identically for chatd and for the bare relay. They run on uvloop, as chatd does: on a
machine the load shares with the servers, the less of it the clients take, the more the
figures say about the servers.

The driver sends one JSON command per line on stdin; each is answered by one JSON line on
stdout (``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``):

- ``engineers``: connect the engineer sockets. chatd: ``{"token", "capacity"}`` each; the
  engineer goes ``available`` and accepts every ``offer:new``. Relay: ``{"sessions"}``.
- ``customers``: connect the customer sockets. chatd: ``{"name", "email"}`` each; the
  customer sends ``chat:request`` and waits for ``session:assigned``. Relay:
  ``{"session_id"}``.
- ``settle``: wait for accepts still in flight; answers how many sessions each side holds.
- ``run``: closed loop from ``start_at`` (time.monotonic, shared by the processes of one
  machine) for ``warmup + seconds``: every participant (each customer, and each engineer
  once per session it holds) sends its next ``message:send`` as soon as the previous one
  is acknowledged. Answers ack latencies of the measured window and delivery counts.
- ``close``: disconnect everything and exit.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import socketio

from .harness import serve_commands

CUSTOMER = "/customer"
ENGINEER = "/engineer"
ACK_TIMEOUT = 10.0
SETUP_TIMEOUT = 60.0
CONNECTS_AT_ONCE = 16
RETRY_PAST = 30.0


class Conn:
    """One Socket.IO connection and what it has received."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.client = socketio.AsyncClient(reconnection=False)
        self.delivered = 0  # text messages from the other side (message:new)
        self.sessions: list[str] = []
        self.assigned: set[str] = set()
        self.pending_accepts = 0
        self.accept_errors: Counter[str] = Counter()

        async def message_new(data: Any) -> None:
            if data.get("message", {}).get("kind") == "text":
                self.delivered += 1

        self.client.on("message:new", message_new, namespace=namespace)

    async def connect(self, url: str, auth: dict[str, Any]) -> None:
        await self.client.connect(
            url, namespaces=[self.namespace], auth=auth, transports=["websocket"],
            wait_timeout=SETUP_TIMEOUT,
        )

    async def call(self, event: str, data: Any, timeout: float = ACK_TIMEOUT) -> Any:
        return await self.client.call(event, data, namespace=self.namespace, timeout=timeout)


def _check(ack: Any, what: str) -> dict[str, Any]:
    if not isinstance(ack, dict) or not ack.get("ok"):
        raise RuntimeError(f"{what} refused: {ack}")
    return ack


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)  # seconds, acked in the window
    acked_total: int = 0
    timeouts: int = 0
    longest_wait: float = 0.0  # seconds from a message's first send to its ack
    errors: Counter[str] = field(default_factory=Counter)


class Worker:
    def __init__(self) -> None:
        self.retry = False
        self.target = ""
        self.url = ""
        self.engineers: list[Conn] = []
        self.customers: list[Conn] = []
        self.stats = Stats()
        self._tasks: set[asyncio.Task[None]] = set()

    async def _connect_all(
        self, conns: list[Conn], auths: list[dict[str, Any]], after: Any
    ) -> None:
        gate = asyncio.Semaphore(CONNECTS_AT_ONCE)

        async def one(conn: Conn, auth: dict[str, Any]) -> None:
            async with gate:
                await conn.connect(self.url, auth)
            await after(conn)

        await asyncio.gather(*(one(c, a) for c, a in zip(conns, auths, strict=True)))

    # ------------------------------------------------------------------ commands

    async def engineers_cmd(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.target, self.url = cmd["target"], cmd["url"]
        specs = cmd["engineers"]
        self.engineers = [Conn(ENGINEER) for _ in specs]
        by_conn = dict(zip(map(id, self.engineers), specs, strict=True))
        if self.target == "chatd":
            for conn in self.engineers:
                self._accept_offers(conn)

            async def ready(conn: Conn) -> None:
                spec = by_conn[id(conn)]
                _check(await conn.call(
                    "engineer:status", {"status": "available", "capacity": spec["capacity"]}
                ), "engineer:status")

            await self._connect_all(self.engineers, [{"token": s["token"]} for s in specs], ready)
        else:
            async def join(conn: Conn) -> None:
                for session_id in by_conn[id(conn)]["sessions"]:
                    _check(await conn.call("join", {"session_id": session_id}), "join")
                    conn.sessions.append(session_id)

            await self._connect_all(self.engineers, [{} for _ in specs], join)
        return {"engineers": len(self.engineers)}

    def _accept_offers(self, conn: Conn) -> None:
        async def accept(session_id: str) -> None:
            try:
                ack = await conn.call("offer:accept", {"session_id": session_id})
                if isinstance(ack, dict) and ack.get("ok"):
                    conn.sessions.append(session_id)
                else:
                    code = ack.get("error", {}).get("code") if isinstance(ack, dict) else None
                    conn.accept_errors[str(code)] += 1
            except Exception as exc:  # reported in settle, never lost in a task
                conn.accept_errors[type(exc).__name__] += 1
            finally:
                conn.pending_accepts -= 1

        async def offer_new(data: Any) -> None:
            # Accept outside the event handler: the client reads its socket in order, and
            # the accept's own acknowledgement must not wait behind this handler.
            conn.pending_accepts += 1
            task = asyncio.create_task(accept(data["session_id"]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        conn.client.on("offer:new", offer_new, namespace=ENGINEER)

    async def customers_cmd(self, cmd: dict[str, Any]) -> dict[str, Any]:
        specs = cmd["customers"]
        self.customers = [Conn(CUSTOMER) for _ in specs]
        by_conn = dict(zip(map(id, self.customers), specs, strict=True))
        if self.target == "chatd":
            for conn in self.customers:
                self._track_assignment(conn)

            async def request(conn: Conn) -> None:
                ack = _check(await conn.call("chat:request", {"topic": "benchmark"}),
                             "chat:request")
                session_id = ack["session"]["id"]
                deadline = time.monotonic() + SETUP_TIMEOUT
                while session_id not in conn.assigned:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"session {session_id} was never assigned")
                    await asyncio.sleep(0.02)
                conn.sessions.append(session_id)

            auths = [{"guest": {"name": s["name"], "email": s["email"]}} for s in specs]
            await self._connect_all(self.customers, auths, request)
        else:
            async def join(conn: Conn) -> None:
                session_id = by_conn[id(conn)]["session_id"]
                _check(await conn.call("join", {"session_id": session_id}), "join")
                conn.sessions.append(session_id)

            await self._connect_all(self.customers, [{} for _ in specs], join)
        return {"customers": len(self.customers)}

    def _track_assignment(self, conn: Conn) -> None:
        async def assigned(data: Any) -> None:
            conn.assigned.add(data["session_id"])

        conn.client.on("session:assigned", assigned, namespace=CUSTOMER)

    async def settle_cmd(self, cmd: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + SETUP_TIMEOUT
        while any(c.pending_accepts for c in self.engineers):
            if time.monotonic() > deadline:
                raise RuntimeError("offer accepts still unanswered")
            await asyncio.sleep(0.02)
        errors: Counter[str] = Counter()
        for c in self.engineers:
            errors.update(c.accept_errors)
        return {
            "engineer_sessions": sum(len(c.sessions) for c in self.engineers),
            "customer_sessions": sum(len(c.sessions) for c in self.customers),
            "accept_errors": dict(errors),
        }

    async def run_cmd(self, cmd: dict[str, Any]) -> dict[str, Any]:
        start_at = float(cmd["start_at"])
        window_start = start_at + float(cmd["warmup"])
        window_end = window_start + float(cmd["seconds"])
        size = int(cmd["body_size"])
        self.retry = bool(cmd.get("retry"))
        self.stats = Stats()
        loops = []
        for i, conn in enumerate(self.customers):
            for session_id in conn.sessions:
                loops.append((conn, session_id, f"c{i}", _body("customer", i, size)))
        for i, conn in enumerate(self.engineers):
            for j, session_id in enumerate(conn.sessions):
                loops.append((conn, session_id, f"e{i}.{j}", _body("engineer", i, size)))
        delay = start_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await asyncio.gather(*(
            self._loop(conn, session_id, tag, body, window_start, window_end)
            for conn, session_id, tag, body in loops
        ))
        await self._drain()
        s = self.stats
        return {
            "participants": len(loops),
            "latencies_ms": [round(x * 1000, 3) for x in s.latencies],
            "acked_window": len(s.latencies),
            "acked_total": s.acked_total,
            "timeouts": s.timeouts,
            "errors": dict(s.errors),
            "longest_wait_ms": round(s.longest_wait * 1000, 3),
            "delivered": sum(c.delivered for c in self.customers + self.engineers),
        }

    async def _loop(
        self, conn: Conn, session_id: str, tag: str, body: str, window_start: float,
        window_end: float,
    ) -> None:
        stats = self.stats
        call = conn.client.call
        ns = conn.namespace
        n = 0
        t0 = 0.0
        again = False
        # With ``retry`` a message refused at the window's end is still sent until it is
        # acknowledged (for at most RETRY_PAST seconds more): its wait is the figure.
        while time.monotonic() < window_end or (
            again and time.monotonic() < window_end + RETRY_PAST
        ):
            if not again:  # with ``retry``, a refused message goes again, same id
                n += 1
                t0 = time.monotonic()
            data = {"session_id": session_id, "client_msg_id": f"{tag}-{n}", "body": body}
            again = self.retry
            try:
                ack = await call("message:send", data, namespace=ns, timeout=ACK_TIMEOUT)
            except socketio.exceptions.TimeoutError:
                stats.timeouts += 1
                continue
            except socketio.exceptions.SocketIOError as exc:
                stats.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.05)  # disconnected: do not spin until the window ends
                continue
            t1 = time.monotonic()
            if type(ack) is dict and ack.get("ok"):
                again = False
                stats.longest_wait = max(stats.longest_wait, t1 - t0)
                stats.acked_total += 1
                if window_start <= t1 < window_end:
                    stats.latencies.append(t1 - t0)
            else:
                code = ack.get("error", {}).get("code") if isinstance(ack, dict) else None
                stats.errors[str(code)] += 1
                await asyncio.sleep(0.05)

    async def _drain(self, quiet: float = 0.5, limit: float = 5.0) -> None:
        """Wait for messages still on their way to this process's sockets."""
        conns = self.customers + self.engineers
        deadline = time.monotonic() + limit
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            now_count = sum(c.delivered for c in conns)
            if now_count != last:
                last, since = now_count, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            await asyncio.sleep(0.05)

    async def close_cmd(self, cmd: dict[str, Any]) -> dict[str, Any]:
        for conn in self.customers + self.engineers:
            if conn.client.connected:
                try:
                    await asyncio.wait_for(conn.client.disconnect(), 5)
                except TimeoutError:
                    pass
        return {}


def _body(role: str, index: int, size: int) -> str:
    head = f"benchmark message from {role} {index}: "
    filler = "the quick brown fox jumps over the lazy dog "
    return (head + filler * (size // len(filler) + 1))[: max(size, 1)]


async def main() -> None:
    worker = Worker()

    async def run(name: str, cmd: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await getattr(worker, f"{name}_cmd")(cmd)
        return result

    if not await serve_commands(run):
        await worker.close_cmd({})  # the driver is gone: close and exit


if __name__ == "__main__":
    import uvloop
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
