"""``chatd customer erase|export|erasures`` as an operator runs them: a real process on the
database a desk wrote, SQLite and PostgreSQL (docs/operations.md#erasure-and-export)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from chatd.core.erasure import CustomerQuery
from chatd.core.models import Customer, Tier
from chatd.core.ports import AttachmentRecord, Store
from tests.store.helpers import T0, create, end_note, ended, new_id, text, waiting_session

KEY = "an-erasure-key-kept-outside-the-database"
pytestmark = pytest.mark.parametrize("db_backend", ["sqlite", "postgres"])


class Desk:
    """The database and folders a desk left behind, and the command line run on them."""

    def __init__(self, store: Store, url: str, folder: Path) -> None:
        self.store = store
        self.url = url
        self.uploads = folder / "uploads"
        self.handoff = folder / "handoff"
        self.uploads.mkdir()
        self.handoff.mkdir()

    async def chat(
        self, cust: Customer, arrival: int, files: list[bytes], *, close: bool = True,
        words: tuple[str, ...] = ("hello",),
    ) -> str:
        session, _ = await create(
            self.store, waiting_session(cust=cust, arrival_seq=arrival,
                                        created_at=T0 + arrival), first=words[0],
        )
        for w in words[1:]:
            await self.store.append_message(text(session.id, w, ts=T0 + arrival + 1))
        for i, data in enumerate(files):
            stored = os.urandom(16).hex()
            thumb = f"{stored}-thumb" if i == 0 else None
            (self.uploads / stored).write_bytes(data)
            if thumb:
                (self.uploads / thumb).write_bytes(b"thumbnail of " + data[:8])
            await self.store.add_attachment(AttachmentRecord(
                id=new_id(), session_id=session.id, uploader_role="customer",
                uploader_id=cust.id, filename=f"log-{i}.txt", content_type="text/plain",
                size=len(data), sha256=hashlib.sha256(data).hexdigest(), stored_name=stored,
                thumbnail_name=thumb, thumbnail_type="image/png" if thumb else None,
                created_at=T0 + arrival + 2 + i * 0.25,
            ), 100, 1 << 30)
        if close:
            at = T0 + arrival + 10
            await self.store.end_session(ended(session, at), end_note(session.id, ts=at),
                                         ["file"])
            # What the file backend wrote when it delivered the transcript.
            for ext in ("json", "txt"):
                (self.handoff / f"{session.id}.{ext}").write_text(f"transcript of {cust.name}")
        return session.id

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_")}
        env.update({
            "CHATD_DATABASE_URL": self.url, "CHATD_UPLOAD_DIR": str(self.uploads),
            "CHATD_HANDOFF_FILE_DIR": str(self.handoff), "CHATD_ERASURE_KEY": KEY,
        })
        return subprocess.run(
            [sys.executable, "-m", "chatd", "customer", *args], env=env,
            capture_output=True, text=True, timeout=60,
        )

    async def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(self.run, *args)


@pytest.fixture
def desk(store: Store, database_url: str, tmp_path: Path) -> Desk:
    return Desk(store, database_url, tmp_path)


def guest(email: str, name: str = "Gus Guest") -> Customer:
    return Customer(id=f"guest:{new_id()}", name=name, email=email, account="",
                    tier=Tier.STANDARD)


SIGNED = Customer(id="cust-42", name="Carol Client", email="carol@client.example",
                  account="Client Corp", tier=Tier.PREMIER)


def files_of(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


async def test_erase_by_email_removes_a_guests_chats_files_and_transcripts(
    desk: Desk, db_backend: str,
) -> None:
    first = await desk.chat(guest("gus@client.example"), 1, [b"first log\n", b"second\n"],
                            words=("hi", "it crashes"))
    second = await desk.chat(guest("GUS@client.example"), 2, [b"third log\n"])
    kept = await desk.chat(guest("other@client.example", "Olga"), 3, [b"not hers\n"])
    kept_files = {n for a in await desk.store.session_attachments(kept)
                  for n in (a.stored_name, a.thumbnail_name) if n}

    r = await desk.cli("erase", "--email", "gus@client.example", "--by", "dpo@vendor.example")

    assert r.returncode == 0, r.stderr
    assert "erased 2 chats, 5 messages, 3 files" in r.stdout, r.stdout
    for sid in (first, second):
        assert await desk.store.get_session(sid) is None
        assert await desk.store.messages_after(sid, 0, 100) == []
        assert await desk.store.session_handoffs(sid) == []
    # Only the other customer's file is left on disk, and their transcripts.
    assert files_of(desk.uploads) == kept_files
    assert files_of(desk.handoff) == {f"{kept}.json", f"{kept}.txt"}
    assert await desk.store.get_session(kept) is not None

    [line] = await desk.store.list_erasures()
    assert (line.chats, line.messages, line.files, line.handoffs) == (2, 5, 3, 2)
    assert (line.requested_by, line.via) == ("dpo@vendor.example", "cli")
    expected = hmac.new(KEY.encode(), b"email:gus@client.example", hashlib.sha256).hexdigest()
    assert line.subject_hash == expected
    listed = await desk.cli("erasures")
    assert listed.returncode == 0
    shown = json.loads(listed.stdout.splitlines()[0])
    assert shown["id"] == line.id and shown["subject_hash"] == expected
    for personal in ("gus", "Gus", "client.example", "guest:"):
        assert personal not in listed.stdout

    again = await desk.cli("erase", "--email", "gus@client.example", "--by", "dpo")
    assert again.returncode == 1 and "no chat of this customer" in again.stderr


async def test_an_open_chat_is_ended_with_force_only_when_no_chatd_holds_it(
    desk: Desk, db_backend: str,
) -> None:
    old = await desk.chat(SIGNED, 1, [b"old log\n"])
    live = await desk.chat(SIGNED, 2, [b"live log\n"], close=False)
    before = files_of(desk.uploads)
    r = await desk.cli("erase", "cust-42", "--by", "dpo")
    assert r.returncode == 1
    assert f"open chat ({live})" in r.stderr and "--force" in r.stderr, r.stderr

    # A running chatd (here this process, holding the desk's lease) holds the open chat in
    # memory: only its desk may end it, so even --force is refused and nothing changes.
    lease = desk.store.desk_lease("a running chatd", 30, lambda: None)
    assert await lease.acquire() is not None
    r = await desk.cli("erase", "cust-42", "--by", "dpo", "--force")
    assert r.returncode == 1
    assert "a running chatd holds it" in r.stderr, r.stderr
    assert files_of(desk.uploads) == before
    assert len(await desk.store.messages_after(old, 0, 100)) == 2
    assert await desk.store.list_erasures() == []
    await lease.release()

    # With no chatd running, --force ends the chat as a lead would, then erases it all.
    r = await desk.cli("erase", "cust-42", "--by", "dpo", "--force")
    assert r.returncode == 0, r.stderr
    assert "erased 2 chats" in r.stdout, r.stdout
    assert files_of(desk.uploads) == set()
    assert await desk.store.customer_sessions(CustomerQuery(customer_id="cust-42")) == []
    [audit] = await desk.store.list_erasures()
    assert audit.chats == 2 and audit.requested_by == "dpo"


async def test_bad_requests_are_refused_and_change_nothing(desk: Desk, db_backend: str) -> None:
    await desk.chat(SIGNED, 1, [])
    for args, words in [
        (("erase", "--by", "dpo"), "exactly one of"),
        (("erase", "cust-42", "--email", "carol@client.example", "--by", "dpo"),
         "exactly one of"),
        (("erase", "--email", "not-an-email", "--by", "dpo"), "email must be"),
        (("erase", "cust-42", "--by", " "), "who asked"),
        (("export", "nobody"), "no chat of this customer"),
    ]:
        r = await desk.cli(*args)
        assert r.returncode == 1 and words in r.stderr, (args, r.stderr)
    assert len(await desk.store.customer_sessions(CustomerQuery(customer_id="cust-42"))) == 1
    assert await desk.store.list_erasures() == []


async def test_export_writes_the_json_and_a_zip_with_the_files(
    desk: Desk, db_backend: str, tmp_path: Path,
) -> None:
    one = await desk.chat(SIGNED, 1, [b"first log line\n", b"second file\n"],
                          words=("hello", "the app crashes on start"))
    two = await desk.chat(SIGNED, 2, [], close=False)
    await desk.chat(guest("carol@client.example"), 3, [b"a guest with her email\n"])

    r = await desk.cli("export", "cust-42")
    assert r.returncode == 0, r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)
    assert (doc["format"], doc["version"]) == ("chatd-customer-export", 1)
    assert doc["query"] == {"customer_id": "cust-42"}
    assert doc["customers"] == [{"id": "cust-42", "name": "Carol Client",
                                 "email": "carol@client.example", "account": "Client Corp",
                                 "tier": "premier"}]
    assert [c["session"]["id"] for c in doc["chats"]] == [one, two]
    bodies = [m["body"] for m in doc["chats"][0]["messages"]]
    assert bodies[:2] == ["hello", "the app crashes on start"]
    assert [f["filename"] for f in doc["chats"][0]["files"]] == ["log-0.txt", "log-1.txt"]
    assert all(f["file"] is None for f in doc["chats"][0]["files"])
    assert [h["backend"] for h in doc["chats"][0]["handoffs"]] == ["file"]
    assert doc["chats"][1]["session"]["state"] == "waiting"

    out = tmp_path / "carol.zip"
    r = await desk.cli("export", "--email", "Carol@Client.example", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    with zipfile.ZipFile(out) as z:
        doc = json.loads(z.read("customer.json"))
        assert len(doc["chats"]) == 3
        files = [f for chat in doc["chats"] for f in chat["files"]]
        assert len(files) == 3
        contents = {z.read(f["file"]) for f in files}
        assert contents == {b"first log line\n", b"second file\n", b"a guest with her email\n"}
        for f in files:
            assert hashlib.sha256(z.read(f["file"])).hexdigest() == f["sha256"]
        assert sorted(z.namelist()) == sorted(["customer.json", *(f["file"] for f in files)])
    # Exporting changed nothing.
    assert len(await desk.store.customer_sessions(CustomerQuery(email="carol@client.example"))) == 3
