"""Builders for the storage contract tests: customers, engineers, sessions and messages.

Times carry binary-exact fractions (.25, .5, .125) so that every backend, whether it keeps
REAL seconds or microsecond timestamps, must give back exactly what it was given.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from chatd.core.models import (
    SYSTEM_SENDER,
    Customer,
    EndReason,
    Engineer,
    EngineerAccount,
    Message,
    MessageKind,
    NewMessage,
    Role,
    Sender,
    Session,
    SessionState,
    Tier,
)
from chatd.core.ports import Store

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def new_id() -> str:
    return str(uuid.uuid4())


def account(
    email: str, *, name: str = "", role: Role = Role.ENGINEER, disabled: bool = False,
    created_at: float = T0,
) -> EngineerAccount:
    engineer = Engineer(
        id=new_id(), email=email, name=name or email.split("@")[0].title(), role=role
    )
    return EngineerAccount(
        engineer, password_hash=f"argon2-hash-of-{email}", disabled=disabled,
        created_at=created_at,
    )


async def add_engineer(store: Store, email: str, **kw: Any) -> Engineer:
    acc = account(email, **kw)
    await store.add_engineer(acc)
    return acc.engineer


def customer(n: int = 1, tier: Tier = Tier.STANDARD) -> Customer:
    return Customer(
        id=f"cust-{n}-{new_id()}", name=f"Customer {n}", email=f"c{n}@client.example",
        account=f"Client {n} Ltd", tier=tier,
    )


def waiting_session(
    *, created_at: float = T0, arrival_seq: int = 1, topic: str = "Cannot log in",
    severity: int = 3, cust: Customer | None = None,
) -> Session:
    return Session(
        id=new_id(), state=SessionState.WAITING, topic=topic, severity=severity,
        customer=cust or customer(arrival_seq), created_at=created_at, arrival_seq=arrival_seq,
    )


def text(
    session_id: str, body: str, *, ts: float = T0, client_msg_id: str | None = None,
    sender: Sender | None = None,
) -> NewMessage:
    return NewMessage(
        id=new_id(), session_id=session_id, ts=ts,
        sender=sender or Sender("customer", "cust-1", "Customer 1"), kind=MessageKind.TEXT,
        body=body, client_msg_id=client_msg_id,
    )


def system(session_id: str, body: str, event: dict[str, Any], *, ts: float = T0) -> NewMessage:
    return NewMessage(
        id=new_id(), session_id=session_id, ts=ts, sender=SYSTEM_SENDER,
        kind=MessageKind.SYSTEM, body=body, event=event,
    )


async def create(
    store: Store, session: Session | None = None, *, first: str | None = None,
    resume_hash: str = "resume-hash",
) -> tuple[Session, Message | None]:
    session = session or waiting_session()
    msg = await store.create_session(
        session, resume_hash,
        text(session.id, first, ts=session.created_at) if first is not None else None,
    )
    return session, msg


def assigned(session: Session, engineer: Engineer, at: float) -> Session:
    """The session as the desk hands it to assign_session (accept or transfer)."""
    return dataclasses.replace(
        session, state=SessionState.ACTIVE, engineer=engineer, assigned_at=at,
        first_assigned_at=session.first_assigned_at or at,
    )


def ended(
    session: Session, at: float, *, state: SessionState = SessionState.ENDED,
    reason: EndReason = EndReason.ENGINEER_ENDED, by: str = "engineer",
    resolution: str | None = None,
) -> Session:
    return dataclasses.replace(
        session, state=state, ended_at=at, ended_by=by, end_reason=reason,
        resolution=resolution,
    )


def end_note(session_id: str, *, ts: float, reason: str = "engineer_ended") -> NewMessage:
    return system(session_id, "The chat has ended", {"type": "ended", "reason": reason}, ts=ts)


async def all_messages(store: Store, session_id: str) -> list[Message]:
    return await store.messages_after(session_id, 0, 100_000)
