"""Offers on the desk: the matching step that makes them, and their withdrawal and expiry
(docs/protocol.md#matching-and-offers).

``OfferBook`` changes the desk's live state (the queue, sessions, engineers' presence,
offers and who declined what: the same objects the desk holds) and is called by the desk
under its lock. The waiting/offered flips it makes synchronously are stored by
``persist``, which the desk awaits after each matching step.
"""

from __future__ import annotations

from typing import Any

from .clock import Clock
from .effects import ENGINEER_NS, Effects, Outbound, engineer_room
from .matching import choose_engineer
from .models import QUEUED_STATES, EngineerStatus, Session, SessionState
from .observer import DeskObserver
from .ports import DeskStore
from .presence import Offer, Presence
from .queue import QueueView
from .settings import DeskSettings


class OfferBook:
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
        offers: dict[str, Offer],
        declined: dict[str, set[str]],
    ) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.observer = observer
        self.view = view
        # The desk's own state, shared.
        self.sessions = sessions
        self.queue = queue  # waiting and offered, in arrival order
        self.engineers = engineers
        self.offers = offers  # by session id
        self.declined = declined  # session id -> engineers who declined or let it expire
        self._unsaved: set[str] = set()  # sessions whose waiting/offered flip is not stored

    def offer_payload(self, offer: Offer, now: float) -> dict[str, Any]:
        session = self.sessions[offer.session_id]
        payload: dict[str, Any] = {
            "session_id": session.id,
            "customer": session.customer.to_wire(),
            "topic": session.topic,
            "severity": session.severity,
            "waited_seconds": round(now - session.created_at, 1),
            "expires_in_seconds": round(max(0.0, offer.expires_at - now), 1),
        }
        if offer.transfer_from is not None:
            src = self.engineers.get(offer.transfer_from)
            payload["transfer_from"] = (
                src.engineer.ref() if src else {"id": offer.transfer_from, "name": ""}
            )
        return payload

    def make_offer(
        self,
        session: Session,
        p: Presence,
        now: float,
        fx: Effects,
        transfer_from: str | None = None,
    ) -> None:
        offer = Offer(
            session_id=session.id,
            engineer_id=p.engineer.id,
            made_at=now,
            expires_at=now + self.settings.offer_timeout,
            transfer_from=transfer_from,
        )
        self.offers[session.id] = offer
        p.offers.add(session.id)
        self.view.stale()
        p.last_offered_at = now
        if transfer_from is None:
            session.state = SessionState.OFFERED
            self._unsaved.add(session.id)
        fx.append(
            Outbound(
                ENGINEER_NS,
                engineer_room(p.engineer.id),
                "offer:new",
                self.offer_payload(offer, now),
            )
        )

    async def persist(self, fx: Effects) -> None:
        """Store the waiting/offered flips made by the synchronous matching step."""
        while self._unsaved:
            session = self.sessions.get(self._unsaved.pop())
            if session is not None and session.state in QUEUED_STATES:
                await self.store.save_session_state(session)

    def match(self, now: float, fx: Effects) -> None:
        """Offer the oldest un-offered waiting session to the longest-idle eligible engineer,
        until either runs out (docs/protocol.md#matching-and-offers)."""
        if not self.queue:
            return
        eligible = [p for p in self.engineers.values() if p.eligible]
        if not eligible:
            return
        for session in self.queue:
            if not eligible:
                break
            if session.state is not SessionState.WAITING or session.id in self.offers:
                continue
            chosen = choose_engineer(eligible, self.declined.get(session.id, set()))
            self.make_offer(session, chosen, now, fx)
            if not chosen.eligible:
                eligible.remove(chosen)

    def revoke(self, session_id: str, reason: str, fx: Effects) -> Offer | None:
        offer = self.offers.pop(session_id, None)
        if offer is None:
            return None
        self.view.stale()
        self.observer.offer_resolved(reason if reason in ("declined", "expired") else "withdrawn")
        p = self.engineers.get(offer.engineer_id)
        if p is not None:
            p.offers.discard(session_id)
        session = self.sessions.get(session_id)
        if offer.transfer_from is None and session is not None:
            if session.state is SessionState.OFFERED:
                session.state = SessionState.WAITING
                self._unsaved.add(session_id)
        fx.append(
            Outbound(
                ENGINEER_NS,
                engineer_room(offer.engineer_id),
                "offer:revoked",
                {"session_id": session_id, "reason": reason},
            )
        )
        if offer.transfer_from is not None and reason != "ended":
            fx.append(
                Outbound(
                    ENGINEER_NS,
                    engineer_room(offer.transfer_from),
                    "transfer:failed",
                    {
                        "session_id": session_id,
                        "to_engineer_id": offer.engineer_id,
                        "reason": reason,
                    },
                )
            )
        return offer

    def expire(self, offer: Offer, fx: Effects) -> None:
        if self.offers.get(offer.session_id) is not offer:
            # Already withdrawn in this tick: an earlier expiry set the engineer away.
            return
        self.revoke(offer.session_id, "expired", fx)
        self.declined.setdefault(offer.session_id, set()).add(offer.engineer_id)
        p = self.engineers.get(offer.engineer_id)
        if p is None:
            return
        p.set_status(EngineerStatus.AWAY, self.clock.now())
        for sid in list(p.offers):
            self.revoke(sid, "engineer_away", fx)
        fx.append(
            Outbound(
                ENGINEER_NS,
                engineer_room(p.engineer.id),
                "engineer:status",
                {**p.to_wire(), "reason": "offer_expired"},
            )
        )
        self.view.changed()
