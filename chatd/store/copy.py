"""Copying a whole chatd database from SQLite to PostgreSQL, and the ``chatd db copy``
command that runs it (docs/scaling.md).

This module owns ``copy_database``: the checks made before anything is written (the
refusals, ``CopyRefused``), the copy itself and the count check after it; and the ``db``
command group's parser and runner, registered by chatd/cli.py.

The source is read through a read-only connection, inside one read transaction, so the
copy is one consistent snapshot of it; it is never written, not even to upgrade its
schema: a source whose schema is not this chatd's latest is refused, with the command that
upgrades it. The target is opened once with PostgresStore, which applies its migrations,
then filled in one transaction: a copy that fails half-way leaves the target as it was.

Only SQLite to PostgreSQL is supported. Attachment files and the handoff ``file``
backend's transcripts are files, not rows: they stay where they are.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import parse_qs, quote, urlsplit

from . import StoreURLError, check_url, is_postgres, redact, sqlite_path

if TYPE_CHECKING:
    import aiosqlite
    import asyncpg

# Rows read from the source and sent to the target at a time.
DEFAULT_BATCH = 1000
# How long the copy waits for a lock on the target's tables before it gives up.
LOCK_TIMEOUT = "10s"
# A server's own databases: never chatd's, however empty they look.
MAINTENANCE_DATABASES = ("postgres", "template0", "template1")
SUPPORTED_DIRECTIONS = "only SQLite to PostgreSQL is supported (sqlite:///... to postgresql://...)"

Progress = Callable[[str, int, int], None]
"""Called after each batch with the table, its rows copied so far and its rows in all."""


class CopyRefused(Exception):
    """The copy was not started, and nothing was written: the message says why."""


class CopyFailed(Exception):
    """The copy started and failed; its transaction was rolled back, nothing was kept."""


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    # The source's order: deterministic, and along an index where there is one.
    order: str = "rowid"
    # Columns of the target only, computed after the copy.
    derived: tuple[str, ...] = ()


# In the order of their references: every row's parent is copied before it.
TABLES: tuple[Table, ...] = (
    Table("engineers", (
        "id", "email", "name", "role", "password_hash", "disabled", "created_at",
    )),
    Table("engineer_tokens", (
        "token_hash", "engineer_id", "created_at", "expires_at", "revoked_at",
    )),
    Table("sessions", (
        "id", "state", "topic", "severity", "customer_id", "customer_name", "customer_email",
        "customer_account", "customer_tier", "created_at", "arrival_seq", "engineer_id",
        "assigned_at", "first_assigned_at", "ended_at", "ended_by", "end_reason",
        "resolution", "ticket", "resume_token_hash", "origin", "request_id",
    ), derived=("last_seq",)),
    Table("messages", (
        "id", "session_id", "seq", "ts", "sender_role", "sender_id", "sender_name", "kind",
        "body", "client_msg_id", "attachment", "event",
    ), order="session_id, seq"),
    Table("read_marks", ("session_id", "role", "seq"), order="session_id, role"),
    Table("attachments", (
        "id", "session_id", "uploader_role", "uploader_id", "filename", "content_type",
        "size", "sha256", "stored_name", "thumbnail_name", "thumbnail_type", "created_at",
        "upload_id",
    )),
    Table("handoffs", (
        "id", "session_id", "backend", "state", "attempts", "next_attempt_at", "created_at",
        "updated_at", "last_error", "result", "claimed_at", "last_status", "last_response",
        "delivered_at", "requeued_at", "ticket",
    )),
    Table("status_banner", ("id", "text", "link", "updated_at", "updated_by")),
    Table("engineer_status", ("engineer_id", "status", "capacity", "updated_at")),
    Table("erasures", (
        "id", "erased_at", "requested_by", "via", "subject_hash", "chats", "messages",
        "files", "handoffs",
    )),
)

# SQLite keeps booleans as 0 and 1; PostgreSQL's BOOLEAN takes True and False only.
_BOOLEANS = {("engineers", "disabled")}


# ---------------------------------------------------------------------- the copy


async def copy_database(
    source_url: str,
    target_url: str,
    *,
    batch: int = DEFAULT_BATCH,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Copy every row of the SQLite database at ``source_url`` into the empty PostgreSQL
    database at ``target_url``; the rows per table, checked equal in both.

    Raises CopyRefused, having written no row, when the URLs are not SQLite then
    PostgreSQL or name the same database; the source is missing, or its schema is not
    this chatd's latest; or the target cannot be reached, is the server's own database,
    holds rows already or tables that are not chatd's, or stays locked. Raises CopyFailed
    when the copy itself fails: its transaction is rolled back. ``batch`` rows are read
    and sent at a time."""
    if batch < 1:
        raise CopyRefused("the batch size must be at least 1")
    _check_urls(source_url, target_url)
    source = await _open_source(source_url)
    try:
        await source.execute("BEGIN")  # one snapshot for the counts and every row
        await _check_source(source)
        await _prepare_target(target_url)
        return await _copy(source, target_url, batch, progress)
    finally:
        await source.close()


