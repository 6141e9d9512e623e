"""Choosing a store from CHATD_DATABASE_URL: what is accepted, and what is refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatd.store import StoreURLError, check_url, sqlite_path, store_from_url
from chatd.store.sqlite import SQLiteStore


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///var/chatd.db", "var/chatd.db"),
        ("sqlite:///chatd.db", "chatd.db"),
        ("sqlite:////srv/chatd/chatd.db", "/srv/chatd/chatd.db"),
        ("sqlite:///var/chatd.db?synchronous=normal", "var/chatd.db"),
        ("SQLite:///var/chatd.db", "var/chatd.db"),
    ],
)
def test_sqlite_url_paths(url: str, path: str) -> None:
    check_url(url)
    assert sqlite_path(url) == path


def test_relative_url_is_relative_and_absolute_is_absolute() -> None:
    rel = store_from_url("sqlite:///var/chatd.db")
    absolute = store_from_url("sqlite:////srv/chatd.db")
    assert isinstance(rel, SQLiteStore) and isinstance(absolute, SQLiteStore)
    assert rel.path == Path("var/chatd.db") and not rel.path.is_absolute()
    assert absolute.path == Path("/srv/chatd.db") and absolute.path.is_absolute()


def test_synchronous_defaults_to_full_and_can_be_chosen() -> None:
    default = store_from_url("sqlite:///var/chatd.db")
    normal = store_from_url("sqlite:///var/chatd.db?synchronous=NORMAL")
    assert isinstance(default, SQLiteStore) and isinstance(normal, SQLiteStore)
    assert (default.synchronous, normal.synchronous) == ("full", "normal")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://db.example/chatd", "unsupported database URL scheme 'mysql'"),
        ("https://db.example/chatd", "unsupported database URL scheme 'https'"),
        ("var/chatd.db", "unsupported database URL scheme ''"),
        ("sqlite:///:memory:", "needs a file path"),
        ("sqlite://", "needs a file path"),
        ("sqlite:///", "needs a file path"),
        ("sqlite://db.example/chatd.db", "has no host"),
        ("sqlite:///var/chatd.db?synchronous=off", "synchronous must be full, normal or extra"),
        ("postgresql:///chatd", "names its server"),
        ("postgresql://db.example", "names its database"),
        ("postgres://db.example/", "names its database"),
    ],
)
def test_bad_urls_are_refused_with_a_clear_message(url: str, says: str) -> None:
    with pytest.raises(StoreURLError) as refused:
        check_url(url)
    assert says in str(refused.value)
    with pytest.raises(StoreURLError):
        store_from_url(url)


def test_unsupported_scheme_names_the_supported_ones() -> None:
    with pytest.raises(StoreURLError, match=r"supported: .*sqlite"):
        check_url("mysql://db.example/chatd")


def test_url_errors_are_value_errors() -> None:
    # Settings validation reports ValueErrors as configuration mistakes.
    assert issubclass(StoreURLError, ValueError)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://chatd:s3cret@db.example:5433/chatd",
        "postgres://db.example/chatd",
        "postgresql:///chatd?host=/var/run/postgresql",
        "PostgreSQL://db.example/chatd?sslmode=require",
    ],
)
def test_postgresql_urls_choose_postgresql(url: str) -> None:
    from chatd.store.postgres import PostgresStore

    check_url(url)
    store = store_from_url(url, pool_size=7)
    assert isinstance(store, PostgresStore)
    assert (store.dsn, store.pool_size) == (url, 7)


def test_a_sqlite_desk_never_imports_the_postgresql_driver() -> None:
    # A SQLite user need not install asyncpg: chatd starts, serves and stops without it.
    code = (
        "import sys, asyncio\n"
        "sys.modules['asyncpg'] = None  # importing it now raises ImportError\n"
        "from chatd.app import create_app\n"
        "from chatd.config import Settings\n"
        "import tempfile, os\n"
        "d = tempfile.mkdtemp()\n"
        "s = Settings(database_url=f'sqlite:///{d}/c.db', upload_dir=d + '/u')\n"
        "app = create_app(s)\n"
        "async def main():\n"
        "    from aiohttp.test_utils import TestServer, TestClient\n"
        "    async with TestClient(TestServer(app)) as c:\n"
        "        assert (await c.get('/readyz')).status == 200\n"
        "asyncio.run(main())\n"
        "print('ok')\n"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
