"""Bounds on uploads under hostile or unlucky clients: concurrent uploads per chat and per
uploader, idle and total deadlines, the free-disk floor, and image decoding that neither
starves other chats nor waits on the default thread pool (docs/security.md, uploads)."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import struct
import threading
import zlib
from typing import Any

import aiohttp
import pytest
from PIL import Image

from chatd.core.models import Role
from chatd.files import FairExecutor, UploadFolder, _Digest
from chatd.web import keys
from tests.web.conftest import ChatdProcess
from tests.web.test_attachments import (
    Chat,
    http_chunk,
    log_text,
    multipart_head,
    open_chat,
    png,
    process_chat,
    request_head,
    wait_until_empty,
)

MiB = 1024 * 1024
PIB = 1024**5

# ---------------------------------------------------------------------- raw HTTP clients


async def read_response(reader: asyncio.StreamReader, timeout: float = 20) -> tuple[int, Any]:
    """The status and JSON body of one HTTP response."""

    async def read() -> tuple[int, Any]:
        status = int((await reader.readline()).split()[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        body = await reader.readexactly(length) if length else b""
        return status, json.loads(body) if body else None

    return await asyncio.wait_for(read(), timeout)


class HeldUpload:
    """An upload whose client sent the start of its file and then keeps the connection
    open: it holds its slot until the test ends it one way or another."""

    def __init__(self, chat: Chat, token: str | None = None, data: bytes | None = None,
                 filename: str = "held.log", session_id: str | None = None) -> None:
        self.chat = chat
        self.token = token or chat.customer_token
        self.session_id = session_id or chat.session_id
        data = data if data is not None else log_text(3000)
        self.body = multipart_head("B0und", filename) + data + b"\r\n--B0und--\r\n"
        self.sent = len(multipart_head("B0und", filename)) + len(data) // 2
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        server = self.chat.chatd.server
        self.reader, self.writer = await asyncio.open_connection(server.host, server.port)
        path = f"/api/sessions/{self.session_id}/attachments"
        self.writer.write(request_head(path, self.token, "B0und", len(self.body))
                          + self.body[: self.sent])
        await self.writer.drain()

    async def finish(self) -> tuple[int, Any]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(self.body[self.sent:])
        await self.writer.drain()
        return await read_response(self.reader)

    async def response(self, timeout: float = 20) -> tuple[int, Any]:
        assert self.reader is not None
        return await read_response(self.reader, timeout)

    def drop(self) -> None:
        """The client goes away, as when a laptop lid closes."""
        assert self.writer is not None
        self.writer.transport.abort()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def uploads_in_progress(chat: Chat, count: int) -> None:
    """Wait until the server streams ``count`` uploads to disk (their temporary files)."""
    for _ in range(200):
        if sum(n.endswith(".part") for n in chat.stored_files()) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} uploads never started: {chat.stored_files()}")


async def refused_before_the_body(chat: Chat, token: str | None = None,
                                  session_id: str | None = None) -> tuple[int, Any]:
    """Announce a 1 MiB upload but send none of it: only an answer given before reading
    the body can arrive."""
    server = chat.chatd.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        path = f"/api/sessions/{session_id or chat.session_id}/attachments"
        writer.write(request_head(path, token or chat.customer_token, "B0und", MiB))
        await writer.drain()
        return await read_response(reader, timeout=10)
    finally:
        writer.close()


async def no_attachment_left(chat: Chat) -> None:
    assert await wait_until_empty(chat.upload_dir) == []
    assert all(m.kind.value != "attachment" for m in await chat.messages())
    assert await chat.chatd.app[keys.STORE].session_attachment_usage(chat.session_id) == (0, 0)


# ---------------------------------------------------------------------- concurrent uploads


async def test_a_chat_past_its_concurrent_uploads_is_refused_before_sending_its_body(
    chatd_factory: Any,
) -> None:
    chat = await open_chat(await chatd_factory(
        upload_concurrent_per_session=2, upload_concurrent_per_customer=10
    ))
    held = [HeldUpload(chat), HeldUpload(chat)]
    try:
        for h in held:
            await h.start()
        await uploads_in_progress(chat, 2)
        status, body = await refused_before_the_body(chat)
        assert status == 429, body
        assert body["error"]["code"] == "rate_limited"
        assert body["error"]["details"] == {"limit": 2}
        assert "in progress" in body["error"]["message"]
        # The engineer of the chat shares its slots: the chat is the unit.
        status, body = await refused_before_the_body(chat, chat.engineer_token)
        assert status == 429, body
        for h in held:
            status, body = await h.finish()
            assert status == 201, body
    finally:
        for h in held:
            h.close()
    # Both slots came back.
    status, body = await chat.upload(log_text(10), "after.log")
    assert status == 201, body


async def test_one_uploader_is_bounded_across_all_their_chats(chatd_factory: Any) -> None:
    chatd = await chatd_factory(
        upload_concurrent_per_session=2, upload_concurrent_per_customer=3
    )
    chats = [await open_chat(chatd, name=n) for n in ("Ann", "Bob", "Cid")]
    await chatd.add_engineer("lead@example.com", name="Lead", role=Role.LEAD)
    lead = await chatd.login("lead@example.com")
    held = [
        HeldUpload(chats[0], lead), HeldUpload(chats[0], lead), HeldUpload(chats[1], lead)
    ]
    try:
        for h in held:
            await h.start()
        await uploads_in_progress(chats[0], 3)  # one folder for every chat
        status, body = await refused_before_the_body(chats[2], lead)
        assert status == 429, body
        assert body["error"]["code"] == "rate_limited"
        assert body["error"]["details"] == {"limit": 3}
        # Others are not held back by one busy uploader.
        status, body = await chats[2].upload(log_text(10), "mine.log")
        assert status == 201, body
        status, body = await chats[1].upload(log_text(10), "mine.log")
        assert status == 201, body
    finally:
        for h in held:
            h.close()


async def test_a_customer_is_bounded_across_their_connections(chatd_factory: Any) -> None:
    chat = await open_chat(await chatd_factory(
        upload_concurrent_per_session=10, upload_concurrent_per_customer=2
    ))
    held = [HeldUpload(chat), HeldUpload(chat)]
    try:
        for h in held:
            await h.start()
        await uploads_in_progress(chat, 2)
        status, body = await refused_before_the_body(chat)
        assert status == 429 and body["error"]["details"] == {"limit": 2}, body
        assert "you already have" in body["error"]["message"]
        # The engineer is another uploader, and the chat has room.
        status, body = await chat.upload(log_text(10), "eng.log", token=chat.engineer_token)
        assert status == 201, body
    finally:
        for h in held:
            h.close()


async def test_one_client_address_is_bounded_across_its_guests_and_chats(
    chatd_factory: Any,
) -> None:
    """Guests can make new identities, and so new chats, but not new addresses."""
    chatd = await chatd_factory(
        upload_concurrent_per_session=10, upload_concurrent_per_customer=10,
        upload_concurrent_per_address=2, trusted_proxies=("127.0.0.1/32",),
    )
    chats = [await open_chat(chatd, name=n) for n in ("Ann", "Bob", "Cid")]
    held = [HeldUpload(chats[0]), HeldUpload(chats[1])]
    try:
        for h in held:
            await h.start()
        await uploads_in_progress(chats[0], 2)
        status, body = await refused_before_the_body(chats[2])
        assert status == 429 and body["error"]["details"] == {"limit": 2}, body
        assert "network address" in body["error"]["message"]
        # The same guest from another address (as seen through a trusted proxy) has room.
        server = chatd.server
        reader, writer = await asyncio.open_connection(server.host, server.port)
        try:
            path = f"/api/sessions/{chats[2].session_id}/attachments"
            head = request_head(path, chats[2].customer_token, "B0und", None)
            head = head.replace(b"\r\n\r\n", b"\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n")
            data = multipart_head("B0und", "other.log") + log_text(10) + b"\r\n--B0und--\r\n"
            writer.write(head + http_chunk(data) + b"0\r\n\r\n")
            await writer.drain()
            status, body = await read_response(reader)
            assert status == 201, body
        finally:
            writer.close()
        for h in held:
            status, body = await h.finish()
            assert status == 201, body
    finally:
        for h in held:
            h.close()
    status, body = await chats[2].upload(log_text(10), "after.log")
    assert status == 201, body


ENDINGS = ["stored", "refused", "client-gone", "idle-timeout"]


@pytest.mark.parametrize("ending", ENDINGS)
async def test_every_way_an_upload_ends_gives_its_slot_back(
    chatd_factory: Any, ending: str
) -> None:
    chat = await open_chat(await chatd_factory(
        upload_concurrent_per_session=1, upload_concurrent_per_customer=1,
        upload_idle_timeout_seconds=1.0,
    ))
    data = log_text(3000)
    filename = "fake.png" if ending == "refused" else "held.log"  # text named as an image
    first = HeldUpload(chat, data=data, filename=filename)
    try:
        await first.start()
        await uploads_in_progress(chat, 1)
        status, body = await refused_before_the_body(chat)
        assert status == 429, body
        if ending == "stored":
            assert (await first.finish())[0] == 201
        elif ending == "refused":
            assert (await first.finish())[0] == 415
        elif ending == "client-gone":
            first.drop()
        else:
            assert (await first.response())[0] == 408
    finally:
        first.close()
    if ending != "stored":
        await no_attachment_left(chat)
    for _ in range(100):  # a dropped client is noticed a moment later
        status, body = await chat.upload(log_text(10), "next.log")
        if status != 429:
            break
        await asyncio.sleep(0.05)
    assert status == 201, body


# ---------------------------------------------------------------------- idle and total time


async def test_an_upload_that_stops_sending_ends_with_408_and_leaves_nothing(
    chatd_factory: Any,
) -> None:
    chat = await open_chat(await chatd_factory(upload_idle_timeout_seconds=1.0))
    held = HeldUpload(chat)
    try:
        await held.start()
        status, body = await held.response()
    finally:
        held.close()
    assert status == 408, body
    assert body["ok"] is False and body["error"]["code"] == "bad_request"
    assert "no data arrived for 1 seconds" in body["error"]["message"]
    assert body["error"]["details"] == {"limit": 1}
    await no_attachment_left(chat)


async def trickle(chat: Chat, data: bytes, every: float, count: int) -> tuple[int, Any]:
    """An upload that sends its file a byte at a time, ``every`` seconds, ``count`` times
    at most, then the rest; the server's answer as soon as there is one."""
    server = chat.chatd.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    body = multipart_head("B0und") + data + b"\r\n--B0und--\r\n"
    path = f"/api/sessions/{chat.session_id}/attachments"
    writer.write(request_head(path, chat.customer_token, "B0und", None))

    async def send() -> None:
        writer.write(http_chunk(body[:200]))
        for i in range(count):
            await asyncio.sleep(every)
            writer.write(http_chunk(body[200 + i : 201 + i]))
            await writer.drain()
        writer.write(http_chunk(body[200 + count:]) + b"0\r\n\r\n")
        await writer.drain()

    sender = asyncio.create_task(send())
    try:
        return await read_response(reader, timeout=30)
    finally:
        sender.cancel()
        writer.close()


