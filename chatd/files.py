"""Attachments on disk: the upload folder, streamed uploads, thumbnails put in place and safe
opening for downloads (docs/attachments.md).

An upload is written chunk by chunk to a temporary file in the upload folder while its
SHA-256 is computed and its bytes are checked, and is renamed to a random name only once it
is complete and accepted; every other outcome removes the temporary file. File I/O and image
decoding run on the folder's own threads, never on the default executor, and decodes take
turns between chats (docs/security.md). What a file is and the name it is shown under are
decided in chatd/kinds.py; images are decoded in chatd/images.py.

Where a complete file is kept is the folder's ``store`` (:class:`FileStore`): the folder
itself (:class:`FolderStore`, the default), or an S3-compatible object store
(chatd/objects.py) that several chatd processes on different machines share. Uploads,
downloads, the purge and erasures all go through it, whichever it is.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import hashlib
import logging
import os
import queue
import re
import secrets
import stat
import threading
import time
from collections.abc import AsyncGenerator, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Protocol

import aiofiles
import aiofiles.os

from .core.errors import DeskError, TooLarge
from .images import DECODE_WORKERS, make_thumbnail, private_opener

# Where the rest of chatd, the tests and the benches have always found them.
from .images import FairExecutor as FairExecutor
from .kinds import KINDS as KINDS
from .kinds import Kind as Kind
from .kinds import content_disposition as content_disposition
from .kinds import detect as detect
from .kinds import display_name as display_name
from .kinds import markup_problem as markup_problem
from .kinds import text_verdict as text_verdict

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# Big enough that per-chunk costs (a thread hop for the write, one hash update) are small,
# small enough that a few chunks in flight per upload cost nothing next to the cap.
CHUNK_SIZE = 256 * 1024
HEAD_SIZE = 8192  # what type detection looks at: magic numbers and leading markup
# Writes, fsyncs and opens of stored files: enough that a few slow fsyncs do not hold up
# the writes of every other upload.
FILE_IO_WORKERS = 8
# Free space is looked at before an upload and again after every this many bytes of it.
SPACE_CHECK_BYTES = 4 * MiB
STALE_TEMP_SECONDS = 3600.0

_TEMP_PREFIX = ".upload-"
_TEMP_SUFFIX = ".part"
_STORED_NAME = re.compile(r"[0-9a-f]{32}(?:-thumb)?")


def is_stored_name(name: str) -> bool:
    """Whether ``name`` is one chatd gives a stored file or thumbnail (never a path)."""
    return _STORED_NAME.fullmatch(name) is not None


class InsufficientStorage(DeskError):
    """The upload folder's filesystem is below its free-space floor (HTTP 507)."""

    code = "insufficient_storage"


# ---------------------------------------------------------------------- the upload folder


