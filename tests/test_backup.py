"""``chatd backup`` and ``chatd restore`` as an operator runs them, on a stopped desk: what a
backup holds, what comes back, and every refusal, which changes nothing
(docs/operations.md#backups). The online backup under load is tests/test_backup_online.py."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from chatd.core.ports import AttachmentRecord
from chatd.store.sqlite import SQLiteStore
from tests.store.helpers import T0, new_id, text, waiting_session


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_")}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "chatd", *args], env=full,
                          capture_output=True, text=True, timeout=60)


def desk_env(folder: Path) -> dict[str, str]:
    return {
        "CHATD_DATABASE_URL": f"sqlite:///{folder / 'chatd.db'}",
        "CHATD_UPLOAD_DIR": str(folder / "uploads"),
        "CHATD_HANDOFF_FILE_DIR": str(folder / "handoff"),
    }


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, by relative path, with its bytes."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return [tuple(r) for r in conn.execute(sql)]


@pytest.fixture
async def desk(tmp_path: Path) -> Path:
    """A stopped desk: a chat with two messages and a screenshot (file and thumbnail) in
    the upload folder, and a transcript in the handoff folder."""
    folder = tmp_path / "desk"
    store = SQLiteStore(folder / "chatd.db")
    await store.open()
    try:
        session = waiting_session()
        await store.create_session(session, "resume-hash", text(session.id, "hello"))
        await store.append_message(text(session.id, "anyone there?", ts=T0 + 1))
        uploads = folder / "uploads"
        uploads.mkdir(mode=0o700)
        for n in range(2):
            stored, thumb = os.urandom(16).hex(), None
            data = f"screenshot {n}".encode() * 100
            (uploads / stored).write_bytes(data)
            if n == 0:
                thumb = stored + "-thumb"
                (uploads / thumb).write_bytes(b"thumbnail")
            await store.add_attachment(AttachmentRecord(
                id=new_id(), session_id=session.id, uploader_role="customer",
                uploader_id=session.customer.id, filename=f"shot{n}.png",
                content_type="image/png", size=len(data),
                sha256=hashlib.sha256(data).hexdigest(), stored_name=stored,
                thumbnail_name=thumb, thumbnail_type="image/png" if thumb else None,
                created_at=T0,
            ), 50, 10**9)
        (uploads / ".upload-0123.part").write_bytes(b"half an upload")
    finally:
        await store.close()
    (folder / "handoff" / "2026").mkdir(parents=True)
    (folder / "handoff" / "2026" / "chat.json").write_text('{"transcript": true}')
    return folder


def stored_uploads(folder: Path) -> dict[str, bytes]:
    return {k: v for k, v in tree(folder / "uploads").items() if not k.startswith(".")}


def test_backup_and_restore_bring_back_the_database_uploads_and_transcripts(
    desk: Path, tmp_path: Path
) -> None:
    target = tmp_path / "backups" / "monday"
    r = run(desk_env(desk), "backup", str(target))
    assert r.returncode == 0, r.stderr
    assert "backed up 1 chats, 2 messages" in r.stdout and "3 uploaded files" in r.stdout
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["missing"] == [] and manifest["altered"] == []
    assert set(manifest["files"]) == {f"uploads/{n}" for n in stored_uploads(desk)} | {
        "handoff/2026/chat.json"}
    assert not (target / "uploads" / ".upload-0123.part").exists()  # not an attachment yet
    # Nothing is left beside the backup but the backup.
    assert [p.name for p in target.parent.iterdir()] == ["monday"]

    again = tmp_path / "again"
    r = run(desk_env(again), "restore", str(target))
    assert r.returncode == 0, r.stderr
    assert "restored 1 chats, 2 messages" in r.stdout
    for table in ("sessions", "messages", "attachments"):
        sql = f"SELECT * FROM {table} ORDER BY 1"
        assert rows(again / "chatd.db", sql) == rows(desk / "chatd.db", sql)
    assert stored_uploads(again) == stored_uploads(desk)
    assert tree(again / "handoff") == tree(desk / "handoff")
    for f in (again / "uploads").iterdir():
        assert f.stat().st_mode & 0o777 == 0o600
    assert (again / "uploads").stat().st_mode & 0o777 == 0o700


def test_backup_on_postgresql_is_refused_with_the_way_to_do_it(tmp_path: Path) -> None:
    env = {"CHATD_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/chatd",
           "CHATD_UPLOAD_DIR": str(tmp_path / "uploads")}
    for args in (["backup", str(tmp_path / "b")], ["restore", str(tmp_path)]):
        r = run(env, *args)
        assert r.returncode == 1
        assert "pg_dump" in r.stderr and "docs/operations.md#backups" in r.stderr
    assert not (tmp_path / "b").exists() and not (tmp_path / "uploads").exists()


def test_backup_refuses_a_folder_that_holds_something(desk: Path, tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    r = run(desk_env(desk), "backup", str(target))
    assert r.returncode == 1 and "exists already" in r.stderr
    assert tree(target) == {"notes.txt": b"mine"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_backup_of_a_desk_without_a_database_is_refused(tmp_path: Path) -> None:
    r = run(desk_env(tmp_path / "nothing"), "backup", str(tmp_path / "b"))
    assert r.returncode == 1 and "no database" in r.stderr
    assert not (tmp_path / "b").exists() and not (tmp_path / "nothing").exists()


def test_backup_says_which_files_the_database_needs_and_were_gone(
    desk: Path, tmp_path: Path
) -> None:
    name = sorted(n for n in stored_uploads(desk) if not n.endswith("-thumb"))[0]
    (desk / "uploads" / name).unlink()
    target = tmp_path / "b"
    r = run(desk_env(desk), "backup", str(target))
    assert r.returncode == 3
    assert name in r.stderr and "incomplete" in r.stderr
    assert json.loads((target / "manifest.json").read_text())["missing"] == [name]
    # It can still be restored (everything else is there), and says so again.
    r = run(desk_env(tmp_path / "again"), "restore", str(target))
    assert r.returncode == 0 and name in r.stderr and "incomplete" in r.stderr


def test_restore_over_an_existing_database_is_refused_and_changes_nothing(
    desk: Path, tmp_path: Path
) -> None:
    target = tmp_path / "b"
    assert run(desk_env(desk), "backup", str(target)).returncode == 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "chatd.db").write_bytes(b"someone else's desk")
    before = tree(other)
    r = run(desk_env(other), "restore", str(target))
    assert r.returncode == 1 and "exists already" in r.stderr and "--force" in r.stderr
    assert tree(other) == before


def test_restore_into_an_upload_folder_with_files_is_refused_without_force(
    desk: Path, tmp_path: Path
) -> None:
    target = tmp_path / "b"
    assert run(desk_env(desk), "backup", str(target)).returncode == 0
    other = tmp_path / "other"
    (other / "uploads").mkdir(parents=True)
    (other / "uploads" / ("ab" * 16)).write_bytes(b"a file of another desk")
    r = run(desk_env(other), "restore", str(target))
    assert r.returncode == 1 and "upload folder" in r.stderr
    assert tree(other) == {f"uploads/{'ab' * 16}": b"a file of another desk"}


def test_restore_with_force_replaces_a_stopped_database_and_its_journal(
    desk: Path, tmp_path: Path
) -> None:
    target = tmp_path / "b"
    assert run(desk_env(desk), "backup", str(target)).returncode == 0
    other = tmp_path / "other"
    other.mkdir()
    with closing(sqlite3.connect(other / "chatd.db")) as conn:
        conn.execute("CREATE TABLE unrelated (x)")
    (other / "chatd.db-wal").write_bytes(b"a stale journal")
    r = run(desk_env(other), "restore", "--force", str(target))
    assert r.returncode == 0, r.stderr
    assert not (other / "chatd.db-wal").exists()
    assert rows(other / "chatd.db", "SELECT body FROM messages ORDER BY seq") == [
        ("hello",), ("anyone there?",)]
    assert stored_uploads(other) == stored_uploads(desk)


def test_restore_refuses_a_damaged_backup_and_writes_nothing(desk: Path, tmp_path: Path) -> None:
    target = tmp_path / "b"
    assert run(desk_env(desk), "backup", str(target)).returncode == 0
    name = next(iter(stored_uploads(desk)))
    (target / "uploads" / name).write_bytes(b"bit rot")
    fresh = tmp_path / "fresh"
    r = run(desk_env(fresh), "restore", str(target))
    assert r.returncode == 1 and "damaged" in r.stderr and name in r.stderr
    assert not fresh.exists()

    (target / "uploads" / name).unlink()
    r = run(desk_env(fresh), "restore", str(target))
    assert r.returncode == 1 and "missing" in r.stderr
    (target / "manifest.json").unlink()
    r = run(desk_env(fresh), "restore", str(target))
    assert r.returncode == 1 and "not a chatd backup" in r.stderr
    assert not fresh.exists()


def test_restore_refuses_a_backup_made_by_a_newer_chatd(desk: Path, tmp_path: Path) -> None:
    target = tmp_path / "b"
    assert run(desk_env(desk), "backup", str(target)).returncode == 0
    with closing(sqlite3.connect(target / "chatd.db")) as conn:
        conn.execute("INSERT INTO schema_version VALUES (9999)")
        conn.commit()
    fresh = tmp_path / "fresh"
    r = run(desk_env(fresh), "restore", str(target))
    assert r.returncode == 1 and "newer" in r.stderr
    assert not fresh.exists()


def test_manifest_paths_that_leave_the_backup_are_refused(desk: Path, tmp_path: Path) -> None:
    target = tmp_path / "b"
    assert run(desk_env(desk), "backup", str(target)).returncode == 0
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["files"]["handoff/../../escaped"] = {"size": 1, "sha256": "0" * 64}
    (target / "manifest.json").write_text(json.dumps(manifest))
    fresh = tmp_path / "fresh"
    r = run(desk_env(fresh), "restore", str(target))
    assert r.returncode == 1 and "damaged" in r.stderr
    assert not fresh.exists() and not (tmp_path / "escaped").exists()


def test_restore_holds_off_while_a_server_holds_the_desk_lock(desk: Path, tmp_path: Path) -> None:
    import fcntl

    target = tmp_path / "b"
    assert run(desk_env(desk), "backup", str(target)).returncode == 0
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    # What a running chatd serve holds beside its database.
    fd = os.open(fresh / "chatd.db.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = run(desk_env(fresh), "restore", str(target))
    finally:
        os.close(fd)
    assert r.returncode == 1 and "chatd serve is running" in r.stderr
    assert sorted(p.name for p in fresh.iterdir()) == ["chatd.db.lock"]
    assert run(desk_env(fresh), "restore", str(target)).returncode == 0