async def test_a_slow_upload_past_the_total_time_ends_with_408_and_leaves_nothing(
    chatd_factory: Any,
) -> None:
    chat = await open_chat(await chatd_factory(
        upload_idle_timeout_seconds=30.0, upload_total_timeout_seconds=1.5
    ))
    # A byte every 0.2 s is never idle, but would take 20 s in all.
    status, body = await trickle(chat, log_text(50), every=0.2, count=100)
    assert status == 408, body
    assert body["error"]["code"] == "bad_request"
    assert "longer than 1.5 seconds" in body["error"]["message"]
    await no_attachment_left(chat)


async def test_a_slow_upload_that_keeps_sending_is_not_idle(chatd_factory: Any) -> None:
    chat = await open_chat(await chatd_factory(
        upload_idle_timeout_seconds=1.0, upload_total_timeout_seconds=60.0
    ))
    # Single bytes every 0.3 s, fewer than aiohttp needs to find a boundary in one read:
    # the idle clock counts bytes received, not reads that return.
    status, body = await trickle(chat, log_text(50), every=0.3, count=8)
    assert status == 201, body


@pytest.mark.slow
async def test_slow_uploads_in_a_real_server_are_cut_off_and_free_their_slots(
    chatd_process: Any,
) -> None:
    server: ChatdProcess = await chatd_process(
        CHATD_UPLOAD_IDLE_TIMEOUT_SECONDS="1", CHATD_UPLOAD_TOTAL_TIMEOUT_SECONDS="3",
        CHATD_UPLOAD_CONCURRENT_PER_SESSION="2",
    )
    client, sid, token = await process_chat(server)
    host, port = server.url.removeprefix("http://").split(":")
    path = f"/api/sessions/{sid}/attachments"
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        # One stops sending, one sends a byte every 0.5 s (the siege's slow upload, faster).
        for _ in range(2):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(request_head(path, token, "B0und", None)
                         + http_chunk(multipart_head("B0und") + b"x" * 100))
            await writer.drain()
            conns.append((reader, writer))

        async def drip(writer: asyncio.StreamWriter) -> None:
            for _ in range(40):
                await asyncio.sleep(0.5)
                writer.write(http_chunk(b"x"))
                await writer.drain()

        dripping = asyncio.create_task(drip(conns[1][1]))
        answers = [await read_response(r, timeout=20) for r, _ in conns]
        dripping.cancel()
        assert [a[0] for a in answers] == [408, 408], answers
        assert "no data arrived" in answers[0][1]["error"]["message"]
        assert "longer than 3 seconds" in answers[1][1]["error"]["message"]
        assert await wait_until_empty(server.upload_dir) == []
        async with aiohttp.ClientSession() as http:
            form = aiohttp.FormData()
            form.add_field("file", io.BytesIO(b"fine\n"), filename="ok.log")
            async with http.post(server.url + path, data=form,
                                 headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 201, await r.text()
    finally:
        for _, writer in conns:
            writer.close()
        await client.disconnect()


# ---------------------------------------------------------------------- free disk


async def test_uploads_are_refused_with_507_below_the_free_disk_floor(
    chatd_factory: Any,
) -> None:
    chat = await open_chat(await chatd_factory(upload_min_free_bytes=PIB))
    status, body = await chat.upload(png(), "shot.png")
    assert status == 507, body
    assert body["error"]["code"] == "insufficient_storage"
    await no_attachment_left(chat)
    # With Expect: 100-continue the client learns it before sending the body.
    server = chat.chatd.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        head = request_head(f"/api/sessions/{chat.session_id}/attachments",
                            chat.customer_token, "B0und", MiB)
        writer.write(head.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n"))
        await writer.drain()
        status, body = await read_response(reader, timeout=10)
    finally:
        writer.close()
    assert status == 507 and body["error"]["code"] == "insufficient_storage"


async def test_an_upload_that_would_pass_the_free_disk_floor_is_cut_off_while_streaming(
    chatd_factory: Any, tmp_path: Any
) -> None:
    # The floor sits 64 MiB below what is free now; the upload is ten times that. Other
    # processes writing or deleting a few MiB meanwhile change nothing.
    floor = shutil.disk_usage(tmp_path).free - 64 * MiB
    chat = await open_chat(await chatd_factory(
        upload_min_free_bytes=floor, upload_max_bytes=1024 * MiB,
        upload_session_max_bytes=2048 * MiB,
    ))
    server = chat.chatd.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    path = f"/api/sessions/{chat.session_id}/attachments"

    async def send() -> None:
        writer.write(request_head(path, chat.customer_token, "B0und", None)
                     + http_chunk(multipart_head("B0und")))
        block = http_chunk(b"2025-01-01 INFO all is well\n" * (MiB // 28))
        for _ in range(640):
            writer.write(block)
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        status, body = await read_response(reader, timeout=60)
    finally:
        sender.cancel()
        writer.close()
    assert status == 507, body
    assert body["error"]["code"] == "insufficient_storage"
    await no_attachment_left(chat)


async def test_the_event_loop_never_waits_for_an_upload_thread_to_start(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Thread.start`` returns only once the new thread runs: on a saturated machine the
    event loop, and every client on it, would wait for the scheduler at each upload. The
    hashing thread is started from the folder's own threads; what is written meanwhile is
    hashed all the same."""
    import hashlib

    loop_thread = threading.current_thread()
    started_from: list[threading.Thread] = []
    start = _Digest.start

    def recording_start(self: _Digest) -> None:
        started_from.append(threading.current_thread())
        start(self)

    monkeypatch.setattr(_Digest, "start", recording_start)
    folder = UploadFolder(tmp_path / "uploads")
    await folder.start()
    try:
        data = [b"line %d\n" % i for i in range(10_000)]
        async with folder.upload(10 * MiB, "too large") as upload:
            for chunk in data:
                await upload.write(chunk)
            digest = await upload.finish()
        assert digest == hashlib.sha256(b"".join(data)).hexdigest()
        assert started_from and loop_thread not in started_from
        # An upload given up at once still ends its thread.
        async with folder.upload(10 * MiB, "too large"):
            pass
        assert len(started_from) == 2
    finally:
        await folder.aclose()


# ---------------------------------------------------------------------- image decoding


def decompression_bomb() -> bytes:
    """A PNG that declares 30000x30000 pixels in a few dozen bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 30001)) + chunk(b"IEND", b""))


async def test_a_decompression_bomb_is_refused_with_a_clear_error(chatd_factory: Any) -> None:
    chat = await open_chat(await chatd_factory())
    status, body = await chat.upload(decompression_bomb(), "bomb.png")
    assert status == 413, body
    assert body["error"]["code"] == "too_large"
    assert "megapixels" in body["error"]["message"]
    await no_attachment_left(chat)


def large_png() -> bytes:
    # 36 megapixels: well under the limit, and a decode that takes a while.
    buf = io.BytesIO()
    Image.new("RGB", (6000, 6000), (9, 80, 200)).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


async def test_one_chats_stream_of_large_images_does_not_hold_up_another_chat(
    chatd_factory: Any,
) -> None:
    chatd = await chatd_factory(
        upload_concurrent_per_session=8, upload_concurrent_per_customer=8, upload_burst=100,
    )
    a = await open_chat(chatd, name="Ann")
    b = await open_chat(chatd, name="Bob")
    big = large_png()
    done: list[str] = []

    async def upload(chat: Chat, data: bytes, name: str, label: str) -> None:
        status, body = await chat.upload(data, name)
        assert status == 201, body
        done.append(label)

    a_uploads = [asyncio.create_task(upload(a, big, f"wall{i}.png", "a")) for i in range(6)]
    try:
        # Chat A's images reach the decoder first (their bodies are small: PNG compresses
        # a plain colour well), then B sends one small image.
        for _ in range(200):
            if sum(n.endswith(".part") for n in a.stored_files()) == 6:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        await upload(b, png((200, 100)), "small.png", "b")
        # Decodes take turns by chat: B's waits for at most one of A's beyond those
        # already running, never for all six.
        assert done.count("a") <= 4, done
    finally:
        await asyncio.gather(*a_uploads, return_exceptions=True)
    assert done.count("a") == 6


async def test_decodes_take_turns_between_chats_on_their_own_threads() -> None:
    pool = FairExecutor(workers=1, name="test-decode")
    gate = threading.Event()
    started: list[str] = []
    threads: set[str] = set()

    def job(label: str) -> str:
        started.append(label)
        threads.add(threading.current_thread().name)
        gate.wait(10)
        return label

    try:
        jobs = [asyncio.create_task(pool.run("a", job, f"a{i}")) for i in range(4)]
        await asyncio.sleep(0.05)
        jobs.append(asyncio.create_task(pool.run("b", job, "b0")))
        jobs.append(asyncio.create_task(pool.run("c", job, "c0")))
        await asyncio.sleep(0.05)
        assert pool.running == 1 and pool.waiting() == 5 and pool.waiting("a") == 3
        # A caller that goes away before its job started leaves the line.
        jobs[2].cancel()
        gate.set()
        results = await asyncio.gather(*jobs, return_exceptions=True)
    finally:
        gate.set()
        pool.close()
    assert started == ["a0", "a1", "b0", "c0", "a3"]
    assert isinstance(results[2], asyncio.CancelledError)
    assert all(name.startswith("test-decode") for name in threads), threads


async def test_uploads_do_not_wait_on_a_saturated_default_thread_pool(
    chatd_factory: Any,
) -> None:
    chat = await open_chat(await chatd_factory())
    loop = asyncio.get_running_loop()
    release = threading.Event()
    # Every thread of the default executor is busy (as under a flood of password hashing).
    blockers = [loop.run_in_executor(None, release.wait, 30) for _ in range(64)]
    try:
        status, body = await asyncio.wait_for(chat.upload(png(), "shot.png"), 20)
        assert status == 201, body
        status, body = await asyncio.wait_for(chat.upload(log_text(), "app.log"), 20)
        assert status == 201, body
        status, _, data = await asyncio.wait_for(
            chat.get(body["attachment"]["url"], chat.customer_token), 20
        )
        assert status == 200 and data == log_text()
    finally:
        release.set()
        await asyncio.gather(*blockers)
