"""The Socket.IO room manager of a cluster: python-socketio's ``AsyncRedisManager`` with
chatd's own room send (chatd.web.packets.Manager: one encode per event and room), room
membership changes in every process, and a catch-up for clients after Redis comes back.

Every emit is published once on Redis and sent by each process to its own members of the
room. What Redis lost while it was away (or while this process could not reach it) never
reaches them: when this process's subscription is back, each of its clients is told
``session:resync`` and asks again for what it missed (docs/protocol.md#resync).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import socketio

from ..core.desk import CUSTOMER_NS, ENGINEER_NS
from ..tasks import cancel_and_wait
from ..web.packets import SEND_SLICE, Manager
from . import next_batch

log = logging.getLogger(__name__)

RESYNC = "session:resync"
# Seconds between attempts to subscribe again once Redis went away (the library's own
# back-off doubles up to a minute, which would leave clients without events that long).
RETRY_SECONDS = 0.5


class ClusterManager(socketio.AsyncRedisManager, Manager):  # type: ignore[misc]
    """Redis fan-out with chatd's room send. Its ``resyncs`` counts the catch-ups."""

    def __init__(self, url: str, channel: str) -> None:
        super().__init__(url, channel=channel)
        self.resyncs = 0
        self.subscribed = asyncio.Event()
        # Published by one task, in order, what was queued meanwhile in one Redis message
        # (a JSON list): an emit never waits for Redis. Each message starts with this
        # process's id, so that its own coming back are dropped before they are decoded.
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._me = self.host_id.encode()
        self._writer: asyncio.Task[None] | None = None
        self.leading = False  # set when this process runs the desk (create_app's lead)
        self._reading_as = False
        # Sends to rooms of more than SEND_SLICE members here (the board to the waiting
        # customers), each in a task after the room's one before (see _handle_emit).
        self._big_sends: dict[tuple[str, str], asyncio.Task[None]] = {}
        # Awaited before clients are told to catch up: until the desk's calls pass again
        # (chatd.cluster.link), their session:resume would be refused.
        self.ready_for_resync: Callable[[], Awaitable[None]] | None = None

    def start(self) -> None:
        """Subscribe now (the library would wait for the first client)."""
        if not self.server.manager_initialized:
            self.server.manager_initialized = True
            self.initialize()
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(), name="chatd-redis-publish")

    async def stop(self) -> None:
        await cancel_and_wait(getattr(self, "thread", None), self._writer,
                              *self._big_sends.values())
        if self.redis is not None:
            await self.redis.aclose()

    async def emit(
        self, event: str, data: Any, namespace: str | None = None, room: str | None = None,
        skip_sid: Any = None, callback: Any = None, to: str | None = None, **kwargs: Any,
    ) -> None:
        """The library's emit without its scan for binary data (chatd sends none): sent to
        this process's members, and queued for the others."""
        room = to or room
        if callback is not None or kwargs.get("ignore_queue"):
            await super().emit(event, data, namespace=namespace or "/", room=room,
                               skip_sid=skip_sid, callback=callback, **kwargs)
            return
        message = {
            "method": "emit", "event": event,
            "data": list(data) if isinstance(data, tuple) else [data],
            "binary": False, "namespace": namespace or "/", "room": room,
            "skip_sid": skip_sid, "callback": None, "host_id": self.host_id,
        }
        await self._handle_emit(message)
        await self._publish(message)

    async def _publish(self, data: Any) -> None:
        self._outbox.put_nowait(self.json.dumps(data).encode())

    async def _write(self) -> None:
        lost = False
        while True:
            batch = await next_batch(self._outbox)
            try:
                if not getattr(self, "connected", False):
                    self._redis_connect()
                # One message on Redis for what was queued together: each process reads
                # and parses one instead of one per event.
                await self.redis.publish(
                    self.channel + (":L" if self.leading else ":F"),
                    self._me + b"[" + b",".join(batch) + b"]",
                )
                lost = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # What other processes missed meanwhile, their clients fetch when told to
                # resync; this process's own were sent already.
                if not lost:
                    log.error("cannot publish to Redis; events are lost for the other"
                              " processes until it is back: %s", exc)
                lost = True
                self.connected = False
                await asyncio.sleep(RETRY_SECONDS)

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        """The library's, except for a room with more than SEND_SLICE members here: that
        one is sent in a task of its own, after the room's previous one (so each member
        gets that room's events in order), and the events read after it (a chat's relays)
        do not wait the fraction of a second it takes to send a board to thousands, as
        they would not in one process."""
        namespace, room = message.get("namespace") or "/", message.get("room")
        if (
            not isinstance(room, str) or message.get("callback") is not None
            or len(self.rooms.get(namespace, {}).get(room, ())) <= SEND_SLICE
        ):
            await super()._handle_emit(message)
            return
        key = (namespace, room)
        before = self._big_sends.get(key)

        async def send() -> None:
            if before is not None:
                await asyncio.gather(before, return_exceptions=True)
            try:
                await super(ClusterManager, self)._handle_emit(message)
            except Exception:
                log.exception("sending %s to %s failed", message.get("event"), room)

        task = asyncio.create_task(send(), name="chatd-room-send")
        self._big_sends[key] = task

        def done(t: asyncio.Task[None]) -> None:
            if self._big_sends.get(key) is t:
                del self._big_sends[key]

        task.add_done_callback(done)

    async def membership(self, namespace: str, room: str, target: str, join: bool) -> None:
        await Manager.membership(self, namespace, room, target, join)
        await self._publish({
            "method": "chatd_membership", "namespace": namespace, "room": room,
            "target": target, "join": join, "host_id": self.host_id,
        })

    async def _listen(self) -> AsyncIterator[Any]:
        me, size = self._me, len(self._me)
        async for message in self._redis_listen_with_retries():
            if message.get("type") != "message" or "data" not in message:
                continue
            raw = message["data"]
            if raw[:size] == me:
                continue  # this process's own: already sent to its members
            try:
                batch = self.json.loads(raw[size:])
            except ValueError:
                continue
            for data in batch if isinstance(batch, list) else ():
                if isinstance(data, dict) and data.get("method") == "chatd_membership":
                    await Manager.membership(
                        self, data["namespace"], data["room"], data["target"], data["join"]
                    )
                    continue
                yield data

    async def _redis_listen_with_retries(self) -> AsyncIterator[Any]:
        """The library's loop, subscribing again every RETRY_SECONDS, and telling this
        process's clients to catch up each time it is back."""
        lost = False
        while True:
            try:
                self._redis_connect()
                await self.pubsub.subscribe(*self._channels())
                self.subscribed.set()
                if lost:
                    lost = False
                    await self.resync()
                async for message in self.pubsub.listen():
                    yield message
                    if self._reading_as != self.leading:  # it now runs the desk
                        await self.pubsub.unsubscribe()
                        await self.pubsub.subscribe(*self._channels())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not lost:
                    log.error("lost Redis; subscribing again every %.1f s: %s",
                              RETRY_SECONDS, exc)
                lost = True
                self.subscribed.clear()
                await asyncio.sleep(RETRY_SECONDS)

    def _channels(self) -> tuple[str, ...]:
        """The desk's process emits most events: it publishes them on a channel of its own
        (":L") that it does not read, the others read both, and so it never reads its own
        events back."""
        self._reading_as = self.leading
        if self.leading:
            return (self.channel + ":F",)
        return (self.channel + ":L", self.channel + ":F")

    async def resync(self) -> None:
        """Tell every client of this process that events may have been lost."""
        self.resyncs += 1
        if self.ready_for_resync is not None:
            await self.ready_for_resync()
        log.warning("Redis is back: this process's clients catch up (session:resync)")
        for ns in (CUSTOMER_NS, ENGINEER_NS):
            await Manager.emit(self, RESYNC, {}, namespace="/" + ns, room=None)
