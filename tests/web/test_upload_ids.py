"""Idempotent uploads over real HTTP: a retry with the same ``Upload-Id`` stores nothing new
and gets the first attempt's attachment and message (docs/attachments.md#retrying-an-upload)."""

from __future__ import annotations

import asyncio
import io
import uuid
from typing import Any

import aiohttp

from chatd.web import keys
from tests.web.test_attachments import Chat, log_text, open_chat, png


async def upload(
    chat: Chat, data: bytes, filename: str, upload_id: str | None, *,
    token: str | None = None,
) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(data), filename=filename,
                   content_type="application/octet-stream")
    headers = {"Authorization": f"Bearer {token or chat.customer_token}"}
    if upload_id is not None:
        headers["Upload-Id"] = upload_id
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{chat.chatd.url}/api/sessions/{chat.session_id}/attachments",
            data=form, headers=headers,
        ) as r:
            return r.status, await r.json()


async def attachment_messages(chat: Chat) -> list[Any]:
    return [m for m in await chat.messages() if m.kind.value == "attachment"]


async def test_a_retry_with_the_same_id_stores_one_copy_and_answers_the_same(
    chatd_factory: Any,
) -> None:
    chatd = await chatd_factory()
    chat = await open_chat(chatd)
    upload_id = str(uuid.uuid4())
    status, first = await upload(chat, png(), "screen.png", upload_id)
    assert status == 201, first
    files = chat.stored_files()
    assert len(files) == 2  # the image and its thumbnail

    status, again = await upload(chat, png(), "screen.png", upload_id)

    assert status == 200, again
    assert again["attachment"] == first["attachment"]
    assert again["message"] == first["message"]
    assert chat.stored_files() == files
    assert [m.id for m in await attachment_messages(chat)] == [first["message"]["id"]]
    # The engineer saw one message:new for it, not two.
    await asyncio.sleep(0.2)
    assert chat.engineer_inbox is not None
    relayed = [d for d in chat.engineer_inbox.named("message:new")
               if d["message"]["kind"] == "attachment"]
    assert len(relayed) == 1
    # A new id is a new file.
    status, other = await upload(chat, png(), "screen.png", str(uuid.uuid4()))
    assert status == 201 and other["attachment"]["id"] != first["attachment"]["id"]
    assert len(chat.stored_files()) == 4


async def test_a_retry_after_the_answer_was_lost_gets_the_file_stored_the_first_time(
    chatd_factory: Any,
) -> None:
    chatd = await chatd_factory()
    chat = await open_chat(chatd)
    upload_id = uuid.uuid4().hex
    data = log_text(5000)
    boundary = "B0und"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
        f"filename=\"app.log\"\r\nContent-Type: text/plain\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    head = (
        f"POST /api/sessions/{chat.session_id}/attachments HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: Bearer {chat.customer_token}\r\n"
        f"Upload-Id: {upload_id}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    port = chatd.server.port
    assert port is not None
    # The whole request goes out and is stored; the connection drops before the client
    # reads a byte of the answer.
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body)
    await writer.drain()
    for _ in range(200):
        if await attachment_messages(chat):
            break
        await asyncio.sleep(0.05)
    writer.transport.abort()

    # The client, which never saw an answer, retries with the same id.
    status, answer = await upload(chat, data, "app.log", upload_id)
    assert status == 200, answer
    stored = await attachment_messages(chat)
    assert [m.id for m in stored] == [answer["message"]["id"]]
    assert len(chat.stored_files()) == 1
    record = await chatd.app[keys.STORE].get_attachment(answer["attachment"]["id"])
    assert record is not None and record.size == len(data)


async def test_a_retry_while_the_first_attempt_streams_is_told_to_wait(
    chatd_factory: Any,
) -> None:
    chatd = await chatd_factory()
    chat = await open_chat(chatd)
    upload_id = uuid.uuid4().hex
    data = log_text(20000)
    boundary = "B0und"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
        f"filename=\"slow.log\"\r\nContent-Type: text/plain\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    head = (
        f"POST /api/sessions/{chat.session_id}/attachments HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: Bearer {chat.customer_token}\r\n"
        f"Upload-Id: {upload_id}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    assert chatd.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", chatd.server.port)
    writer.write(head + body[: len(body) // 2])
    await writer.drain()
    for _ in range(200):
        if any(n.endswith(".part") for n in chat.stored_files()):
            break
        await asyncio.sleep(0.02)

    status, busy = await upload(chat, data, "slow.log", upload_id)

    assert status == 409, busy
    assert busy["error"]["code"] == "conflict"
    assert busy["error"]["details"]["reason"] == "upload_in_progress"
    # The first attempt is not disturbed: it ends, and the retry then gets its answer.
    writer.write(body[len(body) // 2 :])
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 10)
    assert int(line.split()[1]) == 201
    writer.close()
    status, again = await upload(chat, data, "slow.log", upload_id)
    assert status == 200, again
    assert [m.id for m in await attachment_messages(chat)] == [again["message"]["id"]]
    assert len(chat.stored_files()) == 1


async def test_an_upload_id_belongs_to_its_chat(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    one = await open_chat(chatd, name="Ann")
    two = await open_chat(chatd, name="Bob")
    upload_id = str(uuid.uuid4())
    s1, a1 = await upload(one, png(), "a.png", upload_id)
    s2, a2 = await upload(two, png(), "b.png", upload_id)
    assert (s1, s2) == (201, 201)
    assert a1["attachment"]["id"] != a2["attachment"]["id"]
    # The id of one chat does not open the other's file, whoever asks.
    assert one.engineer_token is not None
    status, body = await upload(two, png(), "b.png", upload_id, token=one.engineer_token)
    assert status == 403, body


async def test_a_malformed_upload_id_is_refused_and_stores_nothing(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    chat = await open_chat(chatd)
    for bad in ("short", "x" * 129, "has space in it 123", "semi;colon;1234567890",
                "ünïcode-0123456789"):
        try:
            status, body = await upload(chat, png(), "a.png", bad)
        except ValueError:  # the client refuses to send a non-latin-1 header itself
            continue
        assert status == 400 and body["error"]["code"] == "bad_request", (bad, body)
        assert "Upload-Id" in body["error"]["message"]
    assert chat.stored_files() == []
    assert await attachment_messages(chat) == []


async def test_the_engineer_side_retries_the_same_way(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    chat = await open_chat(chatd)
    assert chat.engineer_token is not None
    upload_id = "console-" + uuid.uuid4().hex
    s1, a1 = await upload(chat, log_text(10), "fix.log", upload_id, token=chat.engineer_token)
    s2, a2 = await upload(chat, log_text(10), "fix.log", upload_id, token=chat.engineer_token)
    assert (s1, s2) == (201, 200)
    assert a1["message"] == a2["message"]
    assert a1["message"]["sender"]["role"] == "engineer"
    assert len(chat.stored_files()) == 1
    async with aiohttp.ClientSession() as http:
        async with http.get(chatd.url + "/metrics") as r:
            metrics = await r.text()
    assert 'chatd_uploads_total{result="repeated"} 1.0' in metrics
    assert 'chatd_uploads_total{result="stored"} 1.0' in metrics
