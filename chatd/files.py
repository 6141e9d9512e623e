"""Attachments on disk: streamed uploads, type detection from the bytes, thumbnails and safe
opening for downloads (docs/attachments.md).

An upload is written chunk by chunk to a temporary file in the upload folder while its
SHA-256 is computed and its bytes are checked, and is renamed to a random name only once it
is complete and accepted; every other outcome removes the temporary file. File I/O and image
decoding run on the folder's own threads, never on the default executor, and decodes take
turns between chats (docs/security.md). The type is decided
from the content alone: magic numbers (``filetype``), a strict text rule (UTF-8, no NUL, not
markup or a script) and, for images, a full decode by Pillow. The customer's filename is
display metadata: it is sanitised and must not contradict the content.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import hashlib
import logging
import os
import queue
import re
import secrets
import stat
import struct
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Generic, TypeVar
from urllib.parse import quote, unquote

import aiofiles
import aiofiles.os
import filetype  # type: ignore[import-untyped]  # the package ships no type hints

from .core.errors import BadRequest, DeskError, TooLarge

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# Big enough that per-chunk costs (a thread hop for the write, one hash update) are small,
# small enough that a few chunks in flight per upload cost nothing next to the cap.
CHUNK_SIZE = 256 * 1024
HEAD_SIZE = 8192  # what type detection looks at: magic numbers and leading markup
THUMBNAIL_BOX = (320, 320)
# Images are decoded in full to prove they are images and to make the thumbnail; beyond this
# many pixels the decode alone would cost hundreds of MiB (an 8K screen is 33 megapixels).
MAX_IMAGE_PIXELS = 40_000_000
# Decodes run on this many threads of their own: each may take ~160 MiB at the pixel limit,
# so this bounds their memory, and a second thread keeps one slow image from holding up
# every other chat.
DECODE_WORKERS = 2
# Writes, fsyncs and opens of stored files: enough that a few slow fsyncs do not hold up
# the writes of every other upload.
FILE_IO_WORKERS = 8
# Free space is looked at before an upload and again after every this many bytes of it.
SPACE_CHECK_BYTES = 4 * MiB
STALE_TEMP_SECONDS = 3600.0

_TEMP_PREFIX = ".upload-"
_TEMP_SUFFIX = ".part"
_STORED_NAME = re.compile(r"[0-9a-f]{32}(?:-thumb)?")
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


class UnsupportedType(DeskError):
    """The content is not one of the allowed types (HTTP 415)."""

    code = "unsupported_type"


class InsufficientStorage(DeskError):
    """The upload folder's filesystem is below its free-space floor (HTTP 507)."""

    code = "insufficient_storage"


@dataclass(frozen=True, slots=True)
class Kind:
    """One allowed type of attachment."""

    name: str
    label: str  # for people: "PNG image"
    content_type: str  # served as this, whatever the client declared
    extensions: tuple[str, ...]  # the first is added to names without an extension
    image_format: str | None = None  # Pillow's name for it; images are shown inline

    @property
    def is_image(self) -> bool:
        return self.image_format is not None


TEXT_EXTENSIONS = (".txt", ".log", ".json", ".csv", ".xml", ".yaml", ".yml", ".har")

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("png", "PNG image", "image/png", (".png",), "PNG"),
        Kind("jpeg", "JPEG image", "image/jpeg", (".jpg", ".jpeg"), "JPEG"),
        Kind("gif", "GIF image", "image/gif", (".gif",), "GIF"),
        Kind("webp", "WebP image", "image/webp", (".webp",), "WEBP"),
        Kind("text", "text file", "text/plain; charset=utf-8", TEXT_EXTENSIONS),
        Kind("gzip", "gzip archive", "application/gzip", (".gz", ".tgz")),
        Kind("zip", "zip archive", "application/zip", (".zip",)),
        Kind("pdf", "PDF document", "application/pdf", (".pdf",)),
    )
}

# filetype's answer for the allowed binary kinds; zip containers are matched by their own
# magic number below, whatever filetype calls them (docx, epub, jar are zips too).
_MIME_KINDS = {
    "image/png": "png",
    "image/apng": "png",
    "image/jpeg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
    "application/gzip": "gzip",
    "application/zip": "zip",
    "application/pdf": "pdf",
}
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")

