"""How the sockets and the HTTP handlers reach the desk, in this process or in the one that
runs it (docs/design.md#several-processes).

One process per database runs the desk: it holds the desk's lease. In it (and in a chatd of
one process) ``DeskLink`` calls the ``Desk`` right here. In another process of a cluster,
the same calls go to the process that runs the desk through ``remote`` (chatd.cluster,
over Redis), their arguments and answers written by this module's codecs: the caller gets
the same values, effects included, and emits the effects itself after its own bookkeeping
(joining rooms), as one process does.

Presence is the exception: what this process's connections are is kept here (``Presence``)
and told to the desk as counts, never as increments, so that telling it twice, late or
again after a takeover changes nothing. The process that runs the desk applies the counts
of every process (``HostPresence``) and emits what follows from them itself.
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from ..core.access import Actor
from ..core.clock import Clock
from ..core.desk import Desk, Effects, Outbound
from ..core.effects import Membership
from ..core.errors import DeskError, RateLimited
from ..core.models import (
    Customer,
    Engineer,
    EngineerStatus,
    Message,
    NewMessage,
    Session,
)
from ..core.ratelimit import KeyedLimiter

log = logging.getLogger(__name__)


class Remote(Protocol):
    """The way to the process that runs the desk (chatd.cluster.link.ClusterLink)."""

    async def call(self, method: str, args: list[Any], origin: str | None = None) -> Any:
        """The encoded answer of ``method``; a DeskError raised there is raised here.
        ``origin``: the connection that asked, for the effects emitted there."""

    def presence(self, customers: dict[str, int], engineers: dict[str, Any]) -> None:
        """Tell the desk this process's counts of these keys (in order with the calls)."""


# ------------------------------------------------------------------------------ codecs


class Codec(Protocol):
    def enc(self, value: Any) -> Any: ...

    def dec(self, raw: Any) -> Any: ...


class _Plain:
    """Strings, numbers, booleans, None and JSON objects: as they are."""

    def enc(self, value: Any) -> Any:
        return value

    def dec(self, raw: Any) -> Any:
        return raw


@dataclass(frozen=True)
class _Data:
    """A dataclass of the core (Customer, Engineer, Message, Session...)."""

    kind: type[Any]
    optional: bool = False

    def enc(self, value: Any) -> Any:
        return None if value is None else msgspec.to_builtins(value)

    def dec(self, raw: Any) -> Any:
        if raw is None and self.optional:
            return None
        return msgspec.convert(raw, self.kind)


class _Actor:
    def enc(self, value: Actor) -> Any:
        return ["c" if isinstance(value, Customer) else "e", msgspec.to_builtins(value)]

    def dec(self, raw: Any) -> Actor:
        tag, data = raw
        if tag == "c":
            return msgspec.convert(data, Customer)
        return msgspec.convert(data, Engineer)


class _Effects:
    def enc(self, value: Effects) -> Any:
        return [
            [isinstance(fx, Membership), fx.namespace, fx.room, fx.event, fx.payload,
             fx.skip_origin]
            for fx in value
        ]

    def dec(self, raw: Any) -> Effects:
        return [
            (Membership if member else Outbound)(ns, room, event, payload, skip)
            for member, ns, room, event, payload, skip in raw
        ]


@dataclass(frozen=True)
class _List:
    item: Codec

    def enc(self, value: Any) -> Any:
        return [self.item.enc(v) for v in value]

    def dec(self, raw: Any) -> Any:
        return [self.item.dec(v) for v in raw]


@dataclass(frozen=True)
class _Tuple:
    items: tuple[Codec, ...]

    def enc(self, value: Any) -> Any:
        return [c.enc(v) for c, v in zip(self.items, value, strict=True)]

    def dec(self, raw: Any) -> Any:
        return tuple(c.dec(v) for c, v in zip(self.items, raw, strict=True))


class _Status:
    def enc(self, value: EngineerStatus) -> Any:
        return value.value

    def dec(self, raw: Any) -> EngineerStatus:
        return EngineerStatus(raw)


ANY, ACTOR, FX = _Plain(), _Actor(), _Effects()
ENGINEER, CUSTOMER = _Data(Engineer), _Data(Customer)
MESSAGE, MESSAGES = _Data(Message), _List(_Data(Message))
SESSION, MAYBE_SESSION = _Data(Session), _Data(Session, optional=True)


