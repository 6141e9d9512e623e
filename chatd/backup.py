"""Online backups of a SQLite desk and their restore: ``chatd backup PATH`` and
``chatd restore PATH [--force]`` (docs/operations.md#backups).

A backup is a directory: ``chatd.db`` (a snapshot of the database), ``uploads/`` (the
attachment files and thumbnails), ``handoff/`` (the ``file`` handoff backend's folder, when
there is one) and ``manifest.json`` (what was copied, with each file's size and SHA-256).

The snapshot comes first, through SQLite's backup API on a read-only connection: one read
transaction, so one consistent state of the database, taken without stopping the server
(in WAL mode a reader holds up no writer). The files are copied after it, and nothing is
ever deleted from the live folders, so every file the snapshot refers to is there unless it
was gone from the live folder too (then the backup says so); a file stored after the
snapshot is a harmless extra. The backup is written into a hidden sibling folder and renamed
to PATH only once complete: a PATH that exists is a whole backup.

A restore checks the whole backup (the snapshot's integrity, every file's SHA-256) and the
target before it writes anything. It puts the files in place first and the database last,
by a rename, so a restore cut short leaves no database that refers to missing files.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import sqlite3
import stat
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from .config import Settings
from .store import StoreURLError, is_postgres, sqlite_path, versioned_sql

FORMAT = 1
DATABASE = "chatd.db"
MANIFEST = "manifest.json"
UPLOADS = "uploads"
HANDOFF = "handoff"
CHUNK = 1024 * 1024
# Exit statuses (docs/operations.md#backups).
DONE, REFUSED, INCOMPLETE = 0, 1, 3
# What chatd stores in the upload folder (docs/attachments.md#on-disk); uploads in progress
# (.upload-*.part) are not copied: they are not attachments yet.
STORED_NAME = re.compile(r"[0-9a-f]{32}(?:-thumb)?")
POSTGRES_REFUSAL = (
    "chatd backup and chatd restore work on a SQLite database only; on PostgreSQL use "
    "pg_dump and pg_restore, and copy the upload folder beside them "
    "(docs/operations.md#backups)"
)


class Refused(Exception):
    """Nothing was written: the message says why."""


@dataclass
class Outcome:
    """What a backup or a restore did."""

    path: Path
    schema_version: int = 0
    sessions: int = 0
    messages: int = 0
    files: int = 0
    bytes: int = 0
    handoff_files: int = 0
    # Files the database refers to that were not in the upload folder, or not as recorded.
    missing: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)
    # With an object store: files the database refers to that only the bucket holds (not
    # copied: the bucket is backed up by its own means, docs/attachments.md#object-store).
    in_object_store: int = 0


# ---------------------------------------------------------------------- backup


def backup(
    database_url: str, upload_dir: Path, handoff_dir: Path | None, target: Path, *,
    object_store: bool = False,
) -> Outcome:
    """Back up the SQLite database at ``database_url``, running or not, with the files in
    ``upload_dir`` and ``handoff_dir`` (when given and present), into the new directory
    ``target``. With ``object_store``, files not in ``upload_dir`` are taken to be in the
    object store (counted, not reported missing). Raises Refused, having written nothing,
    when the database is PostgreSQL or missing, or ``target`` exists and is not an empty
    directory."""
    db = _sqlite_file(database_url)
    if not db.is_file():
        raise Refused(f"no database at {db}")
    target = Path(target)
    if target.exists() and not (target.is_dir() and not any(target.iterdir())):
        raise Refused(f"{target} exists already: name a new folder for the backup")
    parent = target.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=parent))
    try:
        out = Outcome(path=target)
        referenced = _snapshot(db, work / DATABASE, out)
        files = _copy_uploads(upload_dir, work / UPLOADS, referenced, out)
        if object_store:
            out.in_object_store, out.missing = len(out.missing), []
        if handoff_dir is not None and handoff_dir.is_dir():
            files.update(_copy_tree(handoff_dir, work / HANDOFF, HANDOFF, out))
        manifest = {
            "format": FORMAT,
            "chatd": _chatd_version(),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "schema_version": out.schema_version,
            "database": DATABASE,
            "sessions": out.sessions,
            "messages": out.messages,
            "files": files,
            "missing": out.missing,
            "in_object_store": out.in_object_store,
            "altered": out.altered,
        }
        _write_file(work / MANIFEST, json.dumps(manifest, indent=1).encode())
        _fsync_dir(work)
        if target.exists():
            target.rmdir()  # empty, checked above
        os.rename(work, target)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out


def _snapshot(db: Path, to: Path, out: Outcome) -> dict[str, tuple[str | None, int | None]]:
    """Copy the database to ``to`` in one read transaction; the stored names of the files
    it refers to, each with its SHA-256 and size (None for thumbnails)."""
    uri = f"file:{quote(str(db.absolute()))}?mode=ro"
    src = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
    try:
        dst = sqlite3.connect(to, isolation_level=None)
        try:
            src.backup(dst)  # every page in one step: one read transaction
            # One self-contained file, not a WAL database that wants a -wal beside it.
            dst.execute("PRAGMA journal_mode=DELETE")
            problems = [r[0] for r in dst.execute("PRAGMA integrity_check") if r[0] != "ok"]
            if problems:
                raise Refused(f"the database at {db} is damaged: {'; '.join(problems[:5])}")
            out.schema_version = _schema_version(dst)
            out.sessions = dst.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
            out.messages = dst.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
            referenced: dict[str, tuple[str | None, int | None]] = {}
            for name, sha, size, thumb in dst.execute(
                "SELECT stored_name, sha256, size, thumbnail_name FROM attachments"
            ):
                referenced[name] = (sha, size)
                if thumb:
                    referenced[thumb] = (None, None)
        finally:
            dst.close()
    except sqlite3.DatabaseError as exc:
        raise Refused(f"cannot read the database at {db}: {exc}") from None
    finally:
        src.close()
    _fsync_file(to)
    return referenced


def _copy_uploads(
    source: Path, dest: Path, referenced: dict[str, tuple[str | None, int | None]],
    out: Outcome,
) -> dict[str, dict[str, Any]]:
    """Copy every stored file of the upload folder (those the snapshot refers to and any
    stored since), checking the originals against the snapshot's SHA-256."""
    dest.mkdir(mode=0o700)
    files: dict[str, dict[str, Any]] = {}
    copied: set[str] = set()
    names = sorted(os.listdir(source)) if source.is_dir() else []
    for name in names:
        if not STORED_NAME.fullmatch(name):
            continue
        try:
            size, sha = _copy_file(source / name, dest / name)
        except (FileNotFoundError, _NotRegular):
            # Gone since the listing (the purge), or not a file chatd stored: if the
            # snapshot refers to it, it is reported as missing below.
            continue
        copied.add(name)
        files[f"{UPLOADS}/{name}"] = {"size": size, "sha256": sha}
        out.files += 1
        out.bytes += size
        want_sha, want_size = referenced.get(name, (None, None))
        if want_sha is not None and (want_sha != sha or want_size != size):
            out.altered.append(name)
    out.missing = sorted(set(referenced) - copied)
    return files


