"""The support desk: one first-come-first-served queue, offers, sessions and messages.

The desk owns the live state of the queue and of engineers' presence, persists every change
through a ``Store`` before reporting it, and returns what must be told to whom as a list of
``Outbound`` values; it never touches a socket. Rules: docs/design.md#matching.

Concurrency: changes to the queue, offers and presence run under one asyncio lock, so that
every matching decision sees a consistent desk. Sending a message does not take the lock:
the store's single writer orders messages and assigns their seq.
"""

from __future__ import annotations

import asyncio
import hmac
from bisect import insort
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from . import ids
from .alerts import QueueAlerts
from .clock import Clock
from .effects import CUSTOMER_NS as CUSTOMER_NS
from .effects import ENGINEER_NS as ENGINEER_NS
from .effects import ENGINEERS_ROOM as ENGINEERS_ROOM
from .effects import Effects as Effects
from .effects import Outbound as Outbound
from .effects import customer_room as customer_room
from .effects import ended_payload, relay, relay_end, to_other_side
from .effects import engineer_room as engineer_room
from .errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    SessionClosed,
    TooLarge,
    Unauthorized,
)
from .ids import RandomIds as RandomIds
from .ids import hash_token as hash_token
from .ids import new_token as new_token
from .matching import choose_engineer
from .models import (
    MAX_TEXT_LENGTH,
    QUEUED_STATES,
    SYSTEM_SENDER,
    Customer,
    EndReason,
    Engineer,
    EngineerStatus,
    Message,
    MessageKind,
    NewMessage,
    Sender,
    Session,
    SessionState,
    Tier,
)
from .observer import DeskObserver, NullObserver
from .ports import DeskStore
from .presence import Offer, Presence
from .queue import QueueView
from .settings import DeskSettings as DeskSettings
from .stats import LiveDesk
from .waits import WaitTable

# The names above imported "as" themselves are re-exported: other modules long imported
# them from here; they now live beside it (effects.py, ids.py, settings.py).

# Characters a message's wire form takes besides its body (ids, sender, times), roughly.
_MESSAGE_FRAMING = 300
# How far below the chat cap the desk's own count of a chat's messages is trusted without
# asking the store (it does not see every system message).
_CAP_SLACK = 64

Actor = Customer | Engineer


class ResumeTokenExpired(Unauthorized):
    """The right resume token of a chat that closed longer ago than its lifetime. The code
    stays ``unauthorized``; the type lets paths that hide whether something exists still
    say why a token they recognised stopped working."""


