"""Attachments in an S3-compatible object store (docs/attachments.md#object-store), against
a real one (moto's server, tests/s3.py) and real chatd apps over HTTP: a file uploaded
through one chatd is served by another with an empty upload folder of its own; an upload is
acknowledged only once it is in the bucket; the purge and erasures delete the objects; a
bucket that cannot be used stops chatd from starting."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from bench.server_process import chatd_argv, child_env, free_port
from chatd.app import create_app
from chatd.core.clock import FakeClock
from chatd.core.models import Role
from chatd.objects import ObjectStoreUnavailable
from chatd.retention import Retention
from chatd.web import keys
from chatd.web.uploads import UPLOADS
from tests.conftest import Chatd, make_settings
from tests.s3 import (
    SECRET_ACCESS_KEY,
    MotoServer,
    get_object,
    moto_server,  # noqa: F401 (a fixture)
    object_keys,
    put_object,
    s3_bucket,  # noqa: F401 (a fixture)
    s3_env,
    s3_settings,
    start_moto,
    stop_moto,
)
from tests.web.test_attachments import CSP, STORED, log_text, open_chat, png

DAY = 86_400.0


async def fetch(
    chatd: Chatd, path: str, token: str, headers: dict[str, str] | None = None,
    method: str = "GET",
) -> tuple[int, Any, bytes]:
    async with aiohttp.ClientSession() as http:
        h = {"Authorization": f"Bearer {token}", **(headers or {})}
        async with http.request(method, chatd.url + path, headers=h) as r:
            return r.status, r.headers, await r.read()


def stored_in(folder: Path) -> list[str]:
    if not folder.exists():
        return []
    return sorted(n for n in os.listdir(folder) if STORED.fullmatch(n))


async def stop(chatd: Chatd) -> None:
    """Stop a chatd app (its desk lease released), as a process of a desk stops."""
    await chatd.close_clients()
    await chatd.server.close()


async def test_a_file_uploaded_through_one_chatd_is_served_by_another_from_the_bucket(
    chatd_factory: Any, moto_server: MotoServer, s3_bucket: str, tmp_path: Path,  # noqa: F811
) -> None:
    s3 = s3_settings(moto_server, s3_bucket, prefix="desk-1/")
    first = await chatd_factory(upload_dir=str(tmp_path / "first"), **s3)
    chat = await open_chat(first)
    image = png((900, 500), "RGB")
    log = log_text(10_000)  # 700 KiB: served in several chunks
    status, body = await chat.upload(image, "screen.png")
    assert status == 201, body
    shot = body["attachment"]
    status, body = await chat.upload(log, "server.log")
    assert status == 201, body
    text = body["attachment"]

    # Acknowledged means in the bucket, under the stored names (and the prefix).
    store = first.app[keys.STORE]
    shot_record = await store.get_attachment(shot["id"])
    text_record = await store.get_attachment(text["id"])
    assert shot_record is not None and text_record is not None
    assert shot_record.thumbnail_name == f"{shot_record.stored_name}-thumb"
    assert await object_keys(moto_server.url, s3_bucket) == {
        f"desk-1/{shot_record.stored_name}", f"desk-1/{shot_record.thumbnail_name}",
        f"desk-1/{text_record.stored_name}",
    }
    assert await get_object(moto_server.url, s3_bucket,
                            f"desk-1/{text_record.stored_name}") == log
    # The upload folder kept no copy: it holds uploads in progress only.
    assert stored_in(tmp_path / "first") == []
    await stop(first)

    # Another chatd on the same database and bucket, with an empty folder of its own.
    second = await chatd_factory(upload_dir=str(tmp_path / "second"), **s3)
    token = chat.customer_token
    url = f"/api/attachments/{text['id']}"

    status, headers, data = await fetch(second, url, token)
    assert status == 200
    assert data == log and hashlib.sha256(data).hexdigest() == text["sha256"]
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Content-Disposition"].startswith('attachment; filename="server.log"')
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == CSP
    assert headers["ETag"] == f'"{text["sha256"]}"'
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Cache-Control"] == "private, no-cache"
    assert "Last-Modified" in headers

    status, headers, data = await fetch(second, url, token, {"Range": "bytes=1000-600999"})
    assert status == 206
    assert data == log[1000:601_000]
    assert headers["Content-Range"] == f"bytes 1000-600999/{len(log)}"
    status, headers, data = await fetch(second, url, token, {"Range": "bytes=-500"})
    assert (status, data) == (206, log[-500:])
    status, headers, _ = await fetch(second, url, token, {"Range": f"bytes={len(log)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(log)}"
    status, _, data = await fetch(
        second, url, token, {"Range": "bytes=0-9", "If-Range": '"something-else"'}
    )
    assert (status, data) == (200, log)
    status, headers, data = await fetch(second, url, token, method="HEAD")
    assert (status, data, headers["Content-Length"]) == (200, b"", str(len(log)))
    status, _, data = await fetch(second, url, token, {"If-None-Match": f'"{text["sha256"]}"'})
    assert (status, data) == (304, b"")

    status, headers, data = await fetch(second, f"/api/attachments/{shot['id']}", token)
    assert (status, data) == (200, image)
    assert headers["Content-Disposition"].startswith('inline; filename="screen.png"')
    status, headers, thumb = await fetch(second, f"/api/attachments/{shot['id']}/thumbnail",
                                         token)
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert headers["ETag"] == f'"{shot["sha256"]}-thumb"'
    assert headers["Content-Disposition"].startswith('inline; filename="screen-thumbnail.jpg"')
    assert max(Image.open(io.BytesIO(thumb)).size) <= 320
    status, _, _ = await fetch(second, f"/api/attachments/{shot['id']}/thumbnail", token,
                               {"If-None-Match": f'"{shot["sha256"]}-thumb"'})
    assert status == 304
    # Served by streaming from the bucket, not by copying into this folder.
    assert stored_in(tmp_path / "second") == []
    # Nobody else's credential reads it, from this process either.
    status, _, _ = await fetch(second, url, "not-a-token")
    assert status == 404


async def test_a_file_larger_than_a_part_is_put_in_parts_and_served_whole(
    chatd_factory: Any, moto_server: MotoServer, s3_bucket: str, tmp_path: Path,  # noqa: F811
) -> None:
    from chatd.objects import PART_SIZE

    chatd = await chatd_factory(**s3_settings(moto_server, s3_bucket))
    chat = await open_chat(chatd)
    data = log_text(PART_SIZE * 5 // 2 // 70)  # about two and a half parts
    assert len(data) > 2 * PART_SIZE
    status, body = await chat.upload(data, "big.log")
    assert status == 201, body
    record = await chatd.app[keys.STORE].get_attachment(body["attachment"]["id"])
    assert record is not None
    assert await get_object(moto_server.url, s3_bucket, record.stored_name) == data
    url = f"/api/attachments/{record.id}"
    status, _, served = await fetch(chatd, url, chat.customer_token)
    assert status == 200 and served == data
    middle = f"bytes={PART_SIZE - 10}-{PART_SIZE + 9}"
    status, _, served = await fetch(chatd, url, chat.customer_token, {"Range": middle})
    assert (status, served) == (206, data[PART_SIZE - 10:PART_SIZE + 10])


async def test_an_upload_the_bucket_cannot_take_is_not_acknowledged_and_leaves_nothing(
    chatd_factory: Any, tmp_path: Path,
) -> None:
    # A server of this test's own, stopped while chatd runs.
    server = start_moto(tmp_path / "moto.log")
    try:
        from tests.s3 import create_bucket

        bucket = await create_bucket(server.url)
        chatd = await chatd_factory(**s3_settings(server, bucket))
        chat = await open_chat(chatd)
        status, body = await chat.upload(log_text(10), "before.log")
        assert status == 201, body
    finally:
        stop_moto(server)
    before = await chat.messages()

    status, body = await chat.upload(log_text(20), "after.log")

    assert status == 503, body
    assert body["error"]["code"] == "unavailable"
    assert await chat.messages() == before  # no message, so nothing announced
    count, _ = await chatd.app[keys.STORE].session_attachment_usage(chat.session_id)
    assert count == 1  # no record
    assert stored_in(tmp_path / "uploads") == []  # and no file left behind


async def test_the_purge_deletes_the_objects_of_old_chats_and_orphaned_objects(
    chatd_factory: Any, moto_server: MotoServer, s3_bucket: str, tmp_path: Path,  # noqa: F811
) -> None:
    s3 = s3_settings(moto_server, s3_bucket)
    chatd = await chatd_factory(**s3)
    old = await open_chat(chatd, name="Olga")
    status, body = await old.upload(png(), "old.png")
    assert status == 201, body
    kept = await open_chat(chatd, name="Kim")
    status, body = await kept.upload(log_text(10), "kept.log")
    assert status == 201, body
    assert old.engineer is not None
    r = await old.engineer.call("session:end", {"session_id": old.session_id},
                                namespace="/engineer")
    assert r["ok"], r
    store = chatd.app[keys.STORE]
    old_names = {n for a in await store.session_attachments(old.session_id)
                 for n in (a.stored_name, a.thumbnail_name) if n}
    kept_names = {a.stored_name for a in await store.session_attachments(kept.session_id)}
    assert len(old_names) == 2
    # A stored name no record knows (a crash between the put and the record), and a key
    # chatd never writes.
    orphan = "0123456789abcdef0123456789abcdef"
    await put_object(moto_server.url, s3_bucket, orphan, b"left behind")
    await put_object(moto_server.url, s3_bucket, "notes/readme.txt", b"not chatd's")
    for _ in range(200):  # the file handoff delivers in the background
        if (tmp_path / "handoff" / f"{old.session_id}.json").exists():
            break
        await asyncio.sleep(0.05)

    retention = Retention(
        store, FakeClock(time.time() + 40 * DAY), chatd.app[UPLOADS].folder,
        retention_days=30, dead_letter_days=0, transcripts=None, orphan_age=0.0,
    )
    report = await retention.run()

    assert (report.chats, report.attachments, report.orphan_files) == (1, 1, 1)
    assert await object_keys(moto_server.url, s3_bucket) == kept_names | {"notes/readme.txt"}
    token = kept.customer_token
    status, _, data = await fetch(chatd, f"/api/attachments/{body['attachment']['id']}", token)
    assert (status, data) == (200, log_text(10))


async def test_erasing_a_customer_deletes_their_objects_and_export_reads_them(
    chatd_factory: Any, moto_server: MotoServer, s3_bucket: str, tmp_path: Path,  # noqa: F811
) -> None:
    s3 = s3_settings(moto_server, s3_bucket)
    chatd = await chatd_factory(**s3)
    gus = await open_chat(chatd, name="Gus")
    status, body = await gus.upload(png(), "screen.png")
    assert status == 201, body
    other = await open_chat(chatd, name="Olga")
    status, body = await other.upload(log_text(10), "app.log")
    assert status == 201, body
    for chat in (gus, other):
        assert chat.engineer is not None
        r = await chat.engineer.call("session:end", {"session_id": chat.session_id},
                                     namespace="/engineer")
        assert r["ok"], r
    store = chatd.app[keys.STORE]
    others = {a.stored_name for a in await store.session_attachments(other.session_id)}

    # The export streams the files from the bucket into its archive.
    from chatd import erasure

    archive = tmp_path / "gus.zip"
    out, err = io.StringIO(), io.StringIO()
    args = argparse.Namespace(action="export", customer_id=None, email="gus@example.com",
                              out=str(archive))
    assert await erasure.run(store, chatd.app[keys.SETTINGS], args, out, err) == 0, err.getvalue()
    with zipfile.ZipFile(archive) as z:
        names = [n for n in z.namelist() if n.startswith("files/")]
        assert len(names) == 1 and z.read(names[0]) == png()

    await chatd.add_engineer("lee@vendor.example", role=Role.LEAD)
    token = await chatd.login("lee@vendor.example")
    async with aiohttp.ClientSession() as http:
        async with http.post(chatd.url + "/api/customers/erase",
                             json={"email": "gus@example.com"},
                             headers={"Authorization": f"Bearer {token}"}) as r:
            body = await r.json()
            assert r.status == 200, body
    assert body["files_removed"] == 2 and body["files_not_removed"] == 0
    assert await object_keys(moto_server.url, s3_bucket) == others


async def test_a_bucket_that_cannot_be_used_stops_the_start_with_a_clear_reason(
    aiohttp_server: Any, moto_server: MotoServer, tmp_path: Path,  # noqa: F811
) -> None:
    missing = make_settings(tmp_path, **s3_settings(moto_server, "no-such-chatd-bucket"))
    with pytest.raises(ObjectStoreUnavailable) as caught:
        await aiohttp_server(create_app(missing))
    message = str(caught.value)
    assert "no-such-chatd-bucket" in message and "no such bucket" in message
    assert SECRET_ACCESS_KEY not in message

    closed = f"http://127.0.0.1:{free_port()}"
    unreachable = make_settings(tmp_path, **{**s3_settings(moto_server, "b"), "s3_url": closed})
    with pytest.raises(ObjectStoreUnavailable) as caught:
        await aiohttp_server(create_app(unreachable))
    assert closed in str(caught.value) and "connect" in str(caught.value).lower()


@pytest.mark.slow
def test_chatd_serve_exits_with_status_1_when_the_bucket_is_missing(
    moto_server: MotoServer, tmp_path: Path,  # noqa: F811
) -> None:
    env = child_env({
        "CHATD_HOST": "127.0.0.1",
        "CHATD_PORT": str(free_port()),
        "CHATD_DATABASE_URL": f"sqlite:///{tmp_path / 'chatd.db'}",
        "CHATD_UPLOAD_DIR": str(tmp_path / "uploads"),
        **s3_env(moto_server, "no-such-chatd-bucket"),
    })
    done = subprocess.run(chatd_argv("serve"), env=env, cwd=tmp_path, capture_output=True,
                          timeout=60)
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert "bucket 'no-such-chatd-bucket'" in stderr and "no such bucket" in stderr
    assert SECRET_ACCESS_KEY not in stderr and SECRET_ACCESS_KEY not in done.stdout.decode()


async def test_a_backup_counts_the_files_in_the_bucket_without_calling_them_missing(
    chatd_factory: Any, moto_server: MotoServer, s3_bucket: str, tmp_path: Path,  # noqa: F811
) -> None:
    from chatd import backup

    chatd = await chatd_factory(**s3_settings(moto_server, s3_bucket))
    chat = await open_chat(chatd)
    status, body = await chat.upload(png(), "screen.png")
    assert status == 201, body
    out, err = io.StringIO(), io.StringIO()
    args = argparse.Namespace(command="backup", path=str(tmp_path / "backup"))

    status = await asyncio.to_thread(backup.run, chatd.app[keys.SETTINGS], args, out, err)

    assert status == backup.DONE, err.getvalue()
    assert "2 files are in the object store only" in out.getvalue()
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert (manifest["missing"], manifest["in_object_store"]) == ([], 2)
