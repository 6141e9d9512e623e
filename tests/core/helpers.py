"""Driving the desk in tests: people, requests and the effects addressed to each of them."""

from __future__ import annotations

from typing import Any

from chatd.core.board import BoardReader
from chatd.core.clock import FakeClock
from chatd.core.desk import (
    CUSTOMER_NS,
    ENGINEER_NS,
    ENGINEERS_ROOM,
    QUEUE_ROOM,
    Desk,
    DeskSettings,
    Effects,
    customer_room,
    engineer_room,
)
from chatd.core.models import (
    Customer,
    Engineer,
    EngineerAccount,
    EngineerStatus,
    Role,
    Tier,
)
from chatd.store.sqlite import SQLiteStore

SETTINGS = DeskSettings(
    offer_timeout=30,
    grace=60,
    default_capacity=3,
    default_handle_seconds=600,
    position_interval=1,
)
# A lead who only looks at the desk (never connected, never offered anything).
OBSERVER = Engineer("eng-observer", "observer@vendor.example", "Observer", Role.LEAD)


class Floor:
    """A desk with its store and fake clock, and shortcuts for the people on it."""

    def __init__(self, desk: Desk, store: SQLiteStore, clock: FakeClock) -> None:
        READERS.clear()
        SEEN.clear()
        self.desk = desk
        self.store = store
        self.clock = clock

    async def engineer(
        self,
        name: str,
        *,
        role: Role = Role.ENGINEER,
        capacity: int = 3,
        available: bool = True,
        connected: bool = True,
    ) -> Engineer:
        """An engineer account (stored, as sessions reference it), optionally online."""
        e = Engineer(id=f"eng-{name}", email=f"{name}@vendor.example", name=name.title(),
                     role=role)
        await self.store.add_engineer(
            EngineerAccount(e, "not-a-real-hash", disabled=False, created_at=self.clock.now())
        )
        if connected:
            self.desk.engineer_connected(e)
            if available:
                await self.available(e, capacity)
        return e

    async def available(self, e: Engineer, capacity: int | None = None) -> Effects:
        _, fx = await self.desk.set_status(e, EngineerStatus.AVAILABLE, capacity)
        return fx

    async def away(self, e: Engineer) -> Effects:
        _, fx = await self.desk.set_status(e, EngineerStatus.AWAY)
        return fx

    async def request(
        self,
        c: Customer,
        topic: str = "Cannot log in",
        *,
        severity: int = 3,
        message: str | None = None,
        client_msg_id: str | None = None,
    ) -> tuple[dict[str, Any], Effects]:
        """A customer asks for a chat from a connected widget, as the socket layer does."""
        session, _token, fx = await self.desk.request_chat(
            c, topic, severity, message, client_msg_id
        )
        self.desk.customer_connected(session["id"])
        read_as_widget(session)
        return session, fx

    async def queue(self, *customers: Customer) -> list[str]:
        ids = []
        for c in customers:
            session, _ = await self.request(c)
            ids.append(session["id"])
        return ids

    def queue_order(self) -> list[str]:
        """Session ids of the queue as a lead's console lists it, position 1 first."""
        return [item["id"] for item in self.desk.snapshot(OBSERVER)["queue"]]

    async def later(self, seconds: float) -> Effects:
        """Let time pass, then let the desk act on it (as its ticker does)."""
        self.clock.advance(seconds)
        return await self.desk.tick()

    async def assigned(self, e: Engineer, c: Customer) -> str:
        """Queue ``c`` and have ``e`` (online, with room) accept the offer."""
        session, fx = await self.request(c)
        sid = str(session["id"])
        assert sid in offers(fx, e), fx
        await self.desk.accept(e, sid)
        return sid


def customer(name: str, tier: Tier = Tier.PREMIER) -> Customer:
    return Customer(
        id=f"cust-{name}",
        name=name.title(),
        email=f"{name}@client.example",
        account="Client Corp",
        tier=tier,
    )


def sent(fx: Effects, event: str, *, namespace: str | None = None,
         room: str | None = None) -> list[dict[str, Any]]:
    return [
        o.payload
        for o in fx
        if o.event == event
        and (namespace is None or o.namespace == namespace)
        and (room is None or o.room == room)
    ]


def to_engineer(fx: Effects, e: Engineer, event: str) -> list[dict[str, Any]]:
    return sent(fx, event, namespace=ENGINEER_NS, room=engineer_room(e.id))


def to_customer(fx: Effects, session_id: str, event: str) -> list[dict[str, Any]]:
    return sent(fx, event, namespace=CUSTOMER_NS, room=customer_room(session_id))


def to_engineers_room(fx: Effects, event: str) -> list[dict[str, Any]]:
    return sent(fx, event, namespace=ENGINEER_NS, room=ENGINEERS_ROOM)


def offers(fx: Effects, e: Engineer) -> list[str]:
    """Session ids offered to ``e``, in the order the offers were made."""
    return [p["session_id"] for p in to_engineer(fx, e, "offer:new")]


def offer_targets(fx: Effects) -> list[tuple[str, str]]:
    """(session id, engineer room) of every offer made."""
    return [(o.payload["session_id"], o.room) for o in fx if o.event == "offer:new"]


# What each waiting customer's widget makes of the queue boards (chatd/core/board.py),
# by session id: made when a Floor's customer asks for a chat.
READERS: dict[str, tuple[BoardReader, list[tuple[int, int | None]]]] = {}
# What the widgets made of each board (asking twice about one board answers the same).
SEEN: dict[int, dict[str, tuple[int, int | None]]] = {}


def read_as_widget(session: dict[str, Any]) -> None:
    """Follow the boards as this customer's widget would, from its chat:request answer."""
    if session.get("position") is not None:
        READERS[session["id"]] = (
            BoardReader(session["arrival"], session["position"], session["board"],
                        session["board_seen"]),
            [(session["position"], session.get("estimated_wait_seconds"))],
        )


def positions(fx: Effects) -> dict[str, tuple[int, int | None]]:
    """session id -> (position, estimate) of each waiting customer whose widget shows a
    new position or wait after the queue boards in ``fx``; there is one board at most."""
    boards = [o for o in fx if o.event == "queue:board"]
    assert len(boards) <= 1, "two queue boards in one batch"
    out: dict[str, tuple[int, int | None]] = {}
    for o in boards:
        assert (o.namespace, o.room) == (CUSTOMER_NS, QUEUE_ROOM)
        board = o.payload
        if board["v"] in SEEN:
            out.update(SEEN[board["v"]])
            continue
        gone = set(board["left"])
        for sid, (reader, shown) in list(READERS.items()):
            if reader.arrival in gone:
                del READERS[sid]
                continue
            assert reader.read(board), f"{sid} missed a board"
            wait = reader.wait(board)
            now = (reader.position, wait.seconds if wait is not None else None)
            if now != shown[-1]:
                shown.append(now)
                out[sid] = now
        SEEN[board["v"]] = dict(out)
    return out


def events(fx: Effects) -> list[tuple[str, str]]:
    return [(o.event, o.room) for o in fx]