class Desk:
    def __init__(
        self,
        store: DeskStore,
        clock: Clock,
        settings: DeskSettings | None = None,
        *,
        new_id: Callable[[], str] = ids.new_id,
        new_token: Callable[[], str] = ids.new_token,
        observer: DeskObserver | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings or DeskSettings()
        self.observer: DeskObserver = observer or NullObserver()
        self.alerts = QueueAlerts(self.settings.wait_warning, self.settings.wait_target,
                                  self.observer)
        self._new_id = new_id
        self._new_token = new_token  # resume tokens (stored as their hash)
        self._lock = asyncio.Lock()
        self._sessions: dict[str, Session] = {}
        self._queue: list[Session] = []  # waiting and offered, in arrival order
        self._offers: dict[str, Offer] = {}
        self._declined: dict[str, set[str]] = {}
        self._engineers: dict[str, Presence] = {}
        self._customer_conns: dict[str, int] = {}
        self._customer_gone: dict[str, float] = {}
        self._arrival_seq = 0
        self.view = QueueView(self.settings, clock, self._queue, self._sessions,
                              self._engineers, self._offers)
        self.observed = self.view.observed  # what the waits are learnt from
        self.arrivals = self.view.arrivals
        self._unsaved: set[str] = set()  # sessions whose waiting/offered flip is not stored
        # Recently ended sessions, so that events about them answer session_closed without a
        # database read (bounded: older ones fall back to the store where that is async).
        self._recently_closed: OrderedDict[str, Session] = OrderedDict()
        # The highest seq seen per open chat (a lower bound: system messages are not
        # counted here), so that the chat cap reads the store only near the cap.
        self._seq_seen: dict[str, int] = {}

    # ------------------------------------------------------------------ start-up

    async def restore(self) -> Effects:
        """Rebuild the live desk from the store after a (re)start.

        Nobody is connected yet: waiting customers and engineers with chats get their grace
        period from now, and offers in flight when the process stopped are withdrawn.
        """
        async with self._lock:
            now = self.clock.now()
            self._arrival_seq = await self.store.next_arrival_seq()
            for t in reversed(
                await self.store.recent_handle_times(now - 86_400, self.settings.handle_history)
            ):
                self.observed.handled(t)
            for session in await self.store.open_sessions():
                self._sessions[session.id] = session
                if session.state is SessionState.OFFERED:
                    session.state = SessionState.WAITING
                    await self.store.save_session_state(session)
                if session.state is SessionState.WAITING:
                    insort(self._queue, session, key=lambda s: s.arrival_key)
                    self._customer_gone[session.id] = now + self.settings.grace
                elif session.engineer is not None:
                    p = self._presence(session.engineer, now)
                    p.active.add(session.id)
                    p.gone_deadline = now + self.settings.grace
            self.view.changed()
            return []

    # ------------------------------------------------------------------ customers

    async def request_chat(
        self,
        customer: Customer,
        topic: str,
        severity: int = 3,
        message: str | None = None,
        client_msg_id: str | None = None,
        request_id: str | None = None,
    ) -> tuple[dict[str, Any], str, Effects]:
        """Queue a new chat. Returns the session (with position), its resume token, effects.

        A retry of a request (same customer, same ``request_id``) whose chat is still open
        answers that chat again, with a fresh resume token (the earlier one stops working):
        the customer may never have received the first answer."""
        topic = topic.strip()
        if not topic:
            raise BadRequest("topic must not be empty")
        if message is not None and not message.strip():
            message = None
        async with self._lock:
            for s in self._sessions.values():
                if s.customer.id == customer.id:
                    if request_id is not None and s.request_id == request_id:
                        return await self._answer_again(s)
                    raise Conflict(
                        "you already have an open chat; resume it or end it first",
                        session_id=s.id,
                    )
            now = self.clock.now()
            self.arrivals.observe(now)
            self._arrival_seq += 1
            session = Session(
                id=self._new_id(),
                state=SessionState.WAITING,
                topic=topic,
                severity=severity,
                customer=customer,
                created_at=now,
                arrival_seq=self._arrival_seq,
                request_id=request_id,
            )
            token = self._new_token()
            first = None
            if message is not None:
                first = NewMessage(
                    id=self._new_id(),
                    session_id=session.id,
                    ts=now,
                    sender=_customer_sender(customer),
                    kind=MessageKind.TEXT,
                    body=message,
                    client_msg_id=client_msg_id,
                )
            await self.store.create_session(session, hash_token(token), first)
            self.observer.session_requested(session)
            self._sessions[session.id] = session
            insort(self._queue, session, key=lambda s: s.arrival_key)
            self.view.joined()
            fx: Effects = []
            self._match(now, fx)
            await self._persist_offers(fx)
            position, estimate = self.view.told_on_joining(session, now)
            self.view.flush_queue_update(now, fx)
            wire = session.to_wire(position=position, estimate=estimate)
            return wire, token, fx

    async def _answer_again(self, session: Session) -> tuple[dict[str, Any], str, Effects]:
        token = self._new_token()
        if not await self.store.set_resume_token_hash(session.id, hash_token(token)):
            raise SessionClosed("the session has ended")  # pragma: no cover - ended meanwhile
        position = self.view.position(session)
        wire = session.to_wire(position=position, estimate=self.view.estimate(position))
        return wire, token, []

    async def verify_resume_token(self, session_id: str, token: str) -> Session:
        """The session a resume token opens: its chat while open, and for
        ``resume_token_ttl`` seconds after it closed; Unauthorized otherwise.

        Every path that accepts a resume token comes through here, so that a token copied
        out of a browser stops being worth anything a bounded time after its chat."""
        stored = await self.store.resume_token_hash(session_id)
        if stored is None or not hmac.compare_digest(stored, hash_token(token)):
            raise Unauthorized("invalid session id or resume token")
        session = self._sessions.get(session_id) or await self.store.get_session(session_id)
        if session is None:  # pragma: no cover - a token exists only with its session
            raise Unauthorized("invalid session id or resume token")
        if not session.is_open:
            closed_at = session.ended_at if session.ended_at is not None else session.created_at
            if self.clock.now() >= closed_at + self.settings.resume_token_ttl:
                raise ResumeTokenExpired(
                    "this chat's resume token has expired; start a new chat"
                )
        return session

    def customer_connected(self, session_id: str) -> None:
        self._customer_conns[session_id] = self._customer_conns.get(session_id, 0) + 1
        self._customer_gone.pop(session_id, None)

    def customer_disconnected(self, session_id: str) -> None:
        n = self._customer_conns.get(session_id, 0) - 1
        if n > 0:
            self._customer_conns[session_id] = n
            return
        self._customer_conns.pop(session_id, None)
        session = self._sessions.get(session_id)
        if session is not None and session.state in QUEUED_STATES:
            self._customer_gone[session_id] = self.clock.now() + self.settings.grace

    async def escalate(
        self,
        customer: Customer,
        session_id: str,
        kind: str,
        phone: str | None,
        note: str | None,
    ) -> tuple[Message, Effects]:
        session = self._open_session_for(customer, session_id)
        if kind == "phone":
            if customer.tier is Tier.STANDARD:
                raise Forbidden("phone calls are part of the premier and concierge tiers")
            if not phone:
                raise BadRequest("phone: a number to call is required for a phone call")
            text = f"{customer.name} asked for a phone call at {phone}"
        else:
            text = f"{customer.name} asked for a screen share"
        if note:
            text += f": {note}"
        event: dict[str, Any] = {"type": "escalation", "kind": kind}
        if phone:
            event["phone"] = phone
        if note:
            event["note"] = note
        await self._check_room(session.id)
        msg, _ = await self.store.append_message(
            self._system_message(session.id, text, event, sender=_customer_sender(customer))
        )
        self._saw_seq(session.id, msg.seq)
        self.observer.message_stored(msg.sender.role)
        fx: Effects = []
        relay(session, msg, fx)
        return msg, fx

    # ------------------------------------------------------------------ both sides

    async def send_message(
        self, actor: Actor, session_id: str, client_msg_id: str, body: str
    ) -> tuple[Message, bool, Effects]:
        """Store a text message, then relay it. A retried client_msg_id returns the stored
        message and relays nothing."""
        if not body.strip():
            raise BadRequest("body must not be empty")
        if len(body) > MAX_TEXT_LENGTH:
            raise BadRequest(f"body is longer than {MAX_TEXT_LENGTH} characters")
        session = self._sessions.get(session_id)
        if session is None:
            await self._raise_closed_or_missing(actor, session_id)
            raise AssertionError("unreachable")
        self._authorize(actor, session)
        if isinstance(actor, Engineer) and session.state is not SessionState.ACTIVE:
            raise Conflict("the session is not assigned yet")
        if (again := await self._check_room(session_id, actor, client_msg_id)) is not None:
            return again, False, []
        msg, created = await self.store.append_message(
            NewMessage(
                id=self._new_id(),
                session_id=session_id,
                ts=self.clock.now(),
                sender=_sender(actor),
                kind=MessageKind.TEXT,
                body=body,
                client_msg_id=client_msg_id,
            )
        )
        self._saw_seq(session_id, msg.seq)
        fx: Effects = []
        if created:
            self.observer.message_stored(msg.sender.role)
            relay(session, msg, fx, skip_origin=True)
        return msg, created, fx

    async def _check_room(
        self, session_id: str, actor: Actor | None = None, client_msg_id: str | None = None
    ) -> Message | None:
        """Refuse (TooLarge) a customer's or engineer's message to a chat that holds
        ``chat_max_messages`` already. A retry of a message stored before the chat filled up
        gets that message back (returned here) rather than the refusal."""
        cap = self.settings.chat_max_messages
        seen = self._seq_seen.get(session_id)
        if seen is not None and seen < cap - _CAP_SLACK:
            return None
        # Unknown here (e.g. after a restart) or near the cap: ask the store whether the
        # chat has a message numbered ``cap`` (seqs are gap-free, so that is the count).
        if seen is None or seen < cap:
            past = await self.store.messages_after(session_id, cap - 1, 1)
            if not past:
                return None
            self._saw_seq(session_id, past[0].seq)
        if actor is not None and client_msg_id is not None:
            who = _sender(actor)
            tail = await self.store.messages_after(
                session_id, max(0, cap - _CAP_SLACK), 2 * _CAP_SLACK
            )
            for m in tail:
                if m.client_msg_id == client_msg_id and (m.sender.role, m.sender.id) == (
                    who.role, who.id
                ):
                    return m
        raise TooLarge(
            f"this chat has reached its limit of {cap} messages; start a new chat to go on",
            limit=cap,
        )

    def _saw_seq(self, session_id: str, seq: int) -> None:
        if seq > self._seq_seen.get(session_id, 0):
            self._seq_seen[session_id] = seq
        if len(self._seq_seen) > 2 * len(self._sessions) + 64:
            # ended chats' entries, dropped in bulk now and then rather than on every end
            self._seq_seen = {k: v for k, v in self._seq_seen.items() if k in self._sessions}

    async def post_message(self, actor: Actor, message: NewMessage) -> tuple[Message, Effects]:
        """Store and relay a message built elsewhere (e.g. an attachment) in an open session."""
        session = self._sessions.get(message.session_id)
        if session is None:
            await self._raise_closed_or_missing(actor, message.session_id)
            raise AssertionError("unreachable")
        self._authorize(actor, session)
        msg, _ = await self.store.append_message(message)
        self.observer.message_stored(msg.sender.role)
        fx: Effects = []
        relay(session, msg, fx)
        return msg, fx

    async def history(
        self, actor: Actor, session_id: str, after_seq: int = 0
    ) -> tuple[dict[str, Any], list[Message], bool]:
        """The session and its messages after ``after_seq`` (open or closed sessions)."""
        session = self._sessions.get(session_id) or await self.store.get_session(session_id)
        if session is None:
            raise NotFound("no such session")
        self._authorize(actor, session)
        messages = await self.store.messages_after(
            session_id, after_seq, self.settings.history_limit + 1
        )
        return (self._session_wire(session), *self._page(messages))

    def session_for(self, actor: Actor, session_id: str) -> Session | None:
        """The open session, if the actor may see it (None when closed or unknown)."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        self._authorize(actor, session)
        return session

    async def find_session(self, actor: Actor, session_id: str) -> Session:
        """Any session (open or closed) the actor may see, else NotFound/Forbidden."""
        session = self._sessions.get(session_id) or await self.store.get_session(session_id)
        if session is None:
            raise NotFound("no such session")
        self._authorize(actor, session)
        return session

    def typing(self, actor: Actor, session_id: str, is_typing: bool) -> Effects:
        session = self._open_session_for(actor, session_id)
        payload = {"session_id": session_id, "role": _role(actor), "typing": is_typing}
        return to_other_side(actor, session, "typing", payload)

    def mark_read(self, actor: Actor, session_id: str, seq: int) -> Effects:
        session = self._open_session_for(actor, session_id)
        payload = {"session_id": session_id, "role": _role(actor), "seq": seq}
        return to_other_side(actor, session, "message:read", payload)

    async def end(
        self, actor: Actor, session_id: str, resolution: str | None = None
    ) -> tuple[dict[str, Any], Effects]:
        async with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                await self._raise_closed_or_missing(actor, session_id)
                raise AssertionError("unreachable")
            self._authorize(actor, session)
            fx: Effects = []
            if isinstance(actor, Customer):
                if session.state in QUEUED_STATES:
                    await self._end(
                        session, SessionState.ABANDONED, EndReason.CANCELLED, "customer", fx,
                        f"{actor.name} left the queue",
                    )
                else:
                    await self._end(
                        session, SessionState.ENDED, EndReason.CUSTOMER_ENDED, "customer", fx,
                        f"{actor.name} ended the chat",
                    )
            else:
                if session.state is not SessionState.ACTIVE and not actor.is_lead:
                    raise Conflict("only an active session can be ended by its engineer")
                session.resolution = resolution
                await self._end(
                    session, SessionState.ENDED, EndReason.ENGINEER_ENDED, "engineer", fx,
                    f"{actor.name} ended the chat",
                )
            self._match(self.clock.now(), fx)
            await self._persist_offers(fx)
            return self._session_wire(session), fx

    # ------------------------------------------------------------------ engineers

    def engineer_connected(self, engineer: Engineer) -> dict[str, Any]:
        p = self._presence(engineer, self.clock.now())
        p.engineer = engineer
        p.connections += 1
        p.gone_deadline = None
        self.view.changed()
        return p.to_wire()

    async def engineer_disconnected(self, engineer_id: str) -> Effects:
        async with self._lock:
            p = self._engineers.get(engineer_id)
            fx: Effects = []
            if p is None:
                return fx
            p.connections = max(0, p.connections - 1)
            if p.connections:
                return fx
            p.away_since = None  # gone, not on a break: the wait does not count on them
            now = self.clock.now()
            for sid in list(p.offers):
                self._revoke_offer(sid, "engineer_offline", fx)
            if p.active:
                p.gone_deadline = now + self.settings.grace
            self.view.changed()
            self._match(now, fx)
            await self._persist_offers(fx)
            self.view.flush_queue_update(now, fx)
            return fx

    async def set_status(
        self, engineer: Engineer, status: EngineerStatus, capacity: int | None = None
    ) -> tuple[dict[str, Any], Effects]:
        async with self._lock:
            now = self.clock.now()
            p = self._presence(engineer, now)
            if capacity is not None:
                if not 1 <= capacity <= self.settings.max_capacity:
                    raise BadRequest(
                        f"capacity must be between 1 and {self.settings.max_capacity}"
                    )
                p.capacity = capacity
            fx: Effects = []
            if (away := p.set_status(status, now)) is not None and p.online:
                self.observed.came_back(away)
            if status is EngineerStatus.AWAY:
                for sid in list(p.offers):
                    self._revoke_offer(sid, "engineer_away", fx)
            self._match(now, fx)
            await self._persist_offers(fx)
            self.view.changed()
            return p.to_wire(), fx

    def snapshot(self, engineer: Engineer) -> dict[str, Any]:
        now = self.clock.now()
        queue = []
        for i, s in enumerate(self._queue):
            item = s.to_wire(position=i + 1, estimate=self.view.estimate(i + 1))
            item["waited_seconds"] = round(now - s.created_at, 1)
            offer = self._offers.get(s.id)
            if offer is not None and engineer.is_lead:
                item["offered_to"] = offer.engineer_id
            queue.append(item)
        mine = [
            self._session_wire(s)
            for s in self._sessions.values()
            if s.state is SessionState.ACTIVE
            and (s.engineer is not None and s.engineer.id == engineer.id)
        ]
        offers = [
            self._offer_payload(o, now)
            for o in self._offers.values()
            if o.engineer_id == engineer.id
        ]
        me = self._engineers.get(engineer.id)
        return {
            "queue": queue,
            "engineers": [p.to_wire() for p in self._engineers.values()],
            "sessions": mine,
            "offers": offers,
            "me": me.to_wire() if me else None,
            "alert": self.alerts.current(),
            **self.view.stats(now),
        }

    async def accept(
        self, engineer: Engineer, session_id: str
    ) -> tuple[dict[str, Any], list[Message], Effects]:
        async with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                # An offer races its customer leaving: that is "ended", not "forbidden".
                if await self.store.get_session(session_id) is None:
                    raise NotFound("no such session")
                raise SessionClosed("the session has ended")
            offer = self._offers.get(session_id)
            if offer is None or offer.engineer_id != engineer.id:
                if (
                    session.state is SessionState.ACTIVE
                    and session.engineer is not None
                    and session.engineer.id == engineer.id
                ):
                    # Accepting twice (e.g. from two tabs) is answered like the first time.
                    wire, messages, _ = await self._history_unlocked(session)
                    return wire, messages, []
                raise Conflict("this session is not offered to you (any more)")
            now = self.clock.now()
            if offer.expires_at <= now:
                # The next tick withdraws it and tells everyone; until then it is not valid.
                raise Conflict("the offer has expired")
            fx: Effects = []
            if offer.transfer_from is not None:
                await self._complete_transfer(session, offer, engineer, now, fx)
            else:
                await self._assign(session, offer, engineer, now, fx)
            self.observer.offer_resolved("accepted")
            self._match(now, fx)
            await self._persist_offers(fx)
            self.view.flush_queue_update(now, fx)
            wire, messages, _ = await self._history_unlocked(session)
            return wire, messages, fx

    async def decline(self, engineer: Engineer, session_id: str) -> Effects:
        async with self._lock:
            offer = self._offers.get(session_id)
            if offer is None or offer.engineer_id != engineer.id:
                raise Conflict("this session is not offered to you (any more)")
            fx: Effects = []
            self._declined.setdefault(session_id, set()).add(engineer.id)
            self._revoke_offer(session_id, "declined", fx)
            self._match(self.clock.now(), fx)
            await self._persist_offers(fx)
            return fx

    async def transfer(
        self, engineer: Engineer, session_id: str, to_engineer_id: str
    ) -> Effects:
        async with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                await self._raise_closed_or_missing(engineer, session_id)
                raise AssertionError("unreachable")
            self._authorize(engineer, session)
            if session.state is not SessionState.ACTIVE or session.engineer is None:
                raise Conflict("only an active session can be transferred")
            if to_engineer_id == session.engineer.id:
                raise Conflict("the session is already with that engineer")
            if session_id in self._offers:
                raise Conflict("a transfer of this session is already pending")
            target = self._engineers.get(to_engineer_id)
            if target is None or not target.eligible:
                raise Conflict("that engineer is not available for another chat")
            now = self.clock.now()
            fx: Effects = []
            self._make_offer(session, target, now, fx, transfer_from=session.engineer.id)
            return fx

    # ------------------------------------------------------------------ time

    def next_deadline(self) -> float | None:
        times = [o.expires_at for o in self._offers.values()]
        times += self._customer_gone.values()
        times += [p.gone_deadline for p in self._engineers.values() if p.gone_deadline]
        return min(times) if times else None

    async def tick(self) -> Effects:
        """Expire what is due (offers, grace periods) and send coalesced queue news."""
        async with self._lock:
            now = self.clock.now()
            fx: Effects = []
            for offer in [o for o in self._offers.values() if o.expires_at <= now]:
                self._expire_offer(offer, fx)
            for sid in [k for k, t in self._customer_gone.items() if t <= now]:
                del self._customer_gone[sid]
                session = self._sessions.get(sid)
                if session is not None and session.state in QUEUED_STATES:
                    await self._end(
                        session, SessionState.ABANDONED, EndReason.ABANDONED, "system", fx,
                        f"{session.customer.name} left before an engineer answered",
                    )
            for p in list(self._engineers.values()):
                if p.gone_deadline is not None and p.gone_deadline <= now:
                    p.gone_deadline = None
                    await self._requeue_all(p, now, fx)
            self._match(now, fx)
            await self._persist_offers(fx)
            self.view.flush_positions(now, fx)
            self.view.flush_queue_update(now, fx)
            if alert := self.alerts.check(now, self._queue, self.engineers_online(),
                                          self.view.longest_predicted(now)):
                fx.append(Outbound(ENGINEER_NS, ENGINEERS_ROOM, "queue:alert", alert))
            return fx

    # ------------------------------------------------------------------ queries

    def queue_length(self) -> int:
        return len(self._queue)

    def engineers_online(self) -> int:
        return sum(1 for p in self._engineers.values() if p.online)

    def online_capacity(self) -> int:
        return self.view.online_capacity()

    def average_handle_seconds(self) -> float:
        return self.view.average_handle_seconds()

    def wait_table(self) -> WaitTable | None:
        return self.view.wait_table()

    def forecast(self) -> dict[str, Any]:
        return self.view.forecast()

    def open_session_ids(self) -> list[str]:
        return list(self._sessions)

    def live(self, *, forecast: bool = False) -> LiveDesk:
        """The desk now, for /metrics and /api/stats (read between two awaits: consistent);
        with the staffing forecast if asked (it costs a few milliseconds)."""
        return LiveDesk(
            now=self.clock.now(),
            queue=list(self._queue),
            active=[s for s in self._sessions.values() if s.state is SessionState.ACTIVE],
            engineers=[p.to_wire() for p in self._engineers.values()],
            offers={sid: o.engineer_id for sid, o in self._offers.items()},
            alert=self.alerts.current(),
            online_capacity=self.online_capacity(),
            average_handle_seconds=self.average_handle_seconds(),
            forecast=self.forecast() if forecast else None,
        )

    # ------------------------------------------------------------------ internals

    def _presence(self, engineer: Engineer, now: float) -> Presence:
        p = self._engineers.get(engineer.id)
        if p is None:
            p = Presence(
                engineer=engineer,
                capacity=self.settings.default_capacity,
                last_assigned_at=now,
            )
            self._engineers[engineer.id] = p
        return p

    def _authorize(self, actor: Actor, session: Session) -> None:
        if isinstance(actor, Customer):
            if session.customer.id != actor.id:
                raise NotFound("no such session")
            return
        if actor.is_lead:
            return
        if session.engineer is not None and session.engineer.id == actor.id:
            return
        raise Forbidden("this session is not assigned to you")

    def _open_session_for(self, actor: Actor, session_id: str) -> Session:
        session = self._sessions.get(session_id)
        if session is None:
            closed = self._recently_closed.get(session_id)
            if closed is None:
                raise NotFound("no open session with that id")
            self._authorize(actor, closed)
            raise SessionClosed("the session has ended")
        self._authorize(actor, session)
        return session

    async def _raise_closed_or_missing(self, actor: Actor, session_id: str) -> None:
        stored = await self.store.get_session(session_id)
        if stored is None:
            raise NotFound("no such session")
        self._authorize(actor, stored)
        raise SessionClosed("the session has ended")

    def _session_wire(self, session: Session) -> dict[str, Any]:
        position = self.view.position(session) if session.id in self._sessions else None
        return session.to_wire(position=position, estimate=self.view.estimate(position))

    async def _history_unlocked(
        self, session: Session
    ) -> tuple[dict[str, Any], list[Message], bool]:
        messages = await self.store.messages_after(session.id, 0, self.settings.history_limit + 1)
        return (self._session_wire(session), *self._page(messages))

    def _page(self, messages: list[Message]) -> tuple[list[Message], bool]:
        """The first of ``messages`` that fit one answer (``history_limit`` of them, and
        ``history_max_chars`` of text, at least one), and whether more are left."""
        limit, budget = self.settings.history_limit, self.settings.history_max_chars
        used = 0
        for i, m in enumerate(messages):
            used += len(m.body) + _MESSAGE_FRAMING
            if i == limit or (i > 0 and used > budget):
                return messages[:i], True
        return messages, False

    def _system_message(
        self,
        session_id: str,
        text: str,
        event: dict[str, Any] | None = None,
        sender: Sender = SYSTEM_SENDER,
    ) -> NewMessage:
        return NewMessage(
            id=self._new_id(),
            session_id=session_id,
            ts=self.clock.now(),
            sender=sender,
            kind=MessageKind.SYSTEM,
            body=text,
            event=event,
        )

    def _offer_payload(self, offer: Offer, now: float) -> dict[str, Any]:
        session = self._sessions[offer.session_id]
        payload: dict[str, Any] = {
            "session_id": session.id,
            "customer": session.customer.to_wire(),
            "topic": session.topic,
            "severity": session.severity,
            "waited_seconds": round(now - session.created_at, 1),
            "expires_in_seconds": round(max(0.0, offer.expires_at - now), 1),
        }
        if offer.transfer_from is not None:
            src = self._engineers.get(offer.transfer_from)
            payload["transfer_from"] = (
                src.engineer.ref() if src else {"id": offer.transfer_from, "name": ""}
            )
        return payload

    def _make_offer(
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
        self._offers[session.id] = offer
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
                self._offer_payload(offer, now),
            )
        )

    async def _persist_offers(self, fx: Effects) -> None:
        """Store the waiting/offered flips made by the synchronous matching step."""
        while self._unsaved:
            session = self._sessions.get(self._unsaved.pop())
            if session is not None and session.state in QUEUED_STATES:
                await self.store.save_session_state(session)

    def _match(self, now: float, fx: Effects) -> None:
        """Offer the oldest un-offered waiting session to the longest-idle eligible engineer,
        until either runs out (docs/protocol.md#matching-and-offers)."""
        if not self._queue:
            return
        eligible = [p for p in self._engineers.values() if p.eligible]
        if not eligible:
            return
        for session in self._queue:
            if not eligible:
                break
            if session.state is not SessionState.WAITING or session.id in self._offers:
                continue
            chosen = choose_engineer(eligible, self._declined.get(session.id, set()))
            self._make_offer(session, chosen, now, fx)
            if not chosen.eligible:
                eligible.remove(chosen)

    def _revoke_offer(self, session_id: str, reason: str, fx: Effects) -> Offer | None:
        offer = self._offers.pop(session_id, None)
        if offer is None:
            return None
        self.view.stale()
        self.observer.offer_resolved(reason if reason in ("declined", "expired") else "withdrawn")
        p = self._engineers.get(offer.engineer_id)
        if p is not None:
            p.offers.discard(session_id)
        session = self._sessions.get(session_id)
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

    def _expire_offer(self, offer: Offer, fx: Effects) -> None:
        if self._offers.get(offer.session_id) is not offer:
            # Already withdrawn in this tick: an earlier expiry set the engineer away.
            return
        self._revoke_offer(offer.session_id, "expired", fx)
        self._declined.setdefault(offer.session_id, set()).add(offer.engineer_id)
        p = self._engineers.get(offer.engineer_id)
        if p is None:
            return
        p.set_status(EngineerStatus.AWAY, self.clock.now())
        for sid in list(p.offers):
            self._revoke_offer(sid, "engineer_away", fx)
        fx.append(
            Outbound(
                ENGINEER_NS,
                engineer_room(p.engineer.id),
                "engineer:status",
                {**p.to_wire(), "reason": "offer_expired"},
            )
        )
        self.view.changed()

    async def _assign(
        self, session: Session, offer: Offer, engineer: Engineer, now: float, fx: Effects
    ) -> None:
        previous = (session.state, session.engineer, session.assigned_at,
                    session.first_assigned_at)
        session.state = SessionState.ACTIVE
        session.engineer = engineer
        session.assigned_at = now
        if session.first_assigned_at is None:
            session.first_assigned_at = now
        note = self._system_message(
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
        self._offers.pop(session.id, None)
        self._declined.pop(session.id, None)
        self._queue.remove(session)
        self._customer_gone.pop(session.id, None)
        self.view.forget(session.id)
        self.view.changed()
        p = self._presence(engineer, now)
        p.offers.discard(session.id)
        p.active.add(session.id)
        p.last_assigned_at = now
        assigned = {"session_id": session.id, "engineer": engineer.ref()}
        fx.append(Outbound(CUSTOMER_NS, customer_room(session.id), "session:assigned", assigned))
        fx.append(
            Outbound(ENGINEER_NS, engineer_room(engineer.id), "session:assigned", assigned)
        )
        if msg is not None:
            relay(session, msg, fx)

    async def _complete_transfer(
        self, session: Session, offer: Offer, engineer: Engineer, now: float, fx: Effects
    ) -> None:
        old = session.engineer
        session.engineer = engineer
        session.assigned_at = now
        names = f"{old.name if old else 'nobody'} to {engineer.name}"
        note = self._system_message(
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
        self._offers.pop(session.id, None)
        p = self._presence(engineer, now)
        p.offers.discard(session.id)
        p.active.add(session.id)
        p.last_assigned_at = now
        assigned = {"session_id": session.id, "engineer": engineer.ref()}
        fx.append(Outbound(CUSTOMER_NS, customer_room(session.id), "session:assigned", assigned))
        fx.append(
            Outbound(ENGINEER_NS, engineer_room(engineer.id), "session:assigned", assigned)
        )
        if old is not None:
            prev = self._engineers.get(old.id)
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

    async def _requeue_all(self, p: Presence, now: float, fx: Effects) -> None:
        """An engineer stayed away past the grace period: their chats go back to the head of
        the queue, each in its original arrival place (docs/protocol.md#grace-periods)."""
        for sid in sorted(p.active):
            session = self._sessions.get(sid)
            p.active.discard(sid)
            if session is None or session.state is not SessionState.ACTIVE:
                continue
            # A transfer still on offer would be accepted against a chat no longer active
            # (the store refuses it); withdraw it so the chat is offered afresh below.
            self._revoke_offer(sid, "requeued", fx)
            gone = session.engineer
            self.observed.dropped(sid)
            session.state = SessionState.WAITING
            session.engineer = None
            session.assigned_at = None
            await self.store.save_session_state(session)
            insort(self._queue, session, key=lambda s: s.arrival_key)
            self.view.forget(session.id)
            self.view.changed()
            if self._customer_conns.get(sid, 0) == 0:
                self._customer_gone[sid] = now + self.settings.grace
            msg, _ = await self.store.append_message(
                self._system_message(
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

    async def _end(
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
        note = self._system_message(
            session.id, text, {"type": "ended", "reason": reason.value, "by": ended_by}
        )
        try:
            msg = await self.store.end_session(session, note, self.settings.handoff_backends)
        except Exception:
            session.state, session.ended_at, session.ended_by, session.end_reason = before
            raise
        self.observer.session_closed(session)
        offer = self._offers.get(session.id)
        if offer is not None:
            self._revoke_offer(session.id, "ended", fx)
        del self._sessions[session.id]
        self._recently_closed[session.id] = session
        if len(self._recently_closed) > 10_000:
            self._recently_closed.popitem(last=False)
        self._declined.pop(session.id, None)
        self._customer_gone.pop(session.id, None)
        self.view.forget(session.id)
        if was_queued:
            self._queue.remove(session)
            self.view.changed()
        if session.engineer is not None:
            p = self._engineers.get(session.engineer.id)
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


def _customer_sender(customer: Customer) -> Sender:
    return Sender("customer", customer.id, customer.name)


def _sender(actor: Actor) -> Sender:
    if isinstance(actor, Customer):
        return _customer_sender(actor)
    return Sender(actor.role.value, actor.id, actor.name)


def _role(actor: Actor) -> str:
    return "customer" if isinstance(actor, Customer) else "engineer"
