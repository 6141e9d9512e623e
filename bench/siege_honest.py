"""The honest side of the siege (``python -m bench.siege_honest``): customers and engineers
chatting at a human pace, measuring every acknowledgement.

One process holds every honest client, each a python-socketio ``AsyncClient`` with its own
``X-Forwarded-For`` address. Commands and answers are JSON lines on stdin and stdout, as in
bench/loadgen.py:

- ``setup``: ``{url, engineers: [{token, address}], customers: [{name, email, address}],
  seed}``: the engineers go ``available`` with capacity 1 and accept what they are offered;
  each customer opens a chat and waits until an engineer has it.
- ``start``: from ``start_at`` (time.monotonic, shared by the processes of one machine),
  both sides of every chat write a message every 1 to 2 s (a ``typing`` first, as a person
  does), until ``stop``. Answers at once.
- ``stop``: stop writing; answer every message's send time and ack latency, every error
  with its time, and what each side received.
- ``close``: disconnect everything and exit.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import Any

import socketio

from .harness import serve_commands

CUSTOMER = "/customer"
ENGINEER = "/engineer"
ACK_TIMEOUT = 10.0
SETUP_TIMEOUT = 60.0
PACE = (1.0, 2.0)  # seconds between one person's messages


class Person:
    def __init__(self, namespace: str, address: str, name: str) -> None:
        self.namespace = namespace
        self.address = address
        self.name = name
        self.client = socketio.AsyncClient(reconnection=False)
        self.session_id = ""
        self.assigned: asyncio.Event = asyncio.Event()
        self.received: set[str] = set()  # client_msg_ids of the other side's messages
        self.disconnects: list[float] = []

        async def message_new(data: Any) -> None:
            message = data.get("message", {}) if isinstance(data, dict) else {}
            if message.get("kind") == "text" and message.get("client_msg_id"):
                self.received.add(message["client_msg_id"])

        async def disconnect(*args: Any) -> None:
            self.disconnects.append(time.monotonic())

        self.client.on("message:new", message_new, namespace=namespace)
        self.client.on("disconnect", disconnect, namespace=namespace)

    async def connect(self, url: str, auth: dict[str, Any]) -> None:
        await self.client.connect(
            url, namespaces=[self.namespace], auth=auth, transports=["websocket"],
            headers={"X-Forwarded-For": self.address}, wait_timeout=SETUP_TIMEOUT,
        )

    async def call(self, event: str, data: Any) -> Any:
        return await self.client.call(event, data, namespace=self.namespace,
                                      timeout=ACK_TIMEOUT)


def _ok(ack: Any, what: str) -> dict[str, Any]:
    if not isinstance(ack, dict) or not ack.get("ok"):
        raise RuntimeError(f"{what} refused: {ack}")
    return ack


def _code(ack: Any) -> str:
    if isinstance(ack, dict) and isinstance(ack.get("error"), dict):
        return str(ack["error"].get("code"))
    return "bad answer"


class Honest:
    def __init__(self) -> None:
        self.engineers: list[Person] = []
        self.customers: list[Person] = []
        self.rng = random.Random(0)
        self.stopping = asyncio.Event()
        self.loops: list[asyncio.Task[None]] = []
        self.samples: list[tuple[float, float | None]] = []  # (sent at, latency s or None)
        self.errors: list[tuple[float, str]] = []
        self.partner: dict[str, Person] = {}  # a person's name -> the other side of their chat
        self.sent: dict[str, Person] = {}  # client_msg_id -> its sender

    async def setup(self, cmd: dict[str, Any]) -> dict[str, Any]:
        url = cmd["url"]
        self.rng = random.Random(f"{cmd['seed']}-honest")
        self.engineers = [Person(ENGINEER, e["address"], f"engineer {i}")
                          for i, e in enumerate(cmd["engineers"])]
        self.customers = [Person(CUSTOMER, c["address"], f"customer {i}")
                          for i, c in enumerate(cmd["customers"])]
        offered: asyncio.Queue[tuple[Person, str]] = asyncio.Queue()
        for person in self.engineers:
            self._on_offer(person, offered)
        for person in self.customers:
            async def session_assigned(data: Any, person: Person = person) -> None:
                person.assigned.set()

            person.client.on("session:assigned", session_assigned, namespace=CUSTOMER)

        async def engineer_up(person: Person, token: str) -> None:
            await person.connect(url, {"token": token})
            _ok(await person.call("engineer:status", {"status": "available", "capacity": 1}),
                "engineer:status")

        await asyncio.gather(*(engineer_up(p, e["token"])
                               for p, e in zip(self.engineers, cmd["engineers"], strict=True)))
        # One chat at a time, so that each goes to the engineer idle longest: one each.
        for person, spec in zip(self.customers, cmd["customers"], strict=True):
            await person.connect(url, {"guest": {"name": spec["name"], "email": spec["email"]}})
            ack = _ok(await person.call("chat:request", {"topic": "an honest question"}),
                      "chat:request")
            person.session_id = ack["session"]["id"]
            engineer, session_id = await asyncio.wait_for(offered.get(), SETUP_TIMEOUT)
            if session_id != person.session_id:
                raise RuntimeError(f"{engineer.name} was offered {session_id}, not"
                                   f" {person.session_id}")
            _ok(await engineer.call("offer:accept", {"session_id": session_id}), "offer:accept")
            engineer.session_id = session_id
            await asyncio.wait_for(person.assigned.wait(), SETUP_TIMEOUT)
            self.partner[person.name], self.partner[engineer.name] = engineer, person
        return {"pairs": len(self.customers)}

    def _on_offer(self, person: Person, offered: asyncio.Queue[tuple[Person, str]]) -> None:
        async def offer_new(data: Any) -> None:
            offered.put_nowait((person, data["session_id"]))

        person.client.on("offer:new", offer_new, namespace=ENGINEER)

    async def start(self, cmd: dict[str, Any]) -> dict[str, Any]:
        start_at = float(cmd["start_at"])
        people = self.customers + self.engineers
        self.loops = [asyncio.create_task(self._chat(p, start_at, random.Random(self.rng.random())))
                      for p in people]
        return {"people": len(people)}

    async def _chat(self, person: Person, start_at: float, rng: random.Random) -> None:
        await asyncio.sleep(max(0.0, start_at - time.monotonic()) + rng.uniform(*PACE))
        n = 0
        while not self.stopping.is_set():
            n += 1
            msg_id = f"{person.name}-{n}-{uuid.uuid4().hex[:8]}"
            await self._typing(person)
            t0 = time.monotonic()
            try:
                ack = await person.call("message:send", {
                    "session_id": person.session_id, "client_msg_id": msg_id,
                    "body": f"message {n} from {person.name}",
                })
            except socketio.exceptions.TimeoutError:
                self.samples.append((t0, None))
                self.errors.append((t0, "message:send timed out"))
            except socketio.exceptions.SocketIOError as exc:
                self.errors.append((t0, f"message:send {type(exc).__name__}"))
                return  # not connected any more: the person is gone
            else:
                if isinstance(ack, dict) and ack.get("ok"):
                    self.samples.append((t0, time.monotonic() - t0))
                    self.sent[msg_id] = person
                else:
                    self.errors.append((t0, f"message:send {_code(ack)}"))
            try:
                await asyncio.wait_for(self.stopping.wait(), rng.uniform(*PACE))
            except TimeoutError:
                pass

    async def _typing(self, person: Person) -> None:
        t0 = time.monotonic()
        try:
            ack = await person.call("typing", {"session_id": person.session_id, "typing": True})
        except socketio.exceptions.SocketIOError as exc:
            self.errors.append((t0, f"typing {type(exc).__name__}"))
            return
        if not (isinstance(ack, dict) and ack.get("ok")):
            self.errors.append((t0, f"typing {_code(ack)}"))

    async def stop(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.stopping.set()
        await asyncio.gather(*self.loops, return_exceptions=True)
        # what is still on its way to the other side
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and self._undelivered():
            await asyncio.sleep(0.1)
        now = time.monotonic()
        errors = list(self.errors)
        errors += [(t, f"{p.name} disconnected") for p in self.customers + self.engineers
                   for t in p.disconnects]
        undelivered = self._undelivered()
        errors += [(now, f"{n} acknowledged messages never reached the other side")
                   for n in [len(undelivered)] if n]
        return {
            "samples": [(round(t, 4), None if lat is None else round(lat * 1000, 3))
                        for t, lat in self.samples],
            "errors": sorted(errors),
            "acked": len(self.sent),
            "delivered": len(self.sent) - len(undelivered),
        }

    def _undelivered(self) -> list[str]:
        return [m for m, sender in self.sent.items()
                if m not in self.partner[sender.name].received]

    async def close(self, cmd: dict[str, Any]) -> dict[str, Any]:
        for p in self.customers + self.engineers:
            if p.client.connected:
                try:
                    await asyncio.wait_for(p.client.disconnect(), 5)
                except TimeoutError:
                    pass
        return {}


async def main() -> None:
    honest = Honest()

    async def run(name: str, cmd: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await getattr(honest, name)(cmd)
        return result

    if not await serve_commands(run):
        await honest.close({})  # the driver is gone


if __name__ == "__main__":
    asyncio.run(main())
