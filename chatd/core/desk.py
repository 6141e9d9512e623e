"""The support desk: one first-come-first-served queue, offers, sessions and messages.

The desk owns the live state of the queue and of engineers' presence, persists every change
through a ``Store`` before reporting it, and returns what must be told to whom as a list of
``Outbound`` values; it never touches a socket. Rules: docs/design.md#matching.

Concurrency: changes to the queue, offers and presence run under one asyncio lock, so that
every matching decision sees a consistent desk. Sending a message does not take the lock:
the store's single writer orders messages and assigns their seq.

``Desk`` is the coordinator: it holds the lock and the live state, and its public methods
are what the transport calls. It delegates to collaborators given that state explicitly:
access.py (who may see a session, resume tokens), messages.py (a chat's messages),
offers.py (matching and offers) and assignment.py (assigning, transferring, requeueing and
ending chats).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from . import ids
from .access import Actor as Actor
from .access import ResumeTokenExpired as ResumeTokenExpired
from .access import SessionAccess, authorize, customer_sender
from .alerts import QueueAlerts
from .assignment import Assignment
from .clock import Clock
from .effects import CUSTOMER_NS as CUSTOMER_NS
from .effects import ENGINEER_NS as ENGINEER_NS
from .effects import ENGINEERS_ROOM as ENGINEERS_ROOM
from .effects import QUEUE_ROOM as QUEUE_ROOM
from .effects import Effects as Effects
from .effects import Outbound as Outbound
from .effects import customer_room as customer_room
from .effects import engineer_room as engineer_room
from .errors import BadRequest, Conflict, NotFound, SessionClosed
from .ids import RandomIds as RandomIds
from .ids import hash_token as hash_token
from .ids import new_token as new_token
from .messages import Messages
from .models import (
    QUEUED_STATES,
    Customer,
    EndReason,
    Engineer,
    EngineerStatus,
    Message,
    MessageKind,
    NewMessage,
    Session,
    SessionState,
)
from .observer import DeskObserver, NullObserver
from .offers import OfferBook
from .ports import DeskStore
from .presence import Offer, Presence
from .queue import QueueView
from .settings import DeskSettings as DeskSettings
from .stats import LiveDesk
from .waits import WaitTable, wait_wire

# The waiting customers a queue:snapshot lists, from the head; its "length" counts all.
SNAPSHOT_QUEUE = 200

# The names above imported "as" themselves are re-exported: other modules long imported
# them from here; they now live beside it (access.py, effects.py, ids.py, settings.py).


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
        # Statuses stored before a restart, taken by each engineer as they reconnect.
        self._statuses: dict[str, tuple[str, int]] = {}
        self._customer_conns: dict[str, int] = {}
        self._customer_gone: dict[str, float] = {}
        # Each customer's open chat, to refuse a second one without a scan of every chat
        # (an entry whose chat is no longer in _sessions is stale and ignored).
        self._open_of_customer: dict[str, Session] = {}
        # Customers whose new chat is being stored (request_chat, outside the lock): a
        # second request of theirs waits for it, then finds the chat open.
        self._joining: dict[str, asyncio.Future[None]] = {}
        self._arrival_seq = 0
        self.view = QueueView(self.settings, clock, self._queue, self._sessions,
                              self._engineers, self._offers)
        self.observed = self.view.observed  # what the waits are learnt from
        self.arrivals = self.view.arrivals
        # Recently ended sessions, so that events about them answer session_closed without a
        # database read (bounded: older ones fall back to the store where that is async).
        self._recently_closed: OrderedDict[str, Session] = OrderedDict()
        # The collaborators the desk delegates to, each given the live state it works on.
        self.access = SessionAccess(store, clock, self.settings, self.view, self._sessions,
                                    self._recently_closed)
        self.messages = Messages(store, clock, self.settings, self.observer, new_id,
                                 self._sessions, self.access)
        self.offer_book = OfferBook(
            store, clock, self.settings, self.observer, self.view,
            sessions=self._sessions, queue=self._queue, engineers=self._engineers,
            offers=self._offers, declined=self._declined,
        )
        self.assignment = Assignment(
            store, clock, self.settings, self.observer, self.view,
            sessions=self._sessions, queue=self._queue, engineers=self._engineers,
            customer_conns=self._customer_conns, customer_gone=self._customer_gone,
            open_of_customer=self._open_of_customer,
            recently_closed=self._recently_closed, offer_book=self.offer_book,
            messages=self.messages, presence=self._presence,
        )

    # ------------------------------------------------------------------ start-up

    async def restore(self) -> Effects:
        """Rebuild the live desk from the store after a (re)start.

        Nobody is connected yet: waiting customers and engineers with chats get their grace
        period from now, and offers in flight when the process stopped are withdrawn.
        """
        async with self._lock:
            now = self.clock.now()
            self._arrival_seq = await self.store.next_arrival_seq()
            self._statuses = await self.store.engineer_statuses()
            for t in reversed(
                await self.store.recent_handle_times(now - 86_400, self.settings.handle_history)
            ):
                self.observed.handled(t)
            for session in await self.store.open_sessions():
                self._sessions[session.id] = session
                if session.state is SessionState.OFFERED:
                    session.state = SessionState.WAITING
                    await self.store.save_session_state(session)
                self._open_of_customer[session.customer.id] = session
                if session.state is SessionState.WAITING:
                    self.view.insert(session)
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
        while True:
            async with self._lock:
                joining = self._joining.get(customer.id)
                if joining is None:
                    s = self._open_of_customer.get(customer.id)
                    if s is not None and self._sessions.get(s.id) is s:
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
                    joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    self._joining[customer.id] = joined
                    break
            # Another request of this customer's is being stored: look again once it is.
            await asyncio.shield(joining)
        token = self._new_token()
        first = None
        if message is not None:
            first = NewMessage(
                id=self._new_id(),
                session_id=session.id,
                ts=now,
                sender=customer_sender(customer),
                kind=MessageKind.TEXT,
                body=message,
                client_msg_id=client_msg_id,
            )
        try:
            # Outside the lock: requests that arrive together are stored by one commit
            # (group commit) instead of one commit each, one after the other. Their order
            # is the arrival_seq given above, which the queue sorts by whenever they land.
            await self.store.create_session(session, hash_token(token), first)
            async with self._lock:
                self.observer.session_requested(session)
                self._sessions[session.id] = session
                self._open_of_customer[customer.id] = session
                self.view.insert(session)
                fx: Effects = []
                now = self.clock.now()
                self.offer_book.match(now, fx)
                await self.offer_book.persist(fx)
                position, estimate = self.view.told_on_joining(session, now)
                self.view.flush_queue_update(now, fx)
                wire = self.access.board_wire(session, position, estimate)
                return wire, token, fx
        finally:
            del self._joining[customer.id]
            joined.set_result(None)

    async def _answer_again(self, session: Session) -> tuple[dict[str, Any], str, Effects]:
        token = self._new_token()
        if not await self.store.set_resume_token_hash(session.id, hash_token(token)):
            raise SessionClosed("the session has ended")  # pragma: no cover - ended meanwhile
        return self.access.session_wire(session), token, []

    async def verify_resume_token(self, session_id: str, token: str) -> Session:
        """The session a resume token opens: its chat while open, and for
        ``resume_token_ttl`` seconds after it closed; Unauthorized otherwise."""
        return await self.access.verify_resume_token(session_id, token)

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
        """A customer's request for a phone call or a screen share, as a system message."""
        return await self.messages.escalate(customer, session_id, kind, phone, note)

    # ------------------------------------------------------------------ both sides

    async def send_message(
        self, actor: Actor, session_id: str, client_msg_id: str, body: str
    ) -> tuple[Message, bool, Effects]:
        """Store a text message, then relay it. A retried client_msg_id returns the stored
        message and relays nothing."""
        return await self.messages.send_message(actor, session_id, client_msg_id, body)

    async def post_message(self, actor: Actor, message: NewMessage) -> tuple[Message, Effects]:
        """Store and relay a message built elsewhere (e.g. an attachment) in an open session."""
        return await self.messages.post_message(actor, message)

    async def history(
        self, actor: Actor, session_id: str, after_seq: int = 0
    ) -> tuple[dict[str, Any], list[Message], bool]:
        """The session and its messages after ``after_seq`` (open or closed sessions)."""
        return await self.messages.history(actor, session_id, after_seq)

    def session_for(self, actor: Actor, session_id: str) -> Session | None:
        """The open session, if the actor may see it (None when closed or unknown)."""
        return self.access.session_for(actor, session_id)

    async def find_session(self, actor: Actor, session_id: str) -> Session:
        """Any session (open or closed) the actor may see, else NotFound/Forbidden."""
        return await self.access.find_session(actor, session_id)

    async def queue_position(self, actor: Actor, session_id: str) -> dict[str, Any]:
        """A customer's place as of the current board, asked for when a board was missed
        (docs/protocol.md#queueboard); ``position`` None once it no longer waits."""
        session = await self.find_session(actor, session_id)
        position = self.view.position(session) if session.id in self._sessions else None
        return {
            "session_id": session.id,
            "position": position,
            "arrival": session.arrival_seq,
            "board": self.view.board,
            "board_seen": self.view.board_seen(),
            **wait_wire(self.view.estimate(position)),
            "engineers_online": self.engineers_online(),
        }

    def waiting(self, session_id: str) -> bool:
        """Whether the session is in the queue (its customer reads the boards)."""
        session = self._sessions.get(session_id)
        return session is not None and session.state in QUEUED_STATES

    def typing(self, actor: Actor, session_id: str, is_typing: bool) -> Effects:
        return self.messages.typing(actor, session_id, is_typing)

    async def mark_read(self, actor: Actor, session_id: str, seq: int) -> Effects:
        return await self.messages.mark_read(actor, session_id, seq)

    async def end(
        self, actor: Actor, session_id: str, resolution: str | None = None
    ) -> tuple[dict[str, Any], Effects]:
        async with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                await self.access.raise_closed_or_missing(actor, session_id)
                raise AssertionError("unreachable")
            authorize(actor, session)
            fx: Effects = []
            if isinstance(actor, Customer):
                if session.state in QUEUED_STATES:
                    await self.assignment.end(
                        session, SessionState.ABANDONED, EndReason.CANCELLED, "customer", fx,
                        f"{actor.name} left the queue",
                    )
                else:
                    await self.assignment.end(
                        session, SessionState.ENDED, EndReason.CUSTOMER_ENDED, "customer", fx,
                        f"{actor.name} ended the chat",
                    )
            else:
                if session.state is not SessionState.ACTIVE and not actor.is_lead:
                    raise Conflict("only an active session can be ended by its engineer")
                session.resolution = resolution
                await self.assignment.end(
                    session, SessionState.ENDED, EndReason.ENGINEER_ENDED, "engineer", fx,
                    f"{actor.name} ended the chat",
                )
            self.offer_book.match(self.clock.now(), fx)
            await self.offer_book.persist(fx)
            return self.access.session_wire(session), fx

    async def ticket_known(self, session_id: str) -> Effects:
        """A ticket was filed for an ended session (docs/handoff.md#the-ticket-reference):
        ``session:ended`` again, now with ``ticket``, to its customer and engineer."""
        return await self.assignment.ticket_known(session_id)

    # ------------------------------------------------------------------ engineers

    def engineer_connected(self, engineer: Engineer) -> dict[str, Any]:
        p = self._presence(engineer, self.clock.now())
        p.engineer = engineer
        p.connections += 1
        p.gone_deadline = None
        self.view.changed()
        return p.to_wire()

    def presence_wire(self, engineer: Engineer) -> dict[str, Any]:
        """An engineer's presence as ``engineer_connected`` answers it."""
        return self._presence(engineer, self.clock.now()).to_wire()

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
                self.offer_book.revoke(sid, "engineer_offline", fx)
            if p.active:
                p.gone_deadline = now + self.settings.grace
            self.view.changed()
            self.offer_book.match(now, fx)
            await self.offer_book.persist(fx)
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
            await self.store.save_engineer_status(engineer.id, p.status.value, p.capacity, now)
            if status is EngineerStatus.AWAY:
                for sid in list(p.offers):
                    self.offer_book.revoke(sid, "engineer_away", fx)
            self.offer_book.match(now, fx)
            await self.offer_book.persist(fx)
            self.view.changed()
            return p.to_wire(), fx

    def snapshot(self, engineer: Engineer) -> dict[str, Any]:
        now = self.clock.now()
        queue = []
        for i, s in enumerate(self._queue[:SNAPSHOT_QUEUE]):
            item = s.to_wire(position=i + 1, estimate=self.view.estimate(i + 1))
            item["waited_seconds"] = round(now - s.created_at, 1)
            offer = self._offers.get(s.id)
            if offer is not None and engineer.is_lead:
                item["offered_to"] = offer.engineer_id
            queue.append(item)
        mine = [
            self.access.session_wire(s)
            for s in self._sessions.values()
            if s.state is SessionState.ACTIVE
            and (s.engineer is not None and s.engineer.id == engineer.id)
        ]
        offers = [
            self.offer_book.offer_payload(o, now)
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
                    wire, messages, _ = await self.messages.history_unlocked(session)
                    return wire, messages, []
                raise Conflict("this session is not offered to you (any more)")
            now = self.clock.now()
            if offer.expires_at <= now:
                # The next tick withdraws it and tells everyone; until then it is not valid.
                raise Conflict("the offer has expired")
            fx: Effects = []
            if offer.transfer_from is not None:
                await self.assignment.complete_transfer(session, offer, engineer, now, fx)
            else:
                await self.assignment.assign(session, offer, engineer, now, fx)
            self.observer.offer_resolved("accepted")
            self.offer_book.match(now, fx)
            await self.offer_book.persist(fx)
            self.view.flush_queue_update(now, fx)
            wire, messages, _ = await self.messages.history_unlocked(session)
            return wire, messages, fx

    async def decline(self, engineer: Engineer, session_id: str) -> Effects:
        async with self._lock:
            offer = self._offers.get(session_id)
            if offer is None or offer.engineer_id != engineer.id:
                raise Conflict("this session is not offered to you (any more)")
            fx: Effects = []
            self._declined.setdefault(session_id, set()).add(engineer.id)
            self.offer_book.revoke(session_id, "declined", fx)
            self.offer_book.match(self.clock.now(), fx)
            await self.offer_book.persist(fx)
            return fx

    async def transfer(
        self, engineer: Engineer, session_id: str, to_engineer_id: str
    ) -> Effects:
        async with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                await self.access.raise_closed_or_missing(engineer, session_id)
                raise AssertionError("unreachable")
            authorize(engineer, session)
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
            self.offer_book.make_offer(session, target, now, fx, transfer_from=session.engineer.id)
            return fx

    # ------------------------------------------------------------------ time

    async def tick(self) -> Effects:
        """Expire what is due (offers, grace periods) and send coalesced queue news."""
        async with self._lock:
            now = self.clock.now()
            fx: Effects = []
            for offer in [o for o in self._offers.values() if o.expires_at <= now]:
                self.offer_book.expire(offer, fx)
            for sid in [k for k, t in self._customer_gone.items() if t <= now]:
                del self._customer_gone[sid]
                session = self._sessions.get(sid)
                if session is not None and session.state in QUEUED_STATES:
                    await self.assignment.end(
                        session, SessionState.ABANDONED, EndReason.ABANDONED, "system", fx,
                        f"{session.customer.name} left before an engineer answered",
                    )
            for p in list(self._engineers.values()):
                if p.gone_deadline is not None and p.gone_deadline <= now:
                    p.gone_deadline = None
                    await self.assignment.requeue_all(p, now, fx)
            self.offer_book.match(now, fx)
            await self.offer_book.persist(fx)
            self.view.flush_board(now, fx)
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
            if (saved := self._statuses.pop(engineer.id, None)) is not None:
                # As set before a restart or a takeover: connected, they stay available.
                p.status = EngineerStatus(saved[0])
                p.capacity = min(saved[1], self.settings.max_capacity)
            self._engineers[engineer.id] = p
        return p

