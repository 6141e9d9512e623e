"""The queue as waiting customers and engineers are told it: positions, predicted waits
and their ranges (docs/waits.md), the queue board every waiting customer reads
(board.py) and the coalesced ``queue:update``, the longest predicted wait for the alert,
and the staffing forecast.

``QueueView`` reads the desk's live state (the queue, sessions, engineers' presence and
offers: the same objects the desk changes) and keeps what it has told whom; the desk tells
it when the queue or the engineers changed, and asks it what to send.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Any

from .arrivals import ArrivalRate
from .board import grid, waits_wire
from .clock import Clock
from .effects import (
    CUSTOMER_NS,
    ENGINEER_NS,
    ENGINEERS_ROOM,
    QUEUE_ROOM,
    Effects,
    Outbound,
    queue_membership,
)
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
)

# The wait table is recomputed at least every twentieth of a handle time while customers
# wait (chats in progress age, and so do the customers' chances), within these bounds in
# seconds (docs/waits.md).
WAIT_TABLE_AGE = (0.05, 5.0)
# Board deliveries (one per waiting customer) per second at most, on average.
BOARD_SENDS_PER_SECOND = 7000


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
        # The board (board.py): its number, what changed since it was sent, what it said.
        self.board = 0
        self._left: list[int] = []
        self._back: list[int] = []
        self._board_dirty = False
        self._board_sent_at = float("-inf")
        self._board_said: tuple[list[Wait] | None, int] | None = None
        self._queue_sent: tuple[int, str | None] | None = None
        self._queue_sent_at = float("-inf")
        # The longest predicted wait's part that does not move with the clock, for the table
        # and the queue (length, head) it was computed for.
        self._longest: tuple[WaitTable, tuple[int, str], float] | None = None

    def engineers_online(self) -> int:
        return sum(1 for p in self.engineers.values() if p.online)

    # ------------------------------------------------------------------ told by the desk

    def insert(self, session: Session, fx: Effects | None = None) -> int:
        """Put a session into the queue in arrival order; its index. One that does not land
        at the tail (it came back to its place) moves everyone behind it: the next board
        says so. One at the tail changes nobody's place or wait ahead. With ``fx``, the
        customer's connections are put in the board's room (a new chat's are put there as
        it is answered, by the socket layer)."""
        keys = self.queue
        i = bisect_left(keys, session.arrival_key, key=lambda s: s.arrival_key)
        keys.insert(i, session)
        if i < len(keys) - 1:
            self._back.append(session.arrival_seq)
            self._board_dirty = True
        if fx is not None:
            fx.append(queue_membership(session.id, True))
        return i

    def remove(self, session: Session, fx: Effects) -> None:
        """Take a session out of the queue (answered or gone); the next board says so, and
        its customer's connections leave the board's room."""
        i = self.index(session)
        if i is not None:
            del self.queue[i]
        self._left.append(session.arrival_seq)
        self._board_dirty = True
        self.forget(session.id)
        fx.append(queue_membership(session.id, False))

    def index(self, session: Session) -> int | None:
        """Where a queued session stands (0 is next), in O(log n): the queue is kept in
        arrival order."""
        i = bisect_left(self.queue, session.arrival_key, key=lambda s: s.arrival_key)
        if i < len(self.queue) and self.queue[i] is session:
            return i
        return None

    def stale(self) -> None:
        """Offers changed: the waits are recomputed when next asked for."""
        self._waits = None

    def forget(self, session_id: str) -> None:
        """The session left the queue (answered or ended)."""
        self._told.pop(session_id, None)

    def board_seen(self) -> list[int]:
        """How many of the next board's changes (left, back) have happened already: a
        position told now counts them (board.py)."""
        return [len(self._left), len(self._back)]

    def told_on_joining(self, session: Session, now: float) -> tuple[int | None, Wait | None]:
        """The position and wait a customer who just asked is told (in the answer); what
        the model said is kept to calibrate the ranges once they are answered."""
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
        i = self.index(session)
        return None if i is None else i + 1

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
        # changes only with the table or the queue, not with every tick. It is taken at
        # the board's grid of positions (every one up to 30, then about every tenth) and
        # the tail, not at every position: O(log n) for any length of queue.
        key = (len(self.queue), self.queue[0].id)
        if self._longest is None or self._longest[0] is not table or self._longest[1] != key:
            n = len(self.queue)
            at = {min(p, n) for p in grid(n)}
            self._longest = (table, key, max(
                table.at(p).seconds - self.queue[p - 1].created_at for p in at
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
        """Slots or offers changed: waits are recomputed and customers told."""
        self._board_dirty = True
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

    def flush_board(self, now: float, fx: Effects) -> None:
        """Send the next board to every waiting customer when the queue changed ahead of
        someone, or the waits or the engineers online changed enough to tell (news), at
        most once per ``position_interval``. Its cost does not grow with the queue past
        the grid of positions (board.py): one payload, encoded once for everyone."""
        if not self.queue:
            # Nobody waits to be told; the changes still count for whoever joins next.
            if self._left or self._back:
                self._next_board()
            return
        # One board reaches every waiting customer: past a few thousand, boards come a
        # little less often, so that telling them stays a bounded share of the server's
        # time (at 10,000 waiting, one every 1.4 s: within the 2.5 s customers are promised).
        interval = max(self.settings.position_interval, len(self.queue) / BOARD_SENDS_PER_SECOND)
        if now - self._board_sent_at < interval:
            return
        positions = grid(len(self.queue))
        table = self.wait_table()
        waits = [table.at(p) for p in positions] if table is not None else None
        online = self.engineers_online()
        said = self._board_said
        if (
            not self._board_dirty and said is not None and said[1] == online
            and not _waits_moved(said[0], waits, self.observed.unit())
        ):
            return
        payload: dict[str, Any] = {
            "v": self.board + 1,
            "length": len(self.queue),
            "left": list(self._left),
            "back": list(self._back),
            "engineers_online": online,
            "waits": waits_wire(positions, waits) if waits is not None else None,
        }
        self._next_board()
        self._board_sent_at = now
        self._board_said = (waits, online)
        fx.append(Outbound(CUSTOMER_NS, QUEUE_ROOM, "queue:board", payload))

    def _next_board(self) -> None:
        self.board += 1
        self._left.clear()
        self._back.clear()
        self._board_dirty = False


def _waits_moved(before: list[Wait] | None, after: list[Wait] | None, least: float) -> bool:
    """Whether a board's waits differ enough from the last board's to be told (news). Only
    the lines both boards have count: a longer queue only adds lines past the last one, for
    customers who joined since and were told their wait as they joined (a queue's grid is
    a prefix of a longer queue's), and a shorter one follows departures, which are news
    anyway. So a crowd joining at the tail costs no board for those already waiting."""
    if before is None or after is None:
        return before is not after
    return any(news(a, b, least) for a, b in zip(before, after, strict=False))
