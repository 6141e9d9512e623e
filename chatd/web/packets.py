"""How chatd's Socket.IO events are encoded and sent to a room.

:class:`_JSON` is the ``json`` module done by msgspec (with the lone surrogates a browser
may send made U+FFFD), :class:`Packet` is a Socket.IO packet without binary attachments,
and :class:`Manager` is the room manager that queues an event on each member's socket in
turn, in the emitting task. chatd.web.transport's server is built on them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import engineio
import msgspec
import socketio

log = logging.getLogger(__name__)


class _JSON:
    """The ``json`` module's two functions, done by msgspec (several times faster)."""

    _encoder = msgspec.json.Encoder()

    @classmethod
    def dumps(cls, obj: Any, **_: Any) -> str:
        return cls._encoder.encode(obj).decode()

    @staticmethod
    def loads(s: str | bytes, **_: Any) -> Any:
        try:
            return msgspec.json.decode(s)
        except msgspec.DecodeError as exc:  # callers expect json's ValueError
            if "\\u" in (s if isinstance(s, str) else s.decode("utf-8", "replace")):
                # Maybe a lone surrogate escape, which msgspec refuses: JavaScript's
                # JSON.stringify writes one for a string cut inside an emoji. It stands for
                # no character; it becomes U+FFFD, as a browser's own UTF-8 encoder does.
                try:
                    return _replace_surrogates(json.loads(s, parse_constant=_no_constant))
                except (ValueError, RecursionError):
                    pass
            raise ValueError(str(exc)) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _replace_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_replace_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    return value


class Packet(socketio.packet.Packet):  # type: ignore[misc]
    """Socket.IO packets without binary attachments: chatd sends files over HTTP, so the
    library's recursive scan of every outgoing payload for bytes is wasted work."""

    uses_binary_events = False
    json = _JSON


# Recipients sent to between two turns of the event loop.
SEND_SLICE = 64
SLICE_PAUSE = 0.001  # seconds


class Manager(socketio.AsyncManager):  # type: ignore[misc]
    """python-socketio's room manager, sending an event to a room's members one after
    another, in the emitting task.

    The library makes a task per recipient and waits for them all, which costs the
    emitting handler (and so its ack) two more turns of the event loop. Sending only
    queues the packet on the recipient's socket, so doing it in turn is the same work,
    done sooner. Emits with a callback (chatd makes none) take the library's path.

    It also keeps each client's rooms (``_rooms_of``): the library finds them by looking
    through every room of the namespace, and there is a room per connected client and per
    chat, so with 10,000 customers waiting each disconnect stopped the server for
    milliseconds. Here a disconnect costs the client's own rooms.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rooms_of: dict[tuple[str, str], set[str | None]] = {}

    def basic_enter_room(
        self, sid: str, namespace: str, room: str | None, eio_sid: str | None = None
    ) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        self._rooms_of.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid: str, namespace: str, room: str | None) -> None:
        super().basic_leave_room(sid, namespace, room)
        rooms = self._rooms_of.get((namespace, sid))
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._rooms_of[namespace, sid]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        """The library's (python-socketio 5's BaseManager.basic_disconnect), leaving only
        the rooms the client is in."""
        if namespace not in self.rooms:
            return
        for room in list(self._rooms_of.get((namespace, sid), ())):
            self.basic_leave_room(sid, namespace, room)
        self._rooms_of.pop((namespace, sid), None)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            sids = pending.get(namespace)
            if sids is not None and sid in sids:
                sids.remove(sid)
                if not sids:
                    del pending[namespace]

    def get_rooms(self, sid: str, namespace: str) -> list[str]:
        return [r for r in self._rooms_of.get((namespace, sid), ()) if r is not None]

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: str | None = None,
        skip_sid: str | list[str] | None = None,
        callback: Any = None,
        to: str | None = None,
        **kwargs: Any,
    ) -> None:
        if callback is not None:
            await super().emit(event, data, namespace, room=room, skip_sid=skip_sid,
                               callback=callback, to=to, **kwargs)
            return
        room = to or room
        if namespace not in self.rooms:
            return
        skip = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        recipients = [
            eio_sid for sid, eio_sid in self.get_participants(namespace, room) if sid not in skip
        ]
        if not recipients:
            return
        args = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        encoded = self.server.packet_class(
            socketio.packet.EVENT, namespace=namespace, data=[event, *args]
        ).encode()
        packets = [
            engineio.packet.Packet(engineio.packet.MESSAGE, p)
            for p in (encoded if isinstance(encoded, list) else [encoded])
        ]
        for n, eio_sid in enumerate(recipients, 1):
            if n % SEND_SLICE == 0:
                # A room of thousands (the queue board's) is sent in slices, with a pause
                # between them in which the event loop serves the others: no long stretch
                # without a turn, and a chat's ack, which takes a few turns, waits for one
                # slice at most rather than for one in each of its turns.
                await asyncio.sleep(SLICE_PAUSE)
            for pkt in packets:
                try:
                    await self.server._send_eio_packet(eio_sid, pkt)
                except engineio.exceptions.SocketIsClosedError:
                    pass  # it left meanwhile; the others still get the event
                except Exception:
                    log.exception("sending %s to a member of %s failed", event, room)

    async def membership(self, namespace: str, room: str, target: str, join: bool) -> None:
        """Put the members of ``room`` into ``target`` (``join``), or take them out of it."""
        for sid, _ in list(self.get_participants(namespace, room)):
            if join:
                await self.server.enter_room(sid, target, namespace=namespace)
            else:
                await self.server.leave_room(sid, target, namespace=namespace)
