"""The calls of a process that does not run the desk to the one that does, over Redis
(docs/design.md#several-processes).

Channels, under a prefix of the desk's own (two desks may share a Redis):

- ``PREFIX:desk``: calls and presence, to the process that runs the desk (it alone listens);
- ``PREFIX:host:ID``: the answers to one process's calls;
- ``PREFIX:news``: to every process: a process that has just taken the desk over says so.

Everything a process publishes goes out through one connection, in order: its presence
counts and its calls reach the desk in the order they were made. Each process sends its
full presence every ``heartbeat`` seconds; the desk's process takes a process it has not
heard from for ``silent_for`` seconds for dead, and its connections for gone (grace periods
start, offers to its engineers are withdrawn).

A call nobody listens for (no process runs the desk: a takeover is under way) fails at once
with ``unavailable``; one with no answer within ``call_timeout`` seconds too. So does every
call still waiting when another process announces that it now runs the desk: the process
that died may have taken it with it, and the takeover can come before anyone finds the
desk's channel empty. Clients retry those (a message with the same ``client_msg_id`` is
stored once, and a retry of what the new desk already did is answered from the store).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis

from ..core.desk import Effects
from ..core.errors import DeskError, Unavailable
from ..tasks import cancel_and_wait
from ..web.link import DeskLink, HostPresence, decode_error, encode_error
from . import next_batch

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def unavailable() -> Unavailable:
    return Unavailable("the desk is changing hands; try again in a moment")


class ClusterLink:
    def __init__(
        self,
        url: str,
        prefix: str,
        link: DeskLink,
        emit: Callable[[Effects], Awaitable[None]],
        *,
        heartbeat: float = 1.0,
        silent_for: float = 3.5,
        call_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.link = link
        self.emit = emit
        self.heartbeat = heartbeat
        self.silent_for = silent_for
        self.call_timeout = call_timeout
        self.host = uuid.uuid4().hex
        self.desk_channel = f"{prefix}:desk"
        self.my_channel = f"{prefix}:host:{self.host}"
        self.news_channel = f"{prefix}:news"
        self.hosts = HostPresence(link.desk, self._spawn_effects)
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._ids = itertools.count()
        self._out: asyncio.Queue[tuple[str, bytes, str | None]] = asyncio.Queue()
        self._leading = False
        self._tasks: list[asyncio.Task[None]] = []
        self._spawned: set[asyncio.Task[None]] = set()
        self._redis: aioredis.Redis | None = None
        self.subscribed = asyncio.Event()
        self._resubscribe = asyncio.Event()  # the channels to listen to changed

    # ------------------------------------------------------------------ life

    async def start(self) -> None:
        """Connect and listen; raises when Redis cannot be reached at all."""
        self._redis = aioredis.Redis.from_url(self.url, single_connection_client=True)
        await self._redis.ping()
        self.link.remote = self
        self._tasks = [
            asyncio.create_task(self._listen(), name="chatd-cluster-listen"),
            asyncio.create_task(self._write(), name="chatd-cluster-write"),
            asyncio.create_task(self._beat(), name="chatd-cluster-heartbeat"),
        ]
        await asyncio.wait_for(self.subscribed.wait(), 10)

    async def passing(self, limit: float = 5.0) -> None:
        """Returns once calls pass again (this process listens, and the desk's process
        answers), or after ``limit`` seconds."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.subscribed.is_set():
                if self._leading:
                    return
                try:
                    await self.call("engineers_online", [])
                    return
                except DeskError:
                    pass
            await asyncio.sleep(0.1)

    def lead(self) -> None:
        """This process now runs the desk: listen to the desk's channel too, and once it
        does, tell the others (their calls to the former desk fail, to be tried again)."""
        self._leading = True
        self.subscribed.clear()
        self._resubscribe.set()
        self._fail_pending()  # sent to the former desk, before this one listened
        self._tasks.append(asyncio.create_task(self._expire(), name="chatd-cluster-expiry"))
        self._tasks.append(asyncio.create_task(self._announce(), name="chatd-cluster-news"))

    async def _announce(self) -> None:
        await self.subscribed.wait()
        self._out.put_nowait((self.news_channel, _encode({"k": "desk", "host": self.host}), None))

    def _fail_pending(self) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(unavailable())

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks, *self._spawned)
        self._tasks = []
        for fut in self._pending.values():
            fut.cancel()
        if self._redis is not None:
            await self._redis.aclose()

    # ------------------------------------------------------------------ outgoing

    async def call(self, method: str, args: list[Any], origin: str | None = None) -> Any:
        call_id = f"{self.host}:{next(self._ids)}"
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = fut
        self._out.put_nowait((self.desk_channel, _encode(
            {"k": "call", "id": call_id, "host": self.host, "m": method, "a": args,
             "o": origin}
        ), call_id))
        try:
            return await asyncio.wait_for(fut, self.call_timeout)
        except TimeoutError:
            raise unavailable() from None
        finally:
            self._pending.pop(call_id, None)

    def presence(self, customers: dict[str, int], engineers: dict[str, Any]) -> None:
        self._send_presence(customers, engineers, full=False)

    def _send_presence(self, customers: dict[str, int], engineers: dict[str, Any],
                       *, full: bool, clients: dict[str, int] | None = None) -> None:
        msg = {"k": "presence", "host": self.host, "c": customers, "e": engineers, "full": full}
        if clients is not None:
            msg["n"] = clients
        self._out.put_nowait((self.desk_channel, _encode(msg), None))

    async def _write(self) -> None:
        """Publishes in order, on one connection, what is queued (pipelined)."""
        assert self._redis is not None
        while True:
            batch = await next_batch(self._out)
            # One Redis message per channel for what was queued together (a JSON list, in
            # order): the desk's process reads one instead of one per call.
            by_channel: dict[str, list[bytes]] = {}
            for channel, data, _ in batch:
                by_channel.setdefault(channel, []).append(data)
            try:
                pipe = self._redis.pipeline(transaction=False)
                for channel, items in by_channel.items():
                    pipe.publish(channel, b"[" + b",".join(items) + b"]")
                heard = dict(zip(by_channel, await pipe.execute(), strict=True))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("could not publish to Redis: %s", exc)
                heard = {}
                await asyncio.sleep(0.1)
            if self.desk_channel in by_channel and not heard.get(self.desk_channel):
                # Nobody listens for the desk now (its process died, or a takeover is under
                # way): no call on its way there will be answered. They fail now rather than
                # at their timeout, and their clients try again.
                self._fail_pending()

    async def _beat(self) -> None:
        while True:
            p = self.link.presence
            if not self._leading:
                self._send_presence(dict(p.customers), p.engineers_wire(), full=True,
                                    clients=self.link.clients())
            await asyncio.sleep(self.heartbeat)

    # ------------------------------------------------------------------ incoming

    async def _listen(self) -> None:
        while True:
            conn = aioredis.Redis.from_url(self.url)
            pubsub = conn.pubsub(ignore_subscribe_messages=True)
            try:
                channels = [self.my_channel, self.news_channel]
                if self._leading:
                    channels.append(self.desk_channel)
                await pubsub.subscribe(*channels)
                self._resubscribe.clear()
                self.subscribed.set()
                while not self._resubscribe.is_set():
                    msg = await pubsub.get_message(timeout=0.2)
                    if msg is not None and msg.get("type") == "message":
                        self._handle(msg["channel"].decode(), msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.subscribed.clear()
                log.warning("lost Redis (desk calls); again in 0.5 s: %s", exc)
                await asyncio.sleep(0.5)
            finally:
                await _quietly(pubsub.aclose())  # type: ignore[no-untyped-call]
                await _quietly(conn.aclose())

    def _handle(self, channel: str, data: bytes) -> None:
        try:
            batch = _decode(data)
        except msgspec.DecodeError:
            return
        for msg in batch if isinstance(batch, list) else ():
            try:
                self._handle_one(channel, msg)
            except Exception:  # one bad message must not stop the others
                log.exception("a desk message could not be handled")

    def _handle_one(self, channel: str, msg: dict[str, Any]) -> None:
        kind = msg.get("k")
        if kind == "reply":
            fut = self._pending.get(msg.get("id", ""))
            if fut is not None and not fut.done():
                if msg.get("ok"):
                    fut.set_result(msg.get("r"))
                else:
                    fut.set_exception(decode_error(msg.get("err") or {}))
            return
        if kind == "desk" and channel == self.news_channel:
            if msg.get("host") != self.host:
                log.info("another chatd process now runs the desk; calls on their way fail",
                         extra={"pending": len(self._pending)})
                self._fail_pending()
            return
        if channel != self.desk_channel or not self._leading:
            return
        if kind == "presence":
            # Applied here, before anything else is read: in the order it was sent.
            self.hosts.apply(msg["host"], msg.get("c") or {}, msg.get("e") or {},
                             full=bool(msg.get("full")), now=time.monotonic())
            if isinstance(msg.get("n"), dict):
                self.link.hosts_clients[msg["host"]] = msg["n"]
        elif kind == "call":
            self._spawn(self._answer(msg))

    async def _answer(self, msg: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"k": "reply", "id": msg.get("id")}
        try:
            origin = msg.get("o")
            reply["r"] = await self.link.serve(
                str(msg.get("m")), list(msg.get("a") or []),
                origin if isinstance(origin, str) else None,
            )
            reply["ok"] = True
        except DeskError as exc:
            reply.update(ok=False, err=encode_error(exc))
        except Exception:
            log.exception("desk call %s failed", msg.get("m"))
            reply.update(ok=False, err={"code": "internal",
                                        "message": "internal error; the request may be retried"})
        self._out.put_nowait((f"{self.prefix}:host:{msg.get('host')}", _encode(reply), None))

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            for host in self.hosts.expire(time.monotonic(), self.silent_for):
                self.link.hosts_clients.pop(host, None)
                log.warning("a chatd process went silent; its clients are gone",
                            extra={"host": host})

    # ------------------------------------------------------------------ tasks

    def _spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    def _spawn_effects(self, effects: Awaitable[Effects]) -> None:
        async def run() -> None:
            try:
                await self.emit(await effects)
            except Exception:
                log.exception("a departed connection's effects failed")

        self._spawn(run())


async def _quietly(work: Awaitable[Any]) -> None:
    try:
        await work
    except Exception:  # already gone
        pass