def _check_urls(source_url: str, target_url: str) -> None:
    for role, url in (("source", source_url), ("target", target_url)):
        try:
            check_url(url)
        except StoreURLError as exc:
            raise CopyRefused(f"the {role} URL is not valid: {exc}") from None
    try:
        same = _identity(source_url) == _identity(target_url)
    except ValueError as exc:  # a port that is not a number
        raise CopyRefused(f"a URL is not valid: {exc}") from None
    if same:
        raise CopyRefused("the source and the target are the same database")
    if is_postgres(source_url) or not is_postgres(target_url):
        raise CopyRefused(
            f"cannot copy from {urlsplit(source_url).scheme} to "
            f"{urlsplit(target_url).scheme}: {SUPPORTED_DIRECTIONS}"
        )
    if _identity(target_url)[-1] in MAINTENANCE_DATABASES:
        raise CopyRefused(
            f"the target is the server's {_identity(target_url)[-1]} database: create a "
            "database for chatd (CREATE DATABASE chatd) and copy into it"
        )


def _identity(url: str) -> tuple[str, ...]:
    """What names a database, whatever the spelling of its URL."""
    if not is_postgres(url):
        return ("sqlite", os.path.realpath(sqlite_path(url)))
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = (parts.hostname or query.get("host", [""])[0]).lower()
    if host == "localhost":
        host = "127.0.0.1"
    port = str(parts.port or query.get("port", ["5432"])[0])
    return ("postgresql", host, port, parts.path.strip("/"))


async def _open_source(url: str) -> aiosqlite.Connection:
    import aiosqlite

    path = sqlite_path(url)
    if not os.path.isfile(path):
        raise CopyRefused(f"the source database {path} does not exist")
    uri = "file:" + quote(os.path.abspath(path)) + "?mode=ro"
    try:
        db = await aiosqlite.connect(uri, uri=True, isolation_level=None)
    except aiosqlite.Error as exc:
        raise CopyRefused(f"cannot open the source database {path}: {exc}") from None
    await db.execute("PRAGMA busy_timeout=5000")
    return db


async def _check_source(db: aiosqlite.Connection) -> None:
    import aiosqlite

    from .sqlite import migrations

    latest = migrations()[-1][0]
    try:
        async with db.execute("SELECT MAX(version) FROM schema_version") as cur:
            row = await cur.fetchone()
    except aiosqlite.Error as exc:
        raise CopyRefused(f"the source is not a chatd database ({exc})") from None
    version = int(row[0]) if row and row[0] is not None else 0
    if version < latest:
        raise CopyRefused(
            f"the source's schema is version {version}, this chatd's is {latest}: upgrade "
            "it first by running `chatd engineer list` once with CHATD_DATABASE_URL set to "
            "the source (it migrates the database), then copy again"
        )
    if version > latest:
        raise CopyRefused(
            f"the source's schema (version {version}) is newer than this chatd knows "
            f"(version {latest}): copy with the newer chatd"
        )
    for table in TABLES:
        async with db.execute(f"PRAGMA table_info({table.name})") as cur:
            found = {r[1] for r in await cur.fetchall()}
        _same_columns("source", table.name, found, set(table.columns))