@dataclass(frozen=True)
class Op:
    args: tuple[Codec, ...]
    result: Codec
    # Where the answer's effects are (an index of its tuple, or ALL: the answer is them)
    # when the desk's process emits them itself, as one process does, rather than sending
    # them back to be emitted by the caller: one encoding and one trip through Redis fewer.
    # The caller's own bookkeeping never depends on these (a new chat's rooms do: its
    # effects go back to the caller).
    emits: int | None = None


ALL = -1


# Every call a process that does not run the desk makes to the one that does.
OPS: dict[str, Op] = {
    "verify_resume_token": Op((ANY, ANY), SESSION),
    "request_chat": Op((CUSTOMER, ANY, ANY, ANY, ANY, ANY), _Tuple((ANY, ANY, FX))),
    "engineers_online": Op((), ANY),
    "history": Op((ACTOR, ANY, ANY), _Tuple((ANY, MESSAGES, ANY))),
    "send_message": Op((ACTOR, ANY, ANY, ANY), _Tuple((MESSAGE, ANY, FX)), emits=2),
    "post_message": Op((ACTOR, _Data(NewMessage)), _Tuple((MESSAGE, FX)), emits=1),
    "typing": Op((ACTOR, ANY, ANY), FX, emits=ALL),
    "mark_read": Op((ACTOR, ANY, ANY), FX, emits=ALL),
    "escalate": Op((ACTOR, ANY, ANY, ANY, ANY), _Tuple((MESSAGE, FX)), emits=1),
    "end": Op((ACTOR, ANY, ANY), _Tuple((ANY, FX)), emits=1),
    "queue_position": Op((ACTOR, ANY), ANY),
    "waiting": Op((ANY,), ANY),
    "set_status": Op((ENGINEER, _Status(), ANY), _Tuple((ANY, FX)), emits=1),
    "snapshot": Op((ENGINEER,), ANY),
    "accept": Op((ENGINEER, ANY), _Tuple((ANY, MESSAGES, FX)), emits=2),
    "decline": Op((ENGINEER, ANY), FX, emits=ALL),
    "transfer": Op((ENGINEER, ANY, ANY), FX, emits=ALL),
    "session_for": Op((ACTOR, ANY), MAYBE_SESSION),
    "find_session": Op((ACTOR, ANY), SESSION),
    "presence_of": Op((ENGINEER,), ANY),
    "ticket_known": Op((ANY,), FX, emits=ALL),
}


# The calls that spend a person's message allowance (docs/protocol.md, "Message rate"):
# metered where the desk runs, which every one of them reaches, so one bucket per person
# holds for all processes exactly, with no trip to Redis.
METERED = frozenset({"request_chat", "send_message", "escalate"})


def encode_error(exc: DeskError) -> dict[str, Any]:
    return {"code": exc.code, "message": exc.message, "details": exc.details}


def decode_error(raw: dict[str, Any]) -> DeskError:
    """The error raised where the desk runs, raised again here with its code."""
    err = DeskError(str(raw.get("message", "")), **(raw.get("details") or {}))
    err.code = str(raw.get("code", "internal"))
    return err


# ---------------------------------------------------------------------------- presence


class Presence:
    """This process's connections, as the desk must count them: per chat, the customer's
    connections; per engineer, theirs (a watching monitor is none)."""

    def __init__(self) -> None:
        self.customers: Counter[str] = Counter()
        self.engineers: Counter[str] = Counter()
        self.who: dict[str, Engineer] = {}

    def customer(self, session_id: str, delta: int) -> int:
        n = self.customers[session_id] + delta
        if n > 0:
            self.customers[session_id] = n
        else:
            self.customers.pop(session_id, None)
        return max(n, 0)

    def engineer(self, engineer: Engineer, delta: int) -> int:
        n = self.engineers[engineer.id] + delta
        if n > 0:
            self.engineers[engineer.id] = n
            self.who[engineer.id] = engineer
        else:
            self.engineers.pop(engineer.id, None)
            self.who.pop(engineer.id, None)
        return max(n, 0)

    def engineers_wire(self, ids: list[str] | None = None) -> dict[str, Any]:
        return {
            eid: [msgspec.to_builtins(self.who[eid]) if eid in self.who else None,
                  self.engineers.get(eid, 0)]
            for eid in (self.engineers if ids is None else ids)
        }