def _copy_tree(source: Path, dest: Path, prefix: str, out: Outcome) -> dict[str, dict[str, Any]]:
    """Copy the regular files under ``source`` (the handoff folder) to ``dest``."""
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(_walk(source)):
        rel = path.relative_to(source)
        (dest / rel).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            size, sha = _copy_file(path, dest / rel)
        except (FileNotFoundError, _NotRegular):
            continue
        files[f"{prefix}/{rel.as_posix()}"] = {"size": size, "sha256": sha}
        out.handoff_files += 1
        out.bytes += size
    return files


# ---------------------------------------------------------------------- restore


def restore(
    source: Path, database_url: str, upload_dir: Path, handoff_dir: Path | None, *,
    force: bool = False,
) -> Outcome:
    """Restore the backup at ``source`` into the database at ``database_url``, the upload
    folder and the handoff folder. Raises Refused, having written nothing, when the
    database is PostgreSQL; the backup is not whole (a file missing or changed, the
    snapshot damaged) or was made by a newer chatd; or, unless ``force``, the target
    database exists or the upload folder holds stored files; or a server has the target
    database open or holds its lock (even with ``force``). The lock is held until the
    restore ends."""
    db = _sqlite_file(database_url)
    source = Path(source)
    manifest = _read_manifest(source)
    out = Outcome(path=source)
    _check_snapshot(source / DATABASE, out)
    files: dict[str, dict[str, Any]] = manifest["files"]
    _verify_files(source, files)
    # What the backup itself reported missing or altered: restored as it is, and said again.
    out.missing = [str(n) for n in manifest.get("missing") or []]
    out.altered = [str(n) for n in manifest.get("altered") or []]

    existing = [p for p in (db, _sibling(db, "-wal")) if p.exists()]
    if existing and not force:
        raise Refused(
            f"the database {existing[0]} exists already: restoring would replace it; "
            "stop chatd and add --force to replace it"
        )
    if existing and in_use(db):
        raise Refused(
            f"a chatd (or another program) has the database {db} open: stop it before "
            "restoring"
        )
    stored = ([n for n in os.listdir(upload_dir) if STORED_NAME.fullmatch(n)]
              if upload_dir.is_dir() else [])
    if stored and not force:
        raise Refused(
            f"the upload folder {upload_dir} holds {len(stored)} stored files already; "
            "add --force to restore into it"
        )

    db.parent.mkdir(parents=True, exist_ok=True)
    lock = _hold_serve_lock(db)
    try:
        upload_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        added: list[Path] = []  # files that were not there: removed if the restore fails
        try:
            _install_files(source, files, upload_dir, handoff_dir, out, added)
            _install_database(source / DATABASE, db)
        except BaseException:
            for path in added:
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
    finally:
        os.close(lock)
    return out


