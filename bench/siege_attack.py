"""An attacking process of the siege (``python -m bench.siege_attack``), one kind per process.

The driver (bench/siege.py) sends one JSON command per line on stdin; each is answered by
one JSON line on stdout, as bench/loadgen.py does:

- ``prepare``: ``{kind, url, clients: [address, ...], seed, nice, sched, ...}``: lower this
  process's priority, build what the kind needs (the never-reading kind fills a few chats
  with big messages here, so that its answers are big) and answer.
- ``attack``: ``{start_at, end_at}`` (time.monotonic, shared by the processes of one
  machine): every client attacks from ``start_at`` until ``end_at``, then closes everything;
  answers what each kind achieved.
- ``close``: exit.

The clients speak Engine.IO and Socket.IO by hand over a raw WebSocket (asyncio streams),
because some must stop reading their socket altogether, which no client library allows,
and because a library client per attacker would cost more CPU than the attack. Every
refusal or disconnect is normal here: the client counts it, waits a moment and tries again
within its kind until the attack ends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from .harness import serve_commands

CUSTOMER = "/customer"
KINDS = ("never_reading", "binary_flood", "handshake_flood", "slow_upload", "resume_flood",
         "typing_flood")
BIG_BODY = 10_000  # characters: protocol.md's largest message body
BINARY_FRAME = 512 * 1024
SETUP_TIMEOUT = 10.0
# After a refusal or a disconnect an attacker waits this long (seconds, uniform) and tries
# again: it keeps up the pressure without spinning.
BACKOFF = (0.5, 1.5)
UPLOADS_PER_CHAT = 3
UPLOAD_BYTE_EVERY = 3.0
UPLOAD_DECLARED = 1024 * 1024
STALL = 5.0  # a write that waits this long counts as a stalled connection: start again


class Refused(Exception):
    """The server said no (an HTTP status or a Socket.IO ``connect_error`` code)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Closed(Exception):
    """The server closed a connection that was up."""


# ---------------------------------------------------------------------- raw WebSocket


