"""The Socket.IO room manager's bookkeeping (chatd.web.packets.Manager): the same rooms as
python-socketio's own manager after any sequence of joins, leaves and disconnects, and a
disconnect that looks only at the client's own rooms, whatever the number of others (with
10,000 customers waiting there are more than 20,000 rooms per namespace).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
import socketio
from bidict import bidict

from chatd.cluster.manager import ClusterManager
from chatd.web import packets
from chatd.web.packets import Manager

NS = "/customer"


class Untouchable(bidict):  # type: ignore[type-arg]
    """A room that fails the test when anything looks for a client in it."""

    def __contains__(self, key: object) -> bool:
        raise AssertionError("a disconnect searched a room its client is not in")


def connect(m: Any, sid: str, *rooms: str) -> None:
    m.basic_enter_room(sid, NS, None, eio_sid="eio-" + sid)
    m.basic_enter_room(sid, NS, sid, eio_sid="eio-" + sid)
    for room in rooms:
        m.basic_enter_room(sid, NS, room)


def test_a_disconnect_leaves_its_rooms_without_searching_the_others() -> None:
    m = Manager()
    for n in range(2000):
        connect(m, f"c{n}", f"chat-{n}", "queue")
    connect(m, "me", "chat-me", "queue")
    m.pending_disconnect[NS] = ["me"]
    m.callbacks["me"] = {1: None}
    mine = {None, "me", "chat-me", "queue"}
    for name, room in list(m.rooms[NS].items()):
        if name not in mine:
            m.rooms[NS][name] = Untouchable(room)
    assert sorted(m.get_rooms("me", NS)) == ["chat-me", "me", "queue"]

    m.basic_disconnect("me", NS)

    rooms = m.rooms[NS]
    assert "me" not in rooms and "chat-me" not in rooms
    assert len(rooms["queue"]) == 2000 and len(rooms[None]) == 2000
    assert dict(rooms["queue"]) == {f"c{n}": f"eio-c{n}" for n in range(2000)}
    assert "me" not in m.callbacks and NS not in m.pending_disconnect
    assert m.get_rooms("me", NS) == []
    assert sorted(m.get_rooms("c7", NS)) == ["c7", "chat-7", "queue"]


def test_the_last_client_leaving_clears_the_namespace_and_its_pending_state() -> None:
    m = Manager()
    connect(m, "only", "chat-1")
    m.pending_connect[NS] = ["only"]
    m.basic_disconnect("only", NS)
    assert NS not in m.rooms and NS not in m.pending_connect
    assert m.get_rooms("only", NS) == []


def test_same_rooms_as_python_socketio_after_random_joins_leaves_and_disconnects() -> None:
    rng = random.Random(20261130)
    ours, theirs = Manager(), socketio.AsyncManager()
    connected: set[str] = set()
    for step in range(3000):
        action = rng.random()
        sid = f"s{rng.randrange(60)}"
        room = f"r{rng.randrange(15)}"
        for m in (ours, theirs):
            if sid not in connected:
                connect(m, sid)
            elif action < 0.5:
                m.basic_enter_room(sid, NS, room)
            elif action < 0.85:
                m.basic_leave_room(sid, NS, room)
            else:
                m.basic_disconnect(sid, NS)
        if sid not in connected:
            connected.add(sid)
        elif action >= 0.85:
            connected.discard(sid)
        assert {k: dict(v) for k, v in ours.rooms.get(NS, {}).items()} == {
            k: dict(v) for k, v in theirs.rooms.get(NS, {}).items()
        }, step
        for s in connected:
            assert sorted(ours.get_rooms(s, NS)) == sorted(theirs.get_rooms(s, NS)), step


async def test_a_broadcast_to_thousands_pauses_between_slices_for_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A board to a room of thousands goes out SEND_SLICE members at a time with a pause
    between slices, so that a chat's ack, a few turns of the event loop, waits for one
    slice at most, not for a slice in each of its turns."""
    monkeypatch.setattr(packets, "SLICE_PAUSE", 0.05)  # room to spare on a busy machine
    sent: list[str] = []

    class Server:
        packet_class = packets.Packet

        async def _send_eio_packet(self, eio_sid: str, pkt: Any) -> None:
            sent.append(eio_sid)

    m = Manager()
    m.server = Server()
    for n in range(2000):
        connect(m, f"c{n}", "queue")

    async def ack() -> int:
        for _ in range(5):  # a chat's message: read, handled, stored, relayed, acked
            await asyncio.sleep(0)
        return len(sent)

    board = asyncio.create_task(m.emit("queue:board", {"v": 1}, NS, room="queue"))
    await asyncio.sleep(0)  # the board's first slice goes out
    sent_meanwhile = await ack()
    await board
    assert sent_meanwhile <= packets.SEND_SLICE, sent_meanwhile
    assert sorted(sent) == sorted(f"eio-c{n}" for n in range(2000))  # everyone, once


async def test_in_a_cluster_a_board_to_thousands_does_not_hold_up_later_relays() -> None:
    """Events from the other processes are read one after another; a board for thousands
    of this process's customers is sent in a task of its own, so that a chat's relay read
    after it goes out at once, and each member still gets that room's boards in order."""
    sent: list[tuple[str, str]] = []

    class Server:
        packet_class = packets.Packet

        async def _send_eio_packet(self, eio_sid: str, pkt: Any) -> None:
            sent.append((eio_sid, str(pkt.data)))

    m = ClusterManager("redis://127.0.0.1:6379/0", channel="test-rooms")  # never connects
    m.server = Server()
    for n in range(2000):
        connect(m, f"c{n}", "queue")
    connect(m, "a", "chat-1")

    def event(room: str, name: str, v: int) -> dict[str, Any]:
        return {"method": "emit", "event": name, "data": [{"v": v}], "namespace": NS,
                "room": room, "skip_sid": None, "callback": None, "host_id": "another"}

    await m._handle_emit(event("queue", "queue:board", 1))
    await m._handle_emit(event("queue", "queue:board", 2))
    await m._handle_emit(event("chat-1", "message:new", 3))
    assert sent == [("eio-a", '2/customer,["message:new",{"v":3}]')]

    await asyncio.gather(*m._big_sends.values())
    boards: dict[str, list[str]] = {}
    for sid, data in sent[1:]:
        boards.setdefault(sid, []).append(data)
    assert boards.keys() == {f"eio-c{n}" for n in range(2000)}
    assert all(
        got == ['2/customer,["queue:board",{"v":1}]', '2/customer,["queue:board",{"v":2}]']
        for got in boards.values()
    )
    assert not m._big_sends