def _hold_serve_lock(db: Path) -> int:
    """Take the lock ``chatd serve`` holds while it runs on ``db`` (a ``flock`` on the file
    ``<database>.lock``), for the whole restore: a server started meanwhile refuses to
    start. Raises Refused when a server holds it."""
    path = _sibling(db, ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Refused(
            f"a chatd serve is running on the database {db} (it holds {path}): stop it "
            "before restoring"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _install_files(
    source: Path, files: dict[str, dict[str, Any]], upload_dir: Path,
    handoff_dir: Path | None, out: Outcome, added: list[Path],
) -> None:
    for rel, meta in files.items():
        top, _, rest = rel.partition("/")
        if top == UPLOADS:
            target = upload_dir / rest
        elif top == HANDOFF and handoff_dir is not None:
            target = handoff_dir / rest
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        else:
            continue
        if not target.exists():
            added.append(target)
        _install(source / rel, target)
        if top == UPLOADS:
            out.files += 1
        else:
            out.handoff_files += 1
        out.bytes += int(meta["size"])
    _fsync_dir(upload_dir)


def _install_database(snapshot: Path, db: Path) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{db.name}.", suffix=".restore", dir=db.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        shutil.copyfile(snapshot, tmp)
        _fsync_file(tmp)
        # A -wal left beside the old database would be replayed into the restored one.
        for suffix in ("-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                _sibling(db, suffix).unlink()
        os.replace(tmp, db)
        _fsync_dir(db.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def in_use(db: Path) -> bool:
    """Whether a process has the SQLite database ``db`` open. An exclusive lock is tried
    at once, without waiting: every connection to a WAL database (a running chatd's writer
    and reader) holds a shared lock for as long as it is open, so the lock is granted only
    when nobody has the database open. Call it only on a file that exists."""
    conn = sqlite3.connect(db, timeout=0, isolation_level=None)
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return True
        raise
    finally:
        conn.close()


def _read_manifest(source: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Refused(f"{source} is not a chatd backup: it has no {MANIFEST}") from None
    except (OSError, ValueError) as exc:
        raise Refused(f"{source / MANIFEST} cannot be read: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise Refused(f"{source} is not a chatd backup of format {FORMAT}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and _safe_relative(k) and isinstance(v, dict)
        and isinstance(v.get("size"), int) and isinstance(v.get("sha256"), str)
        for k, v in files.items()
    ):
        raise Refused(f"{source / MANIFEST} is damaged: its list of files cannot be used")
    return manifest


def _safe_relative(rel: str) -> bool:
    """``uploads/NAME`` or ``handoff/…``, never leaving its folder."""
    parts = rel.split("/")
    if parts[0] == UPLOADS:
        return len(parts) == 2 and bool(STORED_NAME.fullmatch(parts[1]))
    return parts[0] == HANDOFF and len(parts) > 1 and all(
        p not in ("", ".", "..") and "\\" not in p for p in parts[1:]
    )


def _check_snapshot(path: Path, out: Outcome) -> None:
    if not path.is_file():
        raise Refused(f"the backup has no database ({path} is missing)")
    uri = f"file:{quote(str(path.absolute()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        try:
            problems = [r[0] for r in conn.execute("PRAGMA integrity_check") if r[0] != "ok"]
            if problems:
                raise Refused(f"the backup's database is damaged: {'; '.join(problems[:5])}")
            out.schema_version = _schema_version(conn)
            out.sessions = conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
            out.messages = conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise Refused(f"the backup's database cannot be read: {exc}") from None
    latest = versioned_sql("migrations")[-1][0]
    if out.schema_version > latest:
        raise Refused(
            f"the backup's database is at schema version {out.schema_version}, newer than "
            f"this chatd knows ({latest}): restore it with the chatd that made it"
        )


def _verify_files(source: Path, files: dict[str, dict[str, Any]]) -> None:
    bad = []
    for rel, meta in files.items():
        try:
            size, sha = _hash_file(source / rel)
        except (FileNotFoundError, _NotRegular):
            bad.append(f"{rel} is missing")
            continue
        if (size, sha) != (meta["size"], meta["sha256"]):
            bad.append(f"{rel} differs from the manifest")
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise Refused(f"the backup is damaged: {'; '.join(bad[:5])}{more}")


def _install(src: Path, dest: Path) -> None:
    """Copy ``src`` beside ``dest`` then rename it into place: never a half file."""
    fd, tmp_name = tempfile.mkstemp(prefix=".restore-", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.unlink()
        _copy_file(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


# ---------------------------------------------------------------------- files


class _NotRegular(Exception):
    """A symlink, FIFO or device where a stored file should be: never followed."""


def _open_regular(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _NotRegular(str(path)) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _NotRegular(str(path))
    return fd


def _copy_file(src: Path, dest: Path) -> tuple[int, str]:
    """Copy a regular file (created, mode 0600, made durable); its size and SHA-256."""
    fd = _open_regular(src)
    sha = hashlib.sha256()
    size = 0
    try:
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            while chunk := os.read(fd, CHUNK):
                sha.update(chunk)
                size += len(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view):]
            os.fsync(out)
        finally:
            os.close(out)
    finally:
        os.close(fd)
    return size, sha.hexdigest()


def _hash_file(path: Path) -> tuple[int, str]:
    fd = _open_regular(path)
    sha = hashlib.sha256()
    size = 0
    try:
        while chunk := os.read(fd, CHUNK):
            sha.update(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return size, sha.hexdigest()


def _write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _walk(folder: Path) -> Iterator[Path]:
    for root, _dirs, names in os.walk(folder):
        for name in names:
            yield Path(root) / name


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sibling(db: Path, suffix: str) -> Path:
    return db.with_name(db.name + suffix)


def _schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def _chatd_version() -> str:
    try:
        return importlib.metadata.version("chatd")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


def _sqlite_file(database_url: str) -> Path:
    if is_postgres(database_url):
        raise Refused(POSTGRES_REFUSAL)
    try:
        return Path(sqlite_path(database_url))
    except StoreURLError as exc:
        raise Refused(str(exc)) from None


# ---------------------------------------------------------------------- the commands


def add_parsers(sub: Any) -> None:
    """``chatd backup`` and ``chatd restore``, on the command line's subparsers."""
    b = sub.add_parser(
        "backup",
        help="copy the SQLite database (while chatd runs), the uploads and the handoff "
             "folder into a new folder",
    )
    b.add_argument("path", help="the backup's folder: must not exist, or be empty")
    r = sub.add_parser("restore", help="bring a backup back, on a stopped desk")
    r.add_argument("path", help="a folder written by chatd backup")
    r.add_argument("--force", action="store_true",
                   help="replace an existing database and add to a non-empty upload folder")


def run(settings: Settings, args: argparse.Namespace, stdout: TextIO = sys.stdout,
        stderr: TextIO = sys.stderr) -> int:
    from .handoff.service import file_dir

    handoff = file_dir(settings)
    uploads = Path(settings.upload_dir)
    try:
        if args.command == "backup":
            out = backup(settings.database_url, uploads, handoff, Path(args.path),
                         object_store=bool(settings.s3_url))
        else:
            out = restore(Path(args.path), settings.database_url, uploads, handoff,
                          force=args.force)
    except Refused as exc:
        print(f"chatd: {exc}", file=stderr)
        return REFUSED
    except OSError as exc:
        kept = ("nothing was kept" if args.command == "backup"
                else "the database was not replaced and the files it added were removed")
        print(f"chatd: {args.command} failed ({exc}): {kept}", file=stderr)
        return REFUSED
    done = "backed up" if args.command == "backup" else "restored"
    print(f"{done} {out.sessions} chats, {out.messages} messages (schema version "
          f"{out.schema_version}), {out.files} uploaded files and {out.handoff_files} "
          f"handoff files, {out.bytes} bytes: {out.path}", file=stdout)
    problems = (
        [f"{n} is referred to by the database but was not in the upload folder"
         for n in out.missing]
        + [f"{n} differs from the SHA-256 the database recorded" for n in out.altered]
    )
    if out.in_object_store:
        print(f"{out.in_object_store} files are in the object store only and not in this "
              "backup: back the bucket up by its own means (docs/attachments.md#object-store)",
              file=stdout)
    for line in problems[:20]:
        print(f"chatd: warning: {line}", file=stderr)
    if problems and args.command == "restore":
        print(f"chatd: restored, but the backup was incomplete: {len(problems)} files "
              "(listed in its manifest.json)", file=stderr)
    elif problems:
        print(f"chatd: the backup is written but incomplete: {len(problems)} files "
              "(listed in its manifest.json)", file=stderr)
        return INCOMPLETE
    return DONE
