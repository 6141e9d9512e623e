"""A crowd process of the surge benchmark (``python -m bench.surge_crowd``): many guest
customers joining the queue as fast as this process can make them join, then staying
connected and idle.

Each customer is one WebSocket (Engine.IO 4, Socket.IO 5), with an ``X-Forwarded-For``
address of its own (the driver, bench/surge.py, hands out the addresses), sharing one
aiohttp session of the process. It speaks the few packets a waiting customer needs (open,
the namespace's connect, ``chat:request`` and its ack, pings, the events it counts) in one
task per customer: python-socketio's client runs several tasks per connection, and a crowd
made of those took as much CPU as the server it measures, on a machine whose two cores
they share. The measuring process (bench/surge_probe.py) still uses python-socketio.
Commands and answers are JSON lines on stdin and stdout (bench/harness.py
``serve_commands``):

- ``join``: ``{url, start_at, customers: [address, ...], at_once}``: from ``start_at``
  (time.monotonic, shared by the processes of one machine) every customer connects and
  sends ``chat:request``, at most ``at_once`` of them in flight. A refused or failed
  connect is tried again after a short pause (a browser's widget retries too), a bounded
  number of times. Answers when all are in or given up: when the first connect started,
  when each ``chat:request`` was acknowledged, and what failed.
- ``stats``: what the customers received since they joined (``queue:position`` and
  ``queue:board`` events) and when any was disconnected.
- ``close``: exit at once (the connections close with the process).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from typing import Any

import aiohttp

from .harness import serve_commands

CUSTOMER = "/customer"
BOARD = f'42{CUSTOMER},["queue:board"'
POSITION = f'42{CUSTOMER},["queue:position"'
CONNECT_TIMEOUT = 30.0  # the WebSocket handshake and the namespace's connect
ACK_TIMEOUT = 30.0
ATTEMPTS = 5  # connects (and chat:requests) per customer before giving up
BACKOFF = (0.5, 1.5)  # seconds between attempts, uniform


class Crowd:
    def __init__(self) -> None:
        self.http: aiohttp.ClientSession | None = None
        self.clients: list[Customer] = []
        self.events: Counter[str] = Counter()
        self.disconnects: list[float] = []  # when (time.monotonic)
        self.failures: Counter[str] = Counter()
        self.retries = 0
        self.rng = random.Random(os.getpid())

    async def join(self, cmd: dict[str, Any]) -> dict[str, Any]:
        if self.http is None:
            # one pool for every customer, without a cap on open connections
            self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        url: str = cmd["url"]
        addresses: list[str] = cmd["customers"]
        gate = asyncio.Semaphore(int(cmd["at_once"]))
        acked: list[float] = []
        latencies: list[float] = []
        first: list[float] = []
        await asyncio.sleep(max(0.0, float(cmd["start_at"]) - time.monotonic()))

        async def one(i: int, address: str) -> None:
            async with gate:
                t0 = time.monotonic()
                if not first:
                    first.append(t0)
                at = await self._join_one(url, address, i)
                if at is not None:
                    acked.append(at)
                    latencies.append(at - t0)

        await asyncio.gather(*(one(i, a) for i, a in enumerate(addresses)))
        latencies.sort()
        return {
            "asked": len(addresses), "joined": len(acked),
            "first_start": first[0] if first else None,
            "last_ack": max(acked) if acked else None,
            "acked_at": sorted(round(t, 4) for t in acked),
            "join_p50_ms": _ms(latencies, 50), "join_p99_ms": _ms(latencies, 99),
            "failures": dict(self.failures), "retries": self.retries,
        }

    async def _join_one(self, url: str, address: str, i: int) -> float | None:
        """Connect and ask for a chat; the time of the acknowledgement, or None."""
        assert self.http is not None
        guest = {"name": f"Crowd {os.getpid()}-{i}", "email": f"crowd{i}@surge.example"}
        # the same request_id on a retry gets the same chat back, not a conflict
        request = {"topic": "The export fails", "request_id": f"surge-{i}"}
        for attempt in range(ATTEMPTS):
            if attempt:
                self.retries += 1
                await asyncio.sleep(self.rng.uniform(*BACKOFF))
            customer = Customer(self)
            failed = await customer.join(self.http, url, address, guest, request)
            if failed is None:
                self.clients.append(customer)
                return time.monotonic()
            self.failures[failed] += 1
            await customer.close()
        return None

    async def stats(self, cmd: dict[str, Any]) -> dict[str, Any]:
        return {"events": dict(self.events), "disconnects": sorted(self.disconnects),
                "connected": sum(1 for c in self.clients if c.connected)}


class Customer:
    """A waiting customer on one WebSocket: joins, then answers pings and counts events
    until the server closes the connection."""

    def __init__(self, crowd: Crowd) -> None:
        self.crowd = crowd
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.connected = False
        self.task: asyncio.Task[None] | None = None

    async def join(
        self, http: aiohttp.ClientSession, url: str, address: str, guest: dict[str, Any],
        request: dict[str, Any],
    ) -> str | None:
        """None once ``chat:request`` was acknowledged ok, else what went wrong."""
        ws_url = url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                self.ws = ws = await http.ws_connect(
                    ws_url, headers={"X-Forwarded-For": address}, compress=0,
                    autoping=True, heartbeat=None,
                )
                opened = await self._next()
                if not opened.startswith("0"):
                    return f"connect: no open packet ({opened[:40]!r})"
                await ws.send_str(f"40{CUSTOMER}," + json.dumps({"guest": guest}))
                answer = await self._next()
                if not answer.startswith("40" + CUSTOMER + ","):
                    return f"connect: refused ({answer[:60]!r})"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return f"connect: {_reason(exc)}"
        for again in range(ATTEMPTS):
            if again:
                self.crowd.retries += 1
                await asyncio.sleep(self.crowd.rng.uniform(*BACKOFF))
            try:
                async with asyncio.timeout(ACK_TIMEOUT):
                    await ws.send_str(
                        f"42{CUSTOMER},{again + 1}" + json.dumps(["chat:request", request])
                    )
                    prefix = f"43{CUSTOMER},{again + 1}"
                    while True:
                        answer = await self._next()
                        if answer.startswith(prefix):
                            break
                        self._count(answer)
            except TimeoutError:
                self.crowd.failures["chat:request timed out"] += 1
                continue
            except (aiohttp.ClientError, OSError, ConnectionError) as exc:
                return f"chat:request: {_reason(exc)}"  # not connected any more
            ack = json.loads(answer[len(prefix):])[0]
            if isinstance(ack, dict) and ack.get("ok"):
                self.connected = True
                self.task = asyncio.create_task(self._listen())
                return None
            code = ack.get("error", {}).get("code") if isinstance(ack, dict) else None
            self.crowd.failures[f"chat:request answered {code or 'something else'}"] += 1
        return "chat:request never acknowledged ok"

    async def _next(self) -> str:
        """The next Engine.IO packet that is not a ping (pings are answered)."""
        assert self.ws is not None
        while True:
            msg = await self.ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"the connection closed ({msg.type.name})")
            if msg.data == "2":
                await self.ws.send_str("3")
                continue
            return str(msg.data)

    def _count(self, packet: str) -> None:
        if packet.startswith(BOARD):
            self.crowd.events["queue:board"] += 1
        elif packet.startswith(POSITION):
            self.crowd.events["queue:position"] += 1

    async def _listen(self) -> None:
        try:
            while True:
                self._count(await self._next())
        except (ConnectionError, aiohttp.ClientError, OSError):
            pass
        self.connected = False
        self.crowd.disconnects.append(time.monotonic())

    async def close(self) -> None:
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), 5)
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:80]


def _ms(sorted_seconds: list[float], q: float) -> float | None:
    if not sorted_seconds:
        return None
    rank = max(1, min(len(sorted_seconds), -(-len(sorted_seconds) * q // 100)))
    return round(sorted_seconds[int(rank) - 1] * 1000, 1)


async def main() -> None:
    crowd = Crowd()

    async def run(name: str, cmd: dict[str, Any]) -> dict[str, Any]:
        if name == "close":
            return {}
        result: dict[str, Any] = await getattr(crowd, name)(cmd)
        return result

    await serve_commands(run)
    # Thousands of connections close with the process: no goodbye to each.
    sys.stdout.flush()
    os._exit(0)


def _loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is one of chatd's dependencies
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(main())