class HostPresence:
    """In the process that runs the desk: every other process's counts, applied to the
    desk as the differences from what that process said before."""

    def __init__(self, desk: Desk, spawn: Callable[[Awaitable[Effects]], None]) -> None:
        self.desk = desk
        self.spawn = spawn  # runs the desk's answer in a task and emits its effects
        self.hosts: dict[str, Presence] = {}
        self.seen: dict[str, float] = {}

    def apply(self, host: str, customers: dict[str, int], engineers: dict[str, Any],
              *, full: bool, now: float) -> None:
        """Counts from ``host``; ``full``: every key it has (absent keys are now 0)."""
        known = self.hosts.setdefault(host, Presence())
        self.seen[host] = now
        if full:
            customers = {**{sid: 0 for sid in known.customers}, **customers}
            engineers = {
                **{eid: [None, 0] for eid in known.engineers if eid not in engineers},
                **engineers,
            }
        for sid, n in customers.items():
            for _ in range(n - known.customers.get(sid, 0)):
                self.desk.customer_connected(sid)
            for _ in range(known.customers.get(sid, 0) - n):
                self.desk.customer_disconnected(sid)
            known.customer(sid, n - known.customers.get(sid, 0))
        for eid, (data, n) in engineers.items():
            engineer = msgspec.convert(data, Engineer) if data else known.who.get(eid)
            if engineer is None:
                continue
            for _ in range(n - known.engineers.get(eid, 0)):
                self.desk.engineer_connected(engineer)
            for _ in range(known.engineers.get(eid, 0) - n):
                # Offers withdrawn, a grace period: emitted from here, nobody waits for it.
                self.spawn(self.desk.engineer_disconnected(eid))
            known.engineer(engineer, n - known.engineers.get(eid, 0))

    def expire(self, now: float, silent_for: float) -> list[str]:
        """Processes not heard from for ``silent_for`` seconds: their connections are gone
        (the process died); returns their names."""
        dead = [h for h, t in self.seen.items() if now - t > silent_for]
        for host in dead:
            self.apply(host, {}, {}, full=True, now=now)
            self.hosts.pop(host, None)
            self.seen.pop(host, None)
        return dead


# -------------------------------------------------------------------------------- link


