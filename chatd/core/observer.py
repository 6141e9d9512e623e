"""What the desk reports as it works, for metrics and alert notifications (docs/monitoring.md).

The desk calls a ``DeskObserver`` at the moments that matter for the service level; the
observer must not block or raise (it runs under the desk's lock). The core only knows
this protocol: Prometheus and webhooks live outside it (chatd/metrics.py,
chatd/alert_webhook.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .models import EndReason, Session, SessionState

# The values of chatd_offers_total{result}: an offer ends one of these ways. "withdrawn"
# covers the desk taking it back (the engineer went away or offline, the customer left).
OFFER_RESULTS = ("accepted", "declined", "expired", "withdrawn")
# The values of chatd_sessions_total{outcome}: "answered" when first accepted, then one of
# the others when the session closes.
SESSION_OUTCOMES = ("answered", "ended", "abandoned", "cancelled")


class DeskObserver(Protocol):
    def session_requested(self, session: Session) -> None:
        """A customer joined the queue."""
        ...

    def session_answered(self, session: Session) -> None:
        """An engineer accepted the session for the first time (``first_assigned_at`` is
        set). Called once per session: one back in the queue is not answered twice."""
        ...

    def session_closed(self, session: Session) -> None:
        """The session ended or was abandoned (``ended_at`` and ``state`` are set)."""
        ...

    def offer_resolved(self, result: str) -> None:
        """An offer ended: one of OFFER_RESULTS."""
        ...

    def message_stored(self, role: str) -> None:
        """A message sent by a person was stored: role customer, engineer or lead."""
        ...

    def queue_alert(self, alert: dict[str, Any]) -> None:
        """The oldest wait crossed a threshold (the payload of ``queue:alert``)."""
        ...


def outcome(session: Session) -> str:
    """How a closed session counts in chatd_sessions_total."""
    if session.state is SessionState.ENDED:
        return "ended"
    if session.end_reason is EndReason.CANCELLED:
        return "cancelled"
    return "abandoned"


def answer_wait(session: Session) -> float | None:
    """Seconds from the request to the first answer; None while unanswered."""
    if session.first_assigned_at is None:
        return None
    return max(0.0, session.first_assigned_at - session.created_at)


def abandon_wait(session: Session) -> float | None:
    """Seconds a customer waited before leaving unanswered; None if the session was ever
    answered (a chat back in the queue whose customer leaves was still answered once)."""
    if (
        session.state is not SessionState.ABANDONED
        or session.first_assigned_at is not None
        or session.ended_at is None
    ):
        return None
    return max(0.0, session.ended_at - session.created_at)


class NullObserver:
    """The default: the desk reports to nobody."""

    def session_requested(self, session: Session) -> None:
        return None

    def session_answered(self, session: Session) -> None:
        return None

    def session_closed(self, session: Session) -> None:
        return None

    def offer_resolved(self, result: str) -> None:
        return None

    def message_stored(self, role: str) -> None:
        return None

    def queue_alert(self, alert: dict[str, Any]) -> None:
        return None


class Observers:
    """Several observers as one, called in order. One that raises is a bug; it must not
    keep the desk from working, so the others are still told and the error is dropped
    after being handed to ``on_error``."""

    def __init__(
        self, *observers: DeskObserver, on_error: Callable[[Exception], None] | None = None
    ) -> None:
        self.observers = list(observers)
        self.on_error = on_error

    def _each(self, name: str, *args: Any) -> None:
        for o in self.observers:
            try:
                getattr(o, name)(*args)
            except Exception as exc:  # an observer must never break a chat
                if self.on_error is not None:
                    self.on_error(exc)

    def session_requested(self, session: Session) -> None:
        self._each("session_requested", session)

    def session_answered(self, session: Session) -> None:
        self._each("session_answered", session)

    def session_closed(self, session: Session) -> None:
        self._each("session_closed", session)

    def offer_resolved(self, result: str) -> None:
        self._each("offer_resolved", result)

    def message_stored(self, role: str) -> None:
        self._each("message_stored", role)

    def queue_alert(self, alert: dict[str, Any]) -> None:
        self._each("queue_alert", alert)
