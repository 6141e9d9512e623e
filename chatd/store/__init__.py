"""Storage backends, chosen by the database URL's scheme (drivers imported lazily)."""

from __future__ import annotations

import functools
import hashlib
import os
from importlib import resources
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from ..core.ports import Store

SUPPORTED = ("sqlite", "postgresql", "postgres")
# The PostgreSQL pool's size when the caller does not say (CHATD_DATABASE_POOL_SIZE).
DEFAULT_POOL_SIZE = 10


class StoreURLError(ValueError):
    pass


@functools.cache
def versioned_sql(folder: str) -> tuple[tuple[int, str], ...]:
    """The numbered SQL files of a migrations folder of this package, by version: read
    once (readiness checks ask for the latest version at every probe)."""
    out = []
    for entry in (resources.files("chatd.store") / folder).iterdir():
        if entry.name.endswith(".sql"):
            out.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return tuple(sorted(out))


def sqlite_path(url: str) -> str:
    """``sqlite:///var/chatd.db`` is the relative path var/chatd.db;
    ``sqlite:////srv/chatd.db`` the absolute /srv/chatd.db."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise StoreURLError(f"not an sqlite URL: {url!r}")
    if parts.netloc:
        raise StoreURLError("an sqlite URL has no host: use sqlite:///relative/path.db")
    path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if not path or path == ":memory:":
        raise StoreURLError("an sqlite URL needs a file path, e.g. sqlite:///var/chatd.db")
    return path


def data_folder(url: str) -> str | None:
    """The folder a backend keeps its data in, beside which chatd may keep files of its
    own (the file handoff's transcripts): the SQLite database's folder; None for a backend
    without one, or a URL that is not valid."""
    try:
        return os.path.dirname(sqlite_path(url)) or "."
    except StoreURLError:
        return None


def check_url(url: str) -> None:
    scheme = urlsplit(url).scheme
    if scheme not in SUPPORTED:
        raise StoreURLError(
            f"unsupported database URL scheme {scheme!r}; supported: {', '.join(SUPPORTED)}"
        )
    if scheme == "sqlite":
        sqlite_path(url)
        query = parse_qs(urlsplit(url).query, keep_blank_values=True)
        unknown = sorted(set(query) - {"synchronous"})
        if unknown:
            raise StoreURLError(f"unknown sqlite URL parameter(s): {', '.join(unknown)}")
        sync = query.get("synchronous", ["full"])[0].lower()
        if sync not in ("full", "normal", "extra"):
            raise StoreURLError("synchronous must be full, normal or extra")
    else:
        parts = urlsplit(url)
        if not parts.hostname and "host" not in parse_qs(parts.query):
            raise StoreURLError(
                "a PostgreSQL URL names its server: postgresql://USER@HOST[:PORT]/DATABASE"
            )
        if not parts.path.strip("/"):
            raise StoreURLError(
                "a PostgreSQL URL names its database: postgresql://USER@HOST[:PORT]/DATABASE"
            )


def redact(url: str) -> str:
    """``url`` without its password, to be shown."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def desk_key(url: str) -> str:
    """A desk's name in places several desks may share (Redis): ``chatd:`` and a digest of
    its database URL without the password."""
    return "chatd:" + hashlib.sha256(redact(url).encode()).hexdigest()[:16]


def is_postgres(url: str) -> bool:
    return urlsplit(url).scheme in ("postgresql", "postgres")


def store_from_url(url: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> Store:
    """The backend of ``url``; its driver is imported here, not before (a SQLite desk does
    not need asyncpg installed)."""
    check_url(url)
    if is_postgres(url):
        from .postgres import PostgresStore

        return PostgresStore(url, pool_size=pool_size)
    from .sqlite import SQLiteStore

    query = parse_qs(urlsplit(url).query)
    return SQLiteStore(
        sqlite_path(url), synchronous=query.get("synchronous", ["full"])[0].lower()
    )