class DeskLink:
    """The desk as the web layer calls it: here while ``leading()``, else through
    ``remote``. Every method is a coroutine, wherever the desk is."""

    def __init__(self, desk: Desk, leading: Callable[[], bool] = lambda: True) -> None:
        self.desk = desk
        self.leading = leading
        self.remote: Remote | None = None
        self.presence = Presence()
        # Calls of other parts (monitoring's /api/stats), answered where the desk runs:
        # name -> coroutine function of JSON values, answering a JSON value.
        self.extras: dict[str, Callable[..., Awaitable[Any]]] = {}
        self.hosts_clients: dict[str, dict[str, int]] = {}  # filled by chatd.cluster
        # This process's clients by namespace (set by create_app); other processes' come
        # with their presence.
        self.clients: Callable[[], dict[str, int]] = dict
        # How this process emits effects (set by create_app): those of another process's
        # calls whose Op says so are emitted here.
        self.emit: Callable[[Effects, str | None], Awaitable[None]] | None = None
        self.messages: KeyedLimiter | None = None

    def meter_messages(self, clock: Clock, rate: float, burst: float, max_keys: int) -> None:
        """Charge METERED calls to their person's bucket where the desk runs; an empty
        bucket answers ``rate_limited`` and the call does nothing."""
        self.messages = KeyedLimiter(clock, rate, burst, max_keys=max_keys)

    async def _do(self, name: str, *args: Any, origin: str | None = None) -> Any:
        if self.remote is None or self.leading():
            return await self.here(name, *args)
        if name in self.extras:
            return await self.remote.call(name, list(args))
        op = OPS[name]
        raw = await self.remote.call(
            name, [c.enc(a) for c, a in zip(op.args, args, strict=True)], origin
        )
        return op.result.dec(raw)

    async def here(self, name: str, *args: Any) -> Any:
        """``name`` done by this process's desk."""
        if name == "presence_of":
            return self.desk.presence_wire(args[0])
        if name in self.extras:
            return await self.extras[name](*args)
        if name in METERED and self.messages is not None:
            person = args[0]
            key = ("c:" if isinstance(person, Customer) else "e:") + person.id
            if not self.messages.take(key):
                raise RateLimited("too many messages; slow down")
        result = getattr(self.desk, name)(*args)
        return await result if inspect.isawaitable(result) else result

    async def serve(self, name: str, raw_args: list[Any], origin: str | None = None) -> Any:
        """A call from another process, answered encoded (where the desk runs); effects
        its Op says are emitted here, with ``origin`` the connection that asked."""
        if name in self.extras:
            return await self.extras[name](*raw_args)
        op = OPS.get(name)
        if op is None or len(raw_args) != len(op.args):
            raise DeskError(f"unknown desk call {name!r}")
        args = [c.dec(a) for c, a in zip(op.args, raw_args, strict=True)]
        result = await self.here(name, *args)
        if op.emits is not None and self.emit is not None:
            if op.emits == ALL:
                fx, result = result, []
            else:
                fx = result[op.emits]
                result = (*result[:op.emits], [], *result[op.emits + 1:])
            await self.emit(fx, origin)
        return op.result.enc(result)

    async def extra(self, name: str, *args: Any) -> Any:
        """One of ``extras``, where the desk runs."""
        return await self._do(name, *args)

    def all_clients(self) -> dict[str, int]:
        """Clients of every process, by namespace (where the desk runs)."""
        total = dict(self.clients())
        for counts in self.hosts_clients.values():
            for ns, n in counts.items():
                total[ns] = total.get(ns, 0) + n
        return total

    # ---- presence: this process's connections

    async def customer_connected(self, session_id: str) -> bool:
        """One more connection of this chat's customer here; whether the chat waits."""
        n = self.presence.customer(session_id, +1)
        if self.remote is None or self.leading():
            self.desk.customer_connected(session_id)
            return self.desk.waiting(session_id)
        self.remote.presence({session_id: n}, {})
        try:
            waiting: bool = await self._do("waiting", session_id)
        except DeskError:  # no answer: the connection is refused, and does not count
            self.customer_disconnected(session_id)
            raise
        return waiting

    def customer_disconnected(self, session_id: str) -> None:
        n = self.presence.customer(session_id, -1)
        if self.remote is None or self.leading():
            self.desk.customer_disconnected(session_id)
        else:
            self.remote.presence({session_id: n}, {})

    async def engineer_connected(self, engineer: Engineer) -> dict[str, Any]:
        self.presence.engineer(engineer, +1)
        if self.remote is None or self.leading():
            return self.desk.engineer_connected(engineer)
        self.remote.presence({}, self.presence.engineers_wire([engineer.id]))
        try:
            me: dict[str, Any] = await self._do("presence_of", engineer)
        except DeskError:  # no answer: the connection is refused, and does not count
            await self.engineer_disconnected(engineer)
            raise
        return me

    async def engineer_disconnected(self, engineer: Engineer) -> Effects:
        self.presence.engineer(engineer, -1)
        if self.remote is None or self.leading():
            return await self.desk.engineer_disconnected(engineer.id)
        wire = self.presence.engineers_wire([engineer.id])
        wire[engineer.id][0] = msgspec.to_builtins(engineer)
        self.remote.presence({}, wire)
        return []  # the desk's process emits what follows

    def replay(self) -> None:
        """This process now runs the desk: its own connections, counted again by it."""
        for session_id, n in self.presence.customers.items():
            for _ in range(n):
                self.desk.customer_connected(session_id)
        for eid, n in self.presence.engineers.items():
            for _ in range(n):
                self.desk.engineer_connected(self.presence.who[eid])

    # ---- the desk's calls

    async def verify_resume_token(self, session_id: str, token: str) -> Session:
        session: Session = await self._do("verify_resume_token", session_id, token)
        return session

    async def request_chat(
        self, customer: Customer, topic: str, severity: int, message: str | None,
        client_msg_id: str | None, request_id: str | None,
    ) -> tuple[dict[str, Any], str, Effects]:
        r: tuple[dict[str, Any], str, Effects] = await self._do(
            "request_chat", customer, topic, severity, message, client_msg_id, request_id
        )
        return r

    async def engineers_online(self) -> int:
        n: int = await self._do("engineers_online")
        return n

    async def history(
        self, actor: Actor, session_id: str, after_seq: int = 0
    ) -> tuple[dict[str, Any], list[Message], bool]:
        r: tuple[dict[str, Any], list[Message], bool] = await self._do(
            "history", actor, session_id, after_seq
        )
        return r

    # The calls below that may carry effects take ``origin``: the connection that asked,
    # which the desk's process skips where one process would (skip_origin).

    async def send_message(
        self, actor: Actor, session_id: str, client_msg_id: str, body: str,
        origin: str | None = None,
    ) -> tuple[Message, bool, Effects]:
        r: tuple[Message, bool, Effects] = await self._do(
            "send_message", actor, session_id, client_msg_id, body, origin=origin
        )
        return r

    async def post_message(
        self, actor: Actor, message: NewMessage, origin: str | None = None
    ) -> tuple[Message, Effects]:
        r: tuple[Message, Effects] = await self._do(
            "post_message", actor, message, origin=origin
        )
        return r

    async def typing(
        self, actor: Actor, session_id: str, is_typing: bool, origin: str | None = None
    ) -> Effects:
        fx: Effects = await self._do("typing", actor, session_id, is_typing, origin=origin)
        return fx

    async def mark_read(
        self, actor: Actor, session_id: str, seq: int, origin: str | None = None
    ) -> Effects:
        fx: Effects = await self._do("mark_read", actor, session_id, seq, origin=origin)
        return fx

    async def escalate(
        self, actor: Actor, session_id: str, kind: str, phone: str | None, note: str | None,
        origin: str | None = None,
    ) -> tuple[Message, Effects]:
        r: tuple[Message, Effects] = await self._do(
            "escalate", actor, session_id, kind, phone, note, origin=origin
        )
        return r

    async def end(
        self, actor: Actor, session_id: str, resolution: str | None = None,
        origin: str | None = None,
    ) -> tuple[dict[str, Any], Effects]:
        r: tuple[dict[str, Any], Effects] = await self._do(
            "end", actor, session_id, resolution, origin=origin
        )
        return r

    async def queue_position(self, actor: Actor, session_id: str) -> dict[str, Any]:
        r: dict[str, Any] = await self._do("queue_position", actor, session_id)
        return r

    async def set_status(
        self, engineer: Engineer, status: EngineerStatus, capacity: int | None = None,
        origin: str | None = None,
    ) -> tuple[dict[str, Any], Effects]:
        r: tuple[dict[str, Any], Effects] = await self._do(
            "set_status", engineer, status, capacity, origin=origin
        )
        return r

    async def snapshot(self, engineer: Engineer) -> dict[str, Any]:
        r: dict[str, Any] = await self._do("snapshot", engineer)
        return r

    async def accept(
        self, engineer: Engineer, session_id: str, origin: str | None = None
    ) -> tuple[dict[str, Any], list[Message], Effects]:
        r: tuple[dict[str, Any], list[Message], Effects] = await self._do(
            "accept", engineer, session_id, origin=origin
        )
        return r

    async def decline(
        self, engineer: Engineer, session_id: str, origin: str | None = None
    ) -> Effects:
        fx: Effects = await self._do("decline", engineer, session_id, origin=origin)
        return fx

    async def transfer(
        self, engineer: Engineer, session_id: str, to_engineer_id: str,
        origin: str | None = None,
    ) -> Effects:
        fx: Effects = await self._do(
            "transfer", engineer, session_id, to_engineer_id, origin=origin
        )
        return fx

    async def session_for(self, actor: Actor, session_id: str) -> Session | None:
        session: Session | None = await self._do("session_for", actor, session_id)
        return session

    async def ticket_known(self, session_id: str) -> Effects:
        fx: Effects = await self._do("ticket_known", session_id)
        return fx

    async def find_session(self, actor: Actor, session_id: str) -> Session:
        session: Session = await self._do("find_session", actor, session_id)
        return session
