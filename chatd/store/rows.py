"""Records as both backends store them: the column lists that every read selects, in one
order, and the functions that turn a row of them back into chatd's own values.

SQLite and PostgreSQL keep the same columns (docs/design.md#storage); only the way their
drivers hand rows over differs (tuples, asyncpg Records), and both index by position.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..core.erasure import CustomerQuery, Erasure
from ..core.errors import Conflict, NotFound, SessionClosed, TooLarge
from ..core.models import (
    Customer,
    EndReason,
    Engineer,
    EngineerAccount,
    Message,
    MessageKind,
    Role,
    Sender,
    Session,
    SessionState,
    Tier,
)
from ..core.ports import AttachmentRecord
from ..core.stats import SessionOutcome
from ..core.transcript import Handoff

Row = Sequence[Any]

SESSION_COLUMNS = """
    s.id, s.state, s.topic, s.severity, s.customer_id, s.customer_name, s.customer_email,
    s.customer_account, s.customer_tier, s.created_at, s.arrival_seq, s.engineer_id,
    s.assigned_at, s.first_assigned_at, s.ended_at, s.ended_by, s.end_reason, s.resolution,
    s.ticket, e.email, e.name, e.role, s.request_id
"""
SESSION_FROM = "FROM sessions s LEFT JOIN engineers e ON e.id = s.engineer_id"
ACCOUNT_COLUMNS = "id, email, name, role, password_hash, disabled, created_at"
MESSAGE_COLUMNS = """
    id, session_id, seq, ts, sender_role, sender_id, sender_name, kind, body, client_msg_id,
    attachment, event
"""
HANDOFF_COLUMNS = """
    id, session_id, backend, state, attempts, next_attempt_at, created_at, updated_at,
    last_error, result, claimed_at, last_status, last_response, delivered_at, requeued_at,
    ticket
"""
ATTACHMENT_COLUMNS = """
    id, session_id, uploader_role, uploader_id, filename, content_type, size, sha256,
    stored_name, thumbnail_name, thumbnail_type, created_at