def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return payload
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")).to_bytes(n, "big")


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame (RFC 6455 §5.2)."""
    n = len(payload)
    head = bytearray([0x80 | opcode])
    if n < 126:
        head.append(0x80 | n)
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    key = os.urandom(4)
    return bytes(head) + key + _mask(payload, key)


class RawWS:
    """A WebSocket client on asyncio streams, whose reading can simply stop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(
        cls, url: str, path: str, address: str, *, rcvbuf: int | None = None
    ) -> RawWS:
        reader, writer = await open_tcp(url, rcvbuf=rcvbuf)
        key = base64.b64encode(os.urandom(16)).decode()
        host = urlsplit(url).netloc
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nX-Forwarded-For: {address}\r\n\r\n".encode()
        )
        try:
            async with asyncio.timeout(SETUP_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            raise Closed("no upgrade answer") from None
        except BaseException:
            writer.close()
            raise
        status = head.split(b"\r\n", 1)[0].split(b" ")
        if len(status) < 2 or status[1] != b"101":
            writer.close()
            raise Refused(f"HTTP {status[1].decode(errors='replace') if len(status) > 1 else '?'}")
        return cls(reader, writer)

    def send(self, frame: bytes) -> None:
        if self.writer.transport.is_closing():
            raise Closed("closed")
        self.writer.write(frame)

    def send_text(self, text: str) -> None:
        self.send(ws_frame(0x1, text.encode()))

    async def drain(self) -> None:
        try:
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise Closed(str(exc)) from None

    async def recv(self) -> tuple[int, bytes]:
        """The next message (opcode, payload); Closed at a close frame or end of stream."""
        parts: list[bytes] = []
        first_op = 0
        try:
            while True:
                b0, b1 = await self.reader.readexactly(2)
                op, n = b0 & 0x0F, b1 & 0x7F
                if n == 126:
                    n = int.from_bytes(await self.reader.readexactly(2), "big")
                elif n == 127:
                    n = int.from_bytes(await self.reader.readexactly(8), "big")
                payload = await self.reader.readexactly(n) if n else b""
                if op == 0x8:
                    raise Closed("close frame")
                if op == 0x9:  # ping: pong
                    self.send(ws_frame(0xA, payload))
                    continue
                if op == 0xA:
                    continue
                if op:
                    first_op = op
                parts.append(payload)
                if b0 & 0x80:
                    return first_op, b"".join(parts)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            raise Closed(str(exc)) from None

    def stop_reading(self) -> None:
        """Read nothing more: the kernel's small receive buffer fills and the server holds
        whatever else it has for this client."""
        transport = self.writer.transport
        if isinstance(transport, asyncio.ReadTransport) and transport.is_reading():
            transport.pause_reading()

    def close(self) -> None:
        transport = self.writer.transport
        if not transport.is_closing():
            transport.abort()


async def open_tcp(
    url: str, *, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        async with asyncio.timeout(SETUP_TIMEOUT):
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
        return await asyncio.open_connection(sock=sock, limit=max(rcvbuf or 0, 64 * 1024))
    except BaseException:
        sock.close()
        raise


# ---------------------------------------------------------------------- Socket.IO by hand


class Sio:
    """One ``/customer`` connection: Engine.IO over a raw WebSocket, events with ack ids."""

    def __init__(self, ws: RawWS) -> None:
        self.ws = ws
        self.next_id = 0
        self.acks: dict[int, asyncio.Future[Any]] = {}
        self.closed = asyncio.Event()
        self.reader: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls, url: str, address: str, auth: dict[str, Any], *, rcvbuf: int | None = None
    ) -> Sio:
        ws = await RawWS.open(url, "/socket.io/?EIO=4&transport=websocket", address,
                              rcvbuf=rcvbuf)
        try:
            async with asyncio.timeout(SETUP_TIMEOUT):
                await cls._join(ws, auth)
        except BaseException:
            ws.close()
            raise
        sio = cls(ws)
        sio.reader = asyncio.create_task(sio._read())
        return sio

    @staticmethod
    async def _join(ws: RawWS, auth: dict[str, Any]) -> None:
        op, data = await ws.recv()
        if not data.startswith(b"0"):
            raise Closed(f"no Engine.IO open packet: {data[:40]!r}")
        ws.send_text(f"40{CUSTOMER},{json.dumps(auth)}")
        while True:
            op, data = await ws.recv()
            text = data.decode(errors="replace")
            if text == "2":
                ws.send_text("3")
            elif text.startswith(f"40{CUSTOMER},"):
                return
            elif text.startswith(f"44{CUSTOMER},"):
                raise Refused(_connect_error_code(text))

    async def _read(self) -> None:
        try:
            while True:
                op, data = await self.ws.recv()
                if op != 0x1:
                    continue
                if data == b"2":
                    self.ws.send_text("3")
                elif data.startswith(b"43/customer,"):
                    body = data[len(b"43/customer,"):]
                    digits = len(body) - len(body.lstrip(b"0123456789"))
                    fut = self.acks.pop(int(body[:digits]), None) if digits else None
                    if fut is not None and not fut.done():
                        fut.set_result(json.loads(body[digits:])[0])
                elif data.startswith(b"41/customer"):
                    raise Closed("namespace disconnect")
        except asyncio.CancelledError:
            # reading stopped on purpose: the connection is still up, its answers unread
            for fut in self.acks.values():
                fut.cancel()
            self.acks.clear()
            raise
        except (Closed, ValueError):
            pass
        self.closed.set()
        for fut in self.acks.values():
            if not fut.done():
                fut.set_exception(Closed("closed"))
        self.acks.clear()

    def emit(self, event: str, data: Any, *, ack: bool = True) -> int | None:
        """Send an event (with an ack id unless ``ack`` is False), answers unread."""
        if self.closed.is_set():
            raise Closed("closed")
        ack_id = None
        if ack:
            self.next_id += 1
            ack_id = self.next_id
        self.ws.send_text(f"42{CUSTOMER},{'' if ack_id is None else ack_id}"
                          f"{json.dumps([event, data])}")
        return ack_id

    async def call(self, event: str, data: Any, timeout: float = SETUP_TIMEOUT) -> Any:
        ack_id = self.emit(event, data)
        assert ack_id is not None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.acks[ack_id] = fut
        await self.ws.drain()
        async with asyncio.timeout(timeout):
            return await fut

    async def stop_reading(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader
        self.ws.stop_reading()

    def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        self.ws.close()


def _connect_error_code(text: str) -> str:
    try:
        data = json.loads(text.split(",", 1)[1])
        return str(data.get("data", {}).get("code") or data.get("message") or "refused")
    except (ValueError, AttributeError, IndexError):
        return "refused"


def _ack_error(ack: Any) -> str | None:
    if isinstance(ack, dict) and ack.get("ok"):
        return None
    if isinstance(ack, dict) and isinstance(ack.get("error"), dict):
        return str(ack["error"].get("code"))
    return "bad answer"


# ---------------------------------------------------------------------- the kinds


@dataclass
class Tally:
    """What one kind achieved; ``held`` is connections (or uploads) up at this moment."""

    attempts: int = 0
    connected: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    disconnected: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    held: int = 0
    held_peak: int = 0
    held_at_end: int = 0
    sent: Counter[str] = field(default_factory=Counter)  # events, frames, handshakes, ...
    uploads_now: int = 0
    uploads_peak: int = 0

    def up(self) -> None:
        self.connected += 1
        self.held += 1
        self.held_peak = max(self.held_peak, self.held)

    def down(self) -> None:
        self.held -= 1

    def report(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts, "connected": self.connected,
            "refused": dict(self.refused), "disconnected": self.disconnected,
            "failed": dict(self.failed), "held_peak": self.held_peak,
            "held_at_end": self.held_at_end, "sent": dict(self.sent),
            **({"uploads_held_peak": self.uploads_peak} if self.uploads_peak else {}),
        }


def guest(rng: random.Random) -> dict[str, Any]:
    n = rng.randrange(10**9)
    return {"guest": {"name": f"Siege {n}", "email": f"siege{n}@attack.example"}}


class Attack:
    def __init__(self, cmd: dict[str, Any]) -> None:
        self.kind: str = cmd["kind"]
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}")
        self.url: str = cmd["url"]
        self.addresses: list[str] = cmd["clients"]
        self.seed_address: str = cmd.get("seed_address") or self.addresses[0]
        self.rng = random.Random(f"{cmd['seed']}-{self.kind}")
        self.tally = Tally()
        self.end_at = 0.0
        self.big_chats: list[tuple[str, str]] = []  # (session id, resume token)
        self.keep: list[Sio] = []  # connections that must stay up during the attack
        self.big_body = ("x" * 99 + " ") * (BIG_BODY // 100)
        self.binary_frame = ws_frame(0x2, os.urandom(BINARY_FRAME))
        self.http: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------------ commands

    async def prepare(self, cmd: dict[str, Any]) -> dict[str, Any]:
        if self.kind == "never_reading":
            n_chats = int(cmd.get("big_chats", 2))
            n_messages = int(cmd.get("big_chat_messages", 60))
            await asyncio.gather(*(self._fill_chat(n_messages) for _ in range(n_chats)))
            if not self.big_chats:
                raise RuntimeError("no big chat could be filled")
        return {"kind": self.kind, "clients": len(self.addresses),
                "big_chats": len(self.big_chats)}

    async def _fill_chat(self, n_messages: int) -> None:
        sio = await Sio.connect(self.url, self.seed_address, guest(self.rng))
        ack = await sio.call("chat:request", {"topic": "siege: a long chat",
                                              "message": self.big_body})
        if _ack_error(ack):
            raise RuntimeError(f"chat:request refused: {ack}")
        session_id, token = ack["session"]["id"], ack["resume_token"]
        stored, n, deadline = 1, 0, time.monotonic() + 60
        while stored < n_messages and time.monotonic() < deadline:
            n += 1
            ack = await sio.call("message:send", {"session_id": session_id,
                                                  "client_msg_id": f"fill-{n}",
                                                  "body": self.big_body})
            error = _ack_error(ack)
            if error is None:
                stored += 1
            elif error == "rate_limited":
                await asyncio.sleep(0.5)
            else:
                break  # e.g. a cap on messages per chat: what is stored is big enough
        self.big_chats.append((session_id, token))
        self.keep.append(sio)

    async def attack(self, cmd: dict[str, Any]) -> dict[str, Any]:
        start_at, self.end_at = float(cmd["start_at"]), float(cmd["end_at"])
        run = {
            "never_reading": self._never_reading, "binary_flood": self._binary_flood,
            "handshake_flood": self._handshake_flood, "slow_upload": self._slow_upload,
            "resume_flood": self._resume_flood, "typing_flood": self._typing_flood,
        }[self.kind]
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=SETUP_TIMEOUT),
        )
        try:
            await asyncio.sleep(max(0.0, start_at - time.monotonic()))
            await asyncio.gather(*(self._client(address, run) for address in self.addresses))
        finally:
            await self.http.close()
            await self.close({})
        report = self.tally.report()
        report["late_s"] = round(time.monotonic() - self.end_at, 1)  # its CPU share shows here
        if "frames" in report["sent"]:
            report["sent"]["MiB"] = report["sent"]["frames"] * BINARY_FRAME // (1024 * 1024)
        return {"kind": self.kind, "clients": len(self.addresses), **report}

    async def close(self, cmd: dict[str, Any]) -> dict[str, Any]:
        for sio in self.keep:
            sio.close()
        self.keep.clear()
        return {}

    # ------------------------------------------------------------------ one client

    async def _client(
        self, address: str, run: Callable[[str, dict[str, Any]], Awaitable[None]]
    ) -> None:
        """Run one attacker until the attack ends, retrying after every refusal or
        disconnect; ``state`` keeps what it learnt (its chat) across retries."""
        # Spread the start over the first second: a herd of connects is not the point.
        await asyncio.sleep(self.rng.uniform(0, 1))
        state: dict[str, Any] = {}
        t = self.tally
        while time.monotonic() < self.end_at:
            try:
                # asyncio's loop clock is time.monotonic: the attack's end is its deadline
                async with asyncio.timeout_at(self.end_at):
                    await run(address, state)
                continue  # a round ended without trouble (a handshake): go again at once
            except TimeoutError:
                if self._over():
                    break
                t.failed["timeout"] += 1  # a connect, an answer or a write that stalled
            except Refused as exc:
                t.refused[exc.reason] += 1
            except Closed:
                t.disconnected += 1
            except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
                t.failed[type(exc).__name__] += 1
            await asyncio.sleep(min(self.rng.uniform(*BACKOFF),
                                    max(0.0, self.end_at - time.monotonic())))

    def _over(self) -> bool:
        return time.monotonic() >= self.end_at

    async def _join(self, address: str, state: dict[str, Any], *,
                    rcvbuf: int | None = None, own_chat: bool = True) -> Sio:
        """Connect to /customer; the first time open a chat of its own (kept in ``state``),
        later come back to it with its resume token, as a widget does."""
        t = self.tally
        t.attempts += 1
        if own_chat and "chat" in state:
            session_id, token = state["chat"]
            auth = {"session_id": session_id, "resume_token": token}
        else:
            auth = guest(self.rng)
        sio = await Sio.connect(self.url, address, auth, rcvbuf=rcvbuf)
        t.up()
        if own_chat and "chat" not in state:
            try:
                ack = await sio.call("chat:request", {"topic": f"siege {self.kind}"})
            except BaseException:
                t.down()
                sio.close()
                raise
            error = _ack_error(ack)
            if error is not None:
                t.down()
                sio.close()
                raise Refused(f"chat:request {error}")
            state["chat"] = (ack["session"]["id"], ack["resume_token"])
        return sio

    async def _hold(self, sio: Sio, flood: Callable[[], Awaitable[None]]) -> None:
        """Run ``flood`` on a joined connection until the attack or the connection ends."""
        t = self.tally
        closed = False
        try:
            await flood()
        except Closed:
            closed = True
            raise
        finally:
            # the attack's end cancels the flood wherever it waits
            if self._over() and not closed:
                t.held_at_end += 1
            t.down()
            sio.close()

    # never-reading: big answers it never reads, a few a second
    async def _never_reading(self, address: str, state: dict[str, Any]) -> None:
        # a guest with a chat of its own the first time; later straight to the big chat
        sio = await self._join(address, state, rcvbuf=4096, own_chat="opened" not in state)
        state["opened"] = True
        await sio.stop_reading()
        session_id, token = self.rng.choice(self.big_chats)

        async def flood() -> None:
            while not self._over():
                sio.emit("session:resume", {"session_id": session_id,
                                            "resume_token": token, "after_seq": 0})
                self.tally.sent["session:resume"] += 1
                async with asyncio.timeout(STALL):
                    await sio.ws.drain()
                await asyncio.sleep(0.25)

        await self._hold(sio, flood)

    # binary flood: a binary event header, then 512 KiB binary frames as fast as it can
    async def _binary_flood(self, address: str, state: dict[str, Any]) -> None:
        sio = await self._join(address, state, own_chat=False)
        # alternately one attachment announced, and ten billion (the buffer that never ends)
        count = 1 if state.setdefault("round", 0) % 2 == 0 else 9_999_999_999
        state["round"] += 1
        t = self.tally

        async def flood() -> None:
            sio.ws.send_text(f"45{count}-{CUSTOMER},"
                             '["typing",{"_placeholder":true,"num":0}]')
            while not self._over():
                if sio.closed.is_set():
                    raise Closed("closed")
                sio.ws.send(self.binary_frame)
                t.sent["frames"] += 1
                async with asyncio.timeout(STALL):
                    await sio.ws.drain()
                await asyncio.sleep(0)

        await self._hold(sio, flood)

    # handshake flood: Engine.IO sessions that never join a namespace
    async def _handshake_flood(self, address: str, state: dict[str, Any]) -> None:
        assert self.http is not None
        t = self.tally
        t.attempts += 1
        async with self.http.get(
            self.url + "/socket.io/?EIO=4&transport=polling",
            headers={"X-Forwarded-For": address},
        ) as r:
            await r.read()
            if r.status != 200:
                raise Refused(f"HTTP {r.status}")
        t.connected += 1
        t.sent["handshakes"] += 1

    # slow upload: a chat of its own, and uploads to it that send one byte every 3 s
    async def _slow_upload(self, address: str, state: dict[str, Any]) -> None:
        sio = await self._join(address, state)
        session_id, token = state["chat"]

        async def flood() -> None:
            tasks = [asyncio.create_task(self._upload_loop(session_id, token, address))
                     for _ in range(UPLOADS_PER_CHAT)]
            try:
                await sio.closed.wait()
                raise Closed("closed")
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        await self._hold(sio, flood)

    async def _upload_loop(self, session_id: str, token: str, address: str) -> None:
        t = self.tally
        while not self._over():
            try:
                await self._one_upload(session_id, token, address)
            except Refused as exc:
                t.refused[f"upload {exc.reason}"] += 1
            except Closed:
                t.sent["uploads closed by the server"] += 1
            except (OSError, asyncio.IncompleteReadError) as exc:
                t.failed[f"upload {type(exc).__name__}"] += 1
            await asyncio.sleep(self.rng.uniform(*BACKOFF))

    async def _one_upload(self, session_id: str, token: str, address: str) -> None:
        t = self.tally
        t.sent["uploads started"] += 1
        reader, writer = await open_tcp(self.url)
        boundary = f"siege{self.rng.randrange(10**12)}"
        preamble = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\";"
                    f" filename=\"slow.txt\"\r\nContent-Type: text/plain\r\n\r\n").encode()
        epilogue = f"\r\n--{boundary}--\r\n".encode()
        host = urlsplit(self.url).netloc
        writer.write(
            f"POST /api/sessions/{session_id}/attachments HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {token}\r\nX-Forwarded-For: {address}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(preamble) + UPLOAD_DECLARED + len(epilogue)}\r\n"
            f"\r\n".encode() + preamble
        )
        answer = asyncio.create_task(reader.readline())
        t.uploads_now += 1
        t.uploads_peak = max(t.uploads_peak, t.uploads_now)
        try:
            for _ in range(UPLOAD_DECLARED):
                done, _pending = await asyncio.wait({answer}, timeout=UPLOAD_BYTE_EVERY)
                if done:
                    line = answer.result()
                    if not line:
                        raise Closed("upload closed")
                    status = line.split(b" ")[1].decode(errors="replace") if b" " in line else "?"
                    raise Refused(f"HTTP {status}")
                if writer.transport.is_closing():
                    raise Closed("upload closed")
                writer.write(b"a")
                t.sent["upload bytes"] += 1
                try:
                    await writer.drain()
                except (ConnectionError, OSError):
                    raise Closed("upload closed") from None
        finally:
            t.uploads_now -= 1
            answer.cancel()
            writer.transport.abort()

    # resume flood: session:resume as fast as it can write, never reading the answers
    async def _resume_flood(self, address: str, state: dict[str, Any]) -> None:
        sio = await self._join(address, state, rcvbuf=4096)
        await sio.stop_reading()
        session_id, token = state["chat"]
        payload = {"session_id": session_id, "resume_token": token, "after_seq": 0}

        async def flood() -> None:
            while not self._over():
                sio.emit("session:resume", payload)
                self.tally.sent["session:resume"] += 1
                async with asyncio.timeout(STALL):
                    await sio.ws.drain()
                await asyncio.sleep(0)

        await self._hold(sio, flood)

    # typing flood: typing events as fast as it can write (reading, and dropping, the acks)
    async def _typing_flood(self, address: str, state: dict[str, Any]) -> None:
        sio = await self._join(address, state)
        session_id = state["chat"][0]

        async def flood() -> None:
            on = True
            while not self._over():
                if sio.closed.is_set():
                    raise Closed("closed")
                sio.emit("typing", {"session_id": session_id, "typing": on})
                on = not on
                self.tally.sent["typing"] += 1
                async with asyncio.timeout(STALL):
                    await sio.ws.drain()
                await asyncio.sleep(0)

        await self._hold(sio, flood)


async def main() -> None:
    attack: Attack | None = None

    async def run(name: str, cmd: dict[str, Any]) -> dict[str, Any]:
        nonlocal attack
        if name == "prepare":
            # The attackers stand for other people's machines: on this one they get the
            # CPU the server and the honest clients leave over.
            os.nice(int(cmd.get("nice", 0)))
            if cmd.get("sched") == "idle":
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            attack = Attack(cmd)
            prepared: dict[str, Any] = await attack.prepare(cmd)
            return prepared
        if attack is None:
            raise RuntimeError("prepare first")
        result: dict[str, Any] = await getattr(attack, name)(cmd)
        return result

    if not await serve_commands(run) and attack is not None:
        await attack.close({})  # the driver is gone


if __name__ == "__main__":
    asyncio.run(main())