# Markup a browser would render as a page or an image with scripts, were it ever served as
# anything but text: the tags of the WHATWG MIME-sniffing rules for HTML, plus SVG and XSLT.
_PAGE_TAGS = frozenset(
    "html head body script iframe h1 div font table a style title b br p svg math object "
    "embed frameset frame img link meta form base xsl:stylesheet stylesheet".split()
)
_DANGEROUS_NAMESPACES = ("http://www.w3.org/1999/xhtml", "http://www.w3.org/2000/svg")
_FIRST_TAG = re.compile(r"<([a-z][a-z0-9:._-]*)")


def describe_allowed(kinds: Collection[str]) -> str:
    """The allowed types in words, for error messages and docs."""
    parts: list[str] = []
    images = [n for k, n in (("png", "PNG"), ("jpeg", "JPEG"), ("gif", "GIF"), ("webp", "WebP"))
              if k in kinds]
    if images:
        parts.append(f"{_words(images)} images")
    if "text" in kinds:
        parts.append("text logs (.log, .txt, .json, .csv, .xml, .yaml, .har)")
    archives = [a for k, a in (("gzip", ".gz"), ("gzip", ".tar.gz"), ("zip", ".zip"))
                if k in kinds]
    if archives:
        parts.append(f"{_words(archives)} archives")
    if "pdf" in kinds:
        parts.append("PDF documents")
    return "; ".join(parts) if parts else "nothing"


def _words(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def refuse(what: str, allowed: Collection[str]) -> UnsupportedType:
    return UnsupportedType(
        f"{what}. Allowed: {describe_allowed(allowed)}.",
        allowed=[k for k in KINDS if k in allowed],
    )


# ---------------------------------------------------------------------- type detection


def text_verdict(data: bytes, *, final: bool) -> bool:
    """Whether ``data`` passes the strict text rule on its own (UTF-8, no NUL); with
    ``final=False`` a multi-byte character cut at the end is forgiven."""
    if b"\0" in data:
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=final)
    except UnicodeDecodeError:
        return False
    return True


def markup_problem(head: bytes) -> str | None:
    """What the start of a text file is, when it is a page, an SVG image or a script."""
    text = head.decode("utf-8", "ignore").lstrip("\ufeff \t\r\n\f").lower()
    if text.startswith("#!"):
        return "scripts"
    if not text.startswith("<"):
        return None
    page = "HTML pages and SVG images"
    if "<?xml-stylesheet" in text or any(ns in text for ns in _DANGEROUS_NAMESPACES):
        return page
    # Skip the prolog (XML declaration, comments, doctype) to the first element. Each step
    # only moves forward: linear in the size of the head whatever it holds.
    i = 0
    while True:
        while i < len(text) and text[i] in " \t\r\n\f":
            i += 1
        if text.startswith("<?", i):
            closer = "?>"
        elif text.startswith("<!--", i):
            closer = "-->"
        elif text.startswith("<!", i):
            closer = ">"
        else:
            break
        end = text.find(closer, i + 2)
        if closer == ">":
            doctype = text[i : end if end >= 0 else len(text)]
            if doctype.startswith("<!doctype") and ("html" in doctype or "svg" in doctype):
                return page
        if end < 0:
            return None  # the prolog runs past the head: no element to judge
        i = end + len(closer)
    match = _FIRST_TAG.match(text, i)
    if match is None:
        return None
    tag = match.group(1)
    if tag in _PAGE_TAGS or tag.rsplit(":", 1)[-1] in _PAGE_TAGS:
        return page
    return None


