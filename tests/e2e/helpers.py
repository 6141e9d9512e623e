"""Helpers for tests that talk to a running chatd over real sockets."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import socketio

from tests.conftest import WIDGET_SECRET, Chatd


class Inbox:
    """Collects every event a client receives, and waits for particular ones."""

    def __init__(self, client: socketio.AsyncClient, namespace: str) -> None:
        self.events: list[tuple[str, Any]] = []
        self._changed = asyncio.Event()

        @client.on("*", namespace=namespace)
        async def _any(event: str, data: Any) -> None:
            self.events.append((event, data))
            self._changed.set()

    async def wait_for(self, event: str, pred: Any = None, timeout: float = 5.0) -> Any:
        async def scan() -> Any:
            while True:
                for name, data in self.events:
                    if name == event and (pred is None or pred(data)):
                        return data
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(scan(), timeout)

    def named(self, event: str) -> list[Any]:
        return [d for n, d in self.events if n == event]


def customer_jwt(
    sub: str = "cust-1",
    *,
    name: str = "Carol Customer",
    email: str = "carol@client.example",
    account: str = "Client Corp",
    tier: str | None = "premier",
    exp: float | None = None,
    secret: str = WIDGET_SECRET,
) -> str:
    claims: dict[str, Any] = {
        "sub": sub, "name": name, "email": email, "account": account,
        "exp": int(exp if exp is not None else time.time() + 600),
    }
    if tier is not None:
        claims["tier"] = tier
    return jwt.encode(claims, secret, algorithm="HS256")


async def engineer(
    chatd: Chatd, email: str, *, available: bool = True, **kw: Any
) -> tuple[socketio.AsyncClient, Inbox]:
    await chatd.add_engineer(email, **kw)
    token = await chatd.login(email)
    c = await chatd.client("/engineer", {"token": token})
    inbox = Inbox(c, "/engineer")
    if available:
        r = await c.call("engineer:status", {"status": "available"}, namespace="/engineer")
        assert r["ok"], r
    return c, inbox


async def guest(chatd: Chatd, name: str = "Carol") -> tuple[socketio.AsyncClient, Inbox]:
    c = await chatd.client("/customer", {"guest": {"name": name, "email": f"{name}@ex.com"}})
    return c, Inbox(c, "/customer")


async def call(client: socketio.AsyncClient, ns: str, event: str, data: Any) -> Any:
    return await client.call(event, data, namespace=ns, timeout=10)


async def start_chat(
    chatd: Chatd, eng: socketio.AsyncClient, eng_in: Inbox, cust: socketio.AsyncClient,
    topic: str = "Cannot log in",
) -> tuple[str, str]:
    """Request a chat as ``cust`` and accept it as ``eng``: (session id, resume token)."""
    r = await call(cust, "/customer", "chat:request", {"topic": topic})
    assert r["ok"], r
    sid = r["session"]["id"]
    await eng_in.wait_for("offer:new", lambda d: d["session_id"] == sid)
    acc = await call(eng, "/engineer", "offer:accept", {"session_id": sid})
    assert acc["ok"], acc
    return sid, r["resume_token"]