def _same_columns(role: str, table: str, found: set[str], expected: set[str]) -> None:
    if found != expected:
        missing, unknown = sorted(expected - found), sorted(found - expected)
        raise CopyRefused(
            f"the {role}'s table {table} does not have the columns this chatd copies"
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; not copied: {', '.join(unknown)}" if unknown else "")
        )


async def _connect(url: str) -> asyncpg.Connection:
    import asyncpg

    try:
        return await asyncpg.connect(
            url,
            timeout=15,
            # Committed means on disk, whatever the role's or the database's default.
            server_settings={"synchronous_commit": "on", "application_name": "chatd db copy"},
        )
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise CopyRefused(
            f"cannot connect to the target database {redact(url)}: {_one_line(exc)}"
        ) from None


async def _prepare_target(url: str) -> None:
    """Refuse a target that holds anything, before writing to it; then open it with
    PostgresStore, which gives a new database chatd's schema."""
    from .postgres import PostgresStore

    conn = await _connect(url)
    try:
        tables = {r[0] for r in await conn.fetch(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema()"
        )}
        if tables and "schema_version" not in tables:
            raise CopyRefused(
                f"the target database holds tables that are not chatd's "
                f"({', '.join(sorted(tables)[:5])}): copy into a new, empty database"
            )
        await _refuse_rows(conn, [t.name for t in TABLES if t.name in tables])
    finally:
        await conn.close()
    store = PostgresStore(url, pool_size=1)
    try:
        await store.open()
    except Exception as exc:
        raise CopyRefused(f"cannot open the target database: {_one_line(exc)}") from None
    await store.close()


async def _refuse_rows(conn: asyncpg.Connection, tables: Sequence[str]) -> None:
    full = [t for t in tables if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {t})")]
    if full:
        raise CopyRefused(
            f"the target database is not empty (rows in {', '.join(full)}): "
            "copy only into a new, empty database"
        )


async def _copy(
    source: aiosqlite.Connection, target_url: str, batch: int, progress: Progress | None
) -> dict[str, int]:
    import asyncpg

    expected = {}
    for table in TABLES:
        async with source.execute(f"SELECT COUNT(*) FROM {table.name}") as cur:
            row = await cur.fetchone()
        expected[table.name] = int(row[0]) if row else 0
    conn = await _connect(target_url)
    try:
        return await _fill(source, conn, expected, batch, progress)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TypeError,
            ValueError) as exc:
        # Rolled back, or never committed if the connection was lost: the server keeps
        # no row of a transaction that did not commit.
        raise CopyFailed(
            f"the copy failed and was rolled back, the target keeps none of it: "
            f"{_one_line(exc)}"
        ) from None
    finally:
        await conn.close()


async def _fill(
    source: aiosqlite.Connection,
    conn: asyncpg.Connection,
    expected: dict[str, int],
    batch: int,
    progress: Progress | None,
) -> dict[str, int]:
    """Lock, check and fill the target in one transaction; the rows copied per table."""
    import asyncpg

    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        try:
            # Nothing else writes to these tables until the copy commits or is undone.
            await conn.execute(
                f"LOCK TABLE {', '.join(t.name for t in TABLES)} IN EXCLUSIVE MODE"
            )
        except asyncpg.LockNotAvailableError:
            raise CopyRefused(
                "the target database is in use (its tables stayed locked): "
                "stop what uses it, or copy into a new, empty database"
            ) from None
        await _refuse_rows(conn, [t.name for t in TABLES])
        for table in TABLES:
            found = {r[0] for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = $1",
                table.name,
            )}
            _same_columns("target", table.name, found, {*table.columns, *table.derived})
        for table in TABLES:
            await _copy_table(source, conn, table, expected[table.name], batch, progress)
        # Each chat's message counter goes on from its last message.
        await conn.execute(
            "UPDATE sessions s SET last_seq = m.last FROM (SELECT session_id,"
            " MAX(seq) AS last FROM messages GROUP BY session_id) m"
            " WHERE s.id = m.session_id"
        )
        copied = {}
        for table in TABLES:
            copied[table.name] = int(await conn.fetchval(f"SELECT COUNT(*) FROM {table.name}"))
        wrong = [f"{t}: {expected[t]} in the source, {copied[t]} copied"
                 for t in expected if expected[t] != copied[t]]
        if wrong:
            raise CopyFailed(
                "the row counts differ, so the copy was rolled back: " + "; ".join(wrong)
            )
    return copied


