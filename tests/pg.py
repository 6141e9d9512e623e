"""PostgreSQL for tests: a database of their own, cloned from a migrated template and
dropped after.

The server is ``CHATD_TEST_POSTGRES_URL`` (default: the local server as user postgres,
``postgresql://postgres@127.0.0.1:5432/postgres``). ``make test`` installs and starts one
when the machine has none (scripts/install-postgres.sh). Without a server the PostgreSQL
tests fail rather than skip, unless CHATD_TEST_SKIP_POSTGRES=1 says to leave them out.

The template is made once per test run (per pytest process): a database migrated by
chatd itself. Each test, or each module that asks for one, gets ``CREATE DATABASE …
TEMPLATE`` of it (a file copy, tens of milliseconds), and every database made here is
dropped at the end, the template last.
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

ADMIN_URL = os.environ.get(
    "CHATD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SKIP = os.environ.get("CHATD_TEST_SKIP_POSTGRES") == "1"
PREFIX = "chatd_test_"


def url_of(database: str) -> str:
    """The admin URL with another database."""
    parts = urlsplit(ADMIN_URL)
    return urlunsplit(parts._replace(path="/" + database))


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(ADMIN_URL, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class Databases:
    """The databases of one test run."""

    def __init__(self) -> None:
        self.run = f"{PREFIX}{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.template: str | None = None
        self.used = False

    async def _template(self) -> str:
        # Tests run one at a time: no two make the template at once.
        if self.template is None:
            from chatd.store.postgres import PostgresStore

            name = f"{self.run}_template"
            self.used = True
            await _admin(f'CREATE DATABASE "{name}"')
            store = PostgresStore(url_of(name), pool_size=2)
            await store.open()
            await store.close()
            self.template = name
        return self.template

    async def create(self, *, empty: bool = False) -> str:
        """A new migrated database (``empty``: without chatd's schema); its URL."""
        if SKIP:
            pytest.skip("CHATD_TEST_SKIP_POSTGRES=1")
        name = f"{self.run}_{uuid.uuid4().hex[:10]}"
        if empty:
            self.used = True
            await _admin(f'CREATE DATABASE "{name}"')
        else:
            template = await self._template()
            await _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return url_of(name)

    async def drop(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        assert name.startswith(PREFIX)
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def drop_all(self) -> None:
        """Every database of this run (a test killed half-way leaves its own behind)."""
        import asyncpg

        if SKIP or not self.used:
            return
        conn = await asyncpg.connect(ADMIN_URL, timeout=10)
        try:
            names = [r[0] for r in await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE $1",
                self.run.replace("_", r"\_") + "%",
            )]
            for name in sorted(names, key=lambda n: n.endswith("_template")):
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


DATABASES = Databases()
