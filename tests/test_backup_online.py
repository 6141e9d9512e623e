"""``chatd backup`` of a running desk under chat load, ``chatd restore`` into a fresh folder,
and the chats carrying on there: real ``chatd serve`` processes, real sockets, real files
(docs/operations.md#backups)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from PIL import Image

from bench.server_process import chatd_argv
from tests.invariants import Expected, check_store_invariants
from tests.process import Server, connect

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"
# The load sends as fast as acks come back: on a fast machine more than 1,000 a second on
# one connection, and the check reads every chat back at once; so the limits are the
# highest the settings take.
LOAD = {
    "CHATD_CONNECT_BURST": "1000", "CHATD_MESSAGE_RATE": "10000",
    "CHATD_MESSAGE_BURST": "100000", "CHATD_EVENT_RATE": "10000",
    "CHATD_EVENT_BURST": "100000", "CHATD_HISTORY_MESSAGES_RATE_TOTAL": "1000000",
    "CHATD_UPLOAD_BURST": "100", "CHATD_GRACE_SECONDS": "30",
}


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Server]:
    (tmp_path / "live").mkdir()
    s = Server(tmp_path / "live", LOAD)
    yield s
    s.stop()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Server]:
    (tmp_path / "fresh").mkdir()
    s = Server(tmp_path / "fresh", LOAD)
    yield s
    s.stop()


def run_cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(chatd_argv(*args), env=server.env, capture_output=True, text=True,
                          timeout=120)


def png(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (seed * 40 % 256, 120, 200)).save(out, format="PNG")
    return out.getvalue()


async def call(c: socketio.AsyncClient, ns: str, event: str, data: Any) -> Any:
    r = await c.call(event, data, namespace=ns, timeout=15)
    assert r["ok"], (event, r)
    return r


async def login(server: Server) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.post(server.url + "/api/login",
                             json={"email": "alex@example.com", "password": PASSWORD}) as r:
            assert r.status == 200, await r.text()
            return str((await r.json())["token"])


async def upload(server: Server, sid: str, token: str, data: bytes, name: str) -> Any:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/api/sessions/{sid}/attachments", data=form,
                             headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 201, await r.text()
            return await r.json()


async def download(server: Server, path: str, token: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + path,
                            headers={"Authorization": f"Bearer {token}"}) as r:
            return r.status, await r.read()


class Load:
    """Both sides of every chat sending messages back to back; every acknowledged message
    is kept with the monotonic time its acknowledgement arrived."""

    def __init__(self) -> None:
        self.acked: list[tuple[float, Expected]] = []
        self.stop = asyncio.Event()

    async def side(self, c: socketio.AsyncClient, ns: str, sid: str, tag: str) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            body = f"{tag} message {n}"
            r = await call(c, ns, "message:send",
                           {"session_id": sid, "client_msg_id": f"{tag}-{n}", "body": body})
            m = r["message"]
            self.acked.append((time.monotonic(), Expected(sid, m["id"], m["seq"], body,
                                                          f"{tag}-{n}")))


async def test_backup_under_chat_load_restores_every_acknowledged_message(
    live: Server, fresh: Server, tmp_path: Path
) -> None:
    live.cli("engineer", "add", "alex@example.com", "--name", "Alex", "--password-stdin",
             stdin=PASSWORD + "\n")
    await live.start()
    token = await login(live)
    eng = await connect(live.url, "/engineer", {"token": token})
    await call(eng, "/engineer", "engineer:status", {"status": "available", "capacity": 5})

    # A chat that ends before the backup: its transcript is in the handoff folder.
    gone = await connect(live.url, "/customer", {"guest": {"name": "Gus", "email": "g@x.io"}})
    r = await call(gone, "/customer", "chat:request", {"topic": "never mind"})
    await call(eng, "/engineer", "offer:accept", {"session_id": r["session"]["id"]})
    await call(gone, "/customer", "session:end", {"session_id": r["session"]["id"]})
    await gone.disconnect()
    transcripts = live.env["CHATD_HANDOFF_FILE_DIR"]
    for _ in range(100):
        if list(Path(transcripts).rglob("*.json")):
            break
        await asyncio.sleep(0.1)
    assert list(Path(transcripts).rglob("*.json")), "no transcript was handed off"

    chats: list[dict[str, Any]] = []
    for i, name in enumerate(["Ann", "Ben", "Cid"]):
        c = await connect(live.url, "/customer", {"guest": {"name": name, "email": f"{name}@x.io"}})
        r = await call(c, "/customer", "chat:request", {"topic": f"{name}'s problem"})
        sid, resume = r["session"]["id"], r["resume_token"]
        await call(eng, "/engineer", "offer:accept", {"session_id": sid})
        image = png(i)
        up = await upload(live, sid, resume, image, f"{name}.png")
        log = f"{name}'s log line\n".encode() * 50
        up_log = await upload(live, sid, token, log, f"{name}.log")
        chats.append({"client": c, "sid": sid, "resume": resume, "name": name,
                      "files": {up["attachment"]["id"]: image, up_log["attachment"]["id"]: log}})

    load = Load()
    senders = [asyncio.create_task(load.side(ch["client"], "/customer", ch["sid"], f"c{i}"))
               for i, ch in enumerate(chats)]
    senders += [asyncio.create_task(load.side(eng, "/engineer", ch["sid"], f"e{i}"))
                for i, ch in enumerate(chats)]
    await asyncio.sleep(1.0)
    backup_dir = tmp_path / "backups" / "desk-1"
    started = time.monotonic()
    done = await asyncio.to_thread(run_cli, live, "backup", str(backup_dir))
    finished = time.monotonic()
    await asyncio.sleep(0.3)
    load.stop.set()
    await asyncio.gather(*senders)
    assert done.returncode == 0, done.stderr
    assert "backed up" in done.stdout

    before = [e for t, e in load.acked if t < started]
    during = [e for t, e in load.acked if started <= t < finished]
    assert len(before) > 50 and during, "the chats must be busy while the backup runs"

    # A running desk is never restored over, even with --force; it keeps working.
    refused = run_cli(live, "restore", "--force", str(backup_dir))
    assert refused.returncode == 1 and "open" in refused.stderr, refused.stderr
    await call(chats[0]["client"], "/customer", "message:send",
               {"session_id": chats[0]["sid"], "client_msg_id": "after", "body": "still here"})
    await eng.disconnect()
    for ch in chats:
        await ch["client"].disconnect()
    live.stop()

    restored = run_cli(fresh, "restore", str(backup_dir))
    assert restored.returncode == 0, restored.stderr
    report = check_store_invariants(fresh.env["CHATD_DATABASE_URL"], before)
    assert report.violations == [] and report.expected == len(before)
    manifest = json.loads((backup_dir / "manifest.json").read_text())
    assert manifest["missing"] == [] and manifest["altered"] == []
    handed = [p.relative_to(transcripts) for p in Path(transcripts).rglob("*") if p.is_file()]
    fresh_transcripts = Path(fresh.env["CHATD_HANDOFF_FILE_DIR"])
    assert handed and all((fresh_transcripts / p).is_file() for p in handed)

    await fresh.start()
    eng = await connect(fresh.url, "/engineer", {"token": token})  # tokens come back too
    for i, ch in enumerate(chats):
        c = await connect(fresh.url, "/customer",
                          {"session_id": ch["sid"], "resume_token": ch["resume"]})
        messages: list[dict[str, Any]] = []
        while True:  # the history comes in pages
            after = messages[-1]["seq"] if messages else 0
            r = await call(c, "/customer", "session:resume",
                           {"session_id": ch["sid"], "resume_token": ch["resume"],
                            "after_seq": after})
            assert r["session"]["state"] == "active"
            messages += r["messages"]
            if not r["more"]:
                break
        seqs = [m["seq"] for m in messages]
        assert seqs == list(range(1, len(seqs) + 1))
        have = {(m["seq"], m["id"], m["body"]) for m in messages}
        for e in before:
            if e.session_id == ch["sid"]:
                assert (e.seq, e.id, e.body) in have
        for attachment_id, data in ch["files"].items():
            status, body = await download(fresh, f"/api/attachments/{attachment_id}",
                                          ch["resume"])
            assert status == 200 and hashlib.sha256(body).digest() == \
                hashlib.sha256(data).digest()
        if ch["name"] == "Ann":
            status, _ = await download(
                fresh, f"/api/attachments/{next(iter(ch['files']))}/thumbnail", ch["resume"]
            )
            assert status == 200
        # The chat carries on where the backup left it.
        sent = await call(c, "/customer", "message:send",
                          {"session_id": ch["sid"], "client_msg_id": "restored",
                           "body": f"back {i}"})
        assert sent["message"]["seq"] == seqs[-1] + 1
        await c.disconnect()
        mine = await call(eng, "/engineer", "session:resume",
                          {"session_id": ch["sid"], "after_seq": seqs[-1]})
        assert [m["body"] for m in mine["messages"]] == [f"back {i}"]
    await eng.disconnect()
