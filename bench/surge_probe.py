"""The measuring process of the surge benchmark (``python -m bench.surge_probe``): what a
desk's people see while a crowd waits.

It holds, apart from the crowd (bench/surge_crowd.py) and from the driver
(bench/surge.py):

- the honest pairs: guests each in a chat with an engineer of their own, both writing every
  1 to 2 s, every acknowledgement timed (bench/siege_honest.py's ``Honest``);
- ``/healthz`` asked every 20 ms, each answer timed;
- the moving engineer (capacity 1): from the ``move`` command on, it accepts each offer as
  it comes and ends that chat at once, so that the queue moves one customer at a time;
- the probes: customers who join after the crowd, at the tail, each keeping the position it
  would show from ``queue:position`` events (each carries the position) or from
  ``queue:board`` broadcasts (the changes since the board before; a missed board is made
  up by asking ``queue:position``), whichever the server sends.

Commands and answers are JSON lines on stdin and stdout (bench/harness.py
``serve_commands``):

- ``setup``: ``{url, seed, engineers, customers, mover: {token, address}}``: the honest
  pairs' chats as in bench/siege_honest.py; the moving engineer connects and stays away;
  the ``/healthz`` loop starts.
- ``start``: ``{start_at}``: the honest pairs start writing.
- ``probes``: ``{addresses}``: one probe per address joins, one after the other.
- ``move``: ``{seconds, settle}``: the engineer goes available and moves the queue for
  ``seconds`` (or until the next offer is a probe's), goes away, and after ``settle`` more
  seconds for the last news to arrive, answers the dequeue times, the offer latencies and
  each probe's staleness (below).
- ``stop``: the honest pairs stop; answers their samples and the ``/healthz`` samples.
- ``close``: disconnect everything and exit.

Staleness: with dequeue times t_1 … t_i (the engineer's ``offer:accept`` answers) and a
probe's position P0 when the queue started moving, a displayed position p reflects
j = P0 - p dequeues; if j < i it is stale since t_(j+1). It is sampled at every dequeue and
at every event (just before and just after it changes the display) and once ``settle``
seconds after the end; the figure is the largest over probes and samples.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from typing import Any

import aiohttp
import socketio

from .harness import serve_commands
from .siege_honest import ENGINEER, Honest, Person

CUSTOMER = "/customer"
ACK_TIMEOUT = 10.0
HEALTH_EVERY = 0.020
HEALTH_TIMEOUT = 10.0
OFFER_WAIT = 10.0  # the longest the moving engineer waits for its next offer
RESYNCS = 100  # at most this many queue:position asks per probe


class Probe:
    """A customer at the tail, keeping the position it would show."""

    def __init__(self, address: str, n: int) -> None:
        self.address = address
        self.name = f"Probe {n}"
        self.client = socketio.AsyncClient(reconnection=False, handle_sigint=False)
        self.session_id = ""
        self.arrival: int | None = None
        self.board: int | None = None
        self.position: int | None = None
        self.shown: list[tuple[float, int]] = []  # (when, position) at each change
        self.events = {"queue:position": 0, "queue:board": 0}
        self.resyncs = 0
        self.problems: list[str] = []
        self._pending: dict[int, dict[str, Any]] = {}
        self._resync: asyncio.Task[None] | None = None
        self.client.on("queue:position", self._on_position, namespace=CUSTOMER)
        self.client.on("queue:board", self._on_board, namespace=CUSTOMER)

    async def join(self, url: str) -> None:
        await self.client.connect(
            url, namespaces=[CUSTOMER], transports=["websocket"], wait_timeout=ACK_TIMEOUT,
            auth={"guest": {"name": self.name, "email": "probe@surge.example"}},
            headers={"X-Forwarded-For": self.address},
        )
        ack = await self.client.call("chat:request", {"topic": "Where am I in the queue?"},
                                     namespace=CUSTOMER, timeout=ACK_TIMEOUT)
        if not isinstance(ack, dict) or not ack.get("ok"):
            raise RuntimeError(f"{self.name}: chat:request refused: {ack}")
        session = ack["session"]
        self.session_id = session["id"]
        self.arrival = session.get("arrival")
        board = session.get("board", ack.get("board"))
        self.board = int(board) if board is not None else None
        self._show(int(session["position"]))

    def _show(self, position: int) -> None:
        if position != self.position:
            self.position = position
            self.shown.append((time.monotonic(), position))

    async def _on_position(self, data: Any) -> None:
        self.events["queue:position"] += 1
        if isinstance(data, dict) and data.get("session_id") == self.session_id:
            if isinstance(data.get("position"), int):
                self._show(data["position"])

    async def _on_board(self, data: Any) -> None:
        self.events["queue:board"] += 1
        if not isinstance(data, dict) or not isinstance(data.get("v"), int):
            return
        self._pending[data["v"]] = data
        self._apply_pending()
        if self._pending and (self._resync is None or self._resync.done()):
            self._resync = asyncio.create_task(self._ask_position())

    def _apply_pending(self) -> None:
        """Apply the boards that follow the one known, in order; drop older ones."""
        if self.board is None or self.position is None or self.arrival is None:
            return
        for v in [v for v in self._pending if v <= self.board]:
            del self._pending[v]
        position = self.position
        while self.board + 1 in self._pending:
            b = self._pending.pop(self.board + 1)
            left, back = b.get("left") or [], b.get("back") or []
            position += bisect.bisect_left(back, self.arrival)
            position -= bisect.bisect_left(left, self.arrival)
            self.board += 1
        self._show(position)

    async def _ask_position(self) -> None:
        """A board was missed: ask for the position as of the current board."""
        while self._pending and self.resyncs < RESYNCS:
            self.resyncs += 1
            try:
                ack = await self.client.call("queue:position", {"session_id": self.session_id},
                                             namespace=CUSTOMER, timeout=ACK_TIMEOUT)
            except socketio.exceptions.SocketIOError as exc:
                self.problems.append(f"queue:position {type(exc).__name__}")
                return
            if not isinstance(ack, dict) or not ack.get("ok") or ack.get("position") is None:
                self.problems.append(f"queue:position answered {ack}")
                return
            if self.board is None or ack["board"] > self.board:
                self.board = int(ack["board"])
                if self.arrival is None:
                    self.arrival = ack.get("arrival")
                self._show(int(ack["position"]))
            self._apply_pending()
            if self._pending:
                await asyncio.sleep(0.05)  # the next board is likely on its way


class Probing:
    def __init__(self) -> None:
        self.honest = Honest()
        self.url = ""
        self.mover: Person | None = None
        self.offers: asyncio.Queue[tuple[float, str]] = asyncio.Queue()
        self.probes: list[Probe] = []
        self.health: list[tuple[float, float]] = []  # (asked at, seconds)
        self.health_task: asyncio.Task[None] | None = None
        self.http: aiohttp.ClientSession | None = None

    async def setup(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.url = cmd["url"]
        answer = await self.honest.setup(cmd)
        mover = Person(ENGINEER, cmd["mover"]["address"], "moving engineer")

        async def offer_new(data: Any) -> None:
            self.offers.put_nowait((time.monotonic(), data["session_id"]))

        mover.client.on("offer:new", offer_new, namespace=ENGINEER)
        await mover.connect(self.url, {"token": cmd["mover"]["token"]})
        self.mover = mover
        self.http = aiohttp.ClientSession()
        self.health_task = asyncio.create_task(self._health())
        return answer

    async def _health(self) -> None:
        assert self.http is not None
        url = self.url + "/healthz"
        timeout = aiohttp.ClientTimeout(total=HEALTH_TIMEOUT)
        next_at = time.monotonic()
        while True:
            t0 = time.monotonic()
            try:
                async with self.http.get(url, timeout=timeout) as r:
                    await r.read()
                    took = time.monotonic() - t0 if r.status == 200 else HEALTH_TIMEOUT
            except (aiohttp.ClientError, OSError):  # TimeoutError is an OSError
                took = HEALTH_TIMEOUT
            self.health.append((t0, took))
            next_at = max(next_at + HEALTH_EVERY, time.monotonic())
            await asyncio.sleep(next_at - time.monotonic())

    async def start(self, cmd: dict[str, Any]) -> dict[str, Any]:
        return await self.honest.start(cmd)

    async def probes_join(self, cmd: dict[str, Any]) -> dict[str, Any]:
        for n, address in enumerate(cmd["addresses"]):
            probe = Probe(address, n)
            await probe.join(self.url)
            self.probes.append(probe)
        return {"positions": [p.position for p in self.probes],
                "arrivals": [p.arrival for p in self.probes],
                "boards": [p.board for p in self.probes]}

    async def move(self, cmd: dict[str, Any]) -> dict[str, Any]:
        mover = self.mover
        assert mover is not None
        probe_sessions = {p.session_id for p in self.probes}
        start_positions = [p.position for p in self.probes]
        dequeues: list[float] = []
        after_end_ack: list[float] = []  # offer:new after the previous session:end's answer
        after_end_sent: list[float] = []  # ... after it was sent
        early = 0  # offers that arrived before the previous end's answer
        errors: list[str] = []
        stopped_by = "time"
        t_start = time.monotonic()
        end_at = t_start + float(cmd["seconds"])
        ack = await mover.call("engineer:status", {"status": "available", "capacity": 1})
        if not (isinstance(ack, dict) and ack.get("ok")):
            raise RuntimeError(f"engineer:status refused: {ack}")
        previous: tuple[float, float] | None = None  # (end sent, end answered)
        while time.monotonic() < end_at:
            try:
                offered_at, session_id = await asyncio.wait_for(self.offers.get(), OFFER_WAIT)
            except TimeoutError:
                stopped_by = f"no offer within {OFFER_WAIT:g} s"
                break
            if session_id in probe_sessions:
                stopped_by = "the crowd was answered: the next offer was a probe's"
                break
            if previous is not None:
                sent, answered = previous
                after_end_sent.append(offered_at - sent)
                after_end_ack.append(max(0.0, offered_at - answered))
                early += offered_at < answered
            try:
                ack = await mover.call("offer:accept", {"session_id": session_id})
                accepted = time.monotonic()
                if not (isinstance(ack, dict) and ack.get("ok")):
                    errors.append(f"offer:accept answered {ack}")
                    previous = None
                    continue
                dequeues.append(accepted)
                sent = time.monotonic()
                ack = await mover.call("session:end", {"session_id": session_id})
                answered = time.monotonic()
            except socketio.exceptions.SocketIOError as exc:
                errors.append(f"{type(exc).__name__} while moving the queue")
                stopped_by = "error"
                break
            if not (isinstance(ack, dict) and ack.get("ok")):
                errors.append(f"session:end answered {ack}")
            previous = (sent, answered)
        moved_until = time.monotonic()
        try:
            await mover.call("engineer:status", {"status": "away"})
        except socketio.exceptions.SocketIOError as exc:
            errors.append(f"engineer:status away: {type(exc).__name__}")
        await asyncio.sleep(float(cmd["settle"]))
        until = time.monotonic()
        probes = [
            _staleness(p, p0, t_start, dequeues, until)
            for p, p0 in zip(self.probes, start_positions, strict=True)
        ]
        return {
            "started": t_start, "moved_until": moved_until, "until": until,
            "stopped_by": stopped_by, "dequeues": [round(t, 4) for t in dequeues],
            "offer_after_end_ack_ms": [round(x * 1000, 3) for x in after_end_ack],
            "offer_after_end_sent_ms": [round(x * 1000, 3) for x in after_end_sent],
            "offers_before_end_ack": early, "errors": errors[:20], "error_count": len(errors),
            "probes": probes,
        }

    async def stop(self, cmd: dict[str, Any]) -> dict[str, Any]:
        answer = await self.honest.stop(cmd)
        if self.health_task is not None:
            self.health_task.cancel()
        answer["health"] = [(round(t, 4), round(s * 1000, 3)) for t, s in self.health]
        return answer

    async def close(self, cmd: dict[str, Any]) -> dict[str, Any]:
        if self.health_task is not None:
            self.health_task.cancel()
        people = [p.client for p in self.probes]
        if self.mover is not None:
            people.append(self.mover.client)
        for client in people:
            if client.connected:
                try:
                    await asyncio.wait_for(client.disconnect(), 5)
                except TimeoutError:
                    pass
        await self.honest.close(cmd)
        if self.http is not None:
            await self.http.close()
        return {}


def _staleness(
    probe: Probe, p0: int | None, start: float, dequeues: list[float], until: float
) -> dict[str, Any]:
    """The probe's largest staleness (seconds) while the queue moved, and what it saw."""
    shown = [(t, p) for t, p in probe.shown if t >= start]
    worst = 0.0
    if p0 is not None:
        def stale(t: float, p: int) -> float:
            j = max(0, p0 - p)
            i = bisect.bisect_right(dequeues, t)
            return t - dequeues[j] if j < i else 0.0

        def shown_at(t: float) -> int:
            k = bisect.bisect_right([s for s, _ in shown], t)
            return shown[k - 1][1] if k else p0

        before = p0
        for t, p in shown:
            worst = max(worst, stale(t, before), stale(t, p))
            before = p
        for t in dequeues:
            worst = max(worst, stale(t, shown_at(t)))
        worst = max(worst, stale(until, shown_at(until)))
    return {
        "start_position": p0, "end_position": probe.position, "changes": len(shown),
        "events": dict(probe.events), "resyncs": probe.resyncs,
        "problems": probe.problems[:5], "max_stale_s": round(worst, 4),
    }


async def main() -> None:
    probing = Probing()
    commands = {"setup": probing.setup, "start": probing.start, "probes": probing.probes_join,
                "move": probing.move, "stop": probing.stop, "close": probing.close}

    async def run(name: str, cmd: dict[str, Any]) -> dict[str, Any]:
        return await commands[name](cmd)

    if not await serve_commands(run):
        await probing.close({})  # the driver is gone


if __name__ == "__main__":
    asyncio.run(main())
