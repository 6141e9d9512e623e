"""What bounds chatd's Engine.IO and Socket.IO transport as a whole.

:class:`TransportLimits` holds the numbers, derived from the settings: the largest event
and frame, the outgoing queue of a connection, connections and handshakes per client
address, the deadline to join a namespace, the packet rate past which a connection is cut
off. :func:`handshake_budget` is the server-wide admission of new sessions, an aiohttp
middleware outermost in the app. The bounds are enforced in chatd.web.engine and
chatd.web.transport; why they exist is in docs/security.md#connections-and-frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from ..config import Settings, derive
from ..core.clock import Clock
from ..core.ratelimit import TokenBucket, smooth_burst

# Room for the Socket.IO framing around an event's payload (packet types, namespace, ack
# id, event name) in the largest frame accepted.
FRAME_OVERHEAD = 1024


@dataclass(frozen=True)
class TransportLimits:
    max_event_bytes: int = 64 * 1024
    send_queue_max_bytes: int = 1024 * 1024
    connections_per_address: int = 100
    handshake_rate: float = 5.0
    handshake_burst: int = 20
    join_timeout_seconds: float = 10.0
    abuse_penalty_seconds: float = 10.0
    limiter_max_keys: int = 100_000
    # Packets a connection may send, counted before they are decoded: past this a client is
    # not just refused event by event (each refusal still costs a decode and an answer)
    # but disconnected. Far above what the event rate lets through, so a client that slows
    # down when told ``rate_limited`` never meets it.
    event_rate: float = 20.0
    event_burst: int = 60

    @classmethod
    def from_settings(cls, settings: Settings) -> TransportLimits:
        limits: TransportLimits = derive(settings, cls)  # each field from its setting
        return limits

    @property
    def flood_rate(self) -> float:
        """Packets a second a connection may send on average (two namespaces' worth)."""
        return 2 * self.event_rate

    @property
    def flood_burst(self) -> int:
        """Packets a connection may send at once, or past its rate, before it is cut off."""
        return 2 * self.event_burst

    @property
    def max_frame_bytes(self) -> int:
        """The largest Engine.IO frame (or polling body) accepted. Twice the event limit:
        a client's JSON may spell a payload longer than the server's measure of it
        (escapes, spaces), and an event somewhat over the limit should get its
        ``too_large`` answer rather than lose the connection."""
        return 2 * self.max_event_bytes + FRAME_OVERHEAD


def handshake_budget(clock: Clock, rate: float) -> Any:
    """Server-wide admission of new Engine.IO sessions, outermost, before any other work:
    past ``rate`` a second (bursts of a tenth of it, so that a crowd is let in at an even
    pace rather than all in one turn of the event loop), from all addresses together, a
    handshake answers 503 with ``Retry-After``. Per-address limits bound one address; this
    bounds what a crowd of addresses can make the server do. Established connections are
    not counted."""
    bucket = TokenBucket(clock, rate, smooth_burst(rate))
    body = msgspec.json.encode({"ok": False, "error": {
        "code": "unavailable", "message": "the server is busy; connect again shortly"}})

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if (
            request.path.startswith("/socket.io/")
            and "sid" not in request.query
            and not bucket.take()
        ):
            return web.Response(status=503, body=body, content_type="application/json",
                                headers={"Retry-After": "1"})
        response: web.StreamResponse = await handler(request)
        return response

    return middleware
