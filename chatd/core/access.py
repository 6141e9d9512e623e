"""Who acts on a chat and what they may see of it: the ``Actor`` type, the ``Sender`` their
messages carry, whether they may see a session, the session a resume token opens, and how
a session they cannot use (closed, unknown or not theirs) is reported.

``SessionAccess`` reads the desk's live state (its open sessions and recently closed ones:
the same objects the desk changes) and falls back to the store for older sessions.
"""

from __future__ import annotations

import hmac
from collections import OrderedDict
from typing import Any

from .clock import Clock
from .errors import Forbidden, NotFound, SessionClosed, Unauthorized
from .ids import hash_token
from .models import Customer, Engineer, Sender, Session
from .ports import DeskStore
from .queue import QueueView
from .settings import DeskSettings
from .waits import Wait

Actor = Customer | Engineer


class ResumeTokenExpired(Unauthorized):
    """The right resume token of a chat that closed longer ago than its lifetime. The code
    stays ``unauthorized``; the type lets paths that hide whether something exists still
    say why a token they recognised stopped working."""


def customer_sender(customer: Customer) -> Sender:
    return Sender("customer", customer.id, customer.name)


def sender_of(actor: Actor) -> Sender:
    if isinstance(actor, Customer):
        return customer_sender(actor)
    return Sender(actor.role.value, actor.id, actor.name)


def role_of(actor: Actor) -> str:
    return "customer" if isinstance(actor, Customer) else "engineer"


def authorize(actor: Actor, session: Session) -> None:
    """A customer sees only their own chats (another's is "not found"); an engineer the
    chats assigned to them; a lead every chat."""
    if isinstance(actor, Customer):
        if session.customer.id != actor.id:
            raise NotFound("no such session")
        return
    if actor.is_lead:
        return
    if session.engineer is not None and session.engineer.id == actor.id:
        return
    raise Forbidden("this session is not assigned to you")


class SessionAccess:
    def __init__(
        self,
        store: DeskStore,
        clock: Clock,
        settings: DeskSettings,
        view: QueueView,
        sessions: dict[str, Session],
        recently_closed: OrderedDict[str, Session],
    ) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.view = view
        self.sessions = sessions  # the open sessions (the desk's own dict)
        self.recently_closed = recently_closed  # ended lately, written by the desk's end

    async def verify_resume_token(self, session_id: str, token: str) -> Session:
        """The session a resume token opens: its chat while open, and for
        ``resume_token_ttl`` seconds after it closed; Unauthorized otherwise.

        Every path that accepts a resume token comes through here, so that a token copied
        out of a browser stops being worth anything a bounded time after its chat."""
        stored = await self.store.resume_token_hash(session_id)
        if stored is None or not hmac.compare_digest(stored, hash_token(token)):
            raise Unauthorized("invalid session id or resume token")
        session = self.sessions.get(session_id) or await self.store.get_session(session_id)
        if session is None:  # pragma: no cover - a token exists only with its session
            raise Unauthorized("invalid session id or resume token")
        if not session.is_open:
            closed_at = session.ended_at if session.ended_at is not None else session.created_at
            if self.clock.now() >= closed_at + self.settings.resume_token_ttl:
                raise ResumeTokenExpired(
                    "this chat's resume token has expired; start a new chat"
                )
        return session

    def session_for(self, actor: Actor, session_id: str) -> Session | None:
        """The open session, if the actor may see it (None when closed or unknown)."""
        session = self.sessions.get(session_id)
        if session is None:
            return None
        authorize(actor, session)
        return session

    async def find_session(self, actor: Actor, session_id: str) -> Session:
        """Any session (open or closed) the actor may see, else NotFound/Forbidden."""
        session = self.sessions.get(session_id) or await self.store.get_session(session_id)
        if session is None:
            raise NotFound("no such session")
        authorize(actor, session)
        return session

    def open_session_for(self, actor: Actor, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            closed = self.recently_closed.get(session_id)
            if closed is None:
                raise NotFound("no open session with that id")
            authorize(actor, closed)
            raise SessionClosed("the session has ended")
        authorize(actor, session)
        return session

    async def raise_closed_or_missing(self, actor: Actor, session_id: str) -> None:
        stored = await self.store.get_session(session_id)
        if stored is None:
            raise NotFound("no such session")
        authorize(actor, stored)
        raise SessionClosed("the session has ended")

    def session_wire(self, session: Session) -> dict[str, Any]:
        """The session as its customer and engineer see it; while it waits, with its
        position and what the widget needs to follow the queue boards (board.py)."""
        position = self.view.position(session) if session.id in self.sessions else None
        return self.board_wire(session, position, self.view.estimate(position))

    def board_wire(
        self, session: Session, position: int | None, estimate: Wait | None
    ) -> dict[str, Any]:
        wire = session.to_wire(position=position, estimate=estimate)
        if position is not None:
            wire["arrival"] = session.arrival_seq
            wire["board"] = self.view.board
            wire["board_seen"] = self.view.board_seen()
        return wire
