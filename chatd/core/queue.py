"""The queue as waiting customers and engineers are told it: positions, predicted waits
and their ranges (docs/waits.md), the coalesced ``queue:position`` and ``queue:update``
news, the longest predicted wait for the alert, and the staffing forecast.

``QueueView`` reads the desk's live state (the queue, sessions, engineers' presence and
offers: the same objects the desk changes) and keeps what it has told whom; the desk tells
it when the queue or the engineers changed, and asks it what to send.
"""

from __future__ import annotations

import math
from typing import Any

from .arrivals import ArrivalRate
from .clock import Clock
from .effects import CUSTOMER_NS, ENGINEER_NS, ENGINEERS_ROOM, Effects, Outbound, customer_room
from .models import QUEUED_STATES, EngineerStatus, Session, SessionState, iso
from .presence import Offer, Presence
from .settings import DeskSettings
from .staffing import abandon_share, slots_needed
from .waits import (
    Observations,
    Slots,
    Wait,
    Waiting,
    WaitSettings,
    WaitTable,
    news,
    predict,
    wait_wire,
)

# The wait table is recomputed at least every twentieth of a handle time while customers
# wait (chats in progress age, and so do the customers' chances), within these bounds in
# seconds (docs/waits.md).
WAIT_TABLE_AGE = (0.05, 5.0)