"""
# The service level's reads (docs/monitoring.md).
OUTCOME_COLUMNS = (
    "s.created_at, s.first_assigned_at, s.ended_at, s.state, s.engineer_id, e.name"
)
# What is kept of a handoff backend's answer: enough to see why it refused, not a page.
MAX_RESPONSE = 4000


def check_attachment_room(
    state: str | None, usage: Row | None, size: int, max_count: int, max_bytes: int
) -> None:
    """Refuse an attachment a chat has no room for: its ``state`` (None if unknown) and
    ``usage`` (count, total bytes) read in the write that would add it."""
    if state not in ("waiting", "offered", "active"):
        raise SessionClosed("the session has ended")
    count, used = (int(usage[0]), int(usage[1])) if usage else (0, 0)
    if count >= max_count:
        raise Conflict(
            f"this chat has reached its limit of {max_count} attachments", limit=max_count
        )
    if used + size > max_bytes:
        raise TooLarge(
            f"this chat's attachments would pass their limit of {max_bytes} bytes",
            limit=max_bytes,
        )


def attachment_values(a: AttachmentRecord) -> tuple[Any, ...]:
    """An attachment's values in ATTACHMENT_COLUMNS' order."""
    return (
        a.id, a.session_id, a.uploader_role, a.uploader_id, a.filename, a.content_type,
        a.size, a.sha256, a.stored_name, a.thumbnail_name, a.thumbnail_type, a.created_at,
    )


def clip(text: str | None) -> str | None:
    return None if text is None else text[:MAX_RESPONSE]


def dumps(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def session_from_row(r: Row) -> Session:
    engineer = None
    if r[11] is not None:
        engineer = Engineer(id=r[11], email=r[19], name=r[20], role=Role(r[21]))
    return Session(
        id=r[0],
        state=SessionState(r[1]),
        topic=r[2],
        severity=r[3],
        customer=Customer(id=r[4], name=r[5], email=r[6], account=r[7], tier=Tier(r[8])),
        created_at=r[9],
        arrival_seq=int(r[10]),
        engineer=engineer,
        assigned_at=r[12],
        first_assigned_at=r[13],
        ended_at=r[14],
        ended_by=r[15],
        end_reason=EndReason(r[16]) if r[16] else None,
        resolution=r[17],
        ticket=json.loads(r[18]) if r[18] else None,
        request_id=r[22],
    )


def account_from_row(r: Row) -> EngineerAccount:
    return EngineerAccount(
        engineer=Engineer(id=r[0], email=r[1], name=r[2], role=Role(r[3])),
        password_hash=r[4],
        disabled=bool(r[5]),
        created_at=r[6],
    )


def message_from_row(r: Row) -> Message:
    return Message(
        id=r[0],
        session_id=r[1],
        seq=int(r[2]),
        ts=r[3],
        sender=Sender(role=r[4], id=r[5], name=r[6]),
        kind=MessageKind(r[7]),
        body=r[8],
        client_msg_id=r[9],
        attachment=json.loads(r[10]) if r[10] else None,
        event=json.loads(r[11]) if r[11] else None,
    )


def handoff_from_row(r: Row) -> Handoff:
    return Handoff(
        id=r[0],
        session_id=r[1],
        backend=r[2],
        state=r[3],
        attempts=int(r[4]),
        next_attempt_at=float(r[5]),
        created_at=float(r[6]),
        updated_at=float(r[7]),
        last_error=r[8],
        result=r[9],
        claimed_at=r[10],
        last_status=r[11],
        last_response=r[12],
        delivered_at=r[13],
        requeued_at=r[14],
        ticket=json.loads(r[15]) if r[15] else None,
    )


def attachment_from_row(r: Row) -> AttachmentRecord:
    return AttachmentRecord(
        id=r[0],
        session_id=r[1],
        uploader_role=r[2],
        uploader_id=r[3],
        filename=r[4],
        content_type=r[5],
        size=int(r[6]),
        sha256=r[7],
        stored_name=r[8],
        thumbnail_name=r[9],
        thumbnail_type=r[10],
        created_at=float(r[11]),
    )


def outcome_from_row(r: Row) -> SessionOutcome:
    return SessionOutcome(
        created_at=float(r[0]),
        first_assigned_at=None if r[1] is None else float(r[1]),
        ended_at=None if r[2] is None else float(r[2]),
        state=str(r[3]),
        engineer_id=r[4],
        engineer_name=r[5],
    )


def status_banner_from_row(r: Row | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {"text": r[0], "link": r[1], "updated_at": float(r[2]), "updated_by": r[3]}


# ---------------------------------------------------------------------- erasures

ERASURE_COLUMNS = (
    "id, erased_at, requested_by, via, subject_hash, chats, messages, files, handoffs"
)


def customer_where(query: CustomerQuery, param: str, alias: str = "") -> tuple[str, str]:
    """The condition selecting a customer's chats (``param`` is the driver's placeholder
    for its one parameter: ``?`` or ``$1``), and that parameter."""
    if query.customer_id is not None:
        return f"{alias}customer_id = {param}", query.customer_id
    assert query.email is not None
    return f"lower({alias}customer_email) = lower({param})", query.email


def erasable(chats: Sequence[Sequence[Any]], open_states: Sequence[str]) -> tuple[
    list[str], list[Any]
]:
    """A customer's chats as ``(id, state, ticket)`` rows, checked before an erasure
    changes anything: their ids and tickets; NotFound without any, Conflict while one is
    open (``details.open_sessions``)."""
    if not chats:
        raise NotFound("no chat of this customer is stored")
    still_open = [row[0] for row in chats if row[1] in open_states]
    if still_open:
        raise Conflict(
            "the customer has an open chat; end it first (or erase with force)",
            open_sessions=still_open,
        )
    return [row[0] for row in chats], [json.loads(row[2]) for row in chats if row[2]]


def erasure_from_row(r: Sequence[Any]) -> Erasure:
    return Erasure(
        id=r[0], erased_at=float(r[1]), requested_by=r[2], via=r[3], subject_hash=r[4],
        chats=int(r[5]), messages=int(r[6]), files=int(r[7]), handoffs=int(r[8]),
    )
