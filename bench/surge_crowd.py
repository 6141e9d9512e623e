"""A crowd process of the surge benchmark (``python -m bench.surge_crowd``): many guest
customers joining the queue as fast as this process can make them join, then staying
connected and idle.

Each customer is one python-socketio ``AsyncClient`` over the WebSocket transport, with an
``X-Forwarded-For`` address of its own (the driver, bench/surge.py, hands out the
addresses), sharing one aiohttp session of the process. Commands and answers are JSON lines
on stdin and stdout (bench/harness.py ``serve_commands``):

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
import logging
import os
import random
import sys
import time
from collections import Counter
from typing import Any

import aiohttp
import socketio

from .harness import serve_commands

CUSTOMER = "/customer"
CONNECT_TIMEOUT = 30.0  # the WebSocket handshake and the namespace's connect
ACK_TIMEOUT = 30.0
ATTEMPTS = 5  # connects (and chat:requests) per customer before giving up
BACKOFF = (0.5, 1.5)  # seconds between attempts, uniform


class Crowd:
    def __init__(self) -> None:
        self.http: aiohttp.ClientSession | None = None
        self.clients: list[socketio.AsyncClient] = []
        self.events: Counter[str] = Counter()
        self.disconnects: list[float] = []  # when (time.monotonic)
        self.failures: Counter[str] = Counter()
        self.retries = 0
        self.rng = random.Random(os.getpid())

    def _client(self) -> socketio.AsyncClient:
        client = socketio.AsyncClient(reconnection=False, http_session=self.http,
                                      handle_sigint=False)

        async def position(data: Any) -> None:
            self.events["queue:position"] += 1

        async def board(data: Any) -> None:
            self.events["queue:board"] += 1

        async def disconnect(*args: Any) -> None:
            self.disconnects.append(time.monotonic())

        client.on("queue:position", position, namespace=CUSTOMER)
        client.on("queue:board", board, namespace=CUSTOMER)
        client.on("disconnect", disconnect, namespace=CUSTOMER)
        return client

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
        guest = {"name": f"Crowd {os.getpid()}-{i}", "email": f"crowd{i}@surge.example"}
        for attempt in range(ATTEMPTS):
            if attempt:
                self.retries += 1
                await asyncio.sleep(self.rng.uniform(*BACKOFF))
            client = self._client()
            try:
                await client.connect(
                    url, namespaces=[CUSTOMER], auth={"guest": guest},
                    transports=["websocket"], headers={"X-Forwarded-For": address},
                    wait_timeout=CONNECT_TIMEOUT,
                )
            except (socketio.exceptions.SocketIOError, OSError) as exc:
                self.failures[f"connect: {_reason(exc)}"] += 1
                await _drop(client)
                continue
            # the same request_id on a retry gets the same chat back, not a conflict
            request = {"topic": "The export fails", "request_id": f"surge-{i}"}
            for again in range(ATTEMPTS):
                if again:
                    self.retries += 1
                    await asyncio.sleep(self.rng.uniform(*BACKOFF))
                try:
                    ack = await client.call("chat:request", request, namespace=CUSTOMER,
                                            timeout=ACK_TIMEOUT)
                except socketio.exceptions.TimeoutError:
                    self.failures["chat:request timed out"] += 1
                    continue
                except socketio.exceptions.SocketIOError as exc:
                    self.failures[f"chat:request: {_reason(exc)}"] += 1
                    break  # not connected any more: connect again
                if isinstance(ack, dict) and ack.get("ok"):
                    at = time.monotonic()
                    self.clients.append(client)
                    return at
                code = ack.get("error", {}).get("code") if isinstance(ack, dict) else None
                self.failures[f"chat:request answered {code or 'something else'}"] += 1
            await _drop(client)
        return None

    async def stats(self, cmd: dict[str, Any]) -> dict[str, Any]:
        return {"events": dict(self.events), "disconnects": sorted(self.disconnects),
                "connected": sum(1 for c in self.clients if c.connected)}


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:80]


async def _drop(client: socketio.AsyncClient) -> None:
    try:
        await asyncio.wait_for(client.disconnect(), 5)
    except (TimeoutError, socketio.exceptions.SocketIOError, OSError):
        pass


def _ms(sorted_seconds: list[float], q: float) -> float | None:
    if not sorted_seconds:
        return None
    rank = max(1, min(len(sorted_seconds), -(-len(sorted_seconds) * q // 100)))
    return round(sorted_seconds[int(rank) - 1] * 1000, 1)


async def main() -> None:
    # a lost connection is counted (``stats``); the client library's own log of it would
    # only repeat that, once per customer
    for name in ("engineio.client", "socketio.client"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
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
