"""Which events of a Socket.IO connection are taken up (docs/security.md#limits).

Before an event costs anything, :class:`Admission` checks the connection's event allowance
(``event_rate``, ``event_burst``; the costly events take more of it, ``EVENT_COST``) and,
for ``session:resume``, the server-wide history budget, counted in messages. A connection
that goes on sending past ``event_refusals_max`` refusals in a row is closed, through the
``close`` it is given (chatd.web.sockets: the Engine.IO connection, every namespace on it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.clock import Clock
from ..core.models import Message
from ..core.ratelimit import EventBucket, TokenBucket

# Events that cost the server much more than the rest (a database read and up to a page of
# history, or the whole desk) take more of a connection's event allowance: with the
# defaults, 4 resumes a second (12 at once) and 10 snapshots a second.
EVENT_COST = {"session:resume": 5.0, "queue:snapshot": 2.0}
# A message of history counts once per this many characters of its body begun, against the
# server-wide history budget.
HISTORY_UNIT = 4096


def error_answer(code: str, message: str, **details: Any) -> dict[str, Any]:
    """An event's error answer (docs/protocol.md#the-error-object)."""
    err: dict[str, Any] = {"code": code, "message": message}
    if details:
        err["details"] = details
    return {"ok": False, "error": err}


class Admission:
    """The event allowances of one namespace's connections, and the history budget (one
    for the whole server: give both namespaces the same, ``history_budget``)."""

    def __init__(
        self, clock: Clock, *, event_rate: float, event_burst: int, refusals_max: int,
        history_messages_rate: float, close: Callable[[str], None],
    ) -> None:
        self.clock = clock
        self.event_rate = event_rate
        self.event_burst = event_burst
        self.refusals_max = refusals_max
        self.close = close
        self.buckets: dict[str, EventBucket] = {}
        # Bursts of twice the rate: after a restart every client asks for what it missed
        # at once, and a smaller burst answers many of them "busy" for nothing.
        self.history_budget = TokenBucket(clock, history_messages_rate, 2 * history_messages_rate)

    def opened(self, sid: str) -> None:
        self.buckets[sid] = EventBucket(self.clock, self.event_rate, self.event_burst)

    def closed(self, sid: str) -> None:
        self.buckets.pop(sid, None)

    def refuse(self, sid: str, event: Any) -> dict[str, Any] | None:
        """None when ``event`` of ``sid`` may go on; else the answer that refuses it."""
        bucket = self.buckets.get(sid)
        if bucket is None:
            return error_answer("unauthorized", "not connected")
        if not bucket.take(EVENT_COST.get(event, 1) if isinstance(event, str) else 1):
            if bucket.refused > self.refusals_max:
                # Told again and again, and still sending: a flood, not a client that
                # waits. Each refusal costs a decode and an answer; the close costs one.
                self.close(sid)
            return error_answer("rate_limited", "too many events; slow down")
        if event == "session:resume" and not self.history_budget.take():
            # Server-wide: a crowd of connections cannot make the server read and encode
            # more history than this, whatever each of them may. A page costs a message
            # here, the rest of its messages once read (charge_history).
            return error_answer("rate_limited", "the server is busy; ask again in a second")
        return None

    def charge_history(self, messages: list[Message]) -> None:
        """Charge what a page of history cost beyond the message its event paid for: a
        message counts once per HISTORY_UNIT characters of its body begun (reading and
        encoding a long one costs as much as a few short ones)."""
        cost = sum(1 + max(0, len(m.body) - 1) // HISTORY_UNIT for m in messages)
        if cost > 1:
            self.history_budget.charge(cost - 1)
