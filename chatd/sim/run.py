"""One simulated day through the real desk: the desk core and its SQLite store, driven by a
fake clock instead of sockets (docs/waits.md#the-simulator).

Customers arrive (time-varying Poisson), ask for a chat and are told their wait; engineers
come and go with their shifts and breaks, accept what they are offered after a human delay
(or leave an offer to expire, and come back a while after the desk sets them away), and end
each chat after a log-normal handle time; customers leave the queue when their patience
runs out. Everything the desk says is recorded: what each customer was told when they
joined and last, and when the queue alerts went up and down. Nothing but the clock is fake:
every decision is the desk's own code, every write goes to a real SQLite database in a
temporary folder.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.board import BoardReader
from ..core.clock import FakeClock
from ..core.desk import CUSTOMER_NS, ENGINEER_NS, Desk, DeskSettings, Effects
from ..core.errors import DeskError
from ..core.models import Customer, Engineer, EngineerAccount, EngineerStatus, Role, Tier
from ..core.ports import Store
from ..core.waits import Wait, news, wait_wire
from ..store import store_from_url
from .scenario import Scenario

DRAIN_LIMIT = 6 * 3600.0  # after the last arrival, the queue is served for at most this


@dataclass(slots=True)
class Told:
    """A wait the desk told a customer, and what the formula chatd used to have said."""

    at: float
    position: int
    seconds: int | None
    low: int | None
    high: int | None
    legacy: int | None


@dataclass(slots=True)
class CustomerRecord:
    id: str
    arrived: float
    patience: float
    joined: Told | None = None
    last: Told | None = None
    reader: BoardReader | None = None  # what the widget makes of the queue boards
    answered: float | None = None
    left: float | None = None

    @property
    def wait(self) -> float | None:
        return None if self.answered is None else self.answered - self.arrived


@dataclass(slots=True)
class DayResult:
    scenario: Scenario
    seed: int
    customers: list[CustomerRecord]
    alerts: list[tuple[float, str]] = field(default_factory=list)  # (time, level) changes
    # When the predictive signal went up (True) and down (False), whatever the level shows.
    predictive: list[tuple[float, bool]] = field(default_factory=list)
    forecasts: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    end: float = 0.0


def legacy_estimate(position: int, capacity: int, handle_times: list[float],
                    default_handle: float) -> int | None:
    """What chatd told customers before: ((position − 1) / capacity + 1) × the mean of the
    last 50 handle times."""
    if capacity <= 0:
        return None
    recent = handle_times[-50:]
    mean = sum(recent) / len(recent) if recent else default_handle
    return round(((position - 1) / capacity + 1) * mean)


class Day:
    """The event loop of one simulated day."""

    def __init__(self, scenario: Scenario, seed: int, store: Store,
                 forecast_every: float = 0.0) -> None:
        self.sc = scenario
        self.seed = seed
        self.rng = random.Random(f"{scenario.name}/{seed}")
        self.clock = FakeClock(start=1_800_000_000.0)
        self.t0 = self.clock.now()
        fields = {f.name for f in dataclasses.fields(DeskSettings)}
        overrides = {k: v for k, v in scenario.desk.items() if k in fields}
        overrides.setdefault("default_handle_seconds", scenario.handle_mean)
        overrides.setdefault("wait_objective", scenario.objective)
        self.desk = Desk(store, self.clock, DeskSettings(**overrides),
                         new_id=self._ids())
        self.store = store
        self.events: list[tuple[float, int, Callable[[], Awaitable[None]]]] = []
        self._n = 0
        self.customers: dict[str, CustomerRecord] = {}
        self.by_session: dict[str, CustomerRecord] = {}
        self.people: dict[str, Customer] = {}
        self.engineers: dict[str, Engineer] = {}
        self.on_break: set[str] = set()
        self.on_shift: set[str] = set()
        self.chats: dict[str, int] = {}  # engineer id -> chats in progress
        self.result = DayResult(scenario, seed, [])
        self.forecast_every = forecast_every

    def _ids(self) -> Callable[[], str]:
        counter = iter(range(1, 1 << 62))
        return lambda: f"sim-{next(counter):08d}"

    @property
    def now(self) -> float:
        return self.clock.now() - self.t0

    def at(self, t: float, action: Callable[[], Awaitable[None]]) -> None:
        self._n += 1
        heapq.heappush(self.events, (t, self._n, action))

    # ------------------------------------------------------------------ the day

    async def run(self) -> DayResult:
        await self.desk.restore()
        sc = self.sc
        for gi, g in enumerate(sc.engineers):
            for i in range(g.count):
                e = Engineer(f"eng-{gi}-{i}", f"e{gi}-{i}@sim.example", f"Engineer {gi}-{i}",
                             Role.ENGINEER)
                await self.store.add_engineer(EngineerAccount(e, "-", False, self.clock.now()))
                self.engineers[e.id] = e
                self.at(g.shift[0], self._shift_start(e, g.capacity))
                if math.isfinite(g.shift[1]):
                    self.at(g.shift[1], self._shift_end(e))
                for b0, b1 in g.breaks:
                    self.at(b0, self._break(e, True))
                    self.at(b1, self._break(e, False))
        self._next_arrival(0.0)
        self.at(0.0, self._tick)
        if self.forecast_every > 0:
            self.at(self.forecast_every, self._forecast)
        limit = sc.duration + DRAIN_LIMIT
        while self.events:
            t, _, action = heapq.heappop(self.events)
            if t > limit:
                break
            if t > sc.duration and not self._busy():
                break
            self.clock.advance(max(0.0, t - self.now))
            await action()
        self.result.customers = list(self.customers.values())
        self.result.end = self.now
        return self.result

    def _busy(self) -> bool:
        return self.desk.queue_length() > 0 or any(
            c.answered is None and c.left is None for c in self.customers.values()
        )

    async def _tick(self) -> None:
        await self.apply(await self.desk.tick())
        on = self.desk.alerts.predicting
        if on != (self.result.predictive[-1][1] if self.result.predictive else False):
            self.result.predictive.append((self.now, on))
        if self.now <= self.sc.duration or self._busy():
            self.at(self.now + self.sc.tick, self._tick)

    async def _forecast(self) -> None:
        self.result.forecasts.append((self.now, self.desk.forecast()))
        if self.now + self.forecast_every <= self.sc.duration:
            self.at(self.now + self.forecast_every, self._forecast)

    # ------------------------------------------------------------------ customers

    def _next_arrival(self, t: float) -> None:
        peak = self.sc.peak_rate
        while True:  # thinning: candidates at the peak rate, kept in proportion to the rate
            t += self.rng.expovariate(peak)
            if t > self.sc.duration:
                return
            if self.rng.random() * peak <= self.sc.rate(t):
                self.at(t, self._arrive)
                return

    async def _arrive(self) -> None:
        self._next_arrival(self.now)
        n = len(self.customers) + 1
        c = Customer(f"cust-{n:06d}", f"Customer {n}", f"c{n}@sim.example", "sim", Tier.STANDARD)
        patience = (self.rng.expovariate(1 / self.sc.patience_mean)
                    if self.sc.patience_mean else math.inf)
        rec = CustomerRecord(c.id, self.now, patience)
        self.customers[c.id] = rec
        self.people[c.id] = c
        wire, _, fx = await self.desk.request_chat(c, "Simulated question")
        self.by_session[wire["id"]] = rec
        rec.joined = self._told(wire.get("position"), wire)
        if wire.get("position") is not None:
            rec.reader = BoardReader(wire["arrival"], wire["position"], wire["board"],
                                     wire["board_seen"])
        await self.apply(fx)
        if math.isfinite(patience):
            self.at(self.now + patience, self._give_up(wire["id"], c))

    def _told(self, position: int | None, payload: dict[str, Any]) -> Told | None:
        if position is None:
            return None
        desk = self.desk
        legacy = legacy_estimate(position, desk.online_capacity(), list(desk.observed.handle),
                                 desk.settings.default_handle_seconds)
        return Told(self.now, position, payload.get("estimated_wait_seconds"),
                    payload.get("estimated_wait_low_seconds"),
                    payload.get("estimated_wait_high_seconds"), legacy)

    def _give_up(self, sid: str, c: Customer) -> Callable[[], Awaitable[None]]:
        async def act() -> None:
            rec = self.by_session[sid]
            if rec.answered is not None or rec.left is not None:
                return
            try:
                _, fx = await self.desk.end(c, sid)
            except DeskError:
                return
            rec.left = self.now
            await self.apply(fx)
        return act

    # ------------------------------------------------------------------ engineers

    def _shift_start(self, e: Engineer, capacity: int) -> Callable[[], Awaitable[None]]:
        async def act() -> None:
            self.on_shift.add(e.id)
            self.desk.engineer_connected(e)
            _, fx = await self.desk.set_status(e, EngineerStatus.AVAILABLE, capacity)
            await self.apply(fx)
        return act

    def _shift_end(self, e: Engineer) -> Callable[[], Awaitable[None]]:
        async def act() -> None:
            # Away for new chats; they finish the ones they have, then sign out.
            self.on_shift.discard(e.id)
            _, fx = await self.desk.set_status(e, EngineerStatus.AWAY)
            await self.apply(fx)
            await self._sign_out_if_done(e)
        return act

    async def _sign_out_if_done(self, e: Engineer) -> None:
        if e.id not in self.on_shift and self.chats.get(e.id, 0) == 0:
            await self.apply(await self.desk.engineer_disconnected(e.id))

    def _break(self, e: Engineer, starts: bool) -> Callable[[], Awaitable[None]]:
        async def act() -> None:
            if starts:
                self.on_break.add(e.id)
            else:
                self.on_break.discard(e.id)
            await self._set(e, EngineerStatus.AWAY if starts else EngineerStatus.AVAILABLE)
        return act

    async def _set(self, e: Engineer, status: EngineerStatus) -> None:
        if status is EngineerStatus.AVAILABLE and (
            e.id not in self.on_shift or e.id in self.on_break
        ):
            return
        _, fx = await self.desk.set_status(e, status)
        await self.apply(fx)

    def _back(self, e: Engineer) -> Callable[[], Awaitable[None]]:
        async def act() -> None:
            await self._set(e, EngineerStatus.AVAILABLE)
        return act

    def _respond(self, e: Engineer, sid: str) -> None:
        if self.rng.random() < self.sc.ignore_share:
            return  # left to expire: the desk sets them away
        delay = self.rng.lognormvariate(
            math.log(self.sc.response_mean) - self.sc.response_sigma ** 2 / 2,
            self.sc.response_sigma,
        )

        async def act() -> None:
            try:
                _, _, fx = await self.desk.accept(e, sid)
            except DeskError:
                return  # withdrawn meanwhile (the customer left, the offer expired)
            await self.apply(fx)

        self.at(self.now + delay, act)

    def _handle(self, e: Engineer, sid: str) -> None:
        mean, sigma = self.sc.handle_mean, self.sc.handle_sigma
        length = self.rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma)

        async def act() -> None:
            try:
                _, fx = await self.desk.end(e, sid)
            except DeskError:
                return
            self.chats[e.id] -= 1
            await self.apply(fx)
            await self._sign_out_if_done(e)

        self.at(self.now + length, act)

    # ------------------------------------------------------------------ what the desk says

    def _read_board(self, board: dict[str, Any]) -> None:
        """Every waiting customer reads the board, as the widget does: what they see
        changes when their place moved or their wait did (docs/waits.md)."""
        least = self.desk.observed.unit()
        for rec in self.by_session.values():
            r = rec.reader
            if r is None or rec.answered is not None or rec.left is not None:
                continue
            before = r.position
            if not r.read(board):
                continue  # pragma: no cover - the simulator misses no board
            wait = r.wait(board)
            shown = rec.last or rec.joined
            told = None if shown is None or shown.seconds is None else Wait(
                shown.seconds, shown.low or 0, shown.high or 0
            )
            if r.position != before or news(told, wait, least):
                rec.last = self._told(r.position, wait_wire(wait))

    async def apply(self, fx: Effects) -> None:
        for o in fx:
            p = o.payload
            if o.namespace == ENGINEER_NS:
                if o.event == "offer:new" and "transfer_from" not in p:
                    self._respond(self.engineers[o.room.split(":", 1)[1]], p["session_id"])
                elif o.event == "engineer:status" and p.get("reason") == "offer_expired":
                    self.at(self.now + self.sc.back_after, self._back(self.engineers[p["id"]]))
                elif o.event == "queue:alert":
                    self.result.alerts.append((self.now, p["level"]))
            elif o.namespace == CUSTOMER_NS:
                if o.event == "queue:board":
                    self._read_board(p)
                    continue
                rec = self.by_session.get(p.get("session_id", ""))
                if rec is None:
                    continue
                if o.event == "message:new" and (
                    (p["message"].get("event") or {}).get("type") == "requeued"
                ):
                    # Back in the queue: the widget asks its place, and reads boards again.
                    place = await self.desk.queue_position(self.people[rec.id], p["session_id"])
                    rec.reader = BoardReader(place["arrival"], place["position"],
                                             place["board"], place["board_seen"])
                elif o.event == "session:assigned" and rec.answered is None:
                    rec.answered = self.now
                    e = self.engineers[p["engineer"]["id"]]
                    self.chats[e.id] = self.chats.get(e.id, 0) + 1
                    self._handle(e, p["session_id"])


async def simulate(scenario: Scenario, seed: int, *, forecast_every: float = 0.0,
                   folder: Path | None = None) -> DayResult:
    """Run ``scenario`` once with ``seed`` on a fresh SQLite database in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="chatd-sim-", dir=folder) as tmp:
        # The default backend, through the same door as chatd serve; "normal": a
        # simulated day need not survive a power cut.
        store = store_from_url(f"sqlite:///{Path(tmp).resolve() / 'sim.db'}?synchronous=normal")
        await store.open()
        try:
            return await Day(scenario, seed, store, forecast_every).run()
        finally:
            await store.close()
