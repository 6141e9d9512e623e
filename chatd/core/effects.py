"""What the desk asks to be told, and to whom: ``Outbound`` events addressed to a room of a
namespace, and the names of those rooms. The desk returns them; the Socket.IO layer
(chatd/web/sockets.py) emits them. Nothing here touches a socket."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .models import Customer, Engineer, Message, Session, SessionState

CUSTOMER_NS = "customer"
ENGINEER_NS = "engineer"
ENGINEERS_ROOM = "engineers"
# Every waiting customer's connections: the audience of the queue board (board.py).
QUEUE_ROOM = "queue"


def customer_room(session_id: str) -> str:
    return f"session:{session_id}"


def engineer_room(engineer_id: str) -> str:
    return f"engineer:{engineer_id}"


@dataclass(frozen=True, slots=True)
class Outbound:
    """One event to emit: to a room of a namespace, optionally not to the connection that
    caused it (the sender already has the answer in its acknowledgement)."""

    namespace: str
    room: str
    event: str
    payload: dict[str, Any]
    skip_origin: bool = False


@dataclass(frozen=True, slots=True)
class Membership(Outbound):
    """Not an event: put the connections in ``room`` (a chat's customer room) into the
    room named by ``payload["room"]``, or take them out of it (``payload["join"]``)."""


def queue_membership(session_id: str, join: bool) -> Membership:
    return Membership(
        CUSTOMER_NS, customer_room(session_id), "membership", {"room": QUEUE_ROOM, "join": join}
    )


Effects = list[Outbound]


def relay(session: Session, msg: Message, fx: Effects, *, skip_origin: bool = False) -> None:
    """A new message of a chat, to its customer and to its engineer (while answered), and
    to a lead who wrote into it."""
    payload = {"session_id": session.id, "message": msg.to_wire()}
    fx.append(
        Outbound(CUSTOMER_NS, customer_room(session.id), "message:new", payload, skip_origin)
    )
    rooms = set()
    if session.engineer is not None and session.state is SessionState.ACTIVE:
        rooms.add(engineer_room(session.engineer.id))
    if msg.sender.role == "lead" and msg.sender.id is not None:
        rooms.add(engineer_room(msg.sender.id))
    for room in sorted(rooms):
        fx.append(Outbound(ENGINEER_NS, room, "message:new", payload, skip_origin))


def to_other_side(
    actor: Customer | Engineer, session: Session, event: str, payload: dict[str, Any]
) -> Effects:
    """An event from one side of a chat (typing, read) to the other."""
    if isinstance(actor, Customer):
        if session.engineer is None or session.state is not SessionState.ACTIVE:
            return []
        return [Outbound(ENGINEER_NS, engineer_room(session.engineer.id), event, payload)]
    return [Outbound(CUSTOMER_NS, customer_room(session.id), event, payload)]


def ended_payload(session: Session) -> dict[str, Any]:
    """``session:ended`` of a closed session, with its ticket once one is known."""
    ended: dict[str, Any] = {
        "session_id": session.id,
        "ended_by": session.ended_by,
        "reason": session.end_reason.value if session.end_reason else None,
    }
    if session.resolution:
        ended["resolution"] = session.resolution
    if session.ticket:
        ended["ticket"] = session.ticket
    return ended


def relay_end(session: Session, msg: Message, answered: bool, fx: Effects) -> None:
    """The end of a chat: its closing system message and ``session:ended``, to the customer
    and, if it was answered, to its engineer."""
    ended = ended_payload(session)
    wire_msg = {"session_id": session.id, "message": msg.to_wire()}
    fx.append(Outbound(CUSTOMER_NS, customer_room(session.id), "message:new", wire_msg))
    fx.append(Outbound(CUSTOMER_NS, customer_room(session.id), "session:ended", ended))
    if answered and session.engineer is not None:
        room = engineer_room(session.engineer.id)
        fx.append(Outbound(ENGINEER_NS, room, "message:new", wire_msg))
        fx.append(Outbound(ENGINEER_NS, room, "session:ended", ended))
