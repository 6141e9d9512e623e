"""PostgreSQL's schema: versioned migrations applied once, whoever starts first, and a
readiness that tells a current schema from any other (docs/scaling.md#settings)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from chatd.store.postgres import PostgresStore, migrations
from tests.pg import DATABASES


@pytest.fixture
async def empty_url() -> AsyncIterator[str]:
    url = await DATABASES.create(empty=True)
    yield url
    await DATABASES.drop(url)


async def test_processes_starting_together_migrate_once(empty_url: str) -> None:
    stores = [PostgresStore(empty_url, pool_size=2) for _ in range(4)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        assert all([await s.ready() for s in stores])
        conn = await asyncpg.connect(empty_url)
        try:
            versions = [r[0] for r in await conn.fetch(
                "SELECT version FROM schema_version ORDER BY version"
            )]
        finally:
            await conn.close()
        assert versions == [v for v, _ in migrations()]
    finally:
        for s in stores:
            await s.close()


async def test_a_schema_not_current_is_not_ready_and_a_newer_one_is_refused(
    empty_url: str,
) -> None:
    store = PostgresStore(empty_url, pool_size=2)
    await store.open()
    latest = migrations()[-1][0]
    conn = await asyncpg.connect(empty_url)
    try:
        assert await store.ready()
        await conn.execute("DELETE FROM schema_version WHERE version = $1", latest)
        assert not await store.ready()
        await conn.execute("INSERT INTO schema_version VALUES ($1), ($2)", latest, latest + 1)
        assert not await store.ready()
    finally:
        await conn.close()
        await store.close()
    newer = PostgresStore(empty_url, pool_size=2)
    with pytest.raises(RuntimeError, match=r"newer than this chatd knows"):
        await newer.open()
    assert not await newer.ready()


async def test_an_unreachable_server_is_not_ready_and_refuses_to_open() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/nothing", pool_size=2)
    with pytest.raises(OSError):
        await store.open()
    assert not await store.ready()
