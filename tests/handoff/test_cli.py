"""``chatd handoff list|show|retry`` as an operator runs them, against a real database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from chatd.core.clock import FakeClock
from chatd.store.sqlite import SQLiteStore
from tests.handoff.test_worker import ended_session


def chatd(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CHATD_")},
           "CHATD_DATABASE_URL": f"sqlite:///{db}"}
    return subprocess.run([sys.executable, "-m", "chatd", "handoff", *args], env=env,
                          capture_output=True, text=True, timeout=60)


async def prepare(db: Path) -> tuple[str, str, str]:
    """One session with a delivered file row and a dead-lettered webhook row."""
    store = SQLiteStore(db)
    await store.open()
    try:
        clock = FakeClock()
        sid = await ended_session(store, clock, ("file", "webhook"))
        rows = {h.backend: h for h in await store.session_handoffs(sid)}
        await store.claim_handoffs(clock.now(), 10, 60, ["file", "webhook"])
        await store.handoff_delivered(rows["file"].id, clock.now(), "wrote it", None, None,
                                      None)
        await store.handoff_failed(rows["webhook"].id, clock.now(), "refused with 410", 410,
                                   "gone for good")
        return sid, rows["file"].id, rows["webhook"].id
    finally:
        await store.close()


def test_handoff_commands_list_show_and_retry(tmp_path: Path) -> None:
    db = tmp_path / "chatd.db"
    sid, file_id, hook_id = asyncio.run(prepare(db))

    out = chatd(db, "list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split("\t")[:4] == ["id", "state", "backend", "session"]
    assert sorted(line.split("\t")[1] for line in lines[1:]) == ["delivered", "failed"]

    failed = chatd(db, "list", "--state", "failed").stdout.splitlines()[1:]
    assert [line.split("\t")[:4] for line in failed] == [[hook_id, "failed", "webhook", sid]]
    assert failed[0].endswith("refused with 410")
    assert chatd(db, "list", "--state", "pending").stdout.strip() == (
        "no handoffs in state pending")

    shown = json.loads(chatd(db, "show", hook_id[:8]).stdout)
    assert (shown["id"], shown["state"], shown["last_status"], shown["last_response"]) == (
        hook_id, "failed", 410, "gone for good")
    missing = chatd(db, "show", "nope-nope-nope")
    assert missing.returncode == 1 and "no handoff" in missing.stderr

    again = chatd(db, "retry", file_id)
    assert again.returncode == 1 and "delivered already" in again.stderr
    retried = chatd(db, "retry", hook_id)
    assert retried.returncode == 0 and "is pending" in retried.stdout
    assert json.loads(chatd(db, "show", hook_id).stdout)["state"] == "pending"
    assert chatd(db, "retry", "--all-failed").stdout.strip() == (
        "0 failed handoffs queued for delivery again")
    assert chatd(db, "retry").returncode == 2  # an id or --all-failed is required
