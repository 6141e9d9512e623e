"""The desk's nouns: customers, engineers, sessions and messages (docs/design.md)."""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .waits import Wait, wait_wire


class Tier(enum.StrEnum):
    STANDARD = "standard"
    PREMIER = "premier"
    CONCIERGE = "concierge"


class Role(enum.StrEnum):
    ENGINEER = "engineer"
    LEAD = "lead"


class SessionState(enum.StrEnum):
    WAITING = "waiting"
    OFFERED = "offered"
    ACTIVE = "active"
    ENDED = "ended"
    ABANDONED = "abandoned"


OPEN_STATES = frozenset({SessionState.WAITING, SessionState.OFFERED, SessionState.ACTIVE})
QUEUED_STATES = frozenset({SessionState.WAITING, SessionState.OFFERED})


class EndReason(enum.StrEnum):
    """How a session ended; ``abandoned`` and ``cancelled`` end in state ``abandoned``."""

    CUSTOMER_ENDED = "customer_ended"
    ENGINEER_ENDED = "engineer_ended"
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"
    TIMEOUT = "timeout"


class MessageKind(enum.StrEnum):
    TEXT = "text"
    ATTACHMENT = "attachment"
    SYSTEM = "system"


class EngineerStatus(enum.StrEnum):
    AVAILABLE = "available"
    AWAY = "away"


MAX_TEXT_LENGTH = 10_000


def iso(ts: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 UTC with milliseconds, e.g. 2026-01-02T03:04:05.678Z."""
    if ts is None:
        return None
    return _iso(ts)


@functools.lru_cache(maxsize=1024)
def _iso(ts: float) -> str:
    # A message's time is written out for its ack and again for its relay: once is enough.
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    name: str
    email: str
    account: str
    tier: Tier

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "account": self.account,
            "tier": self.tier.value,
        }


@dataclass(frozen=True, slots=True)
class Engineer:
    """An engineer's identity as the desk sees it (no credentials)."""

    id: str
    email: str
    name: str
    role: Role

    @property
    def is_lead(self) -> bool:
        return self.role is Role.LEAD

    def ref(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name}


@dataclass(frozen=True, slots=True)
class EngineerAccount:
    """An engineer as stored, with the password hash the desk never looks at."""

    engineer: Engineer
    password_hash: str
    disabled: bool
    created_at: float


@dataclass(frozen=True, slots=True)
class Sender:
    role: str  # "customer", "engineer", "lead" or "system"
    id: str | None
    name: str

    def to_wire(self) -> dict[str, Any]:
        return {"role": self.role, "id": self.id, "name": self.name}


SYSTEM_SENDER = Sender("system", None, "chatd")


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message on its way into the store, before it has a seq."""

    id: str
    session_id: str
    ts: float
    sender: Sender
    kind: MessageKind
    body: str
    client_msg_id: str | None = None
    attachment: dict[str, Any] | None = None
    event: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    session_id: str
    seq: int
    ts: float
    sender: Sender
    kind: MessageKind
    body: str
    client_msg_id: str | None = None
    attachment: dict[str, Any] | None = None
    event: dict[str, Any] | None = None

    @classmethod
    def stored(cls, new: NewMessage, seq: int) -> Message:
        return cls(
            id=new.id,
            session_id=new.session_id,
            seq=seq,
            ts=new.ts,
            sender=new.sender,
            kind=new.kind,
            body=new.body,
            client_msg_id=new.client_msg_id,
            attachment=new.attachment,
            event=new.event,
        )

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "session_id": self.session_id,
            "seq": self.seq,
            "ts": iso(self.ts),
            "sender": self.sender.to_wire(),
            "kind": self.kind.value,
            "body": self.body,
        }
        if self.client_msg_id is not None:
            out["client_msg_id"] = self.client_msg_id
        if self.attachment is not None:
            out["attachment"] = self.attachment
        if self.event is not None:
            out["event"] = self.event
        return out


@dataclass(slots=True)
class Session:
    id: str
    state: SessionState
    topic: str
    severity: int
    customer: Customer
    created_at: float
    arrival_seq: int
    engineer: Engineer | None = None
    assigned_at: float | None = None
    first_assigned_at: float | None = None
    ended_at: float | None = None
    ended_by: str | None = None
    end_reason: EndReason | None = None
    resolution: str | None = None
    ticket: dict[str, Any] | None = None
    # the customer's id for the chat:request that opened it: a retry of that request
    # (its answer lost) gets this session again instead of a conflict
    request_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def arrival_key(self) -> tuple[float, int]:
        return (self.created_at, self.arrival_seq)

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    def to_wire(
        self, *, position: int | None = None, estimate: Wait | None = None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "state": self.state.value,
            "topic": self.topic,
            "severity": self.severity,
            "customer": self.customer.to_wire(),
            "created_at": iso(self.created_at),
        }
        if self.engineer is not None:
            out["engineer"] = self.engineer.ref()
        if self.assigned_at is not None:
            out["assigned_at"] = iso(self.assigned_at)
        if self.ended_at is not None:
            out["ended_at"] = iso(self.ended_at)
            out["ended_by"] = self.ended_by
            out["end_reason"] = self.end_reason.value if self.end_reason else None
        if self.resolution is not None:
            out["resolution"] = self.resolution
        if self.state in QUEUED_STATES and position is not None:
            out["position"] = position
            out.update(wait_wire(estimate))
        if self.ticket is not None:
            out["ticket"] = self.ticket
        return out
