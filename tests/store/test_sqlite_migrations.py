"""SQLite schema upgrades keep what an older chatd stored."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from chatd.store import sqlite as sqlite_store
from chatd.store.sqlite import SQLiteStore
from tests.store.helpers import T0, all_messages, text


async def test_upgrades_keep_sessions_and_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    every = sqlite_store.migrations()
    # A database as chatd left it at schema version 4, written the way that version did.
    monkeypatch.setattr(sqlite_store, "migrations", lambda: [m for m in every if m[0] <= 4])
    old = SQLiteStore(path)
    await old.open()
    await old.close()
    sid = "5b0d6f0e-8a4c-4d43-9a43-2f1f3b6f8c11"
    with contextlib.closing(sqlite3.connect(path)) as con, con:
        con.execute(
            "INSERT INTO sessions (id, state, topic, severity, customer_id, customer_name,"
            " customer_email, customer_account, customer_tier, created_at, arrival_seq,"
            " resume_token_hash) VALUES (?, 'waiting', 'Cannot log in', 3, 'cust-1',"
            " 'Carol', 'c@client.example', '', 'standard', ?, 1, 'hash')",
            (sid, T0),
        )
        for i in range(5):
            con.execute(
                "INSERT INTO messages (id, session_id, seq, ts, sender_role, sender_id,"
                " sender_name, kind, body, client_msg_id) VALUES"
                " (?, ?, ?, ?, 'customer', 'cust-1', 'Carol', 'text', ?, ?)",
                (f"m-{i}", sid, i + 1, T0 + i, f"m{i}", f"c{i}"),
            )

    monkeypatch.setattr(sqlite_store, "migrations", lambda: every)
    new = SQLiteStore(path)
    await new.open()
    try:
        assert await new.ready()
        [session] = await new.open_sessions()
        assert session.id == sid and session.request_id is None
        before = await all_messages(new, sid)
        assert [(m.seq, m.body, m.client_msg_id) for m in before] == [
            (i + 1, f"m{i}", f"c{i}") for i in range(5)
        ]
        # A retry of a message stored before the upgrade is still recognised (the writer
        # reads the session's client_msg_ids); a new one gets the next seq.
        retry = text(sid, "m4", client_msg_id="c4", sender=before[4].sender)
        again, created = await new.append_message(retry)
        assert (again, created) == (before[4], False)
        nxt, _ = await new.append_message(text(sid, "after", client_msg_id="c5"))
        assert nxt.seq == 6
    finally:
        await new.close()

    with contextlib.closing(sqlite3.connect(path)) as con:
        indexed = {
            row[0]
            for (name,) in con.execute("SELECT name FROM pragma_index_list('messages')")
            for row in con.execute("SELECT name FROM pragma_index_info(?)", (name,))
        }
        # ids and client_msg_ids are not indexed any more (versions 5 and 6)
        assert indexed == {"session_id", "seq"}
        latest = every[-1][0]
        assert con.execute("SELECT MAX(version) FROM schema_version").fetchone() == (latest,)
