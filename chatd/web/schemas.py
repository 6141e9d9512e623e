"""One declared schema per client event (docs/protocol.md). Unknown fields are ignored, so
that newer clients can talk to older servers; wrong types and out-of-range values are not."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import msgspec

from ..core.models import MAX_TEXT_LENGTH

UUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

SessionId = Annotated[str, msgspec.Meta(pattern=UUID_PATTERN)]
ClientMsgId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Topic = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Body = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT_LENGTH)]
Severity = Annotated[int, msgspec.Meta(ge=1, le=4)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
Note = Annotated[str, msgspec.Meta(max_length=2000)]
Phone = Annotated[str, msgspec.Meta(min_length=3, max_length=40, pattern=r"^[0-9+()\-. ]+$")]
Resolution = Annotated[str, msgspec.Meta(max_length=4000)]
Capacity = Annotated[int, msgspec.Meta(ge=1, le=100)]


class Event(msgspec.Struct):
    pass


class Empty(Event):
    pass


class ChatRequest(Event):
    topic: Topic
    severity: Severity = 3
    message: Annotated[str, msgspec.Meta(max_length=MAX_TEXT_LENGTH)] | None = None
    client_msg_id: ClientMsgId | None = None
    request_id: ClientMsgId | None = None


class CustomerResume(Event):
    session_id: SessionId
    resume_token: Token
    after_seq: Seq = 0


class EngineerResume(Event):
    session_id: SessionId
    after_seq: Seq = 0


class MessageSend(Event):
    session_id: SessionId
    client_msg_id: ClientMsgId
    body: Body


class Typing(Event):
    session_id: SessionId
    typing: bool


class MessageRead(Event):
    session_id: SessionId
    seq: Seq


class EscalationRequest(Event):
    session_id: SessionId
    kind: Literal["phone", "screen_share"]
    phone: Phone | None = None
    note: Note | None = None


class CustomerEnd(Event):
    session_id: SessionId


class EngineerEnd(Event):
    session_id: SessionId
    resolution: Resolution | None = None


class EngineerStatusChange(Event):
    status: Literal["available", "away"]
    capacity: Capacity | None = None


class SessionRef(Event):
    session_id: SessionId


class Transfer(Event):
    session_id: SessionId
    to_engineer_id: SessionId


class Login(msgspec.Struct):
    email: Annotated[str, msgspec.Meta(min_length=3, max_length=254)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class Guest(msgspec.Struct):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    email: Annotated[str, msgspec.Meta(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]


class CustomerAuth(msgspec.Struct):
    token: Annotated[str, msgspec.Meta(max_length=8192)] | None = None
    guest: Guest | None = None
    session_id: SessionId | None = None
    resume_token: Token | None = None


class EngineerAuth(msgspec.Struct):
    token: Token | None = None
    watch: bool = False  # only listen to the desk-wide events (the monitor page)


T = TypeVar("T")


def convert(data: Any, schema: type[T]) -> T:
    """Validate a decoded JSON payload; raises msgspec.ValidationError with a path."""
    if data is None:
        data = {}
    where = nul_at(data, "$")
    if where is not None:
        # No text chatd keeps may hold U+0000: PostgreSQL cannot store it, and no person
        # types it. Refused the same way whatever the database.
        raise msgspec.ValidationError(f"text must not contain U+0000 (NUL) - at `{where}`")
    return msgspec.convert(data, schema, strict=True)


def nul_at(data: Any, path: str) -> str | None:
    """The path of the first string (or object key) holding U+0000 in ``data``, if any."""
    if isinstance(data, str):
        return path if "\x00" in data else None
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str) and "\x00" in key:
                return path
            found = nul_at(value, f"{path}.{key}")
            if found is not None:
                return found
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found = nul_at(value, f"{path}[{i}]")
            if found is not None:
                return found
    return None