class _Digest(threading.Thread):
    """SHA-256 and the text rule over an upload's chunks, in order, on a thread of its own.

    Chunks arrive through a thread-safe queue, so hashing costs the event loop no wake-up
    per chunk (hashlib releases the GIL, so it runs beside the loop). The backlog is bounded:
    past ``HIGH`` bytes the producer waits until the thread is back under ``LOW``.
    """

    HIGH = 4 * MiB
    LOW = 1 * MiB

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(name="chatd-upload-digest", daemon=True)
        self.sha = hashlib.sha256()
        self.text = True  # every byte so far is UTF-8 text without NUL
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._loop = loop
        self._chunks: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._backlog = 0
        self._waiter: asyncio.Future[None] | None = None
        self._abort = False
        self.finished: asyncio.Future[None] = loop.create_future()
        self._launch: asyncio.Future[None] | None = None

    def start_soon(self, executor: ThreadPoolExecutor) -> None:
        """Start the thread from ``executor``: ``Thread.start`` waits until the new thread
        runs, which on a busy machine is a scheduler's turn that the event loop (every
        other client) would spend waiting. Chunks fed meanwhile wait in the queue."""
        self._launch = self._loop.run_in_executor(executor, self.start)

    def feed(self, chunk: bytes) -> None:
        with self._lock:
            self._backlog += len(chunk)
        self._chunks.put(chunk)

    async def room(self) -> None:
        """Wait while the thread is more than ``HIGH`` bytes behind."""
        with self._lock:
            if self._backlog <= self.HIGH:
                return
            waiter = self._waiter = self._loop.create_future()
        await waiter

    async def close(self, *, abort: bool = False) -> None:
        """Hash what is queued (or, aborting, skip it) and wait for the thread to end."""
        self._abort = self._abort or abort
        self._chunks.put(None)
        if self._launch is not None:
            try:
                await asyncio.shield(self._launch)
            except Exception:  # the thread could not start: nothing to wait for
                return
            except asyncio.CancelledError:
                if self._launch.cancelled():  # the executor was shut down first
                    return
                raise
        await asyncio.shield(self.finished)

    def run(self) -> None:
        try:
            while (chunk := self._chunks.get()) is not None:
                if not self._abort:
                    self._update(chunk)
                with self._lock:
                    self._backlog -= len(chunk)
                    waiter = self._waiter
                    if waiter is not None and self._backlog <= self.LOW:
                        self._waiter = None
                        self._notify(waiter)
            if self.text and not self._abort:
                try:
                    self._decoder.decode(b"", final=True)
                except UnicodeDecodeError:
                    self.text = False
        finally:
            with self._lock:
                waiter, self._waiter = self._waiter, None
            if waiter is not None:
                self._notify(waiter)
            self._notify(self.finished)

    def _notify(self, future: asyncio.Future[None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(_resolve, future)

    def _update(self, chunk: bytes) -> None:
        self.sha.update(chunk)
        if not self.text:
            return
        if b"\0" in chunk:
            self.text = False
        elif not (chunk.isascii() and not self._decoder.getstate()[0]):
            try:
                self._decoder.decode(chunk)
            except UnicodeDecodeError:
                self.text = False


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Upload:
    """One file being received: a temporary file, its SHA-256 and what its bytes are.

    ``write`` queues each chunk for one writer task, which writes it through aiofiles on the
    folder's own threads, and for the digest thread; meanwhile the event loop goes on
    reading the network. Chunks are written and hashed strictly in order, and only a few of
    them wait at any time: memory stays a few MiB whatever the size of the file.
    """

    IN_FLIGHT = 4

    def __init__(self, folder: UploadFolder, max_bytes: int, too_large: str) -> None:
        self.owner = folder
        self.folder = folder.folder
        self.max_bytes = max_bytes
        self.too_large = too_large
        self.size = 0
        self.head = b""
        self._tmp = self.folder / f"{_TEMP_PREFIX}{secrets.token_hex(16)}{_TEMP_SUFFIX}"
        self._file: Any = None
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(self.IN_FLIGHT)
        self._writer: asyncio.Task[None] | None = None
        self._digest: _Digest | None = None
        self._error: BaseException | None = None
        self._abort = False
        self._done = False
        self._space_checked_at = 0

    @property
    def text(self) -> bool:
        """Whether every byte so far is UTF-8 text without NUL (final after ``finish``)."""
        return self._digest is not None and self._digest.text

    async def __aenter__(self) -> Upload:
        self.owner.check_space()
        self._file = await aiofiles.open(
            self._tmp, "xb", opener=private_opener, executor=self.owner.io
        )
        self._writer = asyncio.create_task(self._write_loop())
        self._digest = _Digest(asyncio.get_running_loop())
        self._digest.start_soon(self.owner.io)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop_writer()
        if self._digest is not None:
            await self._digest.close(abort=True)
        if self._file is not None:
            with contextlib.suppress(OSError):
                await self._file.close()
            self._file = None
        if not self._done:
            with contextlib.suppress(FileNotFoundError):
                await aiofiles.os.remove(self._tmp, executor=self.owner.io)

    async def _write_loop(self) -> None:
        while (chunk := await self._queue.get()) is not None:
            if self._abort or self._error is not None:
                continue  # drain: a producer must never wait on a writer that gave up
            try:
                await self._file.write(chunk)
            except Exception as exc:  # disk full, I/O error: reported by the next call
                self._error = exc

    async def _stop_writer(self) -> None:
        """Let the writer finish the chunk in its thread and end; discard the rest."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        self._abort = True
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)
        await writer

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    async def write(self, chunk: bytes) -> None:
        """Add a chunk; TooLarge as soon as the total passes ``max_bytes``,
        InsufficientStorage when the disk falls below its floor."""
        assert self._digest is not None
        self._raise_error()
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise TooLarge(self.too_large, limit=self.max_bytes)
        if self.size - self._space_checked_at >= SPACE_CHECK_BYTES:
            self._space_checked_at = self.size
            self.owner.check_space()
        if len(self.head) < HEAD_SIZE:
            self.head += chunk[: HEAD_SIZE - len(self.head)]
        self._digest.feed(chunk)
        await self._queue.put(chunk)
        await self._digest.room()

    def head_ready(self) -> bool:
        return len(self.head) >= HEAD_SIZE

    async def finish(self) -> str:
        """Wait for the last chunk, make the file durable; return the SHA-256 (hex)."""
        assert self._digest is not None
        writer, self._writer = self._writer, None
        if writer is not None:
            await self._queue.put(None)
            await writer
        self._raise_error()
        await self._digest.close()
        await self._file.flush()
        await asyncio.get_running_loop().run_in_executor(
            self.owner.io, os.fsync, self._file.fileno()
        )
        return self._digest.sha.hexdigest()

    @property
    def path(self) -> Path:
        return self._tmp

    async def commit(self, stored_name: str) -> None:
        """Put the complete file in place under its random name."""
        await self._file.close()
        self._file = None
        await aiofiles.os.replace(self._tmp, self.folder / stored_name, executor=self.owner.io)
        self._done = True
        await asyncio.get_running_loop().run_in_executor(self.owner.io, _fsync_dir, self.folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Thumbnail:
    name: str
    content_type: str


class UploadFolder:
    """The upload folder. Files in it are only ever reached by their random stored names,
    opened without following symlinks; the folder itself is never served.

    Its file I/O and image decoding run on threads of its own (made when first needed), so
    that neither a flood of uploads nor other work on the default executor (password
    hashing, DNS) can hold up the other.
    """

    def __init__(self, folder: str | Path, *, min_free_bytes: int = 0) -> None:
        self.folder = Path(folder)
        self.min_free_bytes = min_free_bytes
        self._io: ThreadPoolExecutor | None = None
        self.decoder = FairExecutor(DECODE_WORKERS, "chatd-decode")
        # Where complete files are kept: this folder, unless an object store is set
        # (chatd.objects.upload_folder).
        self.store: FileStore = FolderStore(self)

    @property
    def io(self) -> ThreadPoolExecutor:
        if self._io is None:
            self._io = ThreadPoolExecutor(FILE_IO_WORKERS, thread_name_prefix="chatd-file-io")
        return self._io

    def close(self) -> None:
        self.decoder.close()
        if self._io is not None:
            self._io.shutdown(wait=False, cancel_futures=True)

    def prepare(self, now: float | None = None) -> int:
        """Create the folder; remove temporary files left by a crash. Returns how many."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        cutoff = (time.time() if now is None else now) - STALE_TEMP_SECONDS
        removed = 0
        for entry in os.scandir(self.folder):
            name = entry.name
            if not (name.startswith(_TEMP_PREFIX) and name.endswith(_TEMP_SUFFIX)):
                continue
            with contextlib.suppress(OSError):
                # Only old ones: a younger one may be another process's upload in flight.
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def free_bytes(self) -> int:
        """Free space on the folder's filesystem for an unprivileged writer (one statvfs,
        cheap enough for the event loop)."""
        st = os.statvfs(self.folder)
        return st.f_bavail * st.f_frsize

    def check_space(self) -> None:
        """InsufficientStorage when the filesystem is below ``min_free_bytes``: the floor
        keeps room for the database and the logs on a shared disk."""
        if self.min_free_bytes <= 0:
            return
        free = self.free_bytes()
        if free < self.min_free_bytes:
            log.warning(
                "upload refused: %d bytes free in %s, below the floor of %d",
                free, self.folder, self.min_free_bytes,
            )
            raise InsufficientStorage(
                "the server is low on storage and cannot take files now; try again later"
            )

    def upload(self, max_bytes: int, too_large: str) -> Upload:
        return Upload(self, max_bytes, too_large)

    @staticmethod
    def new_name() -> str:
        return secrets.token_hex(16)

    async def start(self) -> None:
        """Make ready to serve: the folder created and swept, the store checked."""
        removed = await asyncio.to_thread(self.prepare)
        if removed:
            log.info("removed %d unfinished uploads", removed)
        await self.store.start()

    async def aclose(self) -> None:
        await self.store.close()
        self.close()

    async def keep(self, names: Iterable[str | None]) -> None:
        """Make stored files (put in place by ``Upload.commit`` and ``thumbnail``) durable
        in the store: once this returns, any process sharing the store can serve them."""
        await self.store.keep([n for n in names if n and _STORED_NAME.fullmatch(n)])

    async def open_stored(self, name: str) -> StoredFile | None:
        """A stored file opened for reading, wherever the store keeps it; None when it is
        not there (or is not a regular file, or ``name`` is not a stored name)."""
        if not _STORED_NAME.fullmatch(name):
            return None
        return await self.store.open(name)

    async def remove(self, names: Iterable[str | None]) -> Removal:
        """Remove stored files wherever they are kept; names that are not stored names are
        skipped. What could not be removed is in the result (and logged)."""
        wanted = [n for n in names if n and _STORED_NAME.fullmatch(n)]
        if not wanted:
            return Removal()
        removal = await self.store.remove(wanted)
        if removal.failed:
            log.warning("could not remove %d stored files: %s",
                        len(removal.failed), ", ".join(removal.failed[:10]))
        return removal

    async def stored_before(self, before: float) -> list[tuple[str, int]]:
        """Every stored file (and thumbnail) last written before ``before`` (a wall-clock
        time), with its size: what the purge compares with the records."""
        return await self.store.stored_before(before)

    async def thumbnail(
        self, source: Path, stored_name: str, kind: Kind, allowed: Collection[str], *,
        turn: str,
    ) -> Thumbnail:
        """Prove an image is one by decoding it, and write its thumbnail (EXIF and every
        other piece of metadata left behind). UnsupportedType when it does not decode.
        ``turn`` is the line it waits in (its chat): decodes take turns between lines."""
        name = f"{stored_name}-thumb"
        try:
            content_type = await self.decoder.run(
                turn, make_thumbnail, source, self.folder / name, kind, allowed
            )
        except asyncio.CancelledError:
            await self.remove([name])  # the decode, if it started, has ended by now
            raise
        return Thumbnail(name, content_type)

    def open(self, name: str) -> tuple[BinaryIO, os.stat_result] | None:
        """Open a stored file for reading: None unless ``name`` is a stored name and the
        entry is a regular file (a symlink is not followed, a FIFO is not waited on).
        Blocking: call it in a thread."""
        if not _STORED_NAME.fullmatch(name):
            return None
        try:
            fd = os.open(
                self.folder / name, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0)
            )
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                return None
            return os.fdopen(fd, "rb"), st
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise


# ---------------------------------------------------------------------- where files are kept


@dataclass
class Removal:
    """What a removal did: the stored names removed, and those that could not be."""

    removed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class StoredFile(Protocol):
    """A stored file opened for reading: its size, when it was stored, and its bytes."""

    size: int
    mtime: float
    # The open file, where the bytes can be sent with sendfile; None for a remote object.
    fileobj: BinaryIO | None

    def chunks(self, start: int, count: int) -> AsyncGenerator[bytes, None]:
        """``count`` bytes from ``start``, a chunk at a time (never the whole file); close
        it (``contextlib.aclosing``) when not read to the end."""
        ...

    def close(self) -> None: ...


class FileStore(Protocol):
    """Where complete files are kept and read back, by their stored names. The upload
    folder holds every file while it is received; ``keep`` hands the finished ones over."""

    async def start(self) -> None:
        """Check the store can be used; raise (with a clear message) when it cannot."""
        ...

    async def close(self) -> None: ...

    async def keep(self, names: list[str]) -> None:
        """Make these files of the upload folder durable here (Unavailable when the
        store cannot take them): an upload is acknowledged only after."""
        ...

    async def open(self, name: str) -> StoredFile | None: ...

    async def remove(self, names: list[str]) -> Removal: ...

    async def stored_before(self, before: float) -> list[tuple[str, int]]: ...


class LocalFile:
    """A file of the upload folder, opened without following symlinks."""

    def __init__(self, fobj: BinaryIO, st: os.stat_result, io: ThreadPoolExecutor) -> None:
        self.fileobj: BinaryIO | None = fobj
        self.size = st.st_size
        self.mtime = st.st_mtime
        self._fobj = fobj
        self._io = io

    async def chunks(self, start: int, count: int) -> AsyncGenerator[bytes, None]:
        def read(offset: int, n: int) -> bytes:
            self._fobj.seek(offset)
            return self._fobj.read(n)

        loop = asyncio.get_running_loop()
        offset = start
        while count > 0:
            chunk = await loop.run_in_executor(self._io, read, offset, min(CHUNK_SIZE, count))
            if not chunk:
                return
            yield chunk
            offset += len(chunk)
            count -= len(chunk)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._fobj.close()


class FolderStore:
    """The upload folder as the store: a file is kept where ``Upload.commit`` put it
    (written, fsynced and renamed into place), so ``keep`` has nothing left to do."""

    def __init__(self, folder: UploadFolder) -> None:
        self.folder = folder

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def keep(self, names: list[str]) -> None:
        return None

    async def open(self, name: str) -> StoredFile | None:
        folder = self.folder
        opened = await asyncio.get_running_loop().run_in_executor(folder.io, folder.open, name)
        if opened is None:
            return None
        return LocalFile(opened[0], opened[1], folder.io)

    async def remove(self, names: list[str]) -> Removal:
        removal = Removal()
        for name in names:
            try:
                await aiofiles.os.remove(self.folder.folder / name, executor=self.folder.io)
            except FileNotFoundError:
                continue
            except OSError:
                removal.failed.append(name)
                continue
            removal.removed.append(name)
        return removal

    async def stored_before(self, before: float) -> list[tuple[str, int]]:
        return await asyncio.to_thread(_stored_before, self.folder.folder, before)


def _stored_before(folder: Path, before: float) -> list[tuple[str, int]]:
    return entries_before(folder, _STORED_NAME, before)


def entries_before(folder: Path, names: re.Pattern[str], before: float) -> list[tuple[str, int]]:
    """(name, size) of the files in ``folder`` named like ``names`` and modified before
    ``before``; none when the folder is missing."""
    found: list[tuple[str, int]] = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return found
    for entry in entries:
        if not names.fullmatch(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if st.st_mtime < before:
            found.append((entry.name, st.st_size))
    return found
