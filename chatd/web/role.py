"""Whether this process runs the desk: the desk's lease, standing by, taking over
(docs/design.md#one-desk-per-database). In a cluster (``CHATD_REDIS_URL``) a process that
does not run the desk serves its clients all the same, through the one that does
(chatd.web.link, docs/design.md#several-processes), and takes the desk over in the same way.

One process per database runs the desk (the queue, offers, timers, the handoff worker) and
serves clients. It holds the store's desk lease, renews it, and its writes carry the lease's
term. Another ``chatd serve`` on the same PostgreSQL database stands by: it answers
``/healthz``, says "standby" on ``/readyz`` (so a load balancer sends it nothing), answers
everything else with 503 and ``Retry-After``, and tries to take the lease every
``poll`` seconds. When the holder is gone (it stopped, was killed, or did not renew in
time) the standby takes the lease with a higher term, rebuilds the desk from the database
as a restart does, and serves. On SQLite a second process refuses to start instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..core.errors import DeskTaken
from ..core.ports import DeskLease
from ..tasks import cancel_and_wait

log = logging.getLogger(__name__)

# Paths a standby answers itself: liveness, readiness, and its own metrics.
STANDBY_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# A fenced process exits with this status (a supervisor restarts it, as a standby).
FENCED_EXIT = 3


def node_name() -> str:
    """This process's name in the lease: the host, the process id and a random part (a
    process id is reused after a restart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def exit_fenced() -> None:
    """What ``chatd serve`` does once another process holds the lease: stop at once. Every
    acknowledged message is in the database; the clients reconnect to the new holder."""
    log.critical("another chatd process took over the desk; this one stops now",
                 extra={"exit_status": FENCED_EXIT})
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(FENCED_EXIT)


class DeskRole:
    """Takes the lease (or stands by for it), renews it, and gives it up at a clean stop.

    ``lead`` is called once the lease is held, before anything is served: it rebuilds the
    desk and starts its loops. ``on_lost`` is called when the lease turns out to be
    another process's (a renewal or a write found a higher term)."""

    def __init__(
        self,
        lease: DeskLease,
        seconds: float,
        *,
        standby_possible: bool,
        lead: Callable[[], Awaitable[None]],
        on_lost: Callable[[], None],
        clustered: bool = False,
    ) -> None:
        self.lease = lease
        self.clustered = clustered
        self.seconds = seconds
        self.standby_possible = standby_possible
        self._lead_desk = lead
        self._on_lost = on_lost
        self.leading = False
        self.term: int | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def serving(self) -> bool:
        """Whether clients may be served here: when this process runs the desk, or, in a
        cluster (Redis), always: their calls go to the process that runs it."""
        return self.leading or self.clustered

    @property
    def poll(self) -> float:
        """Seconds between a standby's attempts to take the lease."""
        return min(1.0, self.seconds / 4)

    async def start(self) -> None:
        """Lead now, or stand by (in the background); DeskTaken when neither is possible."""
        term = await self.lease.acquire()
        if term is not None:
            await self._lead(term)
            return
        if not self.standby_possible:
            raise DeskTaken(self.lease.describe())
        log.info("serving for the desk another chatd process runs" if self.clustered
                 else "standing by: another chatd process runs the desk")
        self._tasks.append(asyncio.create_task(self._stand_by(), name="chatd-standby"))

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks = []

    async def release(self) -> None:
        """Give the lease up if this process holds it (after the desk's last writes), for a
        standby to take now; a standby lets go of what it kept to look for it."""
        self.leading = False
        try:
            await self.lease.release()
        except Exception as exc:  # it expires by itself
            log.warning("could not release the desk's lease: %s", exc)

    async def _stand_by(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            try:
                term = await self.lease.acquire()
            except Exception as exc:  # the database is away: keep trying
                log.warning("standby could not reach the desk's lease: %s", exc)
                continue
            if term is not None:
                log.info("taking over the desk", extra={"term": term})
                await self._lead(term)
                return

    async def _lead(self, term: int) -> None:
        self.term = term
        await self._lead_desk()
        self.leading = True
        self._tasks.append(asyncio.create_task(self._renew(), name="chatd-lease"))
        log.info("running the desk", extra={"term": term})

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.seconds / 3)
            try:
                held = await self.lease.renew()
            except Exception as exc:  # renewed late is still renewed, if nobody took it
                log.warning("could not renew the desk's lease: %s", exc)
                continue
            if not held:
                self.leading = False
                self._on_lost()
                return


def standby_middleware(role: DeskRole) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Until this process runs the desk, everything but STANDBY_PATHS is answered 503 with
    ``Retry-After: 1``: clients (and load balancers) go to the process that does."""

    @web.middleware
    async def standby(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if role.serving or request.path in STANDBY_PATHS:
            return await handler(request)
        return web.json_response(
            {"ok": False, "error": {
                "code": "unavailable",
                "message": "this chatd process is standing by; another one runs the desk",
            }},
            status=503, headers={"Retry-After": "1"},
        )

    return standby