def detect(head: bytes, is_text: bool, allowed: Collection[str]) -> Kind:
    """The kind of a file from its first bytes and whether all of it is text, or
    UnsupportedType naming what it is and what is allowed."""
    if not head:
        raise BadRequest("the file is empty")
    name: str | None = None
    guess = filetype.guess(head)
    if head.startswith(_ZIP_MAGIC):
        name = "zip"
    elif guess is not None and guess.mime in _MIME_KINDS:
        name = _MIME_KINDS[guess.mime]
    elif is_text:
        problem = markup_problem(head)
        if problem is not None:
            raise refuse(f"{problem} cannot be attached", allowed)
        name = "text"
    if name is None:
        if guess is not None:
            raise refuse(
                f"this file is a .{guess.extension} file ({guess.mime}), which cannot be "
                "attached",
                allowed,
            )
        raise refuse("this file is binary data of an unknown type, which cannot be attached",
                     allowed)
    if name not in allowed:
        raise refuse(f"{KINDS[name].label}s are not accepted here", allowed)
    return KINDS[name]


# ---------------------------------------------------------------------- filenames


def sanitize_filename(raw: str | None) -> str:
    """A display name from the client's: the last path part only, without control or format
    characters (such as right-to-left overrides), quotes, angle brackets or characters that
    are reserved in file names; at most 150 characters. May be empty."""
    name = raw or ""
    if _PERCENT_ESCAPE.search(name):
        # Browsers send '"', CR and LF as %22, %0D and %0A (WHATWG form encoding) and some
        # clients escape every byte: decode before looking for path separators.
        name = unquote(name, errors="replace")
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    out = []
    for ch in name:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            continue
        out.append("_" if ch in "\"'`<>:;|?*%" else ch)
    name = re.sub(r"\s+", " ", "".join(out)).strip(" ._")
    if len(name) > 150:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = stem[: 149 - len(ext)].rstrip(" ._") + "." + ext
        else:
            name = name[:150].rstrip(" ._")
    return name


def _extension(name: str) -> str | None:
    """The extension that says what a file is: ``app.log.1`` and ``app.log-20250101`` (log
    rotation) are .log files; None when there is none."""
    parts = name.lower().split(".")[1:]
    while parts and re.fullmatch(r"\d+", parts[-1]):
        parts.pop()
    if not parts:
        return None
    return "." + re.sub(r"[-_]\d{6,14}$", "", parts[-1])


_KNOWN_EXTENSIONS = {ext: kind for kind in KINDS.values() for ext in kind.extensions}


def display_name(raw: str | None, kind: Kind, allowed: Collection[str]) -> str:
    """The sanitised name to show and send in headers; refused when its extension says
    another type than the content (an HTML page named .png) or a type that is not allowed."""
    name = sanitize_filename(raw)
    ext = _extension(name)
    if ext is None:
        return (name or "attachment") + kind.extensions[0]
    if ext in kind.extensions:
        return name
    claimed = _KNOWN_EXTENSIONS.get(ext)
    if claimed is not None:
        raise refuse(
            f"{name!r} is named like a {claimed.label} but its content is a {kind.label}",
            allowed,
        )
    raise refuse(f"{ext} files cannot be attached", allowed)


