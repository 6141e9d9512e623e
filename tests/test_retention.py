"""Retention as an operator sees it (docs/operations.md): a running server purges old closed
chats in the background (messages, files, thumbnails, transcripts) and cleans up orphans,
while recent chats and chats whose handoff is owed stay; ``chatd purge [--dry-run]`` from
the command line. On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from chatd.core.models import MessageKind, NewMessage, Role, Sender, Session, SessionState
from chatd.core.ports import AttachmentRecord, Store
from chatd.retention import PURGE
from chatd.store import store_from_url
from chatd.web import keys
from tests.conftest import Chatd
from tests.store.helpers import customer, end_note, ended, new_id, text

DAY = 86_400.0


@pytest.fixture(params=["sqlite", "postgres"])
def db_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Chat:
    session: Session
    files: list[AttachmentRecord]

    def paths(self, uploads: Path) -> list[Path]:
        return [uploads / n for a in self.files for n in (a.stored_name, a.thumbnail_name) if n]


class Desk:
    """Chats written straight into a desk's database and folders, as a server that ran for
    months would have left them."""

    def __init__(self, store: Store, tmp: Path) -> None:
        self.store = store
        self.uploads = tmp / "uploads"
        self.handoff = tmp / "handoff"
        self.uploads.mkdir(exist_ok=True)
        self.handoff.mkdir(exist_ok=True)
        self.arrival = 0

    def file(self, name: str, data: bytes, *, age: float = 2 * DAY) -> Path:
        path = self.uploads / name
        path.write_bytes(data)
        then = time.time() - age
        os.utime(path, (then, then))
        return path

    def record(self, session_id: str, at: float, *, image: bool) -> AttachmentRecord:
        stored = secrets.token_hex(16)
        data = b"\x89PNG fake image bytes" if image else b"2026-01-01 ERROR it broke\n"
        self.file(stored, data)
        thumb = None
        if image:
            thumb = f"{stored}-thumb"
            self.file(thumb, b"thumbnail")
        return AttachmentRecord(
            id=new_id(), session_id=session_id, uploader_role="customer",
            uploader_id="cust", filename="shot.png" if image else "app.log",
            content_type="image/png" if image else "text/plain", size=len(data),
            sha256="0f" * 32, stored_name=stored, thumbnail_name=thumb,
            thumbnail_type="image/jpeg" if image else None, created_at=at,
        )

    async def chat(
        self, closed_at: float | None, *, backends: tuple[str, ...] = ("file",),
        deliver: bool = True, announce: bool = True,
    ) -> Chat:
        start = (closed_at or time.time()) - 600
        self.arrival += 1
        c = customer(self.arrival)
        session = Session(
            id=new_id(), state=SessionState.WAITING, topic="VPN drops", severity=3,
            customer=c, created_at=start, arrival_seq=self.arrival,
        )
        await self.store.create_session(session, "hash", text(session.id, "hi", ts=start))
        files = [self.record(session.id, start + 5, image=True),
                 self.record(session.id, start + 6, image=False)]
        for a in files:
            await self.store.add_attachment(a, 100, 1 << 30)
            if announce:
                await self.store.append_message(NewMessage(
                    id=new_id(), session_id=session.id, ts=a.created_at,
                    sender=Sender("customer", c.id, c.name), kind=MessageKind.ATTACHMENT,
                    body=a.filename, attachment=a.to_wire(),
                ))
        if closed_at is not None:
            await self.store.end_session(
                ended(session, closed_at), end_note(session.id, ts=closed_at), list(backends)
            )
            if deliver:
                for h in await self.store.claim_handoffs(closed_at, 100, 90.0, ["file"]):
                    await self.store.handoff_delivered(h.id, closed_at, "ok", None, None, None)
                    for suffix in (".json", ".txt"):
                        (self.handoff / f"{session.id}{suffix}").write_text("transcript")
        return Chat(session, files)


async def populate(url: str, tmp: Path, fn: Callable[[Desk], Awaitable[None]]) -> None:
    store = store_from_url(url, pool_size=2)
    await store.open()
    try:
        await fn(Desk(store, tmp))
    finally:
        await store.close()


async def wait_for_pass(chatd: Chatd) -> None:
    job = chatd.app[PURGE]
    for _ in range(200):
        if job.passes:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the purge did not run")


async def status_of(chatd: Chatd, token: str, path: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(
        chatd.url + path, headers={"Authorization": f"Bearer {token}"}
    ) as r:
        return r.status


async def test_the_server_purges_old_chats_and_keeps_recent_and_owed_ones(
    chatd_factory: Callable[..., Awaitable[Chatd]], database_url: str, tmp_path: Path
) -> None:
    now = time.time()
    chats: dict[str, Chat] = {}

    async def fill(desk: Desk) -> None:
        chats["old"] = await desk.chat(now - 40 * DAY)
        chats["recent"] = await desk.chat(now - 5 * DAY)
        # Its webhook row is owed (the backend is not configured now: it stays pending).
        chats["owed"] = await desk.chat(now - 40 * DAY, backends=("file", "webhook"))
        chats["open"] = await desk.chat(None)

    await populate(database_url, tmp_path, fill)
    uploads = tmp_path / "uploads"
    chatd = await chatd_factory(retention_days=30, purge_interval_seconds=0.2)
    await chatd.add_engineer("lead@example.com", role=Role.LEAD)
    token = await chatd.login("lead@example.com")
    await wait_for_pass(chatd)

    old = chats["old"]
    image = old.files[0]
    for path in old.paths(uploads):
        assert not path.exists(), path  # the files and the thumbnail
    assert not (tmp_path / "handoff" / f"{old.session.id}.json").exists()
    assert not (tmp_path / "handoff" / f"{old.session.id}.txt").exists()
    assert await status_of(chatd, token, f"/api/attachments/{image.id}") == 404
    assert await status_of(
        chatd, token, f"/api/sessions/{old.session.id}/transcript?format=json") == 404
    for name in ("recent", "owed", "open"):
        kept = chats[name]
        assert all(p.exists() for p in kept.paths(uploads)), name
        assert await status_of(chatd, token, f"/api/attachments/{kept.files[0].id}") == 200
        assert await status_of(
            chatd, token, f"/api/sessions/{kept.session.id}/transcript?format=json") == 200
    assert (tmp_path / "handoff" / f"{chats['recent'].session.id}.json").exists()
    report = chatd.app[PURGE].total
    assert (report.chats, report.attachments, report.transcripts) == (1, 2, 2)
    assert report.messages == 1 + 2 + 1  # the first text, two announcements, the end


async def test_the_server_removes_orphans_older_than_the_guard(
    chatd_factory: Callable[..., Awaitable[Chatd]], database_url: str, tmp_path: Path
) -> None:
    """Retention off: the orphans go all the same, and nothing young is touched."""
    now = time.time()
    found: dict[str, Chat] = {}

    async def fill(desk: Desk) -> None:
        # Records whose announcement a crash lost: one of two days ago, and one stored
        # ten minutes ago (inside the guard: it could be an upload being announced).
        found["orphan"] = await desk.chat(now - 2 * DAY, announce=False)
        found["young"] = await desk.chat(None, announce=False)
        found["fine"] = await desk.chat(now - 2 * DAY)

    await populate(database_url, tmp_path, fill)
    uploads = tmp_path / "uploads"
    desk = Desk.__new__(Desk)
    desk.uploads = uploads
    stray_old = desk.file(secrets.token_hex(16), b"left by a crash", age=2 * 3600)
    stray_young = desk.file(secrets.token_hex(16), b"being recorded", age=60)
    not_ours = desk.file("notes.txt", b"an operator's file", age=30 * DAY)

    chatd = await chatd_factory(purge_interval_seconds=0.2)
    await wait_for_pass(chatd)
    s = chatd.app[keys.STORE]
    orphan = found["orphan"]
    for a in orphan.files:
        assert await s.get_attachment(a.id) is None
    assert not any(p.exists() for p in orphan.paths(uploads))
    assert not stray_old.exists()
    assert stray_young.exists() and not_ours.exists()
    for name in ("young", "fine"):
        kept = found[name]
        assert all(p.exists() for p in kept.paths(uploads)), name
        assert await s.session_attachment_usage(kept.session.id) == (
            2, sum(a.size for a in kept.files))
    report = chatd.app[PURGE].total
    assert report.chats == 0
    assert report.orphan_files == 1


def run(tmp: Path, url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_")}
    full_env.update({
        "CHATD_DATABASE_URL": url, "CHATD_UPLOAD_DIR": str(tmp / "uploads"),
        "CHATD_HANDOFF_FILE_DIR": str(tmp / "handoff"), **env,
    })
    return subprocess.run(
        [sys.executable, "-m", "chatd", *args], env=full_env, capture_output=True,
        text=True, timeout=60,
    )


def figures(out: str) -> dict[str, int]:
    lines = [line.strip().split(": ") for line in out.splitlines() if line.startswith("  ")]
    return {k: int(v) for k, v in lines}


async def test_purge_dry_run_changes_nothing_and_purge_removes(
    database_url: str, tmp_path: Path
) -> None:
    now = time.time()
    chats: dict[str, Chat] = {}

    async def fill(desk: Desk) -> None:
        chats["old"] = await desk.chat(now - 40 * DAY)
        chats["recent"] = await desk.chat(now - 5 * DAY)

    await populate(database_url, tmp_path, fill)
    uploads = tmp_path / "uploads"
    before = sorted(p.name for p in uploads.iterdir())
    old_bytes = sum(a.size for a in chats["old"].files)

    dry = await asyncio.to_thread(
        run, tmp_path, database_url, "purge", "--dry-run", CHATD_RETENTION_DAYS="30"
    )
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing was removed" in dry.stdout
    assert figures(dry.stdout) == {
        "chats": 1, "messages": 4, "attachments": 2, "attachment bytes": old_bytes,
        "outbox rows": 1, "orphan records": 0, "orphan files": 0, "orphan bytes": 0,
    }
    assert sorted(p.name for p in uploads.iterdir()) == before
    again = await asyncio.to_thread(
        run, tmp_path, database_url, "purge", "--dry-run", CHATD_RETENTION_DAYS="30"
    )
    assert figures(again.stdout) == figures(dry.stdout)

    real = await asyncio.to_thread(
        run, tmp_path, database_url, "purge", CHATD_RETENTION_DAYS="30"
    )
    assert real.returncode == 0, real.stderr
    assert figures(real.stdout)["chats"] == 1 and figures(real.stdout)["transcripts"] == 2
    assert not any(p.exists() for p in chats["old"].paths(uploads))
    assert all(p.exists() for p in chats["recent"].paths(uploads))
    after = await asyncio.to_thread(
        run, tmp_path, database_url, "purge", "--dry-run", CHATD_RETENTION_DAYS="30"
    )
    assert figures(after.stdout)["chats"] == 0

    off = await asyncio.to_thread(run, tmp_path, database_url, "purge")
    assert off.returncode == 0 and "retention is off" in off.stdout
    assert figures(off.stdout)["chats"] == 0
    assert all(p.exists() for p in chats["recent"].paths(uploads))


def test_a_bad_retention_setting_is_refused_and_nothing_is_purged(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    r = run(tmp_path, url, "purge", CHATD_RETENTION_DAYS="-3")
    assert r.returncode == 2
    assert "CHATD_RETENTION_DAYS: must be between 0 and 36500" in r.stderr
    r = run(tmp_path, url, "purge", CHATD_RETENTION_DEAD_LETTER_DAYS="soon")
    assert r.returncode == 2 and "CHATD_RETENTION_DEAD_LETTER_DAYS" in r.stderr
    assert not (tmp_path / "c.db").exists()