async def _copy_table(
    source: aiosqlite.Connection,
    conn: asyncpg.Connection,
    table: Table,
    total: int,
    batch: int,
    progress: Progress | None,
) -> None:
    booleans = [i for i, c in enumerate(table.columns) if (table.name, c) in _BOOLEANS]
    done = 0
    async with source.execute(
        f"SELECT {', '.join(table.columns)} FROM {table.name} ORDER BY {table.order}"
    ) as cur:
        while True:
            rows: list[Any] = list(await cur.fetchmany(batch))
            if not rows:
                break
            if booleans:
                rows = [_with_booleans(r, booleans) for r in rows]
            await conn.copy_records_to_table(table.name, records=rows, columns=table.columns)
            done += len(rows)
            if progress is not None:
                progress(table.name, done, total)


def _with_booleans(row: Sequence[Any], booleans: Sequence[int]) -> tuple[Any, ...]:
    out = list(row)
    for i in booleans:
        out[i] = None if out[i] is None else bool(out[i])
    return tuple(out)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ---------------------------------------------------------------------- the command

_HELP = """\
Copy a whole chatd database from SQLite to PostgreSQL (the only direction supported):
engineers and their sign-in tokens, every chat with its messages, attachment records, the
handoff outbox and the status banner. Stop the desk first: a copy of a live desk misses
whatever is written meanwhile. The target must be a new, empty PostgreSQL database; it
is given chatd's schema, then filled in one transaction, and the row counts of every
table are checked. The source is only read. Uploaded files stay in CHATD_UPLOAD_DIR and
the handoff file backend's transcripts in their folder: point the new desk at them.
Exit status: 0 copied, 1 the copy failed (rolled back), 2 refused (nothing written)."""


def add_parser(sub: Any) -> None:
    """Register ``chatd db copy`` on the top-level subparsers ``sub``."""
    db = sub.add_parser("db", help="database maintenance: copy SQLite to PostgreSQL")
    dsub = db.add_subparsers(dest="action", required=True)
    cp = dsub.add_parser(
        "copy",
        help="copy a stopped desk's SQLite database into a new PostgreSQL database",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cp.add_argument("source", metavar="SOURCE_URL",
                    help="the SQLite database, e.g. sqlite:///var/chatd.db")
    cp.add_argument("target", metavar="TARGET_URL",
                    help="the empty PostgreSQL database, e.g. postgresql://chatd@db/chatd")
    cp.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                    help=f"rows read and sent at a time (default {DEFAULT_BATCH})")


def run(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run ``chatd db ACTION``: its exit status."""
    progress = _progress_to(err) if err.isatty() else None
    try:
        counts = asyncio.run(
            copy_database(args.source, args.target, batch=args.batch, progress=progress)
        )
    except CopyRefused as exc:
        print(f"chatd db copy: refused, nothing written: {exc}", file=err)
        return 2
    except CopyFailed as exc:
        if progress is not None:
            print(file=err)  # end the progress line
        print(f"chatd db copy: {exc}", file=err)
        return 1
    if progress is not None:
        print(file=err)
    print(f"copied {redact(args.source)} to {redact(args.target)}", file=out)
    width = max(len(t) for t in counts)
    for table, rows in counts.items():
        print(f"  {table:<{width}}  {rows:>9}", file=out)
    print("row counts checked: every table has as many rows in the target as in the source",
          file=out)
    print("attachments: their records are copied; the files stay in the upload folder "
          "(CHATD_UPLOAD_DIR): give the new desk the same folder", file=out)
    print("handoff: transcripts written by the file backend stay in their folder "
          "(CHATD_HANDOFF_FILE_DIR, by default a handoff folder beside the SQLite "
          "database): set CHATD_HANDOFF_FILE_DIR on the new desk to keep them together",
          file=out)
    return 0


def _progress_to(err: TextIO) -> Progress:
    def show(table: str, done: int, total: int) -> None:
        print(f"\r{table}: {done}/{total} rows\033[K", end="", file=err, flush=True)

    return show
