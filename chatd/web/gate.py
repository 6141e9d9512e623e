"""The accept gate: new TCP connections a second, and what ``chatd serve`` listens with.

Every other bound in chatd is checked once a request is parsed, so a refusal still costs a
connection's whole set-up: the handler, the parse, the middlewares, the answer. A crowd
of clients that open a new connection for each attempt (refused or not) sets the pace of
that work. The gate spends a token per new connection (``accept_rate`` a second, bursts
of a tenth of it); a connection that finds none waits in a queue served at that rate, its
request not handled (reading paused), and a connection that finds the queue full
(``listen_backlog`` connections waiting, the same bound as the kernel's) is reset. Work
already admitted (an open chat's messages) does not wait behind it, and a crowd's new
connections arrive at an even pace rather than all in one turn of the event loop
(docs/security.md#connections-and-frames).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web

from ..core.clock import SystemClock
from ..core.ratelimit import TokenBucket, smooth_burst


class AcceptGate:
    """Hands each new connection to ``factory``'s protocol at most ``rate`` a second."""

    MAX_BUFFERED = 32 * 1024 * 1024  # what all waiting connections may have sent, together

    def __init__(
        self, loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.Protocol],
        rate: float, max_waiting: int,
    ) -> None:
        self._loop = loop
        self._factory = factory
        self._interval = 1.0 / rate
        self._bucket = TokenBucket(SystemClock(), rate, smooth_burst(rate))
        self._waiting: deque[_Waiting] = deque()
        self._max_waiting = max_waiting
        self._timer: asyncio.TimerHandle | None = None
        self._buffered = 0  # bytes the waiting connections sent before reading paused
        self.reset = 0  # connections reset: the queue or what they sent was too much

    def _hold(self, size: int) -> bool:
        """Count ``size`` more bytes kept for waiting connections (less, if negative);
        False, counting nothing, if that would pass ``MAX_BUFFERED``."""
        if size > 0 and self._buffered + size > self.MAX_BUFFERED:
            self.reset += 1
            return False
        self._buffered += size
        return True

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def counts(self) -> tuple[int, int]:
        """(connections waiting now, connections reset so far), for the metrics."""
        return len(self._waiting), self.reset

    def protocol(self) -> asyncio.Protocol:
        """The protocol factory to listen with."""
        return _Waiting(self)

    def _arrived(self, conn: _Waiting) -> None:
        if not self._waiting and self._bucket.take():
            conn.admit(self._factory)
        elif len(self._waiting) >= self._max_waiting:
            self.reset += 1
            conn.reset()
        else:
            conn.pause()
            self._waiting.append(conn)
            if self._timer is None:
                self._timer = self._loop.call_later(self._interval, self._serve)

    def _serve(self) -> None:
        self._timer = None
        waiting = self._waiting
        while waiting:
            if waiting[0].gone:
                waiting.popleft()
            elif self._bucket.take():
                waiting.popleft().admit(self._factory)
            else:
                break
        if waiting:
            self._timer = self._loop.call_later(self._interval, self._serve)

    def close(self) -> None:
        """Reset every connection still waiting (the server is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            self._waiting.popleft().reset()


class _Waiting(asyncio.Protocol):
    """A connection until the gate admits it; then the transport is handed to the real
    protocol, which sees a connection just made and whatever the client sent meanwhile.

    Reading is paused while it waits. uvloop starts reading once ``connection_made`` has
    returned whatever it did there, so the first bytes may still arrive: they are kept
    (within the gate's ``MAX_BUFFERED`` for all waiting connections together) and reading
    is paused then."""

    __slots__ = ("_gate", "_transport", "_data", "gone")

    def __init__(self, gate: AcceptGate) -> None:
        self._gate = gate
        self._transport: asyncio.Transport | None = None
        self._data: list[bytes] = []
        self.gone = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._gate._arrived(self)

    def data_received(self, data: bytes) -> None:  # only while waiting
        if not self._gate._hold(len(data)):
            self.reset()
            return
        self._data.append(data)
        self.pause()

    def eof_received(self) -> bool:  # only while waiting: the client gave up
        self.gone = True
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.gone = True
        self._transport = None
        self._take_data()

    def _take_data(self) -> bytes:
        """What the client sent while it waited, no longer counted against the gate."""
        data = b"".join(self._data)
        self._data = []
        if data:
            self._gate._hold(-len(data))
        return data

    def pause(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def reset(self) -> None:
        self.gone = True
        if self._transport is not None:
            self._transport.abort()

    def admit(self, factory: Callable[[], asyncio.Protocol]) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        data = self._take_data()
        protocol = factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if data:
            protocol.data_received(data)
        if not transport.is_closing():
            transport.resume_reading()


class GatedSite(web.TCPSite):
    """aiohttp's TCP site with the accept gate in front of its request handlers."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, backlog: int,
                 accept_rate: float) -> None:
        super().__init__(runner, host, port, backlog=backlog)
        self._accept_rate = accept_rate
        self.gate: AcceptGate | None = None

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site; TCPSite.start would listen
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self.gate = AcceptGate(loop, server, self._accept_rate, self._backlog)
        self._server = await loop.create_server(
            self.gate.protocol, self._host, self._port, backlog=self._backlog,
            reuse_address=self._reuse_address,
        )

    async def stop(self) -> None:
        await super().stop()
        if self.gate is not None:
            self.gate.close()


def run_app(
    app: web.Application, loop: asyncio.AbstractEventLoop, *, host: str, port: int,
    backlog: int, accept_rate: float, shutdown_timeout: float,
    listening: Callable[[AcceptGate], None] = lambda gate: None,
) -> None:
    """``aiohttp.web.run_app`` with the gated site: serve until SIGINT or SIGTERM, then
    shut down the same way (the app's cleanup, then every task left). ``listening`` is
    given the gate once the site listens."""

    async def serve() -> None:
        runner = web.AppRunner(app, handle_signals=True, shutdown_timeout=shutdown_timeout)
        await runner.setup()
        try:
            site = GatedSite(runner, host, port, backlog=backlog, accept_rate=accept_rate)
            await site.start()
            assert site.gate is not None
            listening(site.gate)
            await asyncio.Event().wait()  # until a signal ends the loop
        finally:
            await runner.cleanup()

    main = loop.create_task(serve())
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks: set[asyncio.Task[Any]] = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