def content_disposition(filename: str, *, inline: bool) -> str:
    """RFC 6266: an ASCII fallback for old clients, then the exact UTF-8 name."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


# ---------------------------------------------------------------------- the upload folder


def _private(path: str, flags: int) -> int:
    # Uploads are the customers' data: readable by the server's user only, and never
    # written through a symlink someone planted.
    return os.open(path, flags | os.O_NOFOLLOW, 0o600)


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
            self._tmp, "xb", opener=_private, executor=self.owner.io
        )
        self._writer = asyncio.create_task(self._write_loop())
        self._digest = _Digest(asyncio.get_running_loop())
        self._digest.start()
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


T = TypeVar("T")


@dataclass(eq=False)
class _Job(Generic[T]):
    call: Callable[[], T]
    future: asyncio.Future[T]
    started: bool = False


@dataclass(eq=False)
class FairExecutor:
    """Blocking jobs on a few threads of their own, taking turns between keys (chats).

    Each key has its own line; a free thread takes the first job of the key whose turn it
    is, and that key goes to the back. So a chat that sends twenty large images waits
    behind its own images, while another chat's one image starts after at most one job of
    each key ahead of it. A job whose caller went away before it started is dropped.
    """

    workers: int
    name: str
    _lines: dict[str, deque[_Job[Any]]] = field(default_factory=dict)  # in turn order
    _running: int = 0
    _pool: ThreadPoolExecutor | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    def waiting(self, key: str | None = None) -> int:
        """Jobs not yet started, of one key or of all."""
        lines = self._lines.values() if key is None else [self._lines.get(key, deque())]
        return sum(1 for line in lines for job in line if not job.future.done())

    @property
    def running(self) -> int:
        return self._running

    async def run(self, key: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on one of the threads, in ``key``'s turn. Cancelled before it
        started, the job is dropped; cancelled while it runs, this waits for it to end
        (a thread cannot be stopped) and then lets the cancellation through."""
        loop = self._loop = asyncio.get_running_loop()
        job: _Job[T] = _Job(functools.partial(fn, *args), loop.create_future())
        self._lines.setdefault(key, deque()).append(job)
        self._dispatch()
        try:
            return await asyncio.shield(job.future)
        except asyncio.CancelledError:
            if job.started:
                with contextlib.suppress(Exception):
                    await job.future
            else:
                job.future.cancel()
            raise

    def _dispatch(self) -> None:
        while self._running < self.workers and self._lines:
            key = next(iter(self._lines))
            line = self._lines.pop(key)
            job = line.popleft()
            if line:
                self._lines[key] = line  # to the back: the next key's turn
            if job.future.done():
                continue
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=self.name)
            job.started = True
            self._running += 1
            self._pool.submit(job.call).add_done_callback(
                functools.partial(self._from_thread, job)
            )

    def _from_thread(self, job: _Job[Any], done: ThreadFuture[Any]) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._finished, job, done)

    def _finished(self, job: _Job[Any], done: ThreadFuture[Any]) -> None:
        self._running -= 1
        if not job.future.done():
            if done.cancelled():
                job.future.cancel()
            elif (exc := done.exception()) is not None:
                job.future.set_exception(exc)
            else:
                job.future.set_result(done.result())
        self._dispatch()

    def close(self) -> None:
        for line in self._lines.values():
            for job in line:
                job.future.cancel()
        self._lines.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


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

    async def remove(self, names: Iterable[str | None]) -> None:
        for name in names:
            if name and _STORED_NAME.fullmatch(name):
                with contextlib.suppress(FileNotFoundError):
                    await aiofiles.os.remove(self.folder / name, executor=self.io)

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


def make_thumbnail(source: Path, target: Path, kind: Kind, allowed: Collection[str]) -> str:
    """Decode the image at ``source`` and write a thumbnail to ``target``; returns its content
    type. Blocking (Pillow): run it in a thread."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    assert kind.image_format is not None
    invalid = f"this file is not a valid {kind.label}"
    try:
        with Image.open(source, formats=[kind.image_format]) as im:
            width, height = im.size
            if width * height > MAX_IMAGE_PIXELS:
                raise TooLarge(
                    f"the image is {width}x{height} pixels; at most "
                    f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels are accepted"
                )
            if kind.name == "jpeg":
                im.draft("RGB", (THUMBNAIL_BOX[0] * 2, THUMBNAIL_BOX[1] * 2))
            im.load()
            upright = ImageOps.exif_transpose(im)
            alpha = upright.mode in ("RGBA", "LA", "PA") or (
                upright.mode == "P" and "transparency" in upright.info
            )
            frame = upright.convert("RGBA" if alpha else "RGB")
            frame.thumbnail(THUMBNAIL_BOX)
            # A new image holds pixels only: no EXIF, GPS, comments, profiles or trailers.
            clean = Image.new(frame.mode, frame.size)
            clean.paste(frame)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooLarge(
            f"the image has too many pixels; at most {MAX_IMAGE_PIXELS // 1_000_000} "
            "megapixels are accepted"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
            IndexError, struct.error):
        raise refuse(invalid, allowed) from None
    fmt, content_type = ("PNG", "image/png") if alpha else ("JPEG", "image/jpeg")
    with open(target, "xb", opener=_private) as out:
        clean.save(out, fmt, **({"quality": 80} if fmt == "JPEG" else {"optimize": True}))
    return content_type
