"""A chat's moves between the queue and the engineers: assigning it when an offer is
accepted, completing a transfer, putting an absent engineer's chats back in the queue,
ending a chat, and telling both sides of a ticket filed after the end.

``Assignment`` changes the desk's live state (the same objects the desk holds), storing
each change before reporting it, and is called by the desk under its lock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .clock import Clock
from .effects import (
    CUSTOMER_NS,
    ENGINEER_NS,
    Effects,
    Outbound,
    customer_room,
    ended_payload,
    engineer_room,
    relay,
    relay_end,
)
from .messages import Messages
from .models import QUEUED_STATES, EndReason, Engineer, Session, SessionState
from .observer import DeskObserver
from .offers import OfferBook
from .ports import DeskStore
from .presence import Offer, Presence
from .queue import QueueView
from .settings import DeskSettings

# How many ended sessions are kept in memory, so that events about them answer
# session_closed without a database read.
_RECENTLY_CLOSED = 10_000


class Assignment:
    def __init__(
        self,
        store: DeskStore,
        clock: Clock,
        settings: DeskSettings,
        observer: DeskObserver,
        view: QueueView,
        *,
        sessions: dict[str, Session],
        queue: list[Session],
        engineers: dict[str, Presence],
        customer_conns: dict[str, int],
        customer_gone: dict[str, float],
        recently_closed: OrderedDict[str, Session],
        open_of_customer: dict[str, Session],
        offer_book: OfferBook,
        messages: Messages,
        presence: Callable[[Engineer, float], Presence],
    ) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.observer = observer
        self.view = view
        self.observed = view.observed  # what the waits are learnt from
        # The desk's own state, shared.
        self.sessions = sessions
        self.queue = queue  # waiting and offered, in arrival order
        self.engineers = engineers
        self.customer_conns = customer_conns
        self.customer_gone = customer_gone  # session id -> end of the customer's grace
        self.recently_closed = recently_closed
        self.open_of_customer = open_of_customer  # customer id -> their open chat
        self.offer_book = offer_book
        self.offers = offer_book.offers
        self.declined = offer_book.declined
        self.messages = messages  # for the system messages each move writes
        self.presence = presence  # an engineer's presence, made on first sight

    async def assign(
        self, session: Session, offer: Offer, engineer: Engineer, now: float, fx: Effects
    ) -> None:
        previous = (session.state, session.engineer, session.assigned_at,
                    session.first_assigned_at)
        session.state = SessionState.ACTIVE
        session.engineer = engineer
        session.assigned_at = now
        if session.first_assigned_at is None:
            session.first_assigned_at = now
        note = self.messages.system_message(
            session.id,
            f"{engineer.name} joined the chat",
            {"type": "assigned", "engineer": engineer.ref()},
        )
        try:
            msg = await self.store.assign_session(
                session, (SessionState.OFFERED.value, SessionState.WAITING.value), note
            )
        except Exception:
            (session.state, session.engineer, session.assigned_at,
             session.first_assigned_at) = previous
            raise
        if previous[3] is None:
            self.observer.session_answered(session)
            self.observed.left_queue(now - session.created_at, abandoned=False)
            self.observed.started(session.id, now)
            self.view.answered(session, now)
        self.observed.accepted(now - offer.made_at)
        self.offers.pop(session.id, None)
        self.declined.pop(session.id, None)
        self.view.remove(session, fx)
        self.customer_gone.pop(session.id, None)
        self.view.changed()
        self._taken_on(session, engineer, now, fx)
        if msg is not None:
            relay(session, msg, fx)

    async def complete_transfer(
        self, session: Session, offer: Offer, engineer: Engineer, now: float, fx: Effects
    ) -> None:
        old = session.engineer
        session.engineer = engineer
        session.assigned_at = now
        names = f"{old.name if old else 'nobody'} to {engineer.name}"
        note = self.messages.system_message(
            session.id,
            f"The chat was transferred from {names}",
            {
                "type": "transferred",
                "from": old.ref() if old else None,
                "to": engineer.ref(),
            },
        )
        try:
            msg = await self.store.assign_session(session, (SessionState.ACTIVE.value,), note)
        except Exception:
            session.engineer = old
            raise
        self.offers.pop(session.id, None)
        assigned = self._taken_on(session, engineer, now, fx)
        if old is not None:
            prev = self.engineers.get(old.id)
            if prev is not None:
                prev.active.discard(session.id)
            fx.append(
                Outbound(ENGINEER_NS, engineer_room(old.id), "session:assigned", assigned)
            )
        if msg is not None:
            relay(session, msg, fx)
            if old is not None:
                fx.append(
                    Outbound(
                        ENGINEER_NS,
                        engineer_room(old.id),
                        "message:new",
                        {"session_id": session.id, "message": msg.to_wire()},
                    )
                )

    async def requeue_all(self, p: Presence, now: float, fx: Effects) -> None:
        """An engineer stayed away past the grace period: their chats go back to the head of
        the queue, each in its original arrival place (docs/protocol.md#grace-periods)."""
        for sid in sorted(p.active):
            session = self.sessions.get(sid)
            p.active.discard(sid)
            if session is None or session.state is not SessionState.ACTIVE:
                continue
            # A transfer still on offer would be accepted against a chat no longer active
            # (the store refuses it); withdraw it so the chat is offered afresh below.
            self.offer_book.revoke(sid, "requeued", fx)
            gone = session.engineer
            self.observed.dropped(sid)
            session.state = SessionState.WAITING
            session.engineer = None
            session.assigned_at = None
            await self.store.save_session_state(session)
            self.view.insert(session, fx)
            self.view.forget(session.id)
            self.view.changed()
            if self.customer_conns.get(sid, 0) == 0:
                self.customer_gone[sid] = now + self.settings.grace
            msg, _ = await self.store.append_message(
                self.messages.system_message(
                    sid,
                    f"{gone.name if gone else 'Your engineer'} was disconnected. You are back "
                    "at the front of the queue and the next engineer will take over.",
                    {"type": "requeued", "engineer": gone.ref() if gone else None},
                )
            )
            relay(session, msg, fx)
            fx.append(
                Outbound(
                    ENGINEER_NS,
                    engineer_room(p.engineer.id),
                    "session:requeued",
                    {"session_id": sid},
                )
            )

    def _taken_on(
        self, session: Session, engineer: Engineer, now: float, fx: Effects
    ) -> dict[str, Any]:
        """``engineer`` has the chat now: their presence counts it, and both sides are told
        (``session:assigned``, whose payload is returned)."""
        p = self.presence(engineer, now)
        p.offers.discard(session.id)
        p.active.add(session.id)
        p.last_assigned_at = now
        assigned = {"session_id": session.id, "engineer": engineer.ref()}
        fx.append(Outbound(CUSTOMER_NS, customer_room(session.id), "session:assigned", assigned))
        fx.append(
            Outbound(ENGINEER_NS, engineer_room(engineer.id), "session:assigned", assigned)
        )
        return assigned

    async def end(
        self,
        session: Session,
        state: SessionState,
        reason: EndReason,
        ended_by: str,
        fx: Effects,
        text: str,
    ) -> None:
        now = self.clock.now()
        before = (session.state, session.ended_at, session.ended_by, session.end_reason)
        was_queued = session.state in QUEUED_STATES
        answered = session.state is SessionState.ACTIVE
        session.state = state
        session.ended_at = now
        session.ended_by = ended_by
        session.end_reason = reason
        note = self.messages.system_message(
            session.id, text, {"type": "ended", "reason": reason.value, "by": ended_by}
        )
        try:
            msg = await self.store.end_session(session, note, self.settings.handoff_backends)
        except Exception:
            session.state, session.ended_at, session.ended_by, session.end_reason = before
            raise
        self.observer.session_closed(session)
        offer = self.offers.get(session.id)
        if offer is not None:
            self.offer_book.revoke(session.id, "ended", fx)
        del self.sessions[session.id]
        if self.open_of_customer.get(session.customer.id) is session:
            del self.open_of_customer[session.customer.id]
        self.recently_closed[session.id] = session
        if len(self.recently_closed) > _RECENTLY_CLOSED:
            self.recently_closed.popitem(last=False)
        self.declined.pop(session.id, None)
        self.customer_gone.pop(session.id, None)
        self.view.forget(session.id)
        if was_queued:
            self.view.remove(session, fx)
            self.view.changed()
        if session.engineer is not None:
            p = self.engineers.get(session.engineer.id)
            if p is not None:
                p.active.discard(session.id)
        if was_queued and session.first_assigned_at is None:
            self.observed.left_queue(now - session.created_at, abandoned=True)
        if answered and session.assigned_at is not None:
            self.observed.ended(session.id, now)
            self.view.changed()
        relay_end(session, msg, answered, fx)

    async def ticket_known(self, session_id: str) -> Effects:
        """A ticket was filed for an ended session (docs/handoff.md#the-ticket-reference):
        ``session:ended`` again, now with ``ticket``, to its customer and engineer."""
        session = await self.store.get_session(session_id)
        if session is None or session.ticket is None or session.is_open:
            return []
        ended = ended_payload(session)
        fx = [Outbound(CUSTOMER_NS, customer_room(session.id), "session:ended", ended)]
        if session.engineer is not None:
            room = engineer_room(session.engineer.id)
            fx.append(Outbound(ENGINEER_NS, room, "session:ended", ended))
        return fx
