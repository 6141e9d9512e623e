"""SQLite schema upgrades keep what an older chatd stored."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from chatd.store import sqlite as sqlite_store
from chatd.store.sqlite import SQLiteStore
from tests.store.helpers import T0, all_messages, create, text


async def test_versions_5_and_6_keep_messages_and_drop_two_indexes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    every = sqlite_store.migrations()
    monkeypatch.setattr(sqlite_store, "migrations", lambda: [m for m in every if m[0] <= 4])
    old = SQLiteStore(path)
    await old.open()
    session, _ = await create(old)
    before = [
        (await old.append_message(text(session.id, f"m{i}", ts=T0 + i, client_msg_id=f"c{i}")))[0]
        for i in range(5)
    ]
    await old.close()

    monkeypatch.setattr(sqlite_store, "migrations", lambda: every)
    new = SQLiteStore(path)
    await new.open()
    try:
        assert await new.ready()
        assert await all_messages(new, session.id) == before
        # A retry of a message stored before the upgrade is still recognised (the writer
        # reads the session's client_msg_ids); a new one gets the next seq.
        again, created = await new.append_message(text(session.id, "m4", client_msg_id="c4"))
        assert (again, created) == (before[4], False)
        nxt, _ = await new.append_message(text(session.id, "after", client_msg_id="c5"))
        assert nxt.seq == 6
    finally:
        await new.close()

    with contextlib.closing(sqlite3.connect(path)) as con:
        indexed = {
            row[0]
            for (name,) in con.execute("SELECT name FROM pragma_index_list('messages')")
            for row in con.execute("SELECT name FROM pragma_index_info(?)", (name,))
        }
        # ids and client_msg_ids are not indexed any more; (session_id, seq) still is
        assert indexed == {"session_id", "seq"}
        assert con.execute("SELECT MAX(version) FROM schema_version").fetchone() == (6,)
