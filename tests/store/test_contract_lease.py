"""Store contract: the desk's lease (docs/design.md#one-desk-per-database).

On SQLite the lease is a lock file: a second process on the same database is refused while
the first lives. On PostgreSQL it is a row with a term: a second process stands by, takes
over when the lease has expired, and from then on the first one's writes are refused
(fenced) and it is told so.
"""

from __future__ import annotations

import pytest

from chatd.core.errors import Fenced
from chatd.core.ports import DeskLease, Store
from chatd.store.sqlite import SQLiteStore
from tests.store.conftest import Backend
from tests.store.helpers import create, text, waiting_session


class Lost:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


async def expire(backend: Backend) -> None:
    """End the lease now, as time would (a holder that stopped renewing)."""
    import asyncpg

    conn = await asyncpg.connect(backend.url)  # type: ignore[attr-defined]
    try:
        await conn.execute("UPDATE desk_lease SET expires_at = now() - interval '1 second'")
    finally:
        await conn.close()


async def test_one_holder_at_a_time(backend: Backend) -> None:
    first = backend.store.desk_lease("first", 30, Lost())
    assert await first.acquire() == 1
    if not backend.shared:
        other = SQLiteStore(backend.path)  # type: ignore[attr-defined]
        second = other.desk_lease("second", 30, Lost())
        assert await second.acquire() is None
        assert "first" in second.describe()
        assert not other.standby_possible
        await first.release()
        assert await second.acquire() == 1  # the lock went with its holder
        await second.release()
        return
    assert backend.store.standby_possible
    second = (await backend.another()).desk_lease("second", 30, Lost())
    assert await second.acquire() is None
    assert await first.renew()
    assert await second.acquire() is None  # renewed: still not free


async def test_a_clean_release_hands_over_at_once(backend: Backend) -> None:
    if not backend.shared:
        pytest.skip(f"one process owns a {backend.name} database")
    first = backend.store.desk_lease("first", 30, Lost())
    second = (await backend.another()).desk_lease("second", 30, Lost())
    assert await first.acquire() == 1
    await first.release()
    assert await second.acquire() == 2


async def holders(backend: Backend) -> tuple[Store, Store, Lost, DeskLease, DeskLease]:
    """Two processes' stores on one database, and the lease as each would hold it: the old
    holder's (with its ``Lost``) and the new one's."""
    if not backend.shared:
        pytest.skip(f"one process owns a {backend.name} database")
    old_store = backend.store
    new_store = await backend.another()
    lost = Lost()
    return (old_store, new_store, lost, old_store.desk_lease("old", 30, lost),
            new_store.desk_lease("new", 30, Lost()))


async def test_a_replaced_holder_is_fenced(backend: Backend) -> None:
    old_store, new_store, lost, old, new = await holders(backend)
    assert await old.acquire() == 1
    session, _ = await create(old_store)
    await old_store.append_message(text(session.id, "before the takeover"))

    await expire(backend)  # the old holder was paused past its lease
    assert await new.acquire() == 2

    with pytest.raises(Fenced):
        await old_store.append_message(text(session.id, "after the takeover"))
    assert lost.calls == 1
    with pytest.raises(Fenced):  # and every later write, without asking again
        await create(old_store, waiting_session(arrival_seq=2))
    assert lost.calls == 1
    assert not await old.renew()

    # The new holder writes; nothing the old one tried after the takeover is there.
    await new_store.append_message(text(session.id, "from the new holder"))
    bodies = [m.body for m in await new_store.messages_after(session.id, 0, 100)]
    assert bodies == ["before the takeover", "from the new holder"]


async def test_renewing_late_keeps_the_term_when_nobody_took_over(backend: Backend) -> None:
    if not backend.shared:
        pytest.skip(f"one process owns a {backend.name} database")
    lost = Lost()
    lease = backend.store.desk_lease("only", 30, lost)
    assert await lease.acquire() == 1
    await expire(backend)  # e.g. the database was away for longer than the lease
    assert await lease.renew()
    other = (await backend.another()).desk_lease("other", 30, Lost())
    assert await other.acquire() is None
    session, _ = await create(backend.store)
    await backend.store.append_message(text(session.id, "still the holder"))
    assert lost.calls == 0



async def test_a_holder_whose_connection_ended_is_replaced_before_its_lease_expires(
    backend: Backend,
) -> None:
    """A holder killed outright ends its database connections: the lease passes at once,
    not after its 30 s, and the old holder, were it still somehow alive, is fenced."""
    old_store, new_store, lost, old, new = await holders(backend)
    assert await old.acquire() == 1
    assert await new.acquire() is None  # alive and unexpired: not taken
    await new.release()  # holds nothing: only its connection goes
    await terminate(backend, "chatd lease")  # the old holder's, as a kill -9 would end it
    assert await new.acquire() == 2
    session, _ = await create(new_store)
    with pytest.raises(Fenced):
        await old_store.append_message(text(session.id, "from the old holder"))
    assert lost.calls == 1
    third = (await backend.another()).desk_lease("third", 30, Lost())
    assert await third.acquire() is None  # the new holder's connection lives


async def terminate(backend: Backend, application: str) -> None:
    """End every server session of ``application`` on the test's database."""
    import asyncpg

    conn = await asyncpg.connect(backend.url)  # type: ignore[attr-defined]
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = $1 AND datname = current_database()", application,
        )
    finally:
        await conn.close()
