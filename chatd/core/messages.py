"""A chat's messages on the desk: sending and posting them, the chat's message cap, history
pages, typing and read notices, escalations, and the system messages the desk writes.

Sending a message does not take the desk's lock: the store's single writer orders messages
and assigns their seq. ``Messages`` reads the desk's open sessions (the desk's own dict)
and keeps only its own count of each open chat's highest seq.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .access import Actor, SessionAccess, authorize, customer_sender, role_of, sender_of
from .clock import Clock
from .effects import Effects, relay, to_other_side
from .errors import BadRequest, Conflict, Forbidden, NotFound, TooLarge
from .models import (
    MAX_TEXT_LENGTH,
    SYSTEM_SENDER,
    Customer,
    Engineer,
    Message,
    MessageKind,
    NewMessage,
    Sender,
    Session,
    SessionState,
    Tier,
)
from .observer import DeskObserver
from .ports import DeskStore
from .settings import DeskSettings

# Characters a message's wire form takes besides its body (ids, sender, times), roughly.
_MESSAGE_FRAMING = 300
# How far below the chat cap the desk's own count of a chat's messages is trusted without
# asking the store (it does not see every system message).
_CAP_SLACK = 64


class Messages:
    def __init__(
        self,
        store: DeskStore,
        clock: Clock,
        settings: DeskSettings,
        observer: DeskObserver,
        new_id: Callable[[], str],
        sessions: dict[str, Session],
        access: SessionAccess,
    ) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.observer = observer
        self._new_id = new_id
        self.sessions = sessions  # the open sessions (the desk's own dict)
        self.access = access
        # The highest seq seen per open chat (a lower bound: system messages are not
        # counted here), so that the chat cap reads the store only near the cap.
        self._seq_seen: dict[str, int] = {}

    async def send_message(
        self, actor: Actor, session_id: str, client_msg_id: str, body: str
    ) -> tuple[Message, bool, Effects]:
        """Store a text message, then relay it. A retried client_msg_id returns the stored
        message and relays nothing."""
        if not body.strip():
            raise BadRequest("body must not be empty")
        if len(body) > MAX_TEXT_LENGTH:
            raise BadRequest(f"body is longer than {MAX_TEXT_LENGTH} characters")
        session = self.sessions.get(session_id)
        if session is None:
            await self.access.raise_closed_or_missing(actor, session_id)
            raise AssertionError("unreachable")
        authorize(actor, session)
        if isinstance(actor, Engineer) and session.state is not SessionState.ACTIVE:
            raise Conflict("the session is not assigned yet")
        if (again := await self._check_room(session_id, actor, client_msg_id)) is not None:
            return again, False, []
        msg, created = await self.store.append_message(
            NewMessage(
                id=self._new_id(),
                session_id=session_id,
                ts=self.clock.now(),
                sender=sender_of(actor),
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
            who = sender_of(actor)
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
        if len(self._seq_seen) > 2 * len(self.sessions) + 64:
            # ended chats' entries, dropped in bulk now and then rather than on every end
            self._seq_seen = {k: v for k, v in self._seq_seen.items() if k in self.sessions}

    async def post_message(self, actor: Actor, message: NewMessage) -> tuple[Message, Effects]:
        """Store and relay a message built elsewhere (e.g. an attachment) in an open session."""
        session = self.sessions.get(message.session_id)
        if session is None:
            await self.access.raise_closed_or_missing(actor, message.session_id)
            raise AssertionError("unreachable")
        authorize(actor, session)
        msg, _ = await self.store.append_message(message)
        self.observer.message_stored(msg.sender.role)
        fx: Effects = []
        relay(session, msg, fx)
        return msg, fx

    async def history(
        self, actor: Actor, session_id: str, after_seq: int = 0
    ) -> tuple[dict[str, Any], list[Message], bool]:
        """The session and its messages after ``after_seq`` (open or closed sessions)."""
        session = self.sessions.get(session_id) or await self.store.get_session(session_id)
        if session is None:
            raise NotFound("no such session")
        authorize(actor, session)
        messages = await self.store.messages_after(
            session_id, after_seq, self.settings.history_limit + 1
        )
        return (await self._with_read_marks(session), *self._page(messages))

    async def history_unlocked(
        self, session: Session
    ) -> tuple[dict[str, Any], list[Message], bool]:
        """The session and the first page of its messages, without checking who asks."""
        messages = await self.store.messages_after(session.id, 0, self.settings.history_limit + 1)
        return (await self._with_read_marks(session), *self._page(messages))

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

    def typing(self, actor: Actor, session_id: str, is_typing: bool) -> Effects:
        session = self.access.open_session_for(actor, session_id)
        payload = {"session_id": session_id, "role": role_of(actor), "typing": is_typing}
        return to_other_side(actor, session, "typing", payload)

    async def mark_read(self, actor: Actor, session_id: str, seq: int) -> Effects:
        """Store the side's read mark (docs/protocol.md#read-marks), then relay it."""
        session = self.access.open_session_for(actor, session_id)
        side = role_of(actor)
        if seq > 0:
            await self.store.mark_read(session_id, side, seq)
        payload = {"session_id": session_id, "role": side, "seq": seq}
        return to_other_side(actor, session, "message:read", payload)

    async def _with_read_marks(self, session: Session) -> dict[str, Any]:
        """The session's wire form with how far each side has read (``read``)."""
        wire = self.access.session_wire(session)
        wire["read"] = await self.store.read_marks(session.id)
        return wire

    async def escalate(
        self,
        customer: Customer,
        session_id: str,
        kind: str,
        phone: str | None,
        note: str | None,
    ) -> tuple[Message, Effects]:
        session = self.access.open_session_for(customer, session_id)
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
            self.system_message(session.id, text, event, sender=customer_sender(customer))
        )
        self._saw_seq(session.id, msg.seq)
        self.observer.message_stored(msg.sender.role)
        fx: Effects = []
        relay(session, msg, fx)
        return msg, fx

    def system_message(
        self,
        session_id: str,
        text: str,
        event: dict[str, Any] | None = None,
        sender: Sender = SYSTEM_SENDER,
    ) -> NewMessage:
        """A system message of a chat, ready to store (events like joins, transfers, ends)."""
        return NewMessage(
            id=self._new_id(),
            session_id=session_id,
            ts=self.clock.now(),
            sender=sender,
            kind=MessageKind.SYSTEM,
            body=text,
            event=event,
        )
