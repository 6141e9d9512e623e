"""The Engine.IO and Socket.IO server under chatd's namespaces, and its bounds.

python-socketio and python-engineio do the protocol; the subclasses here keep what one
client can make the server hold bounded (docs/security.md#connections-and-frames): no
binary packets (chatd uses none, and the library buffers their attachments without
limit), no frame larger than an event may need, a capped outgoing queue per connection,
a cap on open connections and a rate of handshakes per client address, and a deadline
to join a namespace. How each refusal looks on the wire is in docs/protocol.md#1-transport.

The parts: chatd.web.bounds (the limits, the handshake budget), chatd.web.engine (the
Engine.IO session and server), chatd.web.packets (JSON, packets, the room manager); here,
the Socket.IO server over them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import socketio
from aiohttp import WSCloseCode

from ..core.clock import Clock
from .bounds import TransportLimits, handshake_budget
from .engine import EngineServer
from .packets import _JSON, Manager, Packet

# Imported from here by the app, the namespaces and the tests.
__all__ = ["_JSON", "Manager", "Packet", "Server", "TransportLimits", "handshake_budget"]

RESERVED_EVENTS = frozenset({"connect", "disconnect", "connect_error"})


class Server(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server on :class:`EngineServer`, refusing what chatd never takes
    before anything is buffered or dispatched.

    Binary packets (BINARY_EVENT, BINARY_ACK) close the connection as soon as their header
    arrives: the library would keep every attachment frame until the announced count is
    reached, however large. So do frames that are not Socket.IO packets. The library also
    hands ``data[0]`` to the handlers as the event name without checking it, and treats a
    client event named ``connect`` or ``disconnect`` like the real thing; those get an
    error answer instead.
    """

    def __init__(self, *, transport: TransportLimits, clock: Clock, **kwargs: Any) -> None:
        self.transport_limits = transport
        self.clock = clock
        super().__init__(max_http_buffer_size=transport.max_frame_bytes, **kwargs)
        self.eio.joined = self._joined

    def _engineio_server_class(self) -> Callable[..., EngineServer]:
        return functools.partial(EngineServer, self.transport_limits, self.clock)

    def _joined(self, eio_sid: str) -> bool:
        for namespace in self.manager.get_namespaces():
            sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
            if sid is not None and self.manager.is_connected(sid, namespace):
                return True
        return False

    def _watch_join(self, eio_sid: str) -> None:
        if not self._joined(eio_sid):
            self.eio.watch_join(eio_sid)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        if eio_sid not in self.environ:
            # The Engine.IO session closed (e.g. a close packet earlier in the same frame
            # batch): what still arrives for it belongs to nobody.
            return
        if not isinstance(data, str):
            self.eio.refuse(eio_sid, WSCloseCode.UNSUPPORTED_DATA, "binary frames are not accepted")
            return
        kind = data[:1]
        if kind == "5" or kind == "6":
            self.eio.refuse(
                eio_sid, WSCloseCode.UNSUPPORTED_DATA, "binary packets are not accepted"
            )
            return
        try:
            pkt = self.packet_class(encoded_packet=data)
        except ValueError:
            self.eio.refuse(eio_sid, WSCloseCode.PROTOCOL_ERROR, "not a Socket.IO packet")
            return
        if pkt.packet_type == socketio.packet.EVENT:
            await self._handle_event(eio_sid, pkt.namespace, pkt.id, pkt.data)
        elif pkt.packet_type == socketio.packet.ACK:
            await self._handle_ack(eio_sid, pkt.namespace, pkt.id, pkt.data)
        elif pkt.packet_type == socketio.packet.CONNECT:
            await self._handle_connect(eio_sid, pkt.namespace, pkt.data)
        elif pkt.packet_type == socketio.packet.DISCONNECT:
            await self._handle_disconnect(eio_sid, pkt.namespace, self.reason.CLIENT_DISCONNECT)
            self._watch_join(eio_sid)
        else:  # CONNECT_ERROR, which only a server sends, or no packet type at all
            self.eio.refuse(eio_sid, WSCloseCode.PROTOCOL_ERROR, "not a Socket.IO packet")

    async def disconnect(
        self, sid: str, namespace: str | None = None, ignore_queue: bool = False
    ) -> None:
        eio_sid = self.manager.eio_sid_from_sid(sid, namespace or "/")
        await super().disconnect(sid, namespace=namespace, ignore_queue=ignore_queue)
        if eio_sid is not None:
            self._watch_join(eio_sid)

    async def _handle_event(
        self, eio_sid: str, namespace: str | None, id: int | None, data: Any
    ) -> None:
        if (
            isinstance(data, list)
            and data
            and isinstance(data[0], str)
            and data[0] not in RESERVED_EVENTS
        ):
            await super()._handle_event(eio_sid, namespace, id, data)
            return
        namespace = namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if id is None or sid is None or not self.manager.is_connected(sid, namespace):
            return
        error = {
            "ok": False,
            "error": {
                "code": "bad_request",
                "message": "an event needs a name (a string) that is not reserved",
            },
        }
        await self._send_packet(
            eio_sid, self.packet_class(socketio.packet.ACK, namespace=namespace, id=id,
                                       data=[error])
        )