class QueueView:
    def __init__(
        self,
        settings: DeskSettings,
        clock: Clock,
        queue: list[Session],
        sessions: dict[str, Session],
        engineers: dict[str, Presence],
        offers: dict[str, Offer],
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.queue = queue  # waiting and offered, in arrival order (the desk's own list)
        self.sessions = sessions
        self.engineers = engineers
        self.offers = offers
        self.wait_settings = WaitSettings(
            default_handle_seconds=settings.default_handle_seconds,
            history=settings.handle_history,
        )
        self.observed = Observations(self.wait_settings)
        self.arrivals = ArrivalRate(start=clock.now())
        self._waits: WaitTable | None = None  # by position; None when it must be recomputed
        self._waits_at = float("-inf")
        # What the model said each waiting customer would wait when they joined (position,
        # (mean, low, high)): their real wait calibrates the ranges (docs/waits.md).
        self._told: dict[str, tuple[int, tuple[float, float, float]]] = {}
        self._pos_sent: dict[str, tuple[int, Wait | None, float]] = {}
        self._pos_dirty = False
        self._queue_sent: tuple[int, str | None] | None = None
        self._queue_sent_at = float("-inf")
        # The longest predicted wait's part that does not move with the clock, for the table
        # and the queue (length, head) it was computed for.
        self._longest: tuple[WaitTable, tuple[int, str], float] | None = None

    def engineers_online(self) -> int:
        return sum(1 for p in self.engineers.values() if p.online)

    # ------------------------------------------------------------------ told by the desk

    def joined(self) -> None:
        """A customer joined at the tail: positions to tell, but nobody's wait ahead
        changed, so the wait table stays."""
        self._pos_dirty = True

    def stale(self) -> None:
        """Offers changed: the waits are recomputed when next asked for."""
        self._waits = None

    def forget(self, session_id: str) -> None:
        """The session left the queue (answered or ended)."""
        self._pos_sent.pop(session_id, None)
        self._told.pop(session_id, None)

    def told_on_joining(self, session: Session, now: float) -> tuple[int | None, Wait | None]:
        """The position and wait a customer who just asked is told (in the answer), counted
        as sent; what the model said is kept to calibrate the ranges once they are
        answered."""
        position = self.position(session)
        if position is None:
            return None, None
        if self._waits is not None and len(self._waits) < min(
            position, self.wait_settings.depth
        ):
            self._waits = None  # sample this position too, not extend to it
        table = self.wait_table()
        estimate = None
        if table is not None:
            estimate = table.at(position)
            self._told[session.id] = (position, table.model(position))
        self._pos_sent[session.id] = (position, estimate, now)
        return position, estimate

    def answered(self, session: Session, now: float) -> None:
        """A customer was answered: their real wait against what they were told."""
        told = self._told.pop(session.id, None)
        if told is not None:
            self.observed.waited(told[0], told[1], now - session.created_at)

    # ------------------------------------------------------------------ what is told

    def position(self, session: Session) -> int | None:
        if session.state not in QUEUED_STATES:
            return None
        # The queue is short next to the cost of a round trip; a linear scan is fine here,
        # and positions for everyone are computed in one pass by _flush_positions.
        for i, s in enumerate(self.queue):
            if s is session:
                return i + 1
        return None  # pragma: no cover

    def online_capacity(self) -> int:
        return sum(
            p.capacity
            for p in self.engineers.values()
            if p.online and p.status is EngineerStatus.AVAILABLE
        )

    def average_handle_seconds(self) -> float:
        """The mean handle time the estimate uses (of the fitted log-normal)."""
        return self.observed.mean_handle()

    def wait_table(self) -> WaitTable | None:
        """The predicted wait of every queue position (docs/waits.md): computed once for the
        whole queue, again when the queue or the engineers changed (not when a customer
        joins at the tail: that changes nobody's wait ahead) or as it ages
        (``WAIT_TABLE_AGE``)."""
        now = self.clock.now()
        if self._waits is not None:
            lo, hi = WAIT_TABLE_AGE
            if now - self._waits_at < min(hi, max(lo, self.observed.mean_handle() / 50)):
                return self._waits
        slots = []
        for p in self.engineers.values():
            away_for = None
            if p.status is not EngineerStatus.AVAILABLE:
                if p.away_since is None:
                    continue
                away_for = now - p.away_since
            if not p.online:
                continue
            ages = []
            for sid in p.active:
                s = self.sessions.get(sid)
                if s is not None and s.assigned_at is not None:
                    ages.append(max(0.0, now - s.assigned_at))
            offers = tuple(
                max(0.0, now - o.made_at)
                for sid in p.offers
                if (o := self.offers.get(sid)) is not None and o.transfer_from is None
            )
            slots.append(Slots(p.capacity, tuple(ages), offers, away_for))
        queue = [
            Waiting(
                now - o.made_at
                if (o := self.offers.get(s.id)) is not None and s.state is SessionState.OFFERED
                else None
            )
            for s in self.queue[: self.wait_settings.depth]
        ]
        self._waits = predict(slots, queue, self.observed, self.wait_settings, now)
        self._waits_at = now
        return self._waits if self._waits is not None else None

    def estimate(self, position: int | None) -> Wait | None:
        """The wait at ``position``; None when no engineer is available
        (docs/waits.md)."""
        if position is None:
            return None
        table = self.wait_table()
        return table.at(position) if table is not None else None

    def longest_predicted(self, now: float) -> float | None:
        """The longest wait anyone waiting is heading for: waited so far plus predicted;
        without end (inf) while customers wait and no engineer is there to answer."""
        if not self.queue:
            return None
        table = self.wait_table()
        if table is None:
            return math.inf
        # max(now - created + predicted) = now + max(predicted - created): the second term
        # changes only with the table or the queue, not with every tick.
        key = (len(self.queue), self.queue[0].id)
        if self._longest is None or self._longest[0] is not table or self._longest[1] != key:
            self._longest = (table, key, max(
                table.at(i + 1).seconds - s.created_at for i, s in enumerate(self.queue)
            ))
        return now + self._longest[2]

    def forecast(self) -> dict[str, Any]:
        """How many capacity slots the desk needs to answer ``wait_objective`` of customers
        within ``wait_target``, now and over the next hour, from the live arrival rate and
        the handle times and patience observed (docs/waits.md#staffing-forecast)."""
        s = self.settings
        now = self.clock.now()
        handle = self.observed.mean_handle()
        theta = self.observed.abandon_rate()
        rates = {"now": self.arrivals.rate_now(now), "next_hour": self.arrivals.forecast(now, 3600)}
        out: dict[str, Any] = {
            "target_seconds": s.wait_target,
            "objective": s.wait_objective,
            "model": "erlang_a" if theta > 0 else "erlang_c",
            "handle_seconds": round(handle, 1),
            "patience_seconds": round(1 / theta, 1) if theta > 0 else None,
            "default_capacity": s.default_capacity,
            "slots_online": self.online_capacity(),
            "engineers_online": self.engineers_online(),
        }
        for name, lam in rates.items():
            slots = None
            if lam is not None:
                try:
                    slots = slots_needed(lam, 1 / handle, s.wait_target, s.wait_objective,
                                         theta or None)
                except ValueError:  # past any desk this model can staff
                    slots = None
            leaving = None
            if slots is not None and theta > 0 and lam:
                leaving = round(abandon_share(slots, lam, 1 / handle, theta), 4)
            out[name] = {
                "arrivals_per_hour": None if lam is None else round(lam * 3600, 1),
                "slots": slots,
                "engineers": None if slots is None else -(-slots // s.default_capacity),
                "abandon_share": leaving,
            }
        return out

    def changed(self) -> None:
        """Positions or slots changed: waits are recomputed and customers told."""
        self._pos_dirty = True
        self._waits = None

    def stats(self, now: float) -> dict[str, Any]:
        oldest = self.queue[0] if self.queue else None
        return {
            "length": len(self.queue),
            "oldest_wait_seconds": round(now - oldest.created_at, 1) if oldest else 0,
            "oldest_created_at": iso(oldest.created_at) if oldest else None,
            "target_seconds": self.settings.wait_target,
            "warning_seconds": self.settings.wait_warning,
            "engineers_online": self.engineers_online(),
        }

    def flush_queue_update(self, now: float, fx: Effects, *, force: bool = False) -> None:
        oldest = self.queue[0].id if self.queue else None
        state = (len(self.queue), oldest)
        if state == self._queue_sent:
            return
        if not force and now - self._queue_sent_at < self.settings.queue_update_interval:
            return
        self._queue_sent = state
        self._queue_sent_at = now
        fx.append(Outbound(ENGINEER_NS, ENGINEERS_ROOM, "queue:update", self.stats(now)))

    def flush_positions(self, now: float, fx: Effects) -> None:
        """Tell each waiting customer their position and estimate when it changed, at most
        once per ``position_interval`` each. One pass over the queue: O(n) per flush."""
        if not self._pos_dirty:
            return
        table = self.wait_table()
        least = self.observed.unit()
        interval = self.settings.position_interval
        pending = False
        for i, session in enumerate(self.queue):
            position = i + 1
            estimate = table.at(position) if table is not None else None
            last = self._pos_sent.get(session.id)
            if last is not None and last[0] == position and not news(last[1], estimate, least):
                continue
            if last is not None and now - last[2] < interval:
                pending = True
                continue
            self._pos_sent[session.id] = (position, estimate, now)
            fx.append(
                Outbound(
                    CUSTOMER_NS,
                    customer_room(session.id),
                    "queue:position",
                    {
                        "session_id": session.id,
                        "position": position,
                        **wait_wire(estimate),
                        "engineers_online": self.engineers_online(),
                    },
                )
            )
        self._pos_dirty = pending

